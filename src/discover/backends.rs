//! Declared backends: what a service calls, from `<prefix>backends` (service tag, then task
//! tag, then container label), as App Mesh's virtual node `backends` were.
//!
//! The value is a list of cluster names or globs (`orders payments.grpc billing-*`), separated
//! by spaces or commas, since ECS tag values cannot hold a comma. An item matches a cluster by
//! its name, or every cluster of an ECS service by the service's name (`orders` covers
//! `orders.http` and `orders.grpc`). An empty value declares that the service calls nothing.
//!
//! Only parsed and checked here; synthesis decides what a service's Envoy is served.

use std::collections::{BTreeMap, BTreeSet};

use globset::Glob;

use crate::inventory::{BackendPattern, Cluster, Source};

/// The normalized items of a `backends` value: sorted, each once, every one a valid glob. Two
/// services with the same items share one snapshot.
pub(crate) fn parse(value: &str) -> Result<Vec<String>, String> {
    let mut items: Vec<String> = value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect();
    for item in &items {
        Glob::new(item).map_err(|e| format!("`{item}` is not a name or glob: {e}"))?;
    }
    items.sort();
    items.dedup();
    Ok(items)
}

/// Every item of every declaration (on clusters, and of portless `callers`) that names no
/// discovered cluster, as inventory warnings.
pub(crate) fn unmatched(
    clusters: &BTreeMap<String, Cluster>,
    callers: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    // Plain names are looked up: a thousand services declaring five each is five thousand
    // items, each of which would otherwise be compared with every cluster.
    let names: BTreeSet<&str> = clusters
        .values()
        .flat_map(|c| match &c.source {
            Source::Ecs { service, .. } => vec![c.name.as_str(), service.as_str()],
            Source::CloudMap { .. } => vec![c.name.as_str()],
        })
        .collect();
    let mut warnings = Vec::new();
    let mut declared: Vec<(String, &[String])> = (clusters.values())
        .filter_map(|c| Some((c.source.to_string(), c.backends.as_deref()?)))
        .collect();
    declared.extend(
        (callers.iter()).map(|(service, items)| (format!("ECS service {service}"), &items[..])),
    );
    for (who, items) in declared {
        for item in items {
            let pattern = BackendPattern::new(item);
            let found = match pattern.is_literal() {
                true => names.contains(item.as_str()),
                false => clusters.values().any(|c| pattern.matches(c)),
            };
            if !found {
                let answer = match pattern.is_literal() {
                    true => "its route answers 503 until it is discovered",
                    false => "it adds nothing",
                };
                warnings.push(format!(
                    "{who}: backends names `{item}`, which matches no discovered cluster; {answer}"
                ));
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_split_on_spaces_and_commas_sorted_and_deduplicated() {
        assert_eq!(
            parse("payments.grpc orders,orders  billing-*").unwrap(),
            ["billing-*", "orders", "payments.grpc"]
        );
        assert_eq!(parse("").unwrap(), Vec::<String>::new());
        let bad = parse("orders a[b").unwrap_err();
        assert!(bad.contains("`a[b`"), "{bad}");
    }

    #[test]
    fn an_item_matches_a_cluster_name_or_its_ecs_service() {
        let cluster = |name: &str, service: &str| Cluster {
            name: name.into(),
            source: Source::Ecs {
                ecs_cluster: "prod".into(),
                service: service.into(),
            },
            port_name: None,
            overrides: Default::default(),
            route: Default::default(),
            backends: None,
            security: Default::default(),
            endpoints: Vec::new(),
        };
        let grpc = cluster("orders.grpc", "orders");
        assert!(BackendPattern::new("orders").matches(&grpc));
        assert!(BackendPattern::new("orders.grpc").matches(&grpc));
        assert!(BackendPattern::new("ord*").matches(&grpc));
        assert!(!BackendPattern::new("orders.http").matches(&grpc));
        assert!(BackendPattern::new("orders").is_literal());
        assert!(!BackendPattern::new("ord*").is_literal());
    }
}
