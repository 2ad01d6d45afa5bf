//! Parts → one [`Inventory`]: grouping endpoints into clusters, and the collision rule (see
//! the crate-level "Naming rules" in [`crate::discover`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::inventory::{Cluster, Inventory, Source};

use super::mapping::Mapped;

/// What one source (an ECS cluster or a Cloud Map namespace) contributes to the inventory. The
/// poller keeps the last good one per source.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Part {
    pub clusters: BTreeMap<String, Cluster>,
    pub warnings: BTreeSet<String>,
    /// Services with declared backends and no cluster (see [`Inventory::callers`]).
    pub callers: BTreeMap<String, Vec<String>>,
}

impl Part {
    /// Groups the endpoints of one ECS cluster's tasks into clusters. When two services claim
    /// one name (through a `cluster-name` tag), the first by service name keeps it.
    pub(crate) fn from_ecs(
        ecs_cluster: &str,
        mut mapped: Vec<Mapped>,
        mut warnings: BTreeSet<String>,
    ) -> Part {
        // Newest revision first, so the cluster takes the overrides of the newest task definition
        // while a deployment rolls.
        mapped.sort_by(|a, b| {
            (&a.cluster_name, &a.service, b.revision).cmp(&(
                &b.cluster_name,
                &b.service,
                a.revision,
            ))
        });
        let mut clusters: BTreeMap<String, Cluster> = BTreeMap::new();
        for m in mapped {
            let source = Source::Ecs {
                ecs_cluster: ecs_cluster.to_owned(),
                service: m.service.clone(),
            };
            let cluster = clusters
                .entry(m.cluster_name.clone())
                .or_insert_with(|| Cluster {
                    name: m.cluster_name.clone(),
                    source: source.clone(),
                    port_name: m.port_name.clone(),
                    overrides: m.overrides.clone(),
                    route: m.route.clone(),
                    backends: m.backends.clone(),
                    security: m.security.clone(),
                    endpoints: Vec::new(),
                });
            if cluster.source == source {
                cluster.endpoints.push(m.endpoint);
            } else {
                warnings.insert(collision(
                    &m.cluster_name,
                    &cluster.source.to_string(),
                    &source.to_string(),
                ));
            }
        }
        for cluster in clusters.values_mut() {
            sort_endpoints(cluster);
            warnings.extend(idle_weights(ecs_cluster, cluster));
        }
        Part {
            clusters,
            warnings,
            callers: BTreeMap::new(),
        }
    }
}

/// A `weights` revision with no running task: its share goes to the others (synthesis leaves
/// it out), which a human should know.
fn idle_weights(ecs_cluster: &str, cluster: &Cluster) -> Option<String> {
    let Source::Ecs { service, .. } = &cluster.source else {
        return None;
    };
    let running: BTreeSet<u32> = cluster
        .endpoints
        .iter()
        .filter_map(|e| e.revision)
        .collect();
    let idle: Vec<u32> = cluster
        .route
        .weights
        .iter()
        .map(|w| w.revision)
        .filter(|r| !running.contains(r))
        .collect();
    if idle.is_empty() {
        return None;
    }
    let fate = match cluster
        .route
        .weights
        .iter()
        .any(|w| running.contains(&w.revision) && w.weight > 0)
    {
        true => "its share goes to the other revisions",
        false => "no weighted revision runs, so every task gets traffic as without weights",
    };
    Some(format!(
        "ECS service {ecs_cluster}/{service}: weights name revision(s) {idle:?} with no running task in cluster {}; {fate}",
        cluster.name
    ))
}

pub(crate) fn sort_endpoints(cluster: &mut Cluster) {
    cluster
        .endpoints
        .sort_by(|a, b| (&a.address, a.port, &a.id).cmp(&(&b.address, b.port, &b.id)));
    cluster.endpoints.dedup();
}

/// Merges parts given in priority order, each with the label of its scope (account/region):
/// the first part to claim a name keeps it, unless `merge` and both are ECS services of one
/// name from different scopes, which become one cluster with the endpoints of both.
pub(crate) fn assemble<'a>(
    parts: impl IntoIterator<Item = (&'a str, &'a Part)>,
    merge: bool,
) -> Inventory {
    let mut clusters: BTreeMap<String, (&str, Cluster)> = BTreeMap::new();
    let mut warnings = BTreeSet::new();
    let mut callers = BTreeMap::new();
    for (scope, part) in parts {
        warnings.extend(part.warnings.iter().cloned());
        for (service, items) in &part.callers {
            callers
                .entry(service.clone())
                .or_insert_with(|| items.clone());
        }
        for (name, cluster) in &part.clusters {
            match clusters.get_mut(name) {
                Some((kept_scope, kept))
                    if merge && mergeable(kept_scope, kept, scope, cluster) =>
                {
                    warnings.extend(merge_into(kept, cluster));
                }
                Some((kept_scope, kept)) => {
                    let (kept, dropped) = match *kept_scope == scope {
                        true => (kept.source.to_string(), cluster.source.to_string()),
                        false => (
                            format!("{} in {kept_scope}", kept.source),
                            format!("{} in {scope}", cluster.source),
                        ),
                    };
                    warnings.insert(collision(name, &kept, &dropped));
                }
                None => {
                    clusters.insert(name.clone(), (scope, cluster.clone()));
                }
            }
        }
    }
    let clusters: BTreeMap<String, Cluster> =
        clusters.into_iter().map(|(n, (_, c))| (n, c)).collect();
    warnings.extend(super::backends::unmatched(&clusters, &callers));
    for w in &warnings {
        tracing::debug!(warning = %w, "inventory warning");
    }
    Inventory {
        clusters,
        warnings: warnings.into_iter().collect(),
        callers,
    }
}

/// Two ECS services of one name from different scopes: the same service in two places.
fn mergeable(kept_scope: &str, kept: &Cluster, scope: &str, other: &Cluster) -> bool {
    let service = |c: &Cluster| match &c.source {
        Source::Ecs { service, .. } => Some(service.clone()),
        Source::CloudMap { .. } => None,
    };
    kept_scope != scope && service(kept).is_some() && service(kept) == service(other)
}

/// Adds `other`'s endpoints to `kept`, whose policy stays; a warning when they differ.
fn merge_into(kept: &mut Cluster, other: &Cluster) -> Option<String> {
    kept.endpoints.extend(other.endpoints.iter().cloned());
    sort_endpoints(kept);
    for workload in other.security.workloads() {
        if !kept.security.workloads().any(|w| w == workload) {
            kept.security.merged.push(workload.clone());
        }
    }
    let same_policy = kept.overrides == other.overrides
        && kept.route == other.route
        && kept.backends == other.backends;
    (!same_policy).then(|| {
        format!(
            "cluster `{}` merges {} and {}, whose tags ask for different policies; {} (listed first) decides",
            kept.name, kept.source, other.source, kept.source
        )
    })
}

fn collision(name: &str, kept: &str, dropped: &str) -> String {
    format!(
        "cluster name `{name}` is claimed by {kept} and {dropped}; keeping {kept} (listed first), leaving out {dropped}. \
         Use {{ecs_cluster}}, {{account}} or {{region}} in the name template, a cluster-name tag, or ecs.merge = true (the same service in two accounts or regions) to tell them apart"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{ClusterOverrides, Endpoint, Health, Locality, RevisionWeight};

    fn mapped(cluster: &str, service: &str, ip: &str, revision: i32) -> Mapped {
        Mapped {
            cluster_name: cluster.into(),
            service: service.into(),
            port_name: None,
            overrides: ClusterOverrides {
                http2: Some(revision > 1),
                ..ClusterOverrides::default()
            },
            endpoint: Endpoint {
                address: ip.into(),
                port: 80,
                health: Health::Healthy,
                locality: Locality::default(),
                weight: 1,
                id: ip.into(),
                revision: Some(revision as u32),
                deployment: None,
            },
            route: Default::default(),
            backends: None,
            security: Default::default(),
            revision,
        }
    }

    #[test]
    fn endpoints_are_grouped_sorted_and_take_the_newest_revisions_overrides() {
        let part = Part::from_ecs(
            "a",
            vec![
                mapped("web", "web", "10.0.0.9", 1),
                mapped("web", "web", "10.0.0.1", 2),
                mapped("api", "api", "10.0.0.5", 1),
            ],
            BTreeSet::new(),
        );
        assert_eq!(part.clusters.keys().collect::<Vec<_>>(), ["api", "web"]);
        let web = &part.clusters["web"];
        assert_eq!(
            web.endpoints
                .iter()
                .map(|e| e.address.as_str())
                .collect::<Vec<_>>(),
            ["10.0.0.1", "10.0.0.9"]
        );
        assert_eq!(web.overrides.http2, Some(true));
    }

    #[test]
    fn same_service_name_in_two_ecs_clusters_keeps_the_first_and_warns() {
        let a = Part::from_ecs(
            "a",
            vec![mapped("web", "web", "10.0.0.1", 1)],
            BTreeSet::new(),
        );
        let b = Part::from_ecs(
            "b",
            vec![
                mapped("web", "web", "10.0.0.2", 1),
                mapped("api", "api", "10.0.0.3", 1),
            ],
            BTreeSet::new(),
        );
        // Even with merge on: one scope's two ECS clusters never merge.
        let inv = assemble([("s", &a), ("s", &b)], true);
        assert_eq!(inv.clusters["web"].endpoints.len(), 1, "never merged");
        assert_eq!(
            inv.clusters["web"].source,
            Source::Ecs {
                ecs_cluster: "a".into(),
                service: "web".into()
            }
        );
        assert!(inv.clusters.contains_key("api"));
        assert_eq!(inv.warnings.len(), 1);
        assert!(
            inv.warnings[0].contains("ecs:a/web and ecs:b/web; keeping ecs:a/web"),
            "{}",
            inv.warnings[0]
        );
        // The order of the settings decides, not the names.
        assert_eq!(
            assemble([("s", &b), ("s", &a)], false).clusters["web"].endpoints[0].address,
            "10.0.0.2"
        );
    }

    #[test]
    fn with_merge_one_service_in_two_scopes_is_one_cluster_with_both_regions_endpoints() {
        let mut east = mapped("web", "web", "10.0.0.1", 1);
        east.endpoint.locality.region = "us-east-1".into();
        let mut west = mapped("web", "web", "10.1.0.1", 1);
        west.endpoint.locality.region = "eu-west-1".into();
        let place = |region: &str| crate::inventory::Workload {
            account: "222222222222".into(),
            region: region.into(),
            ecs_cluster: "prod".into(),
        };
        east.security.workload = Some(place("us-east-1"));
        west.security.workload = Some(place("eu-west-1"));
        let mut other = mapped("web", "web", "10.1.0.2", 2);
        other.endpoint.locality.region = "eu-west-1".into();
        let a = Part::from_ecs("prod", vec![east], BTreeSet::new());
        let b = Part::from_ecs("prod", vec![west], BTreeSet::new());
        let inv = assemble([("east", &a), ("west", &b)], true);
        let regions: Vec<&str> = (inv.clusters["web"].endpoints.iter())
            .map(|e| e.locality.region.as_str())
            .collect();
        assert_eq!(regions, ["us-east-1", "eu-west-1"]);
        assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
        let security = &inv.clusters["web"].security;
        assert_eq!(security.workload, Some(place("us-east-1")));
        assert_eq!(
            security.merged,
            [place("eu-west-1")],
            "its ID there is its too"
        );
        // Without merge, the first scope keeps the name.
        let apart = assemble([("east", &a), ("west", &b)], false);
        assert_eq!(apart.clusters["web"].endpoints.len(), 1);
        assert_eq!(apart.warnings.len(), 1);
        assert!(
            apart.warnings[0].contains("ecs:prod/web in east and ecs:prod/web in west"),
            "{:?}",
            apart.warnings
        );
        // Policies that differ: merged, the first decides, and a human is told.
        let c = Part::from_ecs("prod", vec![other], BTreeSet::new());
        let inv = assemble([("east", &a), ("west", &c)], true);
        assert_eq!(inv.clusters["web"].endpoints.len(), 2);
        assert_eq!(inv.clusters["web"].overrides.http2, Some(false));
        assert!(
            inv.warnings[0].contains("different policies"),
            "{:?}",
            inv.warnings
        );
    }

    #[test]
    fn two_services_renamed_to_one_cluster_name_are_not_merged() {
        let part = Part::from_ecs(
            "a",
            vec![
                mapped("shared", "web", "10.0.0.1", 1),
                mapped("shared", "api", "10.0.0.2", 1),
            ],
            BTreeSet::new(),
        );
        assert_eq!(part.clusters["shared"].endpoints.len(), 1);
        assert_eq!(
            part.clusters["shared"].source,
            Source::Ecs {
                ecs_cluster: "a".into(),
                service: "api".into()
            }
        );
        assert_eq!(part.warnings.len(), 1);
    }

    #[test]
    fn weights_naming_a_revision_with_no_task_are_a_warning() {
        let mut canary = mapped("web", "web", "10.0.0.1", 11);
        canary.route.weights = vec![
            RevisionWeight {
                revision: 12,
                weight: 10,
            },
            RevisionWeight {
                revision: 11,
                weight: 90,
            },
        ];
        let part = Part::from_ecs("prod", vec![canary.clone()], BTreeSet::new());
        let warning = part.warnings.iter().next().expect("a warning");
        assert!(
            warning.starts_with("ECS service prod/web: weights name revision(s) [12]")
                && warning.contains("its share goes to the other revisions"),
            "{warning}"
        );
        canary.route.weights.retain(|w| w.revision == 11);
        assert!(Part::from_ecs("prod", vec![canary], BTreeSet::new())
            .warnings
            .is_empty());
    }
}
