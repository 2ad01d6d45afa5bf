//! One Cloud Map namespace → its [`Part`] of the inventory: ListServices in the namespace, then
//! DiscoverInstances (every health status) per service.
//!
//! Each instance's address is its `AWS_INSTANCE_IPV4` / `AWS_INSTANCE_PORT` attributes, its
//! health is Cloud Map's, its zone the `AVAILABILITY_ZONE` attribute ECS writes when it registers
//! tasks. A Cloud Map service with no instances is still a cluster (with no endpoints): unlike an
//! ECS service, found only through its tasks, it is known to exist.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_servicediscovery::types::{
    FilterCondition, HealthStatusFilter, ServiceFilter, ServiceFilterName,
};

use super::assemble::{sort_endpoints, Part};
use super::aws::{run_bounded, Aws, CONCURRENCY};
use super::settings::CloudMapSettings;
use super::{Cluster, ClusterOverrides, DiscoverError, Endpoint, Health, Locality, Source};

/// DiscoverInstances answers at most this many instances per call.
const MAX_INSTANCES: i32 = 1000;

fn target(namespace: &str) -> String {
    format!("Cloud Map namespace {namespace}")
}

/// Namespace name → id for every namespace of the account (ListNamespaces, every page).
pub(crate) async fn namespace_ids(aws: &Aws) -> Result<BTreeMap<String, String>, DiscoverError> {
    let mut ids = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let out = aws
            .call("ListNamespaces", "Cloud Map namespaces", || {
                aws.cloud_map
                    .list_namespaces()
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
        for ns in out.namespaces() {
            if let (Some(name), Some(id)) = (ns.name(), ns.id()) {
                ids.insert(name.to_owned(), id.to_owned());
            }
        }
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(ids);
        }
    }
}

/// Polls one namespace whose id `namespace_ids` found.
pub(crate) async fn poll_namespace(
    aws: &Aws,
    settings: &CloudMapSettings,
    namespace: &str,
    namespace_id: &str,
) -> Result<Part, DiscoverError> {
    let services = list_services(aws, namespace, namespace_id).await?;
    let jobs = services
        .iter()
        .map(|service| {
            let (aws, namespace, service) = (aws.clone(), namespace.to_owned(), service.clone());
            async move {
                aws.call("DiscoverInstances", &target(&namespace), || {
                    aws.cloud_map
                        .discover_instances()
                        .namespace_name(&namespace)
                        .service_name(&service)
                        .health_status(HealthStatusFilter::All)
                        .max_results(MAX_INSTANCES)
                        .send()
                })
                .await
            }
        })
        .collect();
    let mut part = Part::default();
    for (service, result) in services.iter().zip(run_bounded(jobs, CONCURRENCY).await) {
        let out = match result {
            Ok(out) => out,
            // Deleted since ListServices, or (emulators ignore the ListServices filter) a
            // service of another namespace: either way not a service of this namespace now.
            Err(DiscoverError::Aws {
                code: Some(code), ..
            }) if code == "ServiceNotFound" => continue,
            Err(e) => return Err(e),
        };
        let name = format!("{}{service}.{namespace}", settings.cluster_name_prefix);
        let mut cluster = Cluster {
            name: name.clone(),
            source: Source::CloudMap {
                namespace: namespace.to_owned(),
                service: service.clone(),
            },
            port_name: None,
            overrides: ClusterOverrides::default(),
            route: Default::default(),
            backends: None,
            endpoints: Vec::new(),
        };
        if out.instances().len() >= MAX_INSTANCES as usize {
            part.warnings.insert(format!("Cloud Map service {namespace}/{service}: more than {MAX_INSTANCES} instances; only the first {MAX_INSTANCES} are used"));
        }
        for instance in out.instances() {
            let id = instance.instance_id().unwrap_or_default();
            let attrs = instance.attributes();
            let attr = |key: &str| attrs.and_then(|a| a.get(key)).map(String::as_str);
            let port = attr("AWS_INSTANCE_PORT").and_then(|p| p.parse::<u16>().ok());
            let (Some(address), Some(port)) = (attr("AWS_INSTANCE_IPV4"), port) else {
                part.warnings.insert(format!(
                    "Cloud Map service {namespace}/{service}: instance {id} lacks AWS_INSTANCE_IPV4 or a valid AWS_INSTANCE_PORT; left out"
                ));
                continue;
            };
            let health = match instance.health_status().map(|h| h.as_str()) {
                Some("HEALTHY") => Health::Healthy,
                Some("UNHEALTHY") => Health::Unhealthy,
                _ => Health::Unknown,
            };
            cluster.endpoints.push(Endpoint {
                address: address.to_owned(),
                port,
                health,
                locality: Locality {
                    region: attr("REGION").unwrap_or(aws.region()).to_owned(),
                    zone: attr("AVAILABILITY_ZONE").map(str::to_owned),
                },
                weight: 1,
                id: id.to_owned(),
                revision: None,
                deployment: None,
            });
        }
        sort_endpoints(&mut cluster);
        part.clusters.insert(name, cluster);
    }
    Ok(part)
}

/// Names of the namespace's services (ListServices filtered by namespace, every page).
async fn list_services(
    aws: &Aws,
    namespace: &str,
    namespace_id: &str,
) -> Result<Vec<String>, DiscoverError> {
    let filter = ServiceFilter::builder()
        .name(ServiceFilterName::NamespaceId)
        .values(namespace_id)
        .condition(FilterCondition::Eq)
        .build()
        .ok();
    let mut names = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let out = aws
            .call("ListServices", &target(namespace), || {
                aws.cloud_map
                    .list_services()
                    .set_filters(filter.clone().map(|f| vec![f]))
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
        names.extend(
            out.services()
                .iter()
                .filter_map(|s| s.name().map(str::to_owned)),
        );
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(names.into_iter().collect());
        }
    }
}
