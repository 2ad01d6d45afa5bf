//! Every ECS tag and docker label ecs-xds reads, in one place: one lookup order, one parse per
//! key, one warning per bad value.
//!
//! `<prefix>` is `ecs.label_prefix` (default `ecs-xds.`). A key is looked up on the ECS
//! service's tags, then the task's tags, then the container's docker labels; the first found
//! wins. Tags win because they can change at run time, while a label change needs a new
//! task-definition revision. Service-wide keys read the labels of the container serving the
//! (first) selected port.
//!
//! | key | value | becomes |
//! | --- | --- | --- |
//! | `enable` | boolean | expose the service (default `ecs.exposed_by_default`); on a container label, that container alone |
//! | `ignore` | boolean, container label only | never an endpoint (the Envoy sidecar); so is any container in `ecs.ignore_container_names` |
//! | `port` | a port mapping name or a container port | expose that one port only, as the unnamed cluster `ecs.cluster_name` |
//! | `cluster-name` | name | replaces `{service}` in the cluster name templates |
//! | `weight` | 1 to 128 | the endpoints' load-balancing weight, per task (a canary revision may differ) |
//! | `lb-policy` | `round_robin`, `least_request`, `random`, `ring_hash`, `maglev` | the cluster's `lb_policy` |
//! | `connect-timeout` | duration | the cluster's `connect_timeout` |
//! | `http2` | boolean | speak HTTP/2 to the endpoints (also implied by an `appProtocol` of `http2` or `grpc`) |
//! | `timeout` | duration (`0s`: none) | the generated route's timeout |
//! | `idle-timeout` | duration | the route's idle timeout |
//! | `retries` | 0 to 10 (0: no retries) | `retry_policy.num_retries` |
//! | `retry-on` | Envoy conditions, separated by spaces or commas | `retry_policy.retry_on` |
//! | `per-try-timeout` | duration | `retry_policy.per_try_timeout` |
//! | `max-connections`, `max-pending-requests`, `max-requests`, `max-retries` | 1 to 4294967295 | the cluster's DEFAULT circuit breaker thresholds |
//! | `outlier-consecutive-5xx` | count | `outlier_detection.consecutive_5xx` |
//! | `outlier-interval`, `outlier-base-ejection-time` | duration | `outlier_detection.interval`, `base_ejection_time` |
//! | `outlier-max-ejection-percent` | 0 to 100 | `outlier_detection.max_ejection_percent` |
//! | `weights` | `12=10 11=90` (revision=weight, spaces or commas) | a weighted split across task-definition revisions |
//! | `zone-aware` | boolean | `false`: this service's endpoints are served without zone priorities |
//! | `region-failover` | boolean | `false`: a service found in several regions is served with every region at priority 0, not the Envoy's own region first (`docs/failover.md`) |
//! | `backends` | names or globs, spaces or commas | what the service calls (`discover::backends`) |
//! | `mtls` | `strict`, `permissive`, `off` | how its Envoy takes connections and how callers connect to it (over the node type's `[mtls] mode`) |
//! | `allow-from` | ECS service names, spaces or commas | only these services' Envoys may call it (RBAC on its ingress); a bad value keeps its previous policy |
//! | `authz` | `enforce`, `shadow` | `shadow`: the rules are evaluated and counted, not enforced; a bad value keeps its previous mode |
//! | `hosts` | host names, spaces or commas (`orders.prod.local checkout`) | more domains of its virtual host where the app's traffic is intercepted (`[interception]`) |
//! | `protocol` | `http`, `tcp` | `tcp`: redirected connections to it are never inspected for HTTP (a server that speaks first, like MySQL's) |
//!
//! Booleans are `true`/`yes`/`1` and `false`/`no`/`0`, in any case. Lists take spaces as well as
//! commas because ECS tag values cannot hold a comma (letters, digits, spaces and
//! `_ . : / = + - @` only); docker labels can hold either.
//!
//! Only parsed here, into plain values on the inventory; applying them is synthesis's job. A
//! value that does not parse is one inventory warning naming the service, the key and why
//! (`ECS service demo/web: ecs-xds.retries=`three`: not a whole number from 0 to 10; using the
//! template's default`); that one setting falls back and nothing else changes.

use std::collections::{BTreeMap, BTreeSet};

use crate::aws::ContainerDef;
use crate::inventory::{
    parse_allow_from, parse_authz, AllowFrom, AuthzMode, ClusterOverrides, LbPolicy, MtlsMode,
    Protocol, RoutePolicy, Security,
};

mod values;

use values::{boolean, count, duration, hosts, retry_on, weights};

/// What a service asks for with its service-wide keys, parsed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceLabels {
    /// Replaces `{service}` in the cluster name templates.
    pub cluster_name: Option<String>,
    pub weight: u32,
    /// `http2` here is the label's; an `appProtocol` may still imply it.
    pub overrides: ClusterOverrides,
    pub route: RoutePolicy,
    pub backends: Option<Vec<String>>,
    /// `mtls`, `allow-from` and `authz` (the workload is the mapping's to fill in).
    pub security: Security,
}

/// Where one task's keys are looked up, and where its warnings go.
pub(crate) struct Labels<'a> {
    prefix: &'a str,
    service_tags: &'a BTreeMap<String, String>,
    task_tags: &'a BTreeMap<String, String>,
    /// `ECS service demo/web`: the start of every warning.
    whose: String,
    warnings: &'a mut BTreeSet<String>,
}

impl<'a> Labels<'a> {
    pub fn new(
        prefix: &'a str,
        service_tags: &'a BTreeMap<String, String>,
        task_tags: &'a BTreeMap<String, String>,
        whose: String,
        warnings: &'a mut BTreeSet<String>,
    ) -> Self {
        Labels {
            prefix,
            service_tags,
            task_tags,
            whose,
            warnings,
        }
    }

    /// `ecs.label_prefix`, for messages.
    pub fn prefix(&self) -> &'a str {
        self.prefix
    }

    /// The value of `key` from a tag (the service's, then the task's).
    pub fn tag(&self, key: &str) -> Option<&'a str> {
        let key = format!("{}{key}", self.prefix);
        (self.service_tags.get(&key))
            .or_else(|| self.task_tags.get(&key))
            .map(String::as_str)
    }

    /// The value of `key` from `container`'s own docker label.
    pub fn label(&self, key: &str, container: &'a ContainerDef) -> Option<&'a str> {
        let key = format!("{}{key}", self.prefix);
        container.labels.get(&key).map(String::as_str)
    }

    /// The value of `key`: a tag, else `container`'s label.
    pub fn value(&self, key: &str, container: &'a ContainerDef) -> Option<&'a str> {
        self.tag(key).or_else(|| self.label(key, container))
    }

    /// A problem a human should fix, about this service.
    pub fn warn(&mut self, what: String) {
        self.warnings.insert(format!("{}: {what}", self.whose));
    }

    /// `value` of `key` parsed, when there is one; a value that does not parse is one warning
    /// (`{prefix}{key}=`{value}`: {why}; {otherwise}`) and `None`.
    pub fn parse<T>(
        &mut self,
        key: &str,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, String>,
        otherwise: &str,
    ) -> Option<T> {
        let value = value?;
        match parse(value) {
            Ok(parsed) => Some(parsed),
            Err(why) => {
                let prefix = self.prefix;
                self.warn(format!("{prefix}{key}=`{value}`: {why}; {otherwise}"));
                None
            }
        }
    }

    /// A boolean `value` of `key`, or `default` (a bad value is a warning).
    pub fn flag(&mut self, key: &str, value: Option<&str>, default: bool) -> bool {
        let otherwise = format!("using {default}");
        self.parse(key, value, boolean, &otherwise)
            .unwrap_or(default)
    }

    /// Every service-wide key, from the tags, then `container`'s labels.
    pub fn service(&mut self, container: &'a ContainerDef) -> ServiceLabels {
        let v: Values<'a> = SERVICE_KEYS
            .iter()
            .filter_map(|key| Some((*key, self.value(key, container)?)))
            .collect();
        let any = count(1, u32::MAX);
        let mut overrides = ClusterOverrides {
            lb_policy: self.at(&v, "lb-policy", |v| v.parse::<LbPolicy>()),
            connect_timeout: self.at(&v, "connect-timeout", duration),
            http2: self.at(&v, "http2", boolean),
            zone_aware: self.at(&v, "zone-aware", boolean),
            region_failover: self.at(&v, "region-failover", boolean),
            ..ClusterOverrides::default()
        };
        let breakers = &mut overrides.circuit_breakers;
        breakers.max_connections = self.at(&v, "max-connections", &any);
        breakers.max_pending_requests = self.at(&v, "max-pending-requests", &any);
        breakers.max_requests = self.at(&v, "max-requests", &any);
        breakers.max_retries = self.at(&v, "max-retries", &any);
        let outlier = &mut overrides.outlier_detection;
        outlier.consecutive_5xx = self.at(&v, "outlier-consecutive-5xx", &any);
        outlier.interval = self.at(&v, "outlier-interval", duration);
        outlier.base_ejection_time = self.at(&v, "outlier-base-ejection-time", duration);
        outlier.max_ejection_percent = self.at(&v, "outlier-max-ejection-percent", count(0, 100));
        ServiceLabels {
            cluster_name: v.get("cluster-name").map(|name| (*name).to_owned()),
            weight: (self.parse("weight", v.get("weight").copied(), count(1, 128), "using 1"))
                .unwrap_or(1),
            route: self.route(&v),
            overrides,
            backends: self.backends(v.get("backends").copied()),
            security: self.security(&v),
        }
    }

    /// `mtls` (a bad value: the node type's mode), `allow-from` and `authz` (a bad value:
    /// marked invalid, so synthesis keeps the service's previous policy).
    fn security(&mut self, v: &Values<'a>) -> Security {
        let keep = "keeping this service's previous policy (or denying every caller)";
        let allow_from = v.get("allow-from").map(|value| {
            match self.parse("allow-from", Some(value), parse_allow_from, keep) {
                Some(services) => AllowFrom::Services(services),
                None => AllowFrom::Invalid,
            }
        });
        let authz = v.get("authz").map(|value| {
            let keep = "keeping this service's previous mode (or enforcing)";
            (self.parse("authz", Some(value), parse_authz, keep)).unwrap_or(AuthzMode::Invalid)
        });
        Security {
            workload: None,
            merged: Vec::new(),
            mtls: self.at(v, "mtls", |v| v.parse::<MtlsMode>()),
            allow_from,
            authz,
        }
    }

    fn route(&mut self, v: &Values<'a>) -> RoutePolicy {
        RoutePolicy {
            timeout: self.at(v, "timeout", duration),
            idle_timeout: self.at(v, "idle-timeout", duration),
            retries: self.at(v, "retries", count(0, 10)),
            retry_on: self.at(v, "retry-on", retry_on),
            per_try_timeout: self.at(v, "per-try-timeout", duration),
            weights: self.at(v, "weights", weights).unwrap_or_default(),
            hosts: self.at(v, "hosts", hosts).unwrap_or_default(),
            protocol: self.at(v, "protocol", |v| v.parse::<Protocol>()),
        }
    }

    /// The service-wide `key` of `v` parsed; a bad value keeps the template's default.
    fn at<T>(
        &mut self,
        v: &Values<'a>,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = v.get(key).copied();
        self.parse(key, value, parse, "using the template's default")
    }

    /// A `backends` value, parsed (a bad one declares nothing).
    pub fn backends(&mut self, value: Option<&str>) -> Option<Vec<String>> {
        let otherwise = "its Envoys get the node type's whole scope";
        self.parse("backends", value, super::backends::parse, otherwise)
    }
}

/// The service-wide keys found, by key.
type Values<'a> = BTreeMap<&'static str, &'a str>;

/// The keys [`Labels::service`] reads.
const SERVICE_KEYS: &[&str] = &[
    "cluster-name",
    "weight",
    "lb-policy",
    "connect-timeout",
    "http2",
    "zone-aware",
    "region-failover",
    "timeout",
    "idle-timeout",
    "retries",
    "retry-on",
    "per-try-timeout",
    "weights",
    "max-connections",
    "max-pending-requests",
    "max-requests",
    "max-retries",
    "outlier-consecutive-5xx",
    "outlier-interval",
    "outlier-base-ejection-time",
    "outlier-max-ejection-percent",
    "backends",
    "mtls",
    "allow-from",
    "authz",
    "hosts",
    "protocol",
];

#[cfg(test)]
mod tests;
