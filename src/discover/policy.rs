//! Traffic policy a service asks for with tags or docker labels (`<prefix>` is
//! `ecs.label_prefix`, default `ecs-xds.`; service tag, then task tag, then container label):
//!
//! | key | value | becomes |
//! | --- | --- | --- |
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
//!
//! Lists take spaces as well as commas because ECS tag values cannot hold a comma (letters,
//! digits, spaces and `_ . : / = + - @` only); docker labels can hold either.
//!
//! Only parsed here, into plain values on the inventory; applying them is synthesis's job. A
//! value that does not parse is an inventory warning naming the service, the key and why; that
//! one setting keeps the template's default and nothing else changes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the generated route to a service. `None`: the template's `[route_defaults]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePolicy {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub timeout: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub idle_timeout: Option<Duration>,
    /// `Some(0)` turns retries off, whatever the template says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub per_try_timeout: Option<Duration>,
    /// Canary or blue/green: traffic shares by task-definition revision, in the order written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<RevisionWeight>,
}

impl RoutePolicy {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One `revision=weight` of `<prefix>weights`. Weights are relative (percentages, usually).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionWeight {
    pub revision: u32,
    pub weight: u32,
}

/// The DEFAULT-priority circuit breaker thresholds a service asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreakers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

impl CircuitBreakers {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Outlier detection settings a service asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub interval: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub base_ejection_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

impl OutlierDetection {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Envoy's `retry_on` conditions (HTTP and gRPC), so a typo is caught where it is written
/// rather than by Envoy rejecting the whole route configuration.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// What a retry policy retries on when a service sets `retries` and neither it nor the
/// template says on what: failures that never reached the app or that the app reports as
/// server errors, as App Mesh's `server-error` plus `stream-error` did.
pub const DEFAULT_RETRY_ON: &str = "5xx,connect-failure,refused-stream,reset";

/// Parses every policy key with `lookup` (the tag or label's value, if set); each bad value
/// goes to `warn` (as `key=value: why`) and is left out.
pub(crate) fn parse(
    lookup: impl Fn(&str) -> Option<String>,
    mut warn: impl FnMut(String),
) -> (RoutePolicy, CircuitBreakers, OutlierDetection, Option<bool>) {
    let mut read = |key: &str, check: &dyn Fn(&str) -> Result<(), String>| {
        let value = lookup(key)?;
        match check(&value) {
            Ok(()) => Some(value),
            Err(why) => {
                warn(format!(
                    "{key}=`{value}`: {why}; using the template's default"
                ));
                None
            }
        }
    };
    let duration = |v: &str| {
        humantime::parse_duration(v)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let count = |low: u32, high: u32| {
        move |v: &str| match v.parse::<u32>() {
            Ok(n) if (low..=high).contains(&n) => Ok(()),
            _ => Err(format!("not a whole number from {low} to {high}")),
        }
    };
    let as_duration =
        |v: Option<String>| v.map(|v| humantime::parse_duration(&v).expect("checked"));
    let as_count = |v: Option<String>| v.map(|v| v.parse::<u32>().expect("checked"));

    let route = RoutePolicy {
        timeout: as_duration(read("timeout", &duration)),
        idle_timeout: as_duration(read("idle-timeout", &duration)),
        retries: as_count(read("retries", &count(0, 10))),
        retry_on: read("retry-on", &retry_on).map(|v| normalize_list(&v)),
        per_try_timeout: as_duration(read("per-try-timeout", &duration)),
        weights: read("weights", &|v| weights(v).map(drop))
            .map(|v| weights(&v).expect("checked"))
            .unwrap_or_default(),
    };
    let breakers = CircuitBreakers {
        max_connections: as_count(read("max-connections", &count(1, u32::MAX))),
        max_pending_requests: as_count(read("max-pending-requests", &count(1, u32::MAX))),
        max_requests: as_count(read("max-requests", &count(1, u32::MAX))),
        max_retries: as_count(read("max-retries", &count(1, u32::MAX))),
    };
    let outlier = OutlierDetection {
        consecutive_5xx: as_count(read("outlier-consecutive-5xx", &count(1, u32::MAX))),
        interval: as_duration(read("outlier-interval", &duration)),
        base_ejection_time: as_duration(read("outlier-base-ejection-time", &duration)),
        max_ejection_percent: as_count(read("outlier-max-ejection-percent", &count(0, 100))),
    };
    let zone_aware = read("zone-aware", &|v| {
        super::mapping::parse_bool(v)
            .map(drop)
            .map_err(|_| "not a boolean (true/yes/1, false/no/0)".to_owned())
    })
    .map(|v| super::mapping::parse_bool(&v).expect("checked"));
    (route, breakers, outlier, zone_aware)
}

/// The items of a list written with spaces and/or commas.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
}

fn retry_on(value: &str) -> Result<(), String> {
    if items(value).next().is_none() {
        return Err("empty".to_owned());
    }
    let unknown: Vec<&str> = items(value).filter(|c| !RETRY_ON.contains(c)).collect();
    match unknown.as_slice() {
        [] => Ok(()),
        _ => Err(format!(
            "unknown retry condition(s) {unknown:?}; Envoy knows {}",
            RETRY_ON.join(", ")
        )),
    }
}

/// Envoy's form of a list: comma-separated, no spaces.
fn normalize_list(value: &str) -> String {
    items(value).collect::<Vec<_>>().join(",")
}

/// `12=10 11=90` (or `12=10,11=90`): revision=weight pairs, each revision once, weights not
/// all zero.
fn weights(value: &str) -> Result<Vec<RevisionWeight>, String> {
    let mut out: Vec<RevisionWeight> = Vec::new();
    for pair in items(value) {
        let parsed = pair.split_once('=').and_then(|(r, w)| {
            Some((r.trim().parse::<u32>().ok()?, w.trim().parse::<u32>().ok()?))
        });
        let Some((revision, weight)) = parsed else {
            return Err(format!(
                "`{pair}` is not revision=weight (e.g. `12=10 11=90`)"
            ));
        };
        if out.iter().any(|w| w.revision == revision) {
            return Err(format!("revision {revision} is given twice"));
        }
        out.push(RevisionWeight { revision, weight });
    }
    if out.iter().all(|w| w.weight == 0) {
        return Err("every weight is 0: that would send traffic nowhere".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parsed(
        tags: &[(&str, &str)],
    ) -> (
        (RoutePolicy, CircuitBreakers, OutlierDetection, Option<bool>),
        Vec<String>,
    ) {
        let tags: BTreeMap<String, String> = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut warnings = Vec::new();
        let policy = parse(|k| tags.get(k).cloned(), |w| warnings.push(w));
        (policy, warnings)
    }

    #[test]
    fn every_key_is_read_into_its_setting() {
        let ((route, breakers, outlier, zone), warnings) = parsed(&[
            ("timeout", "2s"),
            ("idle-timeout", "1m"),
            ("retries", "3"),
            ("retry-on", "5xx, reset"),
            ("per-try-timeout", "500ms"),
            ("weights", "12=10,11=90"),
            ("max-connections", "100"),
            ("max-pending-requests", "10"),
            ("max-requests", "200"),
            ("max-retries", "5"),
            ("outlier-consecutive-5xx", "3"),
            ("outlier-interval", "1s"),
            ("outlier-base-ejection-time", "10s"),
            ("outlier-max-ejection-percent", "100"),
            ("zone-aware", "no"),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(route.timeout, Some(Duration::from_secs(2)));
        assert_eq!(route.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(route.retries, Some(3));
        assert_eq!(route.retry_on.as_deref(), Some("5xx,reset"));
        assert_eq!(route.per_try_timeout, Some(Duration::from_millis(500)));
        assert_eq!(
            route.weights,
            [
                RevisionWeight {
                    revision: 12,
                    weight: 10
                },
                RevisionWeight {
                    revision: 11,
                    weight: 90
                }
            ]
        );
        assert_eq!(breakers.max_connections, Some(100));
        assert_eq!(breakers.max_pending_requests, Some(10));
        assert_eq!(breakers.max_requests, Some(200));
        assert_eq!(breakers.max_retries, Some(5));
        assert_eq!(outlier.consecutive_5xx, Some(3));
        assert_eq!(outlier.interval, Some(Duration::from_secs(1)));
        assert_eq!(outlier.base_ejection_time, Some(Duration::from_secs(10)));
        assert_eq!(outlier.max_ejection_percent, Some(100));
        assert_eq!(zone, Some(false));
    }

    #[test]
    fn lists_take_spaces_as_ecs_tags_cannot_hold_commas() {
        let ((route, ..), warnings) = parsed(&[
            ("weights", "12=10 11=90"),
            ("retry-on", "5xx  reset, connect-failure"),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(route.weights.len(), 2);
        assert_eq!(route.retry_on.as_deref(), Some("5xx,reset,connect-failure"));
    }

    #[test]
    fn each_malformed_value_is_one_warning_naming_the_key_and_leaves_the_rest() {
        for (key, value, why) in [
            ("retries", "three", "not a whole number from 0 to 10"),
            ("retries", "11", "not a whole number from 0 to 10"),
            ("timeout", "soon", "expected number"),
            ("retry-on", "5xx,oops", "unknown retry condition"),
            ("weights", "12:10", "is not revision=weight"),
            ("weights", "12=0,11=0", "traffic nowhere"),
            ("weights", "12=10,12=90", "given twice"),
            ("max-connections", "0", "from 1 to"),
            ("outlier-max-ejection-percent", "150", "from 0 to 100"),
            ("zone-aware", "maybe", "not a boolean"),
        ] {
            let ((route, breakers, outlier, zone), warnings) =
                parsed(&[(key, value), ("max-requests", "7")]);
            assert_eq!(warnings.len(), 1, "{key}={value}: {warnings:?}");
            assert!(
                warnings[0].starts_with(&format!("{key}=`{value}`: ")) && warnings[0].contains(why),
                "{key}={value}: {}",
                warnings[0]
            );
            assert!(
                route.is_empty() && outlier.is_empty() && zone.is_none(),
                "{key}"
            );
            assert_eq!(
                breakers.max_requests,
                Some(7),
                "the other key still applies"
            );
            assert_eq!(breakers.max_connections, None);
        }
    }
}
