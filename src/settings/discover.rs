//! The `[aws]`, `[ecs]`, `[cloud_map]` and `[events]` sections of the daemon's TOML settings.
//!
//! Loading is two-phase, like the rest of the settings: serde rejects unknown keys and wrong
//! types, then [`DiscoverSettings::validate`] checks the values and reports *every* problem at
//! once, each with its key path (`ecs.include_services[2]: ...`).

use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};

mod checked;
mod sources;

pub use checked::{DiscoverConfig, EventsSource};
pub use sources::{Scope, SourceSettings};

/// Everything the discover stage reads from the daemon settings: the `[aws]`, `[ecs]`,
/// `[cloud_map]` and `[events]` sections of the settings file, which `Settings::discover`
/// gathers here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverSettings {
    #[serde(default)]
    pub aws: AwsSettings,
    #[serde(default)]
    pub ecs: EcsSettings,
    #[serde(default)]
    pub cloud_map: CloudMapSettings,
    #[serde(default)]
    pub events: EventsSettings,
}

/// `[aws]`: where AWS is. Credentials always come from the standard chain (env, profile, ECS
/// container credentials, web identity, instance metadata); they have no place in this file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// AWS region; when absent, the standard chain decides (`AWS_REGION`, profile, metadata).
    pub region: Option<String>,
    /// A custom endpoint (an emulator such as moto). `AWS_ENDPOINT_URL` is honoured too; this
    /// key wins over it.
    pub endpoint_url: Option<String>,
}

/// `[ecs]`: which ECS services become Envoy clusters, and how often to look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EcsSettings {
    /// ECS cluster names or ARNs, in priority order: when two clusters hold a service of the same
    /// name, the one listed first keeps the Envoy cluster name (see the `discover` module).
    pub clusters: Vec<String>,
    /// Discover every ECS cluster of the account and region (ListClusters) on each poll, instead
    /// of `clusters`. Their priority order is the order of their names.
    pub auto_discover_clusters: bool,
    /// How long to wait between polls.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Service-name globs; empty means every service.
    pub include_services: Vec<String>,
    /// Service-name globs removed after `include_services`.
    pub exclude_services: Vec<String>,
    /// Whether a service without an `<prefix>enable` label or tag is exposed.
    pub exposed_by_default: bool,
    /// Prefix of the docker labels and service tags read as overrides.
    pub label_prefix: String,
    /// Containers never turned into endpoints, whatever their labels (the Envoy sidecar).
    pub ignore_container_names: Vec<String>,
    /// Envoy cluster name of a service exposed on one unnamed port.
    /// Variables: `{service}`, `{ecs_cluster}`, `{account}`, `{region}`.
    pub cluster_name: String,
    /// Envoy cluster name of each named port mapping of a service.
    /// Variables: `{service}`, `{port_name}`, `{ecs_cluster}`, `{account}`, `{region}`.
    pub port_cluster_name: String,
    /// The accounts and regions watched (`[[ecs.sources]]`); empty: `clusters` (or
    /// `auto_discover_clusters`) and `cloud_map.namespaces` in the caller's own account.
    pub sources: Vec<SourceSettings>,
    /// Two ECS services of one name from different accounts or regions become one Envoy
    /// cluster with the endpoints of both (the same service in two regions), instead of a
    /// collision that the first source wins.
    pub merge: bool,
}

impl Default for EcsSettings {
    fn default() -> Self {
        Self {
            clusters: Vec::new(),
            auto_discover_clusters: false,
            poll_interval: Duration::from_secs(5),
            include_services: Vec::new(),
            exclude_services: Vec::new(),
            exposed_by_default: true,
            label_prefix: "ecs-xds.".to_owned(),
            ignore_container_names: vec!["envoy".to_owned()],
            cluster_name: "{service}".to_owned(),
            port_cluster_name: "{service}.{port_name}".to_owned(),
            sources: Vec::new(),
            merge: false,
        }
    }
}

/// `[cloud_map]`: AWS Cloud Map namespaces whose services become Envoy clusters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudMapSettings {
    /// Namespace names (e.g. `demo.local`), in priority order. Empty: Cloud Map is not used.
    pub namespaces: Vec<String>,
    /// Prefix of every Cloud Map cluster name, which is `{prefix}{service}.{namespace}`. ECS
    /// service names cannot contain dots, so with a non-empty prefix the two never collide.
    pub cluster_name_prefix: String,
}

impl Default for CloudMapSettings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            cluster_name_prefix: "cloudmap.".to_owned(),
        }
    }
}

/// `[events]`: event-driven discovery. ECS events reach ecs-xds through SQS (EventBridge rule →
/// SNS topic → one queue per replica, or EventBridge rule → one fixed queue); the full poll then
/// runs only every `reconcile_interval`. Off by default: polling alone needs nothing but ECS
/// read permissions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSettings {
    pub enabled: bool,
    /// A queue the EventBridge rule targets directly, read as is (one replica, or a queue the
    /// operator manages). Exactly one of `queue_url` and `topic_arn` when enabled.
    pub queue_url: Option<String>,
    /// The SNS topic the EventBridge rule targets: each replica creates its own queue,
    /// subscribes it, and removes both at shutdown, so every replica sees every event.
    pub topic_arn: Option<String>,
    /// Name prefix of the per-replica queues (`topic_arn` only); the replica's id follows it.
    pub queue_prefix: String,
    /// How often the full poll runs while events arrive (jittered by up to a tenth).
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// SQS long-poll wait per ReceiveMessage, 1 to 20 seconds.
    #[serde(with = "humantime_serde")]
    pub wait_time: Duration,
    /// A per-replica queue whose heartbeat tag is older than this belongs to a replica that no
    /// longer runs, and is deleted (with its subscription) by the next replica to start.
    #[serde(with = "humantime_serde")]
    pub orphan_after: Duration,
    /// SQS and SNS endpoint, when it differs from `aws.endpoint_url` (an emulator, a proxy).
    pub endpoint_url: Option<String>,
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            queue_url: None,
            topic_arn: None,
            queue_prefix: "ecs-xds-".to_owned(),
            reconcile_interval: Duration::from_secs(300),
            wait_time: Duration::from_secs(20),
            orphan_after: Duration::from_secs(3600),
            endpoint_url: None,
        }
    }
}

/// SQS queue names are at most 80 characters; the prefix leaves room for a replica id.
const MAX_QUEUE_PREFIX: usize = 40;

impl EventsSettings {
    fn validate(&self, errors: &mut Problems) {
        if let Some(url) = &self.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(Problem::at(
                    "events.endpoint_url",
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
        }
        if !self.enabled {
            return;
        }
        match (&self.queue_url, &self.topic_arn) {
            (None, None) => errors.push(Problem::at(
                "events.enabled",
                "needs events.queue_url (a queue the EventBridge rule targets) or events.topic_arn (an SNS topic it targets)",
            )),
            (Some(_), Some(_)) => errors.push(Problem::at(
                "events.queue_url",
                "give either queue_url or topic_arn, not both",
            )),
            (Some(url), None) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                errors.push(Problem::at("events.queue_url", format!("`{url}` is not an SQS queue URL")))
            }
            (None, Some(arn)) if !arn.starts_with("arn:") || !arn.contains(":sns:") => {
                errors.push(Problem::at("events.topic_arn", format!("`{arn}` is not an SNS topic ARN")))
            }
            _ => {}
        }
        let prefix = &self.queue_prefix;
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if prefix.is_empty() || prefix.len() > MAX_QUEUE_PREFIX || !prefix.chars().all(allowed) {
            errors.push(Problem::at(
                "events.queue_prefix",
                format!("`{prefix}` must be 1 to {MAX_QUEUE_PREFIX} of A-Z a-z 0-9 - _"),
            ));
        }
        at_least(
            errors,
            "events.reconcile_interval",
            self.reconcile_interval,
            Duration::from_secs(1),
        );
        if !(Duration::from_secs(1)..=Duration::from_secs(20)).contains(&self.wait_time)
            || self.wait_time.subsec_nanos() != 0
        {
            errors.push(Problem::at(
                "events.wait_time",
                format!(
                    "{} is not a whole number of seconds from 1s to 20s",
                    humantime::format_duration(self.wait_time)
                ),
            ));
        }
        at_least(
            errors,
            "events.orphan_after",
            self.orphan_after,
            Duration::from_secs(120),
        );
    }
}

impl DiscoverSettings {
    /// Checks values serde cannot: globs, templates, the interval, the source list
    /// ([`DiscoverSettings::check`] also compiles what it accepts).
    pub fn validate(&self) -> Result<(), Problems> {
        let mut errors = Problems::default();
        let ecs = &self.ecs;
        if let Some(url) = &self.aws.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(Problem::at(
                    "aws.endpoint_url",
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
        }
        if ecs.auto_discover_clusters && !ecs.clusters.is_empty() {
            errors.push(Problem::at(
                "ecs.clusters",
                "give either a list of clusters or auto_discover_clusters = true, not both",
            ));
        }
        for (i, name) in ecs.clusters.iter().enumerate() {
            if name.trim().is_empty() {
                errors.push(Problem::at(
                    format!("ecs.clusters[{i}]"),
                    "empty cluster name",
                ));
            } else if ecs.clusters[..i].contains(name) {
                errors.push(Problem::at(
                    format!("ecs.clusters[{i}]"),
                    format!("`{name}` is listed twice"),
                ));
            }
        }
        at_least(
            &mut errors,
            "ecs.poll_interval",
            ecs.poll_interval,
            Duration::from_secs(1),
        );
        for (key, globs) in [
            ("include_services", &ecs.include_services),
            ("exclude_services", &ecs.exclude_services),
        ] {
            for (i, glob) in globs.iter().enumerate() {
                if let Err(e) = Glob::new(glob) {
                    errors.push(Problem::at(
                        format!("ecs.{key}[{i}]"),
                        format!("invalid glob `{glob}`: {}", e.kind()),
                    ));
                }
            }
        }
        if ecs.label_prefix.is_empty() {
            errors.push(Problem::at("ecs.label_prefix", "must not be empty"));
        }
        check_template(
            &mut errors,
            "ecs.cluster_name",
            &ecs.cluster_name,
            &["service", "ecs_cluster", "account", "region"],
            &["service"],
        );
        check_template(
            &mut errors,
            "ecs.port_cluster_name",
            &ecs.port_cluster_name,
            &["service", "port_name", "ecs_cluster", "account", "region"],
            &["service", "port_name"],
        );
        for (i, ns) in self.cloud_map.namespaces.iter().enumerate() {
            if ns.trim().is_empty() {
                errors.push(Problem::at(
                    format!("cloud_map.namespaces[{i}]"),
                    "empty namespace name",
                ));
            } else if self.cloud_map.namespaces[..i].contains(ns) {
                errors.push(Problem::at(
                    format!("cloud_map.namespaces[{i}]"),
                    format!("`{ns}` is listed twice"),
                ));
            }
        }
        self.validate_sources(&mut errors);
        self.events.validate(&mut errors);
        errors.into_result()
    }
}

impl EcsSettings {
    /// The include/exclude filter of checked settings ([`DiscoverSettings::check`]).
    pub(crate) fn service_filter(&self) -> ServiceFilter {
        ServiceFilter {
            include: glob_set(&self.include_services),
            exclude: glob_set(&self.exclude_services),
        }
    }
}

/// Compiled `include_services` / `exclude_services`.
#[derive(Debug, Clone)]
pub(crate) struct ServiceFilter {
    /// `None` when no include globs were given: everything is included.
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl ServiceFilter {
    pub(crate) fn allows(&self, service: &str) -> bool {
        self.include
            .as_ref()
            .is_none_or(|set| set.is_match(service))
            && !self
                .exclude
                .as_ref()
                .is_some_and(|set| set.is_match(service))
    }
}

fn glob_set(globs: &[String]) -> Option<GlobSet> {
    if globs.is_empty() {
        return None;
    }
    let mut builder = GlobSetBuilder::new();
    for glob in globs.iter().filter_map(|g| Glob::new(g).ok()) {
        builder.add(glob);
    }
    builder.build().ok()
}

/// Checks that `template` only uses `allowed` variables and uses every `required` one (a
/// template without `{port_name}` would give every port of a service the same name).
fn check_template(
    errors: &mut Problems,
    key: &str,
    template: &str,
    allowed: &[&str],
    required: &[&str],
) {
    match template_variables(template) {
        Err(e) => errors.push(Problem::at(key, format!("{e} in `{template}`"))),
        Ok(vars) => {
            for var in vars.iter().filter(|v| !allowed.contains(&v.as_str())) {
                errors.push(Problem::at(
                    key,
                    format!(
                        "unknown variable `{{{var}}}` in `{template}` (known: {})",
                        allowed
                            .iter()
                            .map(|a| format!("{{{a}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            for var in required.iter().filter(|r| !vars.iter().any(|v| v == *r)) {
                errors.push(Problem::at(
                    key,
                    format!("`{template}` must contain `{{{var}}}`"),
                ));
            }
        }
    }
}

/// `value` of `key` is at least `minimum`, or a problem.
fn at_least(errors: &mut Problems, key: &str, value: Duration, minimum: Duration) {
    if value < minimum {
        let (value, minimum) = (
            humantime::format_duration(value),
            humantime::format_duration(minimum),
        );
        errors.push(Problem::at(
            key,
            format!("{value} is below the {minimum} minimum"),
        ));
    }
}

fn template_variables(template: &str) -> Result<Vec<String>, &'static str> {
    let mut vars = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err("unmatched `}`");
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("unclosed `{`")?;
        vars.push(after[..close].to_owned());
        rest = &after[close + 1..];
    }
    Ok(vars)
}

/// Fills `{name}` variables; templates are validated, so unknown ones cannot occur.
pub(crate) fn render_template(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_owned(), |acc, (name, value)| {
        acc.replace(&format!("{{{name}}}"), value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<DiscoverSettings, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let s = parse("").unwrap();
        assert_eq!(s.ecs.poll_interval, Duration::from_secs(5));
        assert!(s.ecs.exposed_by_default);
        assert_eq!(s.ecs.label_prefix, "ecs-xds.");
        assert_eq!(s.ecs.ignore_container_names, ["envoy"]);
        assert_eq!(s.ecs.cluster_name, "{service}");
        assert_eq!(s.ecs.port_cluster_name, "{service}.{port_name}");
        assert_eq!(s.cloud_map.cluster_name_prefix, "cloudmap.");
        assert!(s.validate().is_ok());
    }

    #[test]
    fn humantime_interval_and_lists_are_read() {
        let s = parse(
            r#"
            [aws]
            region = "eu-west-1"
            endpoint_url = "http://127.0.0.1:5000"
            [ecs]
            clusters = ["a", "b"]
            poll_interval = "1m 30s"
            include_services = ["web-*"]
            [cloud_map]
            namespaces = ["demo.local"]
            "#,
        )
        .unwrap();
        assert_eq!(s.ecs.poll_interval, Duration::from_secs(90));
        assert_eq!(s.ecs.clusters, ["a", "b"]);
        assert_eq!(s.aws.region.as_deref(), Some("eu-west-1"));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = parse("[ecs]\npoll_intervall = \"5s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("poll_intervall"), "{err}");
        let err = parse("[aws]\nregoin = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("regoin"), "{err}");
    }

    #[test]
    fn validation_reports_every_error_with_its_key_path() {
        let s = parse(
            r#"
            [aws]
            endpoint_url = "localhost:5000"
            [ecs]
            clusters = ["a", "", "a"]
            auto_discover_clusters = true
            poll_interval = "100ms"
            include_services = ["ok-*", "fine", "bad[glob"]
            exclude_services = ["{unclosed"]
            label_prefix = ""
            cluster_name = "{svc}"
            port_cluster_name = "{service}"
            [cloud_map]
            namespaces = ["x", "x"]
            "#,
        )
        .unwrap();
        let errors = s.validate().unwrap_err().0;
        let expected_prefixes = [
            "aws.endpoint_url:",
            "ecs.clusters: give either",
            "ecs.clusters[1]: empty",
            "ecs.clusters[2]: `a` is listed twice",
            "ecs.poll_interval: 100ms",
            "ecs.include_services[2]: invalid glob `bad[glob`",
            "ecs.exclude_services[0]: invalid glob",
            "ecs.label_prefix:",
            "ecs.cluster_name: unknown variable `{svc}`",
            "ecs.cluster_name: `{svc}` must contain `{service}`",
            "ecs.port_cluster_name: `{service}` must contain `{port_name}`",
            "cloud_map.namespaces[1]: `x` is listed twice",
        ];
        for prefix in expected_prefixes {
            assert!(
                errors.iter().any(|e| e.to_string().starts_with(prefix)),
                "no error starting with {prefix:?} in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), expected_prefixes.len(), "{errors:#?}");
    }

    #[test]
    fn events_are_off_by_default_and_need_exactly_one_queue_or_topic() {
        let s = parse("").unwrap();
        assert!(!s.events.enabled);
        assert_eq!(s.events.reconcile_interval, Duration::from_secs(300));
        assert_eq!(s.events.queue_prefix, "ecs-xds-");
        let fixed = parse("[events]\nenabled = true\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/1/q\"\nreconcile_interval = \"10m\"\n").unwrap();
        assert!(fixed.validate().is_ok());
        assert_eq!(fixed.events.reconcile_interval, Duration::from_secs(600));
        let fan_out =
            parse("[events]\nenabled = true\ntopic_arn = \"arn:aws:sns:us-east-1:1:ecs\"\n")
                .unwrap();
        assert!(fan_out.validate().is_ok());
        for (text, error) in [
            ("enabled = true", "events.enabled: needs"),
            (
                "enabled = true\nqueue_url = \"https://q\"\ntopic_arn = \"arn:aws:sns:r:1:t\"",
                "events.queue_url: give either",
            ),
            (
                "enabled = true\ntopic_arn = \"ecs\"",
                "events.topic_arn: `ecs`",
            ),
            ("enabled = true\nqueue_url = \"q\"", "events.queue_url: `q`"),
        ] {
            let errors = parse(&format!("[events]\n{text}\n"))
                .unwrap()
                .validate()
                .unwrap_err()
                .0;
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(errors[0].to_string().starts_with(error), "{errors:?}");
        }
    }

    #[test]
    fn events_values_are_checked_with_their_key_paths() {
        let s = parse(
            r#"
            [events]
            enabled = true
            topic_arn = "arn:aws:sns:us-east-1:1:ecs"
            queue_prefix = "bad prefix!"
            reconcile_interval = "10ms"
            wait_time = "25s"
            orphan_after = "1m"
            endpoint_url = "localhost"
            "#,
        )
        .unwrap();
        let errors = s.validate().unwrap_err().0;
        for key in [
            "events.endpoint_url",
            "events.queue_prefix",
            "events.reconcile_interval",
            "events.wait_time",
            "events.orphan_after",
        ] {
            assert!(errors.iter().any(|e| e.path == key), "{key} in {errors:#?}");
        }
        assert_eq!(errors.len(), 5, "{errors:#?}");
    }

    #[test]
    fn service_filter_applies_include_then_exclude() {
        let ecs = EcsSettings {
            include_services: vec!["web-*".into(), "api".into()],
            exclude_services: vec!["*-canary".into()],
            ..EcsSettings::default()
        };
        let f = ecs.service_filter();
        assert!(f.allows("web-front"));
        assert!(f.allows("api"));
        assert!(!f.allows("web-canary"));
        assert!(!f.allows("worker"));
        assert!(EcsSettings::default().service_filter().allows("anything"));
    }

    #[test]
    fn templates_render_known_variables() {
        assert_eq!(
            render_template(
                "{service}.{port_name}",
                &[("service", "web"), ("port_name", "http")]
            ),
            "web.http"
        );
    }
}
