//! `/graph`: who calls whom, from the inventory. Services are the nodes (an ECS service with
//! all its clusters, a Cloud Map service, a portless caller); each declared backend is an edge
//! to every service it matches, or to a `missing` node when it matches none (its route answers
//! 503). An edge into a service whose `allow-from` leaves the caller out is marked, since that
//! call would be denied.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::inventory::{AllowFrom, BackendPattern, Cluster, Health, Inventory, Source};

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Graph {
    /// By id.
    pub nodes: Vec<GraphNode>,
    /// Sorted by (from, to).
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Ecs,
    CloudMap,
    /// Declares backends, serves no port.
    Caller,
    /// Declared, served by nobody.
    Missing,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct GraphNode {
    /// The ECS service's name, the Cloud Map cluster's name, or the unmatched item.
    pub id: String,
    pub kind: NodeKind,
    /// Its Envoy clusters.
    pub clusters: Vec<String>,
    pub endpoints: usize,
    pub healthy: usize,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// The backend items that made it (`orders`, `pay*`).
    pub declared_as: Vec<String>,
    /// Nobody serves it.
    pub missing: bool,
    /// `false`: the callee's `allow-from` leaves the caller out (the call would be denied);
    /// `null`: the callee states no rule of its own (the node type's default decides).
    pub allowed: Option<bool>,
}

/// The service a cluster belongs to: its ECS service, or itself.
fn service_of(cluster: &Cluster) -> &str {
    match &cluster.source {
        Source::Ecs { service, .. } => service,
        Source::CloudMap { .. } => &cluster.name,
    }
}

impl Graph {
    pub fn of(inventory: &Inventory) -> Graph {
        let mut nodes: BTreeMap<String, GraphNode> = BTreeMap::new();
        let mut allow: BTreeMap<&str, Option<&AllowFrom>> = BTreeMap::new();
        for cluster in inventory.clusters.values() {
            let id = service_of(cluster);
            let kind = match cluster.source {
                Source::Ecs { .. } => NodeKind::Ecs,
                Source::CloudMap { .. } => NodeKind::CloudMap,
            };
            let node = nodes.entry(id.to_owned()).or_insert_with(|| node(id, kind));
            node.clusters.push(cluster.name.clone());
            node.endpoints += cluster.endpoints.len();
            let healthy = cluster
                .endpoints
                .iter()
                .filter(|e| e.health == Health::Healthy);
            node.healthy += healthy.count();
            allow.insert(id, cluster.security.allow_from.as_ref());
        }
        for caller in inventory.callers.keys() {
            (nodes.entry(caller.clone())).or_insert_with(|| node(caller, NodeKind::Caller));
        }
        let mut edges: BTreeMap<(String, String), Edge> = BTreeMap::new();
        for (from, item) in declarations(inventory) {
            let pattern = BackendPattern::new(item);
            let targets: BTreeSet<&str> = (inventory.clusters.values())
                .filter(|c| pattern.matches(c))
                .map(service_of)
                .collect();
            if targets.is_empty() {
                (nodes.entry(item.to_owned())).or_insert_with(|| node(item, NodeKind::Missing));
            }
            let missing = targets.is_empty();
            for to in targets.into_iter().chain(missing.then_some(item)) {
                let allowed = allow.get(to).copied().flatten().map(|rule| match rule {
                    AllowFrom::Services(callers) => callers.iter().any(|c| c == from),
                    AllowFrom::Invalid => false,
                });
                let edge = edges
                    .entry((from.to_owned(), to.to_owned()))
                    .or_insert_with(|| Edge {
                        from: from.to_owned(),
                        to: to.to_owned(),
                        declared_as: Vec::new(),
                        missing,
                        allowed,
                    });
                if !edge.declared_as.iter().any(|d| d == item) {
                    edge.declared_as.push(item.to_owned());
                }
            }
        }
        Graph {
            nodes: nodes.into_values().collect(),
            edges: edges.into_values().collect(),
        }
    }
}

fn node(id: &str, kind: NodeKind) -> GraphNode {
    GraphNode {
        id: id.to_owned(),
        kind,
        clusters: Vec::new(),
        endpoints: 0,
        healthy: 0,
    }
}

/// Every (caller service, declared item), from clusters and from portless callers.
fn declarations(inventory: &Inventory) -> Vec<(&str, &str)> {
    let on_clusters = (inventory.clusters.values()).flat_map(|c| {
        let items = c.backends.iter().flatten();
        items.map(move |item| (service_of(c), item.as_str()))
    });
    let on_callers = (inventory.callers.iter())
        .flat_map(|(caller, items)| items.iter().map(move |i| (caller.as_str(), i.as_str())));
    let mut all: Vec<(&str, &str)> = on_clusters.chain(on_callers).collect();
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Endpoint, Locality, Security};

    fn ecs(name: &str, service: &str, backends: Option<&[&str]>) -> Cluster {
        Cluster {
            name: name.into(),
            source: Source::Ecs {
                ecs_cluster: "prod".into(),
                service: service.into(),
            },
            port_name: None,
            overrides: Default::default(),
            route: Default::default(),
            backends: backends.map(|b| b.iter().map(|s| s.to_string()).collect()),
            security: Default::default(),
            endpoints: vec![Endpoint {
                address: "10.0.0.1".into(),
                port: 8080,
                health: Health::Healthy,
                locality: Locality::default(),
                weight: 1,
                id: "t1".into(),
                revision: None,
                deployment: None,
            }],
        }
    }

    fn inventory(clusters: Vec<Cluster>) -> Inventory {
        Inventory {
            clusters: clusters.into_iter().map(|c| (c.name.clone(), c)).collect(),
            ..Default::default()
        }
    }

    fn edge<'g>(graph: &'g Graph, from: &str, to: &str) -> Option<&'g Edge> {
        graph.edges.iter().find(|e| e.from == from && e.to == to)
    }

    #[test]
    fn a_service_with_two_ports_is_one_node_and_a_glob_reaches_it_once() {
        let mut inv = inventory(vec![
            ecs("web", "web", Some(&["orders", "ord*"])),
            ecs("orders.http", "orders", None),
            ecs("orders.grpc", "orders", None),
        ]);
        inv.callers
            .insert("queue".into(), vec!["orders.grpc".into()]);
        let graph = Graph::of(&inv);
        let orders = graph.nodes.iter().find(|n| n.id == "orders").unwrap();
        assert_eq!(orders.clusters, ["orders.grpc", "orders.http"]);
        assert_eq!((orders.endpoints, orders.healthy), (2, 2));
        let web_orders = edge(&graph, "web", "orders").unwrap();
        assert_eq!(web_orders.declared_as, ["ord*", "orders"]);
        assert!(!web_orders.missing);
        assert_eq!(web_orders.allowed, None);
        assert!(edge(&graph, "queue", "orders").is_some());
        let queue = graph.nodes.iter().find(|n| n.id == "queue").unwrap();
        assert_eq!(queue.kind, NodeKind::Caller);
        assert_eq!(graph.edges.len(), 2);
    }

    #[test]
    fn a_backend_nobody_serves_is_a_missing_node_and_allow_from_marks_denied_calls() {
        let mut orders = ecs("orders", "orders", None);
        orders.security = Security {
            allow_from: Some(AllowFrom::Services(vec!["api".into()])),
            ..Default::default()
        };
        let graph = Graph::of(&inventory(vec![
            ecs("web", "web", Some(&["orders", "payments"])),
            ecs("api", "api", Some(&["orders"])),
            orders,
        ]));
        let payments = edge(&graph, "web", "payments").unwrap();
        assert!(payments.missing);
        let node = graph.nodes.iter().find(|n| n.id == "payments").unwrap();
        assert_eq!(node.kind, NodeKind::Missing);
        assert_eq!(edge(&graph, "web", "orders").unwrap().allowed, Some(false));
        assert_eq!(edge(&graph, "api", "orders").unwrap().allowed, Some(true));
    }
}
