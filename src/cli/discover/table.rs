//! The readable table `ecs-xds discover` prints.

use std::fmt::Write;

use crate::inventory::Inventory;

/// One row per endpoint (a cluster without endpoints gets one row of dashes), then the
/// declared backends, then the warnings. Columns are padded to their widest cell.
pub fn inventory_table(inventory: &Inventory) -> String {
    let mut rows = vec![[
        "CLUSTER", "SOURCE", "ENDPOINT", "HEALTH", "ZONE", "WEIGHT", "ID",
    ]
    .map(String::from)];
    for cluster in inventory.clusters.values() {
        let source = cluster.source.to_string();
        if cluster.endpoints.is_empty() {
            rows.push([
                cluster.name.clone(),
                source.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for e in &cluster.endpoints {
            rows.push([
                cluster.name.clone(),
                source.clone(),
                format!("{}:{}", e.address, e.port),
                e.health.as_str().into(),
                e.locality.zone.clone().unwrap_or_else(|| "-".into()),
                e.weight.to_string(),
                e.id.clone(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(
        out,
        "{} clusters, {} endpoints",
        inventory.clusters.len(),
        inventory.endpoint_count()
    );
    let declared = (inventory.clusters.values())
        .filter_map(|c| Some((c.name.as_str(), "", c.backends.as_ref()?)))
        .chain((inventory.callers.iter()).map(|(s, items)| (s.as_str(), " (no cluster)", items)));
    for (who, note, items) in declared {
        let items = if items.is_empty() {
            "nothing".to_owned()
        } else {
            items.join(" ")
        };
        let _ = writeln!(out, "backends: {who}{note} calls {items}");
    }
    for cluster in inventory.clusters.values() {
        if let Some(line) = security_line(cluster) {
            let _ = writeln!(out, "{line}");
        }
    }
    for w in &inventory.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// Who may call a service and how, when its tags say (`mtls`, `allow-from`, `authz`).
fn security_line(cluster: &crate::inventory::Cluster) -> Option<String> {
    use crate::inventory::{AllowFrom, AuthzMode};
    let security = &cluster.security;
    if security.mtls.is_none() && security.allow_from.is_none() && security.authz.is_none() {
        return None;
    }
    let mtls = match security.mtls {
        Some(mode) => format!("{mode:?}").to_lowercase(),
        None => "the node type's".to_owned(),
    };
    let callers = match &security.allow_from {
        None => "as the node type says".to_owned(),
        Some(AllowFrom::Services(names)) => names.join(" "),
        Some(AllowFrom::Invalid) => "its previous callers (the tag does not parse)".to_owned(),
    };
    let shadow = match security.authz {
        Some(AuthzMode::Shadow) => ", in shadow (not enforced)",
        Some(AuthzMode::Invalid) => ", enforcement as before (the tag does not parse)",
        _ => "",
    };
    let name = &cluster.name;
    Some(format!(
        "security: {name} accepts {callers}{shadow}; mtls {mtls}"
    ))
}

#[cfg(test)]
mod tests {
    use super::inventory_table;
    use crate::inventory::{
        Cluster, ClusterOverrides, Endpoint, Health, Inventory, Locality, Source,
    };

    #[test]
    fn table_lists_every_endpoint_aligned_and_the_warnings() {
        let mut inv = Inventory::default();
        inv.clusters.insert(
            "web".into(),
            Cluster {
                name: "web".into(),
                source: Source::Ecs {
                    ecs_cluster: "demo".into(),
                    service: "web".into(),
                },
                port_name: None,
                overrides: ClusterOverrides::default(),
                route: Default::default(),
                backends: None,
                security: crate::inventory::Security {
                    allow_from: Some(crate::inventory::AllowFrom::Services(vec![
                        "api".into(),
                        "edge".into(),
                    ])),
                    authz: Some(crate::inventory::AuthzMode::Shadow),
                    ..Default::default()
                },
                endpoints: vec![Endpoint {
                    address: "10.0.0.1".into(),
                    port: 8080,
                    health: Health::Draining,
                    locality: Locality {
                        region: "us-east-1".into(),
                        zone: Some("us-east-1a".into()),
                    },
                    weight: 1,
                    id: "abc".into(),
                    revision: None,
                    deployment: None,
                }],
            },
        );
        inv.clusters.insert(
            "cloudmap.db.demo.local".into(),
            Cluster {
                name: "cloudmap.db.demo.local".into(),
                source: Source::CloudMap {
                    namespace: "demo.local".into(),
                    service: "db".into(),
                },
                port_name: None,
                overrides: ClusterOverrides::default(),
                route: Default::default(),
                backends: None,
                security: Default::default(),
                endpoints: vec![],
            },
        );
        inv.warnings.push("something to fix".into());
        inv.callers
            .insert("queue".into(), vec!["orders".into(), "web".into()]);
        let table = inventory_table(&inv);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("CLUSTER                 SOURCE"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("cloudmap.db.demo.local  cloudmap:demo.local/db  -"),
            "{table}"
        );
        assert!(
            lines[2].contains("ecs:demo/web")
                && lines[2].contains("10.0.0.1:8080")
                && lines[2].contains("draining"),
            "{table}"
        );
        assert_eq!(lines[3], "2 clusters, 1 endpoints");
        assert_eq!(lines[4], "backends: queue (no cluster) calls orders web");
        assert_eq!(
            lines[5],
            "security: web accepts api edge, in shadow (not enforced); mtls the node type's"
        );
        assert_eq!(lines[6], "warning: something to fix");
    }
}
