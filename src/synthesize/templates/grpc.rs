//! `[grpc]`: a node type of proxyless gRPC clients and, with `server_addresses`, of xDS-enabled
//! gRPC servers (gRFC A36).
//!
//! ```toml
//! [grpc]
//! enabled = true
//! server_addresses = ["0.0.0.0:50051"]   # what the node type's xDS-enabled servers listen on
//! server_listener_name = "grpc/server?xds.resource.listening_address=%s"
//! ```
//!
//! An xDS-enabled server asks for the listener its bootstrap's
//! `server_listener_resource_name_template` names, `%s` replaced by the address it listens on
//! as it states it (`0.0.0.0:50051`, `[::]:50051`), and serves only once it has one whose
//! address is that address. So each address listed gets such a listener, named by
//! `server_listener_name` (the bootstrap's template, `grpc/server?xds.resource.listening_address=%s`
//! by default), secured as the service's policy says when the node type has `[mtls]`.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::envoy_json::{FieldError, FieldPath};

/// The bootstrap template gRPC's own examples and most control planes use.
const SERVER_LISTENER_NAME: &str = "grpc/server?xds.resource.listening_address=%s";

/// One listener an xDS-enabled gRPC server of the node type asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerListener {
    /// The resource name the server asks for.
    pub name: String,
    /// The address the server listens on (and the listener must state).
    pub address: SocketAddr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrpcSpec {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    server_addresses: Vec<String>,
    #[serde(default)]
    server_listener_name: Option<String>,
}

impl GrpcSpec {
    /// Whether the node type is a gRPC one, and its servers' listeners.
    pub(super) fn check(self, errors: &mut Vec<FieldError>) -> (bool, Vec<ServerListener>) {
        let at = FieldPath::default().key("grpc");
        let template = self.server_listener_name.as_deref();
        let template = template.unwrap_or(SERVER_LISTENER_NAME);
        let mut refuse = |path: FieldPath, why: String| errors.push(FieldError::new(path, why));
        if !self.enabled && !self.server_addresses.is_empty() {
            let why = "needs `enabled = true`: only a gRPC node type has xDS-enabled servers";
            refuse(at.key("server_addresses"), why.to_owned());
        }
        if !template.contains("%s") {
            let why = "must hold `%s` where the server's listening address goes, as the servers' bootstrap `server_listener_resource_name_template` does";
            refuse(at.key("server_listener_name"), why.to_owned());
        }
        let mut servers = Vec::new();
        for (i, written) in self.server_addresses.iter().enumerate() {
            match written.parse::<SocketAddr>() {
                Ok(address) => servers.push(ServerListener {
                    name: template.replace("%s", &address.to_string()),
                    address,
                }),
                Err(_) => refuse(
                    at.key("server_addresses").index(i),
                    format!("{written:?} is not IP:port as a gRPC server states it (`0.0.0.0:50051`, `[::]:50051`)"),
                ),
            }
        }
        (self.enabled, servers)
    }
}
