//! One (account, region) of discovery, polled on its own: its clients (made on first use, an
//! assumed role's included), its ECS facts, and its clusters' and namespaces' parts. A scope
//! whose poll fails keeps its last good parts while the others go on (fail static per source).

use std::collections::BTreeMap;

use crate::aws::Aws;
use crate::settings::{DiscoverConfig, Scope};

use super::assemble::Part;
use super::ecs::{poll_cluster, EcsState};
use super::{cloud_map, DiscoverError};

/// What one scope contributes: an ECS cluster or a Cloud Map namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PartId {
    Ecs(String),
    CloudMap(String),
}

/// One scope's state between polls.
pub(crate) struct ScopeState {
    pub scope: Scope,
    /// `account/region` in logs, metrics and `/readyz`.
    pub label: String,
    /// The scope's clients, made on its first poll.
    pub aws: Option<Aws>,
    pub ecs: EcsState,
    /// ECS clusters in priority order: the settings' list, or the last ListClusters answer.
    pub ecs_clusters: Vec<String>,
    /// False until ListClusters first succeeds (auto-discovery only).
    pub ecs_clusters_known: bool,
    /// Whether the account must be known before mapping (`{account}` in a name template, or
    /// several sources whose events must be told apart by account).
    pub needs_account: bool,
    /// The last good part of each cluster and namespace.
    pub parts: BTreeMap<PartId, Part>,
}

impl ScopeState {
    pub(crate) fn new(scope: Scope, settings: &DiscoverConfig, default: Option<Aws>) -> Self {
        let several = !settings.ecs.sources.is_empty();
        let templates = [&settings.ecs.cluster_name, &settings.ecs.port_cluster_name];
        let needs_account = several || templates.iter().any(|t| t.contains("{account}"));
        Self {
            label: scope.label(),
            ecs_clusters: match scope.auto_discover_clusters {
                true => Vec::new(),
                false => scope.clusters.clone(),
            },
            ecs_clusters_known: !scope.auto_discover_clusters,
            aws: default,
            ecs: EcsState::default(),
            needs_account,
            parts: BTreeMap::new(),
            scope,
        }
    }

    /// Whether every cluster and namespace of the scope has a part.
    pub(crate) fn complete(&self) -> bool {
        self.ecs_clusters_known && self.order().all(|id| self.parts.contains_key(&id))
    }

    /// The scope's parts in priority order: clusters, then namespaces.
    pub(crate) fn order(&self) -> impl Iterator<Item = PartId> + '_ {
        let clusters = self.ecs_clusters.iter().map(|c| PartId::Ecs(c.clone()));
        clusters.chain(
            self.scope
                .namespaces
                .iter()
                .map(|n| PartId::CloudMap(n.clone())),
        )
    }

    /// The scope's clients, made from `base` on first use, with the account known when needed.
    pub(crate) async fn clients(&mut self, base: &Aws) -> Result<&Aws, DiscoverError> {
        if self.aws.is_none() {
            self.aws = Some(base.for_scope(&self.scope).await?);
        }
        let aws = self.aws.as_mut().expect("made above");
        if self.needs_account {
            aws.resolve_account().await?;
        }
        Ok(aws)
    }

    /// Polls every cluster and namespace of the scope; failures keep their last good part.
    pub(crate) async fn poll(
        &mut self,
        base: &Aws,
        settings: &DiscoverConfig,
        errors: &mut Vec<DiscoverError>,
    ) {
        let aws = match self.clients(base).await {
            Ok(aws) => aws.clone(),
            Err(e) => return errors.push(e),
        };
        if self.scope.auto_discover_clusters {
            match aws.list_clusters().await {
                Ok(clusters) => {
                    let watched =
                        |id: &PartId| !matches!(id, PartId::Ecs(c) if !clusters.contains(c));
                    self.parts.retain(|id, _| watched(id));
                    self.ecs.retain_clusters(&clusters);
                    self.ecs_clusters = clusters;
                    self.ecs_clusters_known = true;
                }
                Err(e) => errors.push(e.into()),
            }
        }
        for cluster in self.ecs_clusters.clone() {
            let result = poll_cluster(
                &aws,
                &settings.ecs,
                settings.filter(),
                &cluster,
                &mut self.ecs,
            )
            .await;
            self.record(PartId::Ecs(cluster), result, errors);
        }
        self.poll_namespaces(&aws, settings, errors).await;
    }

    async fn poll_namespaces(
        &mut self,
        aws: &Aws,
        settings: &DiscoverConfig,
        errors: &mut Vec<DiscoverError>,
    ) {
        let namespaces = self.scope.namespaces.clone();
        if namespaces.is_empty() {
            return;
        }
        let ids = match aws.namespace_ids().await {
            Ok(ids) => ids,
            Err(e) => return errors.push(e.into()),
        };
        for ns in namespaces {
            let result = match ids.get(&ns) {
                Some(id) => cloud_map::poll_namespace(aws, &settings.cloud_map, &ns, id).await,
                None => Err(DiscoverError::NotFound {
                    target: format!("Cloud Map namespace {ns}"),
                    message: "ListNamespaces does not list it".into(),
                }),
            };
            self.record(PartId::CloudMap(ns), result, errors);
        }
    }

    fn record(
        &mut self,
        id: PartId,
        result: Result<Part, DiscoverError>,
        errors: &mut Vec<DiscoverError>,
    ) {
        match result {
            Ok(part) => {
                self.parts.insert(id, part);
            }
            Err(e) => errors.push(e),
        }
    }

    /// Whether an ECS cluster ARN (`arn:aws:ecs:REGION:ACCOUNT:cluster/NAME`) is of this scope:
    /// its region is the scope's, and so is its account when the scope's is known. An ARN that
    /// does not parse is of every scope (a name alone says nothing).
    pub(crate) fn holds_arn(&self, arn: &str) -> bool {
        let mut parts = arn.split(':');
        let (Some("arn"), _, Some("ecs"), Some(region), Some(account)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return true;
        };
        let Some(aws) = &self.aws else {
            return false;
        };
        let account_ok = aws.account().is_none_or(|a| a == account);
        aws.region() == region && account_ok
    }
}
