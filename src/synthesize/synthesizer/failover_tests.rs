//! Regional failover: a cluster found in several regions is served to an Envoy with its own
//! region first (and, zone-aware, its zone before that), each (cluster, tiers) encoded once.

use std::sync::Arc;

use envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints;

use super::tests::{endpoint, endpoints_of, inventory, service, template, templates};
use super::*;
use crate::inventory::Health;

const ZONE_AWARE: &str = "[zone_aware]\nenabled = true\n";

/// `ip` in `zone` of the region the zone's name starts with.
fn in_zone(ip: &str, zone: &str) -> inventory::Endpoint {
    let mut e = endpoint(ip, Health::Healthy, zone, 1);
    e.locality.region = zone[..zone.len() - 1].to_owned();
    e
}

/// orders in us-east-1a, us-east-1b and eu-west-1a (merged from two regions); users only in
/// eu-west-1a.
fn two_regions() -> Inventory {
    let mut orders = service("orders", &[]);
    orders.endpoints = vec![
        in_zone("10.0.0.1", "us-east-1a"),
        in_zone("10.0.0.2", "us-east-1b"),
        in_zone("10.1.0.1", "eu-west-1a"),
    ];
    inventory([orders, service("users", &["10.1.1.1"])])
}

/// orders' (zone, priority) per locality in `snapshot`, in (region, zone) order.
fn priorities(snapshot: &Snapshot) -> Vec<(String, u32)> {
    let cla = endpoints_of(snapshot, "orders");
    let zone = |l: &LocalityLbEndpoints| l.locality.as_ref().unwrap().zone.clone();
    cla.endpoints
        .iter()
        .map(|l| (zone(l), l.priority))
        .collect()
}

fn tiers(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
    pairs.iter().map(|(z, p)| (z.to_string(), *p)).collect()
}

#[test]
fn any_node_type_serves_a_cluster_in_two_regions_with_the_envoys_region_first() {
    let synthesis = synthesize(&two_regions(), &templates(&[("edge", &template(""))]));
    let places = &synthesis.places["edge"];
    let names: Vec<&str> = places.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "eu-west-1",
            "eu-west-1a",
            "us-east-1",
            "us-east-1a",
            "us-east-1b"
        ],
        "each region, and each zone seen in it, which gets its region's"
    );
    let east = tiers(&[("eu-west-1a", 1), ("us-east-1a", 0), ("us-east-1b", 0)]);
    for place in ["us-east-1", "us-east-1a", "us-east-1b"] {
        assert_eq!(priorities(&places[place]), east, "{place}");
    }
    let west = tiers(&[("eu-west-1a", 0), ("us-east-1a", 1), ("us-east-1b", 1)]);
    for place in ["eu-west-1", "eu-west-1a"] {
        assert_eq!(priorities(&places[place]), west, "{place}");
    }
    let plain = &synthesis.snapshots["edge"];
    assert!(priorities(plain).iter().all(|(_, p)| *p == 0));
}

#[test]
fn a_zone_aware_node_type_serves_its_zone_then_its_region_then_the_others() {
    let templates = templates(&[("sidecar", &template(ZONE_AWARE))]);
    let synthesis = synthesize(&two_regions(), &templates);
    let places = &synthesis.places["sidecar"];
    assert_eq!(
        priorities(&places["us-east-1a"]),
        tiers(&[("eu-west-1a", 2), ("us-east-1a", 0), ("us-east-1b", 1)])
    );
    assert_eq!(
        priorities(&places["us-east-1b"]),
        tiers(&[("eu-west-1a", 2), ("us-east-1a", 1), ("us-east-1b", 0)])
    );
    assert_eq!(
        priorities(&places["us-east-1"]),
        tiers(&[("eu-west-1a", 1), ("us-east-1a", 0), ("us-east-1b", 0)]),
        "an Envoy stating only its region"
    );
    // eu-west-1 is not split by zone: its zone and its region are one tier, compacted to 0.
    assert_eq!(
        priorities(&places["eu-west-1a"]),
        tiers(&[("eu-west-1a", 0), ("us-east-1a", 1), ("us-east-1b", 1)])
    );
}

#[test]
fn a_service_opted_out_of_failover_serves_every_region_at_priority_0_but_keeps_zones() {
    let mut inventory = two_regions();
    let orders = inventory.clusters.get_mut("orders").unwrap();
    orders.overrides.region_failover = Some(false);
    let templates = templates(&[("edge", &template("")), ("sidecar", &template(ZONE_AWARE))]);
    let synthesis = synthesize(&inventory, &templates);
    assert!(synthesis.places["edge"].is_empty(), "nothing to prioritize");
    let places = &synthesis.places["sidecar"];
    let names: Vec<&str> = places.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["eu-west-1a", "us-east-1a", "us-east-1b"],
        "zones only"
    );
    assert_eq!(
        priorities(&places["us-east-1a"]),
        tiers(&[("eu-west-1a", 1), ("us-east-1a", 0), ("us-east-1b", 1)])
    );
}

#[test]
fn clusters_in_one_region_are_served_as_before() {
    let mut inventory = two_regions();
    let orders = inventory.clusters.get_mut("orders").unwrap();
    orders
        .endpoints
        .retain(|e| e.locality.region == "us-east-1");
    let templates = templates(&[("edge", &template("")), ("sidecar", &template(ZONE_AWARE))]);
    let synthesis = synthesize(&inventory, &templates);
    assert!(synthesis.places["edge"].is_empty());
    let names: Vec<&str> = synthesis.places["sidecar"]
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["us-east-1a", "us-east-1b"], "no region of its own");
    assert_eq!(
        priorities(&synthesis.places["sidecar"]["us-east-1a"]),
        tiers(&[("us-east-1a", 0), ("us-east-1b", 1)])
    );
}

#[test]
fn every_place_shares_all_but_its_prioritized_assignments_and_node_types_share_those() {
    let templates = templates(&[("edge", &template("")), ("sidecar", &template(ZONE_AWARE))]);
    let mut synthesizer = Synthesizer::new(templates);
    let first = synthesizer.synthesize(&two_regions());
    let (edge, sidecar) = (&first.places["edge"], &first.places["sidecar"]);
    let plain = &first.snapshots["edge"];
    for ty in ResourceType::ALL {
        for (name, resource) in plain.of(ty).resources() {
            let placed = edge["us-east-1"].of(ty).get(name).unwrap();
            let prioritized = ty == ResourceType::Endpoint && &**name == "orders";
            assert_eq!(Arc::ptr_eq(resource, placed), !prioritized, "{ty} {name}");
        }
    }
    let orders = |s: &Snapshot| s.of(ResourceType::Endpoint).get("orders").unwrap().clone();
    let region = orders(&edge["us-east-1"]);
    assert!(
        Arc::ptr_eq(&region, &orders(&edge["us-east-1a"])),
        "a zone's alias"
    );
    assert!(
        Arc::ptr_eq(&region, &orders(&sidecar["us-east-1"])),
        "node types"
    );

    // A change in users re-encodes users alone; orders' places keep their assignments.
    let mut changed = two_regions();
    changed.clusters.get_mut("users").unwrap().endpoints[0].health = Health::Draining;
    let second = synthesizer.synthesize(&changed);
    assert_eq!(second.encoded, 1, "users' plain assignment");
    let kept = orders(&second.places["sidecar"]["us-east-1a"]);
    assert!(Arc::ptr_eq(&kept, &orders(&sidecar["us-east-1a"])));

    // A change in orders re-encodes it once per distinct tiers: plain, 2 regions, 3 zones.
    changed.clusters.get_mut("orders").unwrap().endpoints[0].health = Health::Draining;
    assert_eq!(synthesizer.synthesize(&changed).encoded, 6);
}
