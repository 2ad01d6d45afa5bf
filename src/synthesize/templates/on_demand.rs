//! `[on_demand] enabled = true`: Envoys of the node type are served only the template's own
//! clusters (and those its routes name) up front; a request to a generated virtual host makes
//! Envoy ask for that cluster by name (on-demand CDS), which needs the `on_demand` HTTP filter
//! with `odcds` in the listener serving the generated routes.

use envoy_types::pb::envoy::extensions::filters::http::on_demand::v3::OnDemand;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter::ConfigType, HttpConnectionManager,
};
use prost::{Message, Name};

use super::NodeTemplate;
use crate::envoy_json::{FieldError, FieldPath};

const FILTER: &str = "envoy.filters.http.on_demand";

/// An on-demand node type whose generated routes no listener reaches through an `on_demand`
/// filter with `odcds` set would answer 503 to every request: refuse it when it is loaded.
pub(super) fn check(template: &NodeTemplate) -> Option<FieldError> {
    let at = FieldPath::default().key("on_demand").key("enabled");
    let Some(generated) = &template.generated_routes else {
        return Some(FieldError::new(
            at,
            "on-demand clusters are asked for by the generated routes: add [generated_routes]",
        ));
    };
    let managers = (template.listeners.iter())
        .flat_map(|l| &l.filter_chains)
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(
                envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any),
            ) if any.type_url == HttpConnectionManager::type_url() => {
                HttpConnectionManager::decode(any.value.as_slice()).ok()
            }
            _ => None,
        });
    let serving = managers.filter(|hcm| {
        matches!(&hcm.route_specifier, Some(RouteSpecifier::Rds(rds)) if rds.route_config_name == generated.name)
    });
    let mut found = false;
    for hcm in serving {
        found = true;
        let odcds = hcm.http_filters.iter().any(|f| {
            let config = match &f.config_type {
                Some(ConfigType::TypedConfig(any)) if any.type_url == OnDemand::type_url() => {
                    OnDemand::decode(any.value.as_slice()).ok()
                }
                _ => None,
            };
            f.name == FILTER && config.is_some_and(|c| c.odcds.is_some())
        });
        if !odcds {
            return Some(FieldError::new(
                at,
                format!("the listener serving the generated routes {:?} has no {FILTER} HTTP filter with `odcds` set before the router; Envoy would answer 503 for every cluster it has not loaded", generated.name),
            ));
        }
    }
    (!found).then(|| {
        FieldError::new(
            at,
            format!(
                "no listener serves the generated routes {:?} over RDS",
                generated.name
            ),
        )
    })
}
