use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HealthStatus;

use super::*;
use crate::synthesize::clusters::eds_cluster;
use crate::synthesize::endpoints::load_assignment;

fn snapshot(port: u16) -> Snapshot {
    Snapshot::builder()
        .cluster(eds_cluster("a", Duration::from_secs(1)))
        .endpoints(load_assignment(
            "a",
            [("127.0.0.1".to_string(), port, HealthStatus::Healthy)],
        ))
        .build()
}

#[test]
fn publishing_identical_content_changes_nothing_and_wakes_nobody() {
    let (cache, publisher) = Cache::new(NodeTypeResolver::default());
    assert_eq!(
        publisher.publish("sidecar", snapshot(1)).unwrap(),
        Published::Changed(ResourceType::ALL.to_vec())
    );
    let mut watch = cache.watch("sidecar", "", &Location::default());
    watch.borrow_and_update();
    assert_eq!(
        publisher.publish("sidecar", snapshot(1)).unwrap(),
        Published::Unchanged
    );
    assert!(!watch.has_changed().unwrap());
}

#[test]
fn publishing_new_content_reports_only_the_changed_types_and_wakes_watchers() {
    let (cache, publisher) = Cache::new(NodeTypeResolver::default());
    publisher.publish("sidecar", snapshot(1)).unwrap();
    let mut watch = cache.watch("sidecar", "", &Location::default());
    watch.borrow_and_update();
    let other = cache.watch("ingress", "", &Location::default());
    assert_eq!(
        publisher.publish("sidecar", snapshot(2)).unwrap(),
        Published::Changed(vec![ResourceType::Endpoint])
    );
    assert!(watch.has_changed().unwrap());
    assert!(
        !other.has_changed().unwrap(),
        "other node types are not woken"
    );
}

#[test]
fn an_inconsistent_snapshot_is_refused_and_the_served_one_kept() {
    let (cache, publisher) = Cache::new(NodeTypeResolver::default());
    publisher.publish("sidecar", snapshot(1)).unwrap();
    let before = cache.snapshot("sidecar").unwrap();
    let broken = Snapshot::builder()
        .cluster(eds_cluster("a", Duration::from_secs(1)))
        .build();
    assert!(publisher.publish("sidecar", broken).is_err());
    assert!(Arc::ptr_eq(&before, &cache.snapshot("sidecar").unwrap()));
}

#[test]
fn unknown_node_types_fall_back_when_configured() {
    let (cache, publisher) = Cache::new(NodeTypeResolver::new(
        NodeTypeSource::IdPrefix,
        Some("default".into()),
    ));
    publisher.publish("sidecar", snapshot(1)).unwrap();
    let node = |id: &str| Node {
        id: id.into(),
        ..Default::default()
    };
    assert_eq!(cache.resolve_node_type(&node("sidecar-1")), "sidecar");
    assert_eq!(cache.resolve_node_type(&node("gateway-1")), "default");
}

#[test]
fn each_zone_gets_its_own_snapshot_or_the_plain_one_and_only_its_streams_wake() {
    let (cache, publisher) = Cache::new(NodeTypeResolver::default());
    let mut a = cache.watch("sidecar", "", &Location::zone("zone-a"));
    let mut c = cache.watch("sidecar", "", &Location::zone("zone-c"));
    let zones = BTreeMap::from([("zone-a".to_owned(), snapshot(2))]);
    publisher
        .publish_places("sidecar", snapshot(1), zones)
        .unwrap();
    let endpoint_version = |w: &mut SnapshotWatch| {
        let current = w.borrow_and_update().clone().unwrap();
        current.version(ResourceType::Endpoint).clone()
    };
    let (plain, own) = (snapshot(1), snapshot(2));
    assert_eq!(
        endpoint_version(&mut a),
        *own.version(ResourceType::Endpoint)
    );
    assert_eq!(
        endpoint_version(&mut c),
        *plain.version(ResourceType::Endpoint)
    );
    assert_eq!(
        cache
            .snapshot_in("sidecar", "zone-b")
            .unwrap()
            .version(ResourceType::Endpoint),
        plain.version(ResourceType::Endpoint),
        "a zone nobody watched yet starts from the plain snapshot"
    );
    assert_eq!(cache.places("sidecar"), ["zone-a"]);

    // Only zone a's content changes: zone c's streams are not woken.
    let zones = BTreeMap::from([("zone-a".to_owned(), snapshot(3))]);
    publisher
        .publish_places("sidecar", snapshot(1), zones)
        .unwrap();
    assert!(a.has_changed().unwrap());
    assert!(!c.has_changed().unwrap());

    // Zone c gets endpoints of its own later: its existing streams move to them.
    let zones = BTreeMap::from([
        ("zone-a".to_owned(), snapshot(3)),
        ("zone-c".to_owned(), snapshot(4)),
    ]);
    publisher
        .publish_places("sidecar", snapshot(1), zones)
        .unwrap();
    assert!(c.has_changed().unwrap());
    assert_eq!(
        endpoint_version(&mut c),
        *snapshot(4).version(ResourceType::Endpoint)
    );
}

#[test]
fn an_inconsistent_zone_snapshot_refuses_the_whole_publish() {
    let (cache, publisher) = Cache::new(NodeTypeResolver::default());
    publisher.publish("sidecar", snapshot(1)).unwrap();
    let broken = Snapshot::builder()
        .cluster(eds_cluster("a", Duration::from_secs(1)))
        .build();
    let zones = BTreeMap::from([("zone-a".to_owned(), broken)]);
    assert!(publisher
        .publish_places("sidecar", snapshot(2), zones)
        .is_err());
    let served = cache.snapshot("sidecar").unwrap();
    assert_eq!(
        served.version(ResourceType::Endpoint),
        snapshot(1).version(ResourceType::Endpoint)
    );
}

#[test]
fn a_declaring_services_streams_get_its_set_and_follow_a_changed_declaration() {
    let (cache, publisher) = Cache::new(NodeTypeResolver::default());
    let mut web = cache.watch("sidecar", "web", &Location::default());
    let mut other = cache.watch("sidecar", "billing", &Location::default());
    let publish = |web_set: &str| {
        let mut snapshots = NodeTypeSnapshots::plain(snapshot(1));
        for (key, port) in [("orders", 2), ("orders,payments", 3)] {
            snapshots
                .backend_sets
                .insert(key.into(), (snapshot(port), BTreeMap::new()));
        }
        snapshots.callers.insert("web".into(), web_set.into());
        publisher.publish_all("sidecar", snapshots).unwrap()
    };
    let version = |w: &mut SnapshotWatch| {
        let current = w.borrow_and_update().clone().unwrap();
        current.version(ResourceType::Endpoint).clone()
    };
    publish("orders");
    assert_eq!(
        version(&mut web),
        *snapshot(2).version(ResourceType::Endpoint)
    );
    assert_eq!(
        version(&mut other),
        *snapshot(1).version(ResourceType::Endpoint)
    );
    assert_eq!(
        cache.backend_set("sidecar", "web").as_deref(),
        Some("orders")
    );
    assert_eq!(cache.backend_set("sidecar", "billing"), None);

    // The same publish again wakes nobody; a changed declaration wakes only `web`.
    assert_eq!(publish("orders"), Published::Unchanged);
    assert!(!web.has_changed().unwrap());
    publish("orders,payments");
    assert!(!other.has_changed().unwrap());
    assert_eq!(
        version(&mut web),
        *snapshot(3).version(ResourceType::Endpoint)
    );
    assert_eq!(
        cache
            .snapshot_for("sidecar", "web", &Location::zone("zone-x"))
            .unwrap()
            .version(ResourceType::Endpoint),
        snapshot(3).version(ResourceType::Endpoint)
    );
}

#[test]
fn a_node_is_served_its_zones_snapshot_else_its_regions_else_the_plain_one() {
    let (cache, publisher) = Cache::new(NodeTypeResolver::default());
    let at = |zone: &str, region: &str| Location {
        zone: zone.into(),
        region: region.into(),
    };
    let mut other_zone = cache.watch("sidecar", "", &at("us-east-1b", "us-east-1"));
    let places = BTreeMap::from([
        ("us-east-1a".to_owned(), snapshot(2)),
        ("us-east-1".to_owned(), snapshot(3)),
    ]);
    publisher
        .publish_places("sidecar", snapshot(1), places)
        .unwrap();
    let served = |location: Location| {
        let snapshot = cache.snapshot_for("sidecar", "", &location).unwrap();
        snapshot.version(ResourceType::Endpoint).clone()
    };
    let version = |port| snapshot(port).version(ResourceType::Endpoint).clone();
    assert_eq!(
        served(at("us-east-1a", "us-east-1")),
        version(2),
        "its zone"
    );
    assert_eq!(
        served(at("us-east-1a", "")),
        version(2),
        "its zone, no region"
    );
    assert_eq!(
        served(at("us-east-1b", "us-east-1")),
        version(3),
        "its region"
    );
    assert_eq!(
        served(at("", "us-east-1")),
        version(3),
        "its region, no zone"
    );
    assert_eq!(served(at("eu-west-1a", "eu-west-1")), version(1), "plain");
    assert_eq!(served(at("", "")), version(1), "plain");
    let current = other_zone.borrow_and_update().clone().unwrap();
    assert_eq!(*current.version(ResourceType::Endpoint), version(3));

    // Its zone gets a snapshot of its own later: the zone's stream moves to it.
    let places = BTreeMap::from([
        ("us-east-1b".to_owned(), snapshot(4)),
        ("us-east-1".to_owned(), snapshot(3)),
    ]);
    publisher
        .publish_places("sidecar", snapshot(1), places)
        .unwrap();
    let current = other_zone.borrow_and_update().clone().unwrap();
    assert_eq!(*current.version(ResourceType::Endpoint), version(4));
    assert_eq!(cache.places("sidecar"), ["us-east-1", "us-east-1b"]);
}
