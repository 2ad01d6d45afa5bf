//! Unit tests of reading tags and labels.

use std::time::Duration;

use super::*;
use crate::inventory::{CircuitBreakers, OutlierDetection, RevisionWeight};

/// The service-wide labels read from service tags `ecs-xds.{key}` = value of the ECS service
/// `whose`, and the warnings.
fn service_of_tags(tags: &[(&str, &str)], whose: &str) -> (ServiceLabels, Vec<String>) {
    let tags: BTreeMap<String, String> = tags
        .iter()
        .map(|(k, v)| (format!("ecs-xds.{k}"), v.to_string()))
        .collect();
    let (none, container) = (BTreeMap::new(), ContainerDef::default());
    let mut warnings = BTreeSet::new();
    let whose = format!("ECS service {whose}");
    let service = Labels::new("ecs-xds.", &tags, &none, whose, &mut warnings).service(&container);
    (service, warnings.into_iter().collect())
}

/// Service tags `ecs-xds.{key}` = value → (route, breakers, outlier, zone-aware), warnings.
fn parsed(
    tags: &[(&str, &str)],
) -> (
    (RoutePolicy, CircuitBreakers, OutlierDetection, Option<bool>),
    Vec<String>,
) {
    let (service, warnings) = service_of_tags(tags, "demo/web");
    let o = service.overrides;
    let policy = (
        service.route,
        o.circuit_breakers,
        o.outlier_detection,
        o.zone_aware,
    );
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
            warnings[0].starts_with(&format!("ECS service demo/web: ecs-xds.{key}=`{value}`: "))
                && warnings[0].contains(why),
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

#[test]
fn a_service_tag_wins_over_a_task_tag_which_wins_over_a_container_label() {
    let service_tags: BTreeMap<String, String> = [("ecs-xds.timeout".into(), "1s".into())].into();
    let task_tags: BTreeMap<String, String> = [
        ("ecs-xds.timeout".into(), "2s".into()),
        ("ecs-xds.retries".into(), "2".into()),
    ]
    .into();
    let mut container = ContainerDef::default();
    for (key, value) in [("timeout", "3s"), ("retries", "3"), ("weight", "7")] {
        container
            .labels
            .insert(format!("ecs-xds.{key}"), value.into());
    }
    let mut warnings = BTreeSet::new();
    let whose = "ECS service demo/web".to_owned();
    let mut labels = Labels::new("ecs-xds.", &service_tags, &task_tags, whose, &mut warnings);
    let service = labels.service(&container);
    assert_eq!(service.route.timeout, Some(Duration::from_secs(1)));
    assert_eq!(service.route.retries, Some(2));
    assert_eq!(service.weight, 7);
    assert!(warnings.is_empty(), "{warnings:?}");
}

fn security(tags: &[(&str, &str)]) -> (Security, Vec<String>) {
    let (service, warnings) = service_of_tags(tags, "demo/orders");
    (service.security, warnings)
}

#[test]
fn security_tags_are_read_and_a_bad_one_is_marked_invalid_not_dropped() {
    let (good, warnings) = security(&[
        ("mtls", "permissive"),
        ("allow-from", "web api"),
        ("authz", "shadow"),
    ]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(good.mtls, Some(MtlsMode::Permissive));
    let callers = vec!["api".to_owned(), "web".to_owned()];
    assert_eq!(good.allow_from, Some(AllowFrom::Services(callers)));
    assert_eq!(good.authz, Some(AuthzMode::Shadow));
    let (bad, warnings) = security(&[("mtls", "on"), ("allow-from", "web *"), ("authz", "audit")]);
    assert_eq!(bad.mtls, None, "the node type's mode");
    assert_eq!(bad.allow_from, Some(AllowFrom::Invalid));
    assert_eq!(bad.authz, Some(AuthzMode::Invalid));
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    let allow = warnings.iter().find(|w| w.contains("allow-from")).unwrap();
    assert!(
        allow.starts_with("ECS service demo/orders: ecs-xds.allow-from=`web *`")
            && allow.contains("keeping this service's previous policy"),
        "{allow}"
    );
    let (none, _) = security(&[]);
    assert!(none.is_empty());
}

#[test]
fn hosts_and_protocol_tags_name_a_service_for_redirected_traffic() {
    let tags = [
        ("hosts", "Orders.prod.local checkout:8080 *.orders.internal"),
        ("protocol", "TCP"),
    ];
    let ((route, ..), warnings) = parsed(&tags);
    assert!(warnings.is_empty(), "{warnings:?}");
    let hosts = ["orders.prod.local", "checkout:8080", "*.orders.internal"];
    assert_eq!(route.hosts, hosts.map(String::from));
    assert_eq!(route.protocol, Some(Protocol::Tcp));
    let ((route, ..), warnings) = parsed(&[("hosts", "orders/prod"), ("protocol", "udp")]);
    assert_eq!((route.hosts.len(), route.protocol), (0, None));
    let hosts = warnings
        .iter()
        .find(|w| w.contains("ecs-xds.hosts"))
        .unwrap();
    assert!(
        hosts.contains("`orders/prod` is not a host name"),
        "{hosts}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("ecs-xds.protocol=`udp`")),
        "{warnings:?}"
    );
}

#[test]
fn region_failover_is_a_boolean_a_bad_value_of_which_leaves_the_default() {
    let (off, warnings) = service_of_tags(&[("region-failover", "false")], "demo/web");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(off.overrides.region_failover, Some(false));
    let (bad, warnings) = service_of_tags(&[("region-failover", "maybe")], "demo/web");
    assert_eq!(bad.overrides.region_failover, None);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("ecs-xds.region-failover=`maybe`"),
        "{warnings:?}"
    );
    let (unset, _) = service_of_tags(&[], "demo/web");
    assert_eq!(unset.overrides.region_failover, None);
}
