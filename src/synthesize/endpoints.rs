//! Endpoint (EDS) builders.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, Address, HealthStatus, Locality, Metadata,
    SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::{value, Struct, UInt32Value, Value};

use crate::inventory::{self, Health};

/// A discovered cluster's endpoints, with health, load-balancing weight, locality and, for ECS
/// tasks, their revision as metadata, plus their deployment for a service that splits by
/// revision (what its canary routes and subsets select on).
///
/// One `LocalityLbEndpoints` per (region, zone), in that order, endpoints sorted by (address,
/// port, id) within each: the same endpoints give the same bytes in any order. Each locality's
/// weight is the sum of its endpoints' weights: gRPC clients ignore a locality without one, and
/// Envoy uses it only when locality-weighted balancing is on.
///
/// With `tiers`, for an Envoy in that zone and region: the localities it should reach first
/// at priority 0, then the rest of its region, then every other region, numbered from 0 with
/// no gap (what Envoy's priority spill-over needs: traffic moves to priority 1 only as the
/// healthy share of priority 0 falls, through unhealthy, draining or ejected endpoints). Plain
/// tiers (see [`Tiers::of`]) put every locality at priority 0: the bytes of the plain
/// assignment, shared with it.
pub fn discovered_load_assignment(
    cluster: &inventory::Cluster,
    tiers: &Tiers,
) -> ClusterLoadAssignment {
    let mut localities: BTreeMap<(&str, &str), Vec<&inventory::Endpoint>> = BTreeMap::new();
    // One endpoint per address: gRPC clients refuse an assignment listing one twice (Cloud Map
    // can hold two instances at one address while an instance is re-registered).
    let mut seen = std::collections::HashSet::new();
    for e in cluster
        .endpoints
        .iter()
        .filter(|e| seen.insert((e.address.as_str(), e.port)))
    {
        let zone = e.locality.zone.as_deref().unwrap_or_default();
        localities
            .entry((&e.locality.region, zone))
            .or_default()
            .push(e);
    }
    // Each locality's priority is the rank of its distance among those present: nearest at 0
    // and none skipped, so that priority 1 is always the next tier the cluster has.
    let distances: BTreeSet<(bool, bool)> = (localities.keys())
        .map(|(r, z)| tiers.distance(r, z))
        .collect();
    let priority = |region: &str, zone: &str| {
        let distance = tiers.distance(region, zone);
        distances.iter().take_while(|d| **d != distance).count() as u32
    };
    let with_deployment = !cluster.route.weights.is_empty();
    let endpoints = localities
        .into_iter()
        .map(|((region, zone), mut endpoints)| {
            endpoints.sort_by(|a, b| (&a.address, a.port, &a.id).cmp(&(&b.address, b.port, &b.id)));
            let weight: u32 = endpoints.iter().map(|e| e.weight.max(1)).sum();
            LocalityLbEndpoints {
                locality: Some(Locality {
                    region: region.to_owned(),
                    zone: zone.to_owned(),
                    sub_zone: String::new(),
                }),
                lb_endpoints: endpoints
                    .into_iter()
                    .map(|e| lb_endpoint(e, with_deployment))
                    .collect(),
                load_balancing_weight: Some(UInt32Value { value: weight }),
                priority: priority(region, zone),
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.name.clone(),
        endpoints,
        ..Default::default()
    }
}

/// `cla` with a weight on every locality that has none (the sum of its endpoints' weights, 1
/// for an endpoint without one) and a locality message on every group: gRPC clients ignore a
/// locality without a weight and refuse one without a locality message. For pushed endpoints;
/// Envoy reads neither unless asked, so nothing changes for it.
pub fn with_locality_weights(mut cla: ClusterLoadAssignment) -> ClusterLoadAssignment {
    for locality in &mut cla.endpoints {
        if locality.load_balancing_weight.is_none_or(|w| w.value == 0) {
            let weight = locality
                .lb_endpoints
                .iter()
                .map(|e| e.load_balancing_weight.map_or(1, |w| w.value.max(1)))
                .sum::<u32>()
                .max(1);
            locality.load_balancing_weight = Some(UInt32Value { value: weight });
        }
        locality.locality.get_or_insert_with(Locality::default);
    }
    cla
}

/// Which of a cluster's endpoints an Envoy gets first: those of its zone, then those of its
/// region, then the rest. Each is `None` when it makes no difference to the cluster (see
/// [`Tiers::of`]), so that Envoys in places that see a cluster alike share its assignment;
/// both `None` is the plain assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tiers {
    pub zone: Option<String>,
    pub region: Option<String>,
}

impl Tiers {
    /// The tiers of `cluster` for an Envoy in `zone` (given for zone-aware node types only)
    /// of `region`. The zone counts when it holds some but not all of the cluster's endpoints
    /// and the service did not opt out (`zone-aware = false`); the region likewise
    /// (`region-failover = false`): a place holding all or none of them would send everything
    /// to one priority anyway.
    pub fn of(cluster: &inventory::Cluster, zone: Option<&str>, region: Option<&str>) -> Tiers {
        let overrides = &cluster.overrides;
        let zone = zone.filter(|_| overrides.zone_aware != Some(false));
        let region = region.filter(|_| overrides.region_failover != Some(false));
        let zone = zone.filter(|z| splits(cluster, |l| l.zone.as_deref() == Some(z)));
        let region = region.filter(|r| splits(cluster, |l| l.region == *r));
        Tiers {
            zone: zone.map(str::to_owned),
            region: region.map(str::to_owned),
        }
    }

    /// Whether every locality is at priority 0.
    pub fn is_plain(&self) -> bool {
        self.zone.is_none() && self.region.is_none()
    }

    /// How far a locality is from the Envoy: (in another region, in another zone).
    fn distance(&self, region: &str, zone: &str) -> (bool, bool) {
        let far = |local: &Option<String>, here: &str| local.as_deref().is_some_and(|l| l != here);
        (far(&self.region, region), far(&self.zone, zone))
    }
}

/// Whether some but not all of `cluster`'s endpoints are in localities that pass `here`.
fn splits(cluster: &inventory::Cluster, here: impl Fn(&inventory::Locality) -> bool) -> bool {
    let count = cluster
        .endpoints
        .iter()
        .filter(|e| here(&e.locality))
        .count();
    count > 0 && count < cluster.endpoints.len()
}

/// The metadata filter that endpoint metadata and route matches use, as Envoy's subset load
/// balancer expects.
pub const LB_METADATA: &str = "envoy.lb";

fn lb_endpoint(e: &inventory::Endpoint, with_deployment: bool) -> LbEndpoint {
    LbEndpoint {
        health_status: health_status(e.health) as i32,
        // Envoy refuses a weight of 0; discovery never produces one.
        load_balancing_weight: Some(UInt32Value {
            value: e.weight.max(1),
        }),
        metadata: lb_metadata(e, with_deployment),
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(&e.address, e.port)),
            ..Default::default()
        })),
    }
}

/// `envoy.lb: {revision: "12"}`, with `deployment: "ecs-svc/..."` when asked, for what an ECS
/// task has.
///
/// The deployment only comes with a split: a second key makes the metadata a two-entry map,
/// which prost writes in random order, so every such endpoint costs a canonical rewrite when
/// hashed (about twice the cost of the whole assignment); one key encodes canonically as is.
fn lb_metadata(e: &inventory::Endpoint, with_deployment: bool) -> Option<Metadata> {
    let mut fields = BTreeMap::new();
    if let Some(revision) = e.revision {
        fields.insert("revision".to_owned(), string_value(revision.to_string()));
    }
    if let Some(deployment) = e.deployment.as_ref().filter(|_| with_deployment) {
        fields.insert("deployment".to_owned(), string_value(deployment.clone()));
    }
    if fields.is_empty() {
        return None;
    }
    let filter = Struct {
        fields: fields.into_iter().collect(),
    };
    Some(Metadata {
        filter_metadata: [(LB_METADATA.to_owned(), filter)].into_iter().collect(),
        typed_filter_metadata: Default::default(),
    })
}

pub(crate) fn string_value(s: String) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s)),
    }
}

/// How Envoy should treat an endpoint: `Unknown` still receives traffic, `Draining` gets no new
/// requests.
pub fn health_status(health: Health) -> HealthStatus {
    match health {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Unknown => HealthStatus::Unknown,
        Health::Draining => HealthStatus::Draining,
    }
}

/// A socket address `ip:port`.
pub fn socket_address(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(port.into())),
            ..Default::default()
        })),
    }
}

/// A load assignment for `cluster` with every endpoint in one locality (weighted 1, so gRPC
/// clients take it too).
pub fn load_assignment(
    cluster: &str,
    endpoints: impl IntoIterator<Item = (String, u16, HealthStatus)>,
) -> ClusterLoadAssignment {
    let lb_endpoints = endpoints
        .into_iter()
        .map(|(ip, port, health)| LbEndpoint {
            health_status: health as i32,
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(&ip, port)),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..Default::default()
        }],
        ..Default::default()
    }
}
