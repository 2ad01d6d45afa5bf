//! The Cloud Map requests discovery makes: namespaces, a namespace's services, and a service's
//! instances with their attributes and health.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_servicediscovery::operation::list_namespaces::ListNamespacesOutput;
use aws_sdk_servicediscovery::operation::list_services::ListServicesOutput;
use aws_sdk_servicediscovery::types::{
    FilterCondition, HealthStatusFilter, ServiceFilter, ServiceFilterName,
};

use super::retry::Request;
use super::{Aws, AwsError};

/// DiscoverInstances answers at most this many instances per call.
pub(crate) const MAX_INSTANCES: i32 = 1000;

/// One registered instance, as DiscoverInstances answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instance {
    pub id: String,
    /// `AWS_INSTANCE_IPV4`, `AWS_INSTANCE_PORT`, `AVAILABILITY_ZONE`, ...
    pub attributes: BTreeMap<String, String>,
    /// Cloud Map's health status (`HEALTHY`, `UNHEALTHY`, `UNKNOWN`), when it reports one.
    pub health: Option<String>,
}

fn target(namespace: &str) -> String {
    format!("Cloud Map namespace {namespace}")
}

impl Aws {
    /// Namespace name → id for every namespace of the account (ListNamespaces, every page).
    pub(crate) async fn namespace_ids(&self) -> Result<BTreeMap<String, String>, AwsError> {
        let send = |token| {
            self.cloud_map
                .list_namespaces()
                .set_next_token(token)
                .send()
        };
        let page = |out: ListNamespacesOutput| {
            let ids = (out.namespaces().iter())
                .filter_map(|ns| Some((ns.name()?.to_owned(), ns.id()?.to_owned())));
            (ids.collect(), out.next_token().map(str::to_owned))
        };
        let request = Request::new("ListNamespaces");
        let ids = self
            .call_paged(request, "Cloud Map namespaces", send, page)
            .await?;
        Ok(ids.into_iter().collect())
    }

    /// Names of the namespace's services (ListServices filtered by namespace, every page).
    pub(crate) async fn list_services(
        &self,
        namespace: &str,
        namespace_id: &str,
    ) -> Result<Vec<String>, AwsError> {
        let filter = ServiceFilter::builder()
            .name(ServiceFilterName::NamespaceId)
            .values(namespace_id)
            .condition(FilterCondition::Eq)
            .build()
            .ok();
        let send = |token| {
            let list = self.cloud_map.list_services();
            let list = list.set_filters(filter.clone().map(|f| vec![f]));
            list.set_next_token(token).send()
        };
        let page = |out: ListServicesOutput| {
            let names = (out.services().iter()).filter_map(|s| s.name().map(str::to_owned));
            (names.collect(), out.next_token().map(str::to_owned))
        };
        let request = Request::new("ListServices");
        let names = self
            .call_paged(request, &target(namespace), send, page)
            .await?;
        let names: BTreeSet<String> = names.into_iter().collect();
        Ok(names.into_iter().collect())
    }

    /// DiscoverInstances of every health status, at most [`MAX_INSTANCES`]; `None` when the
    /// service does not exist (deleted since ListServices, or, as emulators ignore the
    /// ListServices filter, a service of another namespace).
    pub(crate) async fn discover_instances(
        &self,
        namespace: &str,
        service: &str,
    ) -> Result<Option<Vec<Instance>>, AwsError> {
        let result = self
            .call("DiscoverInstances", &target(namespace), || {
                self.cloud_map
                    .discover_instances()
                    .namespace_name(namespace)
                    .service_name(service)
                    .health_status(HealthStatusFilter::All)
                    .max_results(MAX_INSTANCES)
                    .send()
            })
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) if e.code() == Some("ServiceNotFound") => return Ok(None),
            Err(e) => return Err(e),
        };
        let instances = out.instances().iter().map(|instance| Instance {
            id: instance.instance_id().unwrap_or_default().to_owned(),
            attributes: (instance.attributes().cloned().unwrap_or_default())
                .into_iter()
                .collect(),
            health: instance.health_status().map(|h| h.as_str().to_owned()),
        });
        Ok(Some(instances.collect()))
    }
}
