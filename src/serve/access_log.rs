//! The access log service (`envoy.service.accesslog.v3.AccessLogService`) on the xDS port,
//! where Envoys report the requests their services' rules in shadow would deny.
//!
//! Synthesis gives each chain whose rules are only counted a gRPC access log named
//! [`SHADOW_DENIED_LOG`], filtered so only would-be denials are sent, through the bootstrap
//! cluster `[authz] shadow_log_cluster` names: the one ADS uses, so the same port, over
//! plaintext or the xDS mutual TLS. Each stream is one Envoy's (its first message names the
//! node and the log); its entries are counted per (service, caller) in the status registry's
//! [`ShadowDenials`](crate::cache::ShadowDenials), which bounds what a stream can make it hold.
//!
//! - The service (whose rules would deny) is the one the connection's verified client
//!   certificate names, else the node's claim (`node.cluster`); a node claiming another service
//!   than its certificate is refused, as on xDS streams.
//! - The caller is the first URI SAN of the peer certificate of the logged request (its SPIFFE
//!   ID), or `plaintext` for a request without one.
//!
//! Streams of other log names are read and ignored. Entries are never logged: they hold
//! request details (paths, addresses) that are not ecs-xds's to keep.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::data::accesslog::v3::{
    tls_properties::certificate_properties::subject_alt_name::San, HttpAccessLogEntry,
};
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::AccessLogService;
use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::LogEntries;
use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::peer::{self, Verified};
use crate::cache::Cache;
use crate::http_listener::ConnectionClosing;
use crate::synthesize::security::SHADOW_DENIED_LOG;

/// The caller of a logged request that presented no certificate.
pub(crate) const PLAINTEXT: &str = "plaintext";

/// The access log service over the cache's status registry.
#[derive(Debug, Clone)]
pub(super) struct AccessLogs {
    pub(super) cache: Cache,
    /// The trust domain of the xDS listener's client certificates, when it has TLS.
    pub(super) trust_domain: Option<Arc<str>>,
    /// Ends every stream at shutdown: they never end on their own.
    pub(super) streams: CancellationToken,
}

#[tonic::async_trait]
impl AccessLogService for AccessLogs {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let verified = match &self.trust_domain {
            Some(trust_domain) => peer::workload(&self.cache, request.extensions(), trust_domain)?,
            None => None,
        };
        let shutdown = match request.extensions().get::<ConnectionClosing>() {
            Some(closing) => closing.0.clone(),
            None => self.streams.clone(),
        };
        let mut messages = request.into_inner();
        let mut stream = Reports::new(verified);
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = messages.message() => message?,
            };
            let Some(message) = message else { break };
            stream.take(&self.cache, message)?;
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}

/// One stream's state, without the network: what its first message said.
#[derive(Debug)]
pub(super) struct Reports {
    verified: Option<Arc<Verified>>,
    reporting: Reporting,
}

#[derive(Debug, PartialEq)]
enum Reporting {
    /// No message yet.
    Unidentified,
    /// Would-be denials of this service's rules.
    Counting(String),
    /// Another log, or no service to count for.
    Ignoring,
}

impl Reports {
    pub(super) fn new(verified: Option<Arc<Verified>>) -> Self {
        Reports {
            verified,
            reporting: Reporting::Unidentified,
        }
    }

    /// Counts what `message` reports; the first one says whose and which log.
    pub(super) fn take(
        &mut self,
        cache: &Cache,
        message: StreamAccessLogsMessage,
    ) -> Result<(), Status> {
        if self.reporting == Reporting::Unidentified {
            self.reporting = self.identify(cache, &message)?;
        }
        let (Reporting::Counting(service), Some(LogEntries::HttpLogs(logs))) =
            (&self.reporting, &message.log_entries)
        else {
            return Ok(());
        };
        let mut callers: BTreeMap<&str, u64> = BTreeMap::new();
        for entry in &logs.log_entry {
            *callers.entry(caller(entry)).or_default() += 1;
        }
        let denials = cache.status().shadow_denials();
        for (caller, n) in callers {
            denials.add(service, caller, n);
        }
        Ok(())
    }

    fn identify(
        &self,
        cache: &Cache,
        message: &StreamAccessLogsMessage,
    ) -> Result<Reporting, Status> {
        let Some(identifier) = &message.identifier else {
            return Ok(Reporting::Ignoring);
        };
        if identifier.log_name != SHADOW_DENIED_LOG {
            return Ok(Reporting::Ignoring);
        }
        let node = identifier.node.clone().unwrap_or_default();
        let service = peer::caller(cache, &node, self.verified.as_deref())?;
        tracing::debug!(node_id = %node.id, %service, "shadow denials reported");
        Ok(match service.is_empty() {
            true => Reporting::Ignoring,
            false => Reporting::Counting(service),
        })
    }
}

/// Who made a logged request: the first URI SAN of its peer certificate, or [`PLAINTEXT`].
fn caller(entry: &HttpAccessLogEntry) -> &str {
    let sans = (entry.common_properties.as_ref())
        .and_then(|c| c.tls_properties.as_ref())
        .and_then(|t| t.peer_certificate_properties.as_ref())
        .map(|p| p.subject_alt_name.as_slice())
        .unwrap_or_default();
    let uri = sans.iter().find_map(|san| match &san.san {
        Some(San::Uri(uri)) => Some(uri.as_str()),
        _ => None,
    });
    uri.unwrap_or(PLAINTEXT)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::data::accesslog::v3::tls_properties::certificate_properties::SubjectAltName;
    use envoy_types::pb::envoy::data::accesslog::v3::tls_properties::CertificateProperties;
    use envoy_types::pb::envoy::data::accesslog::v3::{AccessLogCommon, TlsProperties};
    use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::{
        HttpAccessLogEntries, Identifier,
    };

    use super::*;
    use crate::cache::{NodeTypeResolver, NodeTypeSource};

    const API: &str = "spiffe://mesh.test/ecs/1/eu-west-1/demo/api";

    /// What a verified certificate of `service` (in no zone) says.
    fn verified(service: &str) -> Arc<Verified> {
        let uri = format!("spiffe://mesh.test/ecs/1/eu-west-1/demo/{service}");
        let id = crate::spiffe::SpiffeId::parse(&uri).unwrap();
        Arc::new(Verified { id, zone: None })
    }

    fn cache() -> Cache {
        Cache::new(NodeTypeResolver::new(NodeTypeSource::IdPrefix, None)).0
    }

    fn entry(san: Option<San>) -> HttpAccessLogEntry {
        let tls = san.map(|san| TlsProperties {
            peer_certificate_properties: Some(CertificateProperties {
                subject_alt_name: vec![SubjectAltName { san: Some(san) }],
                ..Default::default()
            }),
            ..Default::default()
        });
        HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                tls_properties: tls,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn message(
        log_name: Option<&str>,
        entries: Vec<HttpAccessLogEntry>,
    ) -> StreamAccessLogsMessage {
        StreamAccessLogsMessage {
            identifier: log_name.map(|log_name| Identifier {
                node: Some(Node {
                    id: "sidecar-1".into(),
                    cluster: "orders".into(),
                    ..Default::default()
                }),
                log_name: log_name.into(),
            }),
            log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
                log_entry: entries,
            })),
        }
    }

    #[test]
    fn shadow_denials_are_counted_for_the_nodes_service_by_the_callers_uri_san() {
        let cache = cache();
        let mut stream = Reports::new(None);
        let api = || entry(Some(San::Uri(API.into())));
        let first = message(Some(SHADOW_DENIED_LOG), vec![api(), entry(None)]);
        stream.take(&cache, first).unwrap();
        // Only the first message has the identifier.
        let dns = entry(Some(San::Dns("api.example".into())));
        stream
            .take(&cache, message(None, vec![api(), dns]))
            .unwrap();
        let orders = cache.status().shadow_denials().of("orders").unwrap();
        assert_eq!(orders[API], 2);
        assert_eq!(orders[PLAINTEXT], 2, "no URI SAN: plaintext");
    }

    #[test]
    fn a_stream_of_another_log_is_ignored_and_a_certificate_names_the_service() {
        let cache = cache();
        let mut other = Reports::new(None);
        let api = || entry(Some(San::Uri(API.into())));
        other
            .take(&cache, message(Some("mine"), vec![api()]))
            .unwrap();
        other.take(&cache, message(None, vec![api()])).unwrap();
        assert!(cache.status().shadow_denials().all().is_empty());

        let mut posing = Reports::new(Some(verified("web")));
        let refused = posing.take(&cache, message(Some(SHADOW_DENIED_LOG), vec![api()]));
        assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);
        let mut orders = Reports::new(Some(verified("orders")));
        let first = message(Some(SHADOW_DENIED_LOG), vec![api()]);
        orders.take(&cache, first).unwrap();
        assert_eq!(
            cache.status().shadow_denials().of("orders").unwrap()[API],
            1
        );
    }
}
