//! `[identity]`: ecs-xds as the mesh's CA, and the endpoint where tasks prove which ECS service
//! they are; `[xds]`'s `tls` and `client_auth`, which make the xDS channel mutual TLS.
//!
//! Off by default: a settings file without `[identity]` serves plaintext xDS as before.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::problem::{Problem, Problems};

/// `[identity]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySettings {
    pub enabled: bool,
    /// The SPIFFE trust domain of every certificate (`spiffe://<trust_domain>/ecs/...`).
    pub trust_domain: String,
    /// Where agents send their proofs (HTTPS, with the server certificate from the CA).
    pub listen: SocketAddr,
    /// The value agents must sign in `x-ecs-xds-server-id`: a proof made for another server (a
    /// test mesh, another team's ecs-xds) is refused here. Default: `ecs-xds.<trust_domain>`.
    pub server_id: Option<String>,
    /// How long a workload certificate is valid; agents renew at half of it.
    #[serde(with = "humantime_serde")]
    pub certificate_ttl: Duration,
    /// DNS names and IP addresses in ecs-xds's own certificate (the identity and xDS listeners),
    /// as agents and Envoys reach it.
    pub server_names: Vec<String>,
    /// Also require, for a task with its own ENI (awsvpc, Fargate), that the proof comes from
    /// that ENI's address. Off by default: a load balancer without client IP preservation
    /// would hide it.
    pub check_task_address: bool,
    /// The STS region proofs are signed for; default: `aws.region` (or the SDK's).
    pub sts_region: Option<String>,
    /// Where proofs are sent instead of `https://sts.<region>.amazonaws.com` (an emulator, a VPC
    /// endpoint); the signed Host header stays the regional STS host.
    pub sts_endpoint: Option<String>,
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// A request must arrive whole (head and body) within this time.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Connections open at once on the identity listener.
    pub max_connections: usize,
    /// Where the signing CA comes from.
    pub ca: CaSource,
}

/// `identity.ca`: the intermediate that signs, from files or from one Secrets Manager secret
/// (so that every replica signs with the same CA).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CaSource {
    /// The intermediate's private key (PKCS#8 PEM).
    pub key_file: Option<PathBuf>,
    /// The intermediate's certificate, then any further intermediates (not the root).
    pub chain_file: Option<PathBuf>,
    /// The roots trusted: during a CA change, old and new both.
    pub bundle_file: Option<PathBuf>,
    /// A Secrets Manager secret (name or ARN) holding JSON `{"key": PEM, "chain": PEM,
    /// "bundle": PEM}`, instead of the three files.
    pub secret_id: Option<String>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            enabled: false,
            trust_domain: String::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 18443)),
            server_id: None,
            certificate_ttl: Duration::from_secs(24 * 3600),
            server_names: Vec::new(),
            check_task_address: false,
            sts_region: None,
            sts_endpoint: None,
            max_body_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            max_connections: 1024,
            ca: CaSource::default(),
        }
    }
}

impl IdentitySettings {
    /// The server id agents must sign.
    pub fn server_id(&self) -> String {
        self.server_id
            .clone()
            .unwrap_or_else(|| format!("ecs-xds.{}", self.trust_domain))
    }

    /// Every problem with `[identity]` (none when it is off).
    pub(super) fn check(&self, problems: &mut Problems) {
        if !self.enabled {
            return;
        }
        if let Err(e) = crate::spiffe::check_trust_domain(&self.trust_domain) {
            problems.push(Problem::at("identity.trust_domain", e.to_string()));
        }
        if self.server_id.as_deref() == Some("") {
            problems.push(Problem::at("identity.server_id", "empty server id"));
        }
        if self.certificate_ttl < Duration::from_secs(60) {
            problems.push(Problem::at(
                "identity.certificate_ttl",
                "must be at least 1m (agents renew at half of it)",
            ));
        }
        if self.server_names.is_empty() {
            problems.push(Problem::at(
                "identity.server_names",
                "name at least one DNS name or address agents and Envoys use to reach ecs-xds",
            ));
        }
        for (key, zero) in [
            ("identity.max_body_bytes", self.max_body_bytes == 0),
            ("identity.max_connections", self.max_connections == 0),
            ("identity.request_timeout", self.request_timeout.is_zero()),
        ] {
            if zero {
                problems.push(Problem::at(key, "must be greater than 0"));
            }
        }
        self.ca.check(problems);
    }
}

impl CaSource {
    fn check(&self, problems: &mut Problems) {
        let files = [&self.key_file, &self.chain_file, &self.bundle_file];
        let given = files.iter().filter(|f| f.is_some()).count();
        match (given, &self.secret_id) {
            (0, Some(secret)) if secret.is_empty() => {
                problems.push(Problem::at("identity.ca.secret_id", "empty secret id"))
            }
            (0, Some(_)) | (3, None) => {}
            (0, None) => problems.push(Problem::at(
                "identity.ca",
                "give key_file, chain_file and bundle_file, or secret_id",
            )),
            (_, Some(_)) => problems.push(Problem::at(
                "identity.ca",
                "give either the three files or secret_id, not both",
            )),
            (_, None) => problems.push(Problem::at(
                "identity.ca",
                "key_file, chain_file and bundle_file go together: give all three",
            )),
        }
    }
}

/// `xds.client_auth`: what a listener asks of a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// No client certificate is asked for: an Envoy's own claim names its service, as without
    /// TLS.
    Off,
    /// A certificate, when presented, must verify against the bundle and then names the
    /// stream's service; Envoys without one are served as before (and shown as such in
    /// `/nodes`), for rolling a fleet over.
    Optional,
    /// Every client must present a certificate that verifies against the bundle.
    #[default]
    Required,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::settings::{ClientAuth, Settings};

    fn problems(text: &str) -> String {
        match Settings::parse(Path::new("ecs-xds.toml"), text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn identity_with_files_and_mutual_tls_parses() {
        let s = Settings::parse(
            Path::new("ecs-xds.toml"),
            r#"
            [xds]
            tls = true
            client_auth = "optional"
            [identity]
            enabled = true
            trust_domain = "prod.mesh"
            server_names = ["ecs-xds.prod.local"]
            certificate_ttl = "2h"
            ca = { key_file = "k.pem", chain_file = "c.pem", bundle_file = "b.pem" }
            "#,
        )
        .unwrap();
        assert_eq!(s.xds.client_auth, ClientAuth::Optional);
        assert_eq!(s.identity.server_id(), "ecs-xds.prod.mesh");
        assert_eq!(s.identity.certificate_ttl.as_secs(), 7200);
    }

    #[test]
    fn every_identity_problem_is_named_by_its_key() {
        let all = problems(
            r#"
            [xds]
            tls = true
            [identity]
            enabled = true
            trust_domain = "Prod Mesh"
            certificate_ttl = "10s"
            ca = { key_file = "k.pem", secret_id = "ca" }
            "#,
        );
        for key in [
            "identity.trust_domain",
            "identity.certificate_ttl",
            "identity.server_names",
            "identity.ca",
        ] {
            assert!(all.contains(key), "{key} missing from: {all}");
        }
    }

    #[test]
    fn xds_tls_needs_identity() {
        assert!(problems("[xds]\ntls = true\n").contains("xds.tls"));
        assert_eq!(problems("[xds]\nclient_auth = \"off\"\n"), "");
    }
}
