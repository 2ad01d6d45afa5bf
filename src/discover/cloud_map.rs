//! One Cloud Map namespace → its [`Part`] of the inventory: ListServices in the namespace, then
//! DiscoverInstances (every health status) per service.
//!
//! Each instance's address is its `AWS_INSTANCE_IPV4` / `AWS_INSTANCE_PORT` attributes, its
//! health is Cloud Map's, its zone the `AVAILABILITY_ZONE` attribute ECS writes when it registers
//! tasks. A Cloud Map service with no instances is still a cluster (with no endpoints): unlike an
//! ECS service, found only through its tasks, it is known to exist.

use crate::aws::{run_bounded, Aws, Instance, CONCURRENCY, MAX_INSTANCES};
use crate::settings::CloudMapSettings;

use super::assemble::{sort_endpoints, Part};
use super::DiscoverError;
use crate::inventory::{Cluster, ClusterOverrides, Endpoint, Health, Locality, Source};

/// Polls one namespace whose id `namespace_ids` found.
pub(crate) async fn poll_namespace(
    aws: &Aws,
    settings: &CloudMapSettings,
    namespace: &str,
    namespace_id: &str,
) -> Result<Part, DiscoverError> {
    let services = aws.list_services(namespace, namespace_id).await?;
    let jobs = services
        .iter()
        .map(|service| {
            let (aws, namespace, service) = (aws.clone(), namespace.to_owned(), service.clone());
            async move { aws.discover_instances(&namespace, &service).await }
        })
        .collect();
    let mut part = Part::default();
    for (service, result) in services.iter().zip(run_bounded(jobs, CONCURRENCY).await) {
        let Some(instances) = result? else {
            continue;
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
            security: Default::default(),
            endpoints: Vec::new(),
        };
        if instances.len() >= MAX_INSTANCES as usize {
            part.warnings.insert(format!("Cloud Map service {namespace}/{service}: more than {MAX_INSTANCES} instances; only the first {MAX_INSTANCES} are used"));
        }
        for instance in &instances {
            match endpoint(instance, aws.region()) {
                Some(endpoint) => cluster.endpoints.push(endpoint),
                None => {
                    part.warnings.insert(format!(
                        "Cloud Map service {namespace}/{service}: instance {} lacks AWS_INSTANCE_IPV4 or a valid AWS_INSTANCE_PORT; left out",
                        instance.id
                    ));
                }
            }
        }
        sort_endpoints(&mut cluster);
        part.clusters.insert(name, cluster);
    }
    Ok(part)
}

/// The endpoint of an instance with an address and a port; `region` unless it says its own.
fn endpoint(instance: &Instance, region: &str) -> Option<Endpoint> {
    let attr = |key: &str| instance.attributes.get(key).map(String::as_str);
    let port = attr("AWS_INSTANCE_PORT")?.parse::<u16>().ok()?;
    let health = match instance.health.as_deref() {
        Some("HEALTHY") => Health::Healthy,
        Some("UNHEALTHY") => Health::Unhealthy,
        _ => Health::Unknown,
    };
    Some(Endpoint {
        address: attr("AWS_INSTANCE_IPV4")?.to_owned(),
        port,
        health,
        locality: Locality {
            region: attr("REGION").unwrap_or(region).to_owned(),
            zone: attr("AVAILABILITY_ZONE").map(str::to_owned),
        },
        weight: 1,
        id: instance.id.clone(),
        revision: None,
        deployment: None,
    })
}
