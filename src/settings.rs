//! The daemon's TOML settings file.
//!
//! Loaded in two phases: serde rejects unknown keys and wrong types (naming the file and line),
//! then every value is checked and *all* problems are reported at once, each with its key path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cache::{NodeTypeResolver, NodeTypeSource};
use crate::http_listener::Limits;
use crate::problem::{Problem, Problems};

mod discover;
mod identity;

pub(crate) use discover::{render_template, ServiceFilter};
pub use discover::{
    AwsSettings, CloudMapSettings, DiscoverConfig, DiscoverSettings, EcsSettings, EventsSettings,
    EventsSource, Scope, SourceSettings,
};
pub use identity::{CaSource, ClientAuth, IdentitySettings};

/// Everything in the settings file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Directory of the per-node-type templates (`<node_type>.toml`), relative to the settings
    /// file's own directory unless absolute.
    #[serde(default = "default_templates_dir")]
    pub templates_dir: PathBuf,
    #[serde(default)]
    pub xds: XdsSettings,
    #[serde(default)]
    pub aws: AwsSettings,
    #[serde(default)]
    pub ecs: EcsSettings,
    #[serde(default)]
    pub cloud_map: CloudMapSettings,
    #[serde(default)]
    pub events: EventsSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub push: PushSettings,
    #[serde(default)]
    pub identity: IdentitySettings,
    /// At shutdown (SIGTERM, SIGINT, or a stage that ended), how long open connections on both
    /// listeners get to finish before they are closed. Kept well under ECS's default 30 s stop
    /// timeout, so the process exits on its own rather than being killed.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `[aws]`, `[ecs]`, `[cloud_map]` and `[events]` as [`Settings::parse`] checked them.
    #[serde(skip)]
    checked_discover: CheckedDiscover,
}

/// What [`Settings::parse`] made of the discover sections. Made from the other fields, so it
/// never makes two settings differ; [`Settings::discover`] uses it only while they match it.
#[derive(Debug, Clone, Default)]
struct CheckedDiscover(Option<DiscoverConfig>);

impl PartialEq for CheckedDiscover {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Default for Settings {
    /// What an empty settings file gives.
    fn default() -> Self {
        Settings {
            templates_dir: default_templates_dir(),
            xds: XdsSettings::default(),
            aws: AwsSettings::default(),
            ecs: EcsSettings::default(),
            cloud_map: CloudMapSettings::default(),
            events: EventsSettings::default(),
            admin: AdminSettings::default(),
            push: PushSettings::default(),
            identity: IdentitySettings::default(),
            shutdown_grace: default_shutdown_grace(),
            checked_discover: CheckedDiscover::default(),
        }
    }
}

fn default_templates_dir() -> PathBuf {
    PathBuf::from("templates")
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(5)
}

/// `[xds]`: the gRPC server Envoys connect to, and how their node type is read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdsSettings {
    /// Address of the xDS gRPC server.
    pub listen: SocketAddr,
    /// Where a node's type comes from: `{ from = "id_prefix" }` (default: `sidecar-app1` →
    /// `sidecar`), `{ from = "cluster" }`, or `{ from = "metadata", key = "..." }`.
    pub node_type: NodeTypeSource,
    /// Node type served to Envoys whose own node type has no templates.
    pub fallback_node_type: Option<String>,
    /// A new connection must send the HTTP/2 preface and open its first stream within this
    /// time, or it is closed (Envoy does both at once).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Connections open at once; more are closed as soon as accepted and counted in
    /// `connections_refused_total{listener="xds"}`. Each Envoy holds one.
    pub max_connections: usize,
    /// A connection older than this (±10%) has its streams ended and gets a GOAWAY, so its
    /// Envoy reconnects, perhaps to another replica: after a replica restarts, streams spread
    /// back over every replica. `0s`: never.
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Duration,
    /// Serve xDS over TLS, with a server certificate from the identity CA (`[identity]` must be
    /// on).
    pub tls: bool,
    /// With `tls`: whether Envoys must present a client certificate from the CA, whose service
    /// then decides what the stream is served.
    pub client_auth: ClientAuth,
}

impl Default for XdsSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 18000)),
            node_type: NodeTypeSource::IdPrefix,
            fallback_node_type: None,
            handshake_timeout: Duration::from_secs(5),
            max_connections: 20_000,
            max_connection_age: Duration::from_secs(30 * 60),
            tls: false,
            client_auth: ClientAuth::default(),
        }
    }
}

/// `[admin]`: the operator's HTTP endpoint (health, readiness, metrics, nodes, snapshots, and
/// the REST push API when enabled). `Debug` redacts the token, so settings can be logged.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Loopback by default: nothing outside the host reaches it unless asked for.
    pub listen: SocketAddr,
    /// Bearer token the REST push API requires when `listen` is not a loopback address. The
    /// environment variable `ECS_XDS_ADMIN_TOKEN` takes precedence, so the token can stay out
    /// of the file (e.g. an ECS secret).
    pub token: Option<String>,
    /// A request head must arrive within this time, on a new connection and between
    /// keep-alive requests, or the connection is closed (a slowloris holds nothing).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Connections open at once; more are closed as soon as accepted and counted in
    /// `connections_refused_total{listener="admin"}`.
    pub max_connections: usize,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 19000)),
            token: None,
            header_read_timeout: Duration::from_secs(5),
            max_connections: 256,
        }
    }
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// The environment variable that supplies the admin bearer token.
pub const ADMIN_TOKEN_ENV: &str = "ECS_XDS_ADMIN_TOKEN";

impl AdminSettings {
    /// The bearer token in force: the environment's, else the file's. Empty counts as unset.
    pub fn token(&self) -> Option<String> {
        std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .or_else(|| self.token.clone())
            .filter(|t| !t.is_empty())
    }
}

/// `[push]`: the sxds-compatible REST push API (`PUT/GET/DELETE /resources/{node_type}` on the
/// admin listener). Off by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushSettings {
    pub enabled: bool,
    /// Where pushed resources are persisted, one file per node type; relative to the settings
    /// file's directory unless absolute.
    pub state_dir: PathBuf,
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// Where pushes are kept: `state_dir` (the default), or one S3 prefix every replica shares.
    pub store: Option<PushStore>,
    /// With a shared store, how often each replica lists it for pushes made on other replicas.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

/// `push.store`: `{ s3 = { bucket = "...", prefix = "ecs-xds/push/" } }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum PushStore {
    S3 {
        bucket: String,
        /// Put before every object's key (`{prefix}{node_type}.json`); end it with `/`.
        #[serde(default)]
        prefix: String,
    },
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            state_dir: PathBuf::from("state"),
            max_body_bytes: 1024 * 1024,
            store: None,
            refresh_interval: Duration::from_secs(2),
        }
    }
}

/// Why a settings file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("settings file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("settings file {path} has {} problem(s):\n  {}", problems.0.len(), problems.lines("\n  "))]
    Invalid { path: PathBuf, problems: Problems },
}

impl Settings {
    /// Reads, parses and validates a settings file.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Settings::parse(path, &text)
    }

    /// Parses and validates settings text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Settings, SettingsError> {
        let settings: Settings = toml::from_str(text).map_err(|e| SettingsError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut settings = settings;
        let mut problems = Problems::default();
        match settings.discover_sections().check() {
            Ok(checked) => settings.checked_discover = CheckedDiscover(Some(checked)),
            Err(errors) => problems.0.extend(errors.0),
        }
        if let NodeTypeSource::Metadata { key } = &settings.xds.node_type {
            if key.is_empty() {
                problems.push(Problem::at("xds.node_type.key", "empty metadata key"));
            }
        }
        if settings.xds.fallback_node_type.as_deref() == Some("") {
            problems.push(Problem::at("xds.fallback_node_type", "empty node type"));
        }
        settings.identity.check(&mut problems);
        if settings.xds.tls && !settings.identity.enabled {
            problems.push(Problem::at(
                "xds.tls",
                "needs [identity] enabled: its CA issues the xDS server certificate",
            ));
        }
        if settings.push.max_body_bytes == 0 {
            problems.push(Problem::at("push.max_body_bytes", "must be greater than 0"));
        }
        if settings.push.state_dir.as_os_str().is_empty() {
            problems.push(Problem::at("push.state_dir", "empty path"));
        }
        if let Some(PushStore::S3 { bucket, .. }) = &settings.push.store {
            if bucket.is_empty() {
                problems.push(Problem::at("push.store.s3.bucket", "empty bucket name"));
            }
        }
        if settings.push.refresh_interval.is_zero() {
            problems.push(Problem::at(
                "push.refresh_interval",
                "must be greater than 0",
            ));
        }
        for (key, value) in [
            ("xds.max_connections", settings.xds.max_connections),
            ("admin.max_connections", settings.admin.max_connections),
        ] {
            if value == 0 {
                problems.push(Problem::at(key, "must be greater than 0"));
            }
        }
        for (key, value) in [
            ("xds.handshake_timeout", settings.xds.handshake_timeout),
            (
                "admin.header_read_timeout",
                settings.admin.header_read_timeout,
            ),
        ] {
            if value.is_zero() {
                problems.push(Problem::at(key, "must be longer than 0s"));
            }
        }
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(SettingsError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// The templates directory, resolved against the settings file `config`.
    pub fn templates_path(&self, config: &Path) -> PathBuf {
        beside(config, &self.templates_dir)
    }

    /// The push state directory, resolved against the settings file `config`.
    pub fn push_state_path(&self, config: &Path) -> PathBuf {
        beside(config, &self.push.state_dir)
    }

    /// How the xDS listener treats connections.
    pub fn xds_limits(&self) -> Limits {
        Limits {
            max_connections: self.xds.max_connections,
            first_request: self.xds.handshake_timeout,
            grace: self.shutdown_grace,
            max_age: Some(self.xds.max_connection_age).filter(|age| !age.is_zero()),
        }
    }

    /// How the admin listener treats connections.
    pub fn admin_limits(&self) -> Limits {
        Limits {
            max_connections: self.admin.max_connections,
            first_request: self.admin.header_read_timeout,
            grace: self.shutdown_grace,
            max_age: None,
        }
    }

    /// The sections (top-level keys) whose values differ between `self` and `other`, in file
    /// order, for the log line of a changed settings file.
    pub fn changed_sections(&self, other: &Settings) -> Vec<&'static str> {
        let sections = [
            ("templates_dir", self.templates_dir != other.templates_dir),
            ("xds", self.xds != other.xds),
            ("aws", self.aws != other.aws),
            ("ecs", self.ecs != other.ecs),
            ("cloud_map", self.cloud_map != other.cloud_map),
            ("events", self.events != other.events),
            ("admin", self.admin != other.admin),
            ("push", self.push != other.push),
            ("identity", self.identity != other.identity),
            (
                "shutdown_grace",
                self.shutdown_grace != other.shutdown_grace,
            ),
        ];
        sections
            .into_iter()
            .filter_map(|(name, changed)| changed.then_some(name))
            .collect()
    }

    /// The sections the discover stage reads, checked: as [`Settings::parse`] checked them, or
    /// checked now if they were changed since (or never parsed).
    pub fn discover(&self) -> Result<DiscoverConfig, Problems> {
        let sections = self.discover_sections();
        match &self.checked_discover.0 {
            Some(checked) if **checked == sections => Ok(checked.clone()),
            _ => sections.check(),
        }
    }

    fn discover_sections(&self) -> DiscoverSettings {
        DiscoverSettings {
            aws: self.aws.clone(),
            ecs: self.ecs.clone(),
            cloud_map: self.cloud_map.clone(),
            events: self.events.clone(),
        }
    }

    /// The node-type resolver the cache uses.
    pub fn node_type_resolver(&self) -> NodeTypeResolver {
        NodeTypeResolver::new(
            self.xds.node_type.clone(),
            self.xds.fallback_node_type.clone(),
        )
    }
}

/// `path` relative to the settings file `config`'s directory, unless absolute.
pub(crate) fn beside(config: &Path, path: &Path) -> PathBuf {
    match config.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, SettingsError> {
        Settings::parse(Path::new("ecs-xds.toml"), text)
    }

    #[test]
    fn the_discover_sections_come_checked_and_a_later_change_is_checked_again() {
        let path = Path::new("ecs-xds.toml");
        let text = "[ecs]\nclusters = [\"prod\"]\ninclude_services = [\"web-*\"]\n";
        let mut settings = Settings::parse(path, text).unwrap();
        let checked = settings.discover().unwrap();
        assert!(checked.filter().allows("web-1") && !checked.filter().allows("api"));
        assert_eq!(checked.events_source(), None);
        settings.ecs.include_services = vec!["[unclosed".into()];
        let problems = settings.discover().unwrap_err();
        assert_eq!(problems.0[0].path, "ecs.include_services[0]", "{problems}");
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let s = parse("").unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(
            s.templates_path(Path::new("config/ecs-xds.toml")),
            Path::new("config/templates")
        );
        assert_eq!(s.xds.listen, "0.0.0.0:18000".parse().unwrap());
        assert_eq!(s.xds.node_type, NodeTypeSource::IdPrefix);
        assert_eq!(s.ecs.poll_interval, std::time::Duration::from_secs(5));
        assert_eq!(s.admin.listen, "127.0.0.1:19000".parse().unwrap());
        assert!(!s.push.enabled);
        assert_eq!(
            s.push_state_path(Path::new("config/ecs-xds.toml")),
            Path::new("config/state")
        );
    }

    #[test]
    fn every_section_parses() {
        let s = parse(
            r#"
            [xds]
            listen = "127.0.0.1:18001"
            node_type = { from = "metadata", key = "role" }
            fallback_node_type = "sidecar"
            [aws]
            region = "eu-west-1"
            [ecs]
            clusters = ["prod"]
            poll_interval = "10s"
            [cloud_map]
            namespaces = ["prod.local"]
            [admin]
            listen = "0.0.0.0:19001"
            token = "s3cret"
            [push]
            enabled = true
            state_dir = "/var/lib/ecs-xds"
            max_body_bytes = 4096
            "#,
        )
        .unwrap();
        assert_eq!(
            s.xds.node_type,
            NodeTypeSource::Metadata { key: "role".into() }
        );
        assert_eq!(s.discover().unwrap().ecs.clusters, ["prod"]);
        assert_eq!(s.admin.listen, "0.0.0.0:19001".parse().unwrap());
        assert_eq!(s.admin.token.as_deref(), Some("s3cret"));
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("<redacted>"),
            "{debug}"
        );
        assert!(s.push.enabled);
        assert_eq!(
            s.push_state_path(Path::new("config/ecs-xds.toml")),
            Path::new("/var/lib/ecs-xds")
        );
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_the_file_and_line() {
        let err = parse("[xds]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("ecs-xds.toml"), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("lisen"), "{text}");
    }

    #[test]
    fn every_invalid_value_is_reported_at_once_with_its_key_path() {
        let err = parse(
            r#"
            [xds]
            fallback_node_type = ""
            [ecs]
            poll_interval = "10ms"
            include_services = ["[unclosed"]
            "#,
        )
        .unwrap_err();
        let SettingsError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(problems.0.len(), 3, "{problems:?}");
        let all = problems.to_string();
        for path in [
            "xds.fallback_node_type",
            "ecs.poll_interval",
            "ecs.include_services[0]",
        ] {
            assert!(all.contains(path), "{path} missing from {all}");
        }
    }
}
