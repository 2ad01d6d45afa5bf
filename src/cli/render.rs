//! `ecs-xds render`: exactly what a node type (or one service's sidecar) would be served, as
//! Envoy JSON or YAML, from live discovery or a saved inventory.

use std::path::Path;

use super::CommandError;
use crate::inventory::Inventory;

/// The output format of `render`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// Prints what `node_type`'s Envoys (or only `service`'s sidecars) would be served.
pub async fn render(
    config: &Path,
    (node_type, service): (&str, Option<&str>),
    saved: Option<&Path>,
    format: Format,
) -> Result<(), CommandError> {
    let loaded = super::load(config)?;
    let inventory = match saved {
        Some(path) => Inventory::read_file(path)?,
        None => crate::discover::discover_once(super::discover::checked(&loaded.settings)?).await?,
    };
    let templates = &loaded.templates;
    let synthesis = crate::synthesize::synthesize(&inventory, templates);
    for warning in &synthesis.warnings {
        eprintln!("warning: {warning}");
    }
    let Some((snapshot, set)) = synthesis.snapshot_of_service(node_type, service.unwrap_or(""))
    else {
        return Err(CommandError::UnknownNodeType {
            node_type: node_type.to_owned(),
            known: templates.node_types().map(str::to_owned).collect(),
        });
    };
    if let Some(service) = service {
        let (backends, ingress) = set.map_or((None, None), crate::synthesize::set_key_parts);
        match backends {
            Some(set) => eprintln!("service {service:?} declares its backends: {set:?}"),
            None => eprintln!(
                "service {service:?} declares no backends (or is not discovered): it gets node type {node_type:?}'s whole scope"
            ),
        }
        match ingress {
            Some(policy) => eprintln!("service {service:?} accepts (its tags): {policy}"),
            None => eprintln!(
                "service {service:?} accepts what node type {node_type:?} does ([mtls], [authz])"
            ),
        }
    }
    let rendered = snapshot.to_envoy_json();
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&rendered).expect("JSON values print"),
        Format::Yaml => serde_yaml_ng::to_string(&rendered).expect("JSON values print as YAML"),
    };
    println!("{}", text.trim_end());
    Ok(())
}
