//! Attestation: from a task's proof and CSR to a certificate naming its ECS service, or a
//! refusal with a reason.
//!
//! The steps, cheapest first, so that a bad request costs no AWS call:
//! 1. the CSR parses, and the proof's checks pass (`proof.rs`: pinned host, GetCallerIdentity
//!    only, allow-listed headers, fresh signature, this server's id, this CSR's key);
//! 2. STS, at the pinned endpoint, answers who signed: `assumed-role/ROLE/SESSION`, and ECS
//!    names a task's role session after the task id;
//! 3. ECS (one DescribeTasks, authoritative, not the possibly older inventory) says the task
//!    exists in a watched cluster of one of discovery's accounts and regions (asked of that
//!    account's ECS, through its source's role), is meant to run, was given that
//!    role (its own override, or its task definition's), and belongs to a service;
//! 4. the CA signs a certificate it builds for that service, from the CSR's public key alone,
//!    naming as its locality the availability zone that DescribeTasks gave the task.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::ca::{Ca, CsrError, Issued};
use super::proof::{self, Pins};
use super::CaHolder;
use crate::aws::{Aws, AwsError, SignedRequest, Sts, TaskFacts};
use crate::spiffe::SpiffeId;

/// What an agent sends.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// The signed, unsent GetCallerIdentity request.
    pub proof: SignedRequest,
    /// PEM PKCS#10: only its public key is used.
    pub csr: String,
    /// The task's ARN, as its metadata endpoint says (the cluster is in it).
    pub task_arn: String,
}

/// Why no certificate was issued. `reason` is the metric label; `detail` is logged, and shown to
/// the caller only for its own input mistakes (never what ECS or STS said about a task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The request itself is wrong (400): the caller may see why.
    BadRequest {
        reason: &'static str,
        detail: String,
    },
    /// The request is well formed, and the identity does not hold (403).
    Refused {
        reason: &'static str,
        detail: String,
    },
    /// STS or ECS could not be asked (503): the agent retries.
    Unavailable {
        reason: &'static str,
        detail: String,
    },
}

impl Denied {
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::BadRequest { reason, .. }
            | Denied::Refused { reason, .. }
            | Denied::Unavailable { reason, .. } => reason,
        }
    }

    fn refused(reason: &'static str, detail: impl Into<String>) -> Denied {
        Denied::Refused {
            reason,
            detail: detail.into(),
        }
    }

    fn unavailable(reason: &'static str, error: &AwsError) -> Denied {
        Denied::Unavailable {
            reason,
            detail: error.to_string(),
        }
    }
}

impl From<CsrError> for Denied {
    fn from(e: CsrError) -> Self {
        Denied::BadRequest {
            reason: e.reason(),
            detail: e.to_string(),
        }
    }
}

/// Which ECS clusters' tasks may get certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    /// Every cluster of the account (`ecs.auto_discover_clusters`).
    All,
    /// These clusters, by name or ARN.
    Clusters(Vec<String>),
}

impl Watched {
    fn contains(&self, cluster: &str) -> bool {
        match self {
            Watched::All => true,
            Watched::Clusters(clusters) => clusters
                .iter()
                .any(|c| c == cluster || c.rsplit('/').next() == Some(cluster)),
        }
    }
}

/// What the attestor is told at start.
#[derive(Debug, Clone)]
pub struct Policy {
    pub pins: Pins,
    pub trust_domain: String,
    /// The accounts and regions whose tasks may get certificates (`[[ecs.sources]]`, or the
    /// one of `[ecs]`), each with the clients that ask its ECS.
    pub scopes: Vec<AttestScope>,
    pub ttl: Duration,
    pub check_task_address: bool,
}

/// One account and region whose watched clusters' tasks may get certificates.
#[derive(Debug, Clone)]
pub struct AttestScope {
    /// `None`: the credentials' own account (whose ECS knows only its own tasks).
    pub account: Option<String>,
    pub region: String,
    pub watched: Watched,
    /// Its ECS, with its own credentials (an assumed role for another account).
    pub aws: Aws,
}

/// Turns proofs into certificates. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Attestor {
    policy: Policy,
    sts: Sts,
    ca: CaHolder,
    /// Task definition ARN → its task role: immutable per ARN, so asked once.
    roles: Mutex<HashMap<String, Option<String>>>,
}

/// Task definitions whose roles are remembered; past it the memory starts over.
const ROLES_BOUND: usize = 4096;

/// A task as STS and ECS describe it.
#[derive(Debug, PartialEq, Eq)]
struct Caller {
    account: String,
    role: String,
    session: String,
}

/// A task ARN's parts: `arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID`.
#[derive(Debug, PartialEq, Eq)]
struct TaskArn {
    region: String,
    account: String,
    cluster: String,
    id: String,
}

impl Attestor {
    pub fn new(policy: Policy, sts: Sts, ca: CaHolder) -> Self {
        Self {
            policy,
            sts,
            ca,
            roles: Mutex::default(),
        }
    }

    /// The certificate for the task that made `request`, from `peer`.
    pub async fn attest(
        &self,
        request: &CertificateRequest,
        peer: IpAddr,
        now: SystemTime,
    ) -> Result<(SpiffeId, Issued), Denied> {
        let key = super::ca::key_sha256_hex(&request.csr)?;
        proof::check(&request.proof, &self.policy.pins, &key, now)
            .map_err(|r| Denied::refused(r.reason(), r.to_string()))?;
        super::ca::check_csr(&request.csr)?;
        let task_arn = parse_task_arn(&request.task_arn).ok_or_else(|| Denied::BadRequest {
            reason: "task_arn_malformed",
            detail: "task_arn is not an ECS task ARN (arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID)"
                .into(),
        })?;
        let arn = self.sts.caller_arn(&request.proof).await.map_err(|e| {
            match e.code() {
                // STS refused the signature or the credentials: the proof is no good.
                Some(_) => Denied::refused("sts_refused", e.to_string()),
                None => Denied::unavailable("sts_unavailable", &e),
            }
        })?;
        let caller = parse_assumed_role(&arn)
            .ok_or_else(|| Denied::refused("not_a_task_role", format!("STS says {arn}")))?;
        let scope = self.check_task_arn(&caller, &task_arn)?;
        let task = describe(scope, &task_arn, &request.task_arn).await?;
        self.check_task(scope, &caller, &task, peer).await?;
        let service = task
            .group
            .as_deref()
            .and_then(|g| g.strip_prefix("service:"))
            .ok_or_else(|| {
                Denied::refused(
                    "not_a_service_task",
                    format!("task {} has group {:?}", task.arn, task.group),
                )
            })?;
        let id = SpiffeId::new(
            &self.policy.trust_domain,
            &caller.account,
            &scope.region,
            &task_arn.cluster,
            service,
        )
        .map_err(|e| Denied::refused("name_invalid", e.to_string()))?;
        let ca: Arc<Ca> = self.ca.current();
        // The zone is ECS's word on the task, like its service: a verified stream is served in it.
        let zone = task.zone.as_deref();
        let issued = ca.issue_workload(&request.csr, &id, zone, self.policy.ttl, now)?;
        Ok((id, issued))
    }

    /// The task ARN the agent names must be the one STS vouches for, in a watched cluster of
    /// one of the scopes (that scope).
    fn check_task_arn(&self, caller: &Caller, task: &TaskArn) -> Result<&AttestScope, Denied> {
        if task.id != caller.session || task.account != caller.account {
            return Err(Denied::refused(
                "task_mismatch",
                format!(
                    "the role session is {}/{}, the task named is {}/{}",
                    caller.account, caller.session, task.account, task.id
                ),
            ));
        }
        // A scope named by its account first; the own account's (unnamed) only after.
        let watching = |named: bool| {
            move |s: &&AttestScope| {
                let account = match &s.account {
                    Some(a) => named && *a == task.account,
                    None => !named,
                };
                account && s.region == task.region && s.watched.contains(&task.cluster)
            }
        };
        let scopes = &self.policy.scopes;
        let found = scopes.iter().find(watching(true));
        found
            .or_else(|| scopes.iter().find(watching(false)))
            .ok_or_else(|| {
                Denied::refused(
                    "cluster_not_watched",
                    format!(
                        "cluster {} of account {} in {} is not watched here",
                        task.cluster, task.account, task.region
                    ),
                )
            })
    }

    /// The task is meant to run (an agent starts before the task reaches RUNNING), ran with the
    /// caller's role, and, when asked, from its own ENI's address.
    async fn check_task(
        &self,
        scope: &AttestScope,
        caller: &Caller,
        task: &TaskFacts,
        peer: IpAddr,
    ) -> Result<(), Denied> {
        let stopping = [
            "DEACTIVATING",
            "STOPPING",
            "DEPROVISIONING",
            "STOPPED",
            "DELETED",
        ];
        if task.desired_status != "RUNNING" || stopping.contains(&task.last_status.as_str()) {
            return Err(Denied::refused(
                "task_not_running",
                format!(
                    "task {} is {} (desired {})",
                    task.arn, task.last_status, task.desired_status
                ),
            ));
        }
        let role = match &task.task_role_override {
            Some(role) => Some(role.clone()),
            None => self.task_definition_role(scope, task).await?,
        };
        let matches = role
            .as_deref()
            .and_then(parse_role_arn)
            .is_some_and(|(account, name)| account == caller.account && name == caller.role);
        if !matches {
            return Err(Denied::refused(
                "role_mismatch",
                format!(
                    "task {} runs with role {:?}, the proof was signed by role {}",
                    task.arn, role, caller.role
                ),
            ));
        }
        if self.policy.check_task_address {
            if let Some(eni) = &task.eni_ipv4 {
                if eni.parse::<IpAddr>().ok() != Some(peer) {
                    return Err(Denied::refused(
                        "address_mismatch",
                        format!(
                            "task {} has address {eni}, the request came from {peer}",
                            task.arn
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn task_definition_role(
        &self,
        scope: &AttestScope,
        task: &TaskFacts,
    ) -> Result<Option<String>, Denied> {
        let arn = &task.task_definition_arn;
        if let Some(role) = self.roles.lock().unwrap().get(arn) {
            return Ok(role.clone());
        }
        let cluster = parse_task_arn(&task.arn)
            .map(|t| t.cluster)
            .unwrap_or_default();
        let def = (scope.aws)
            .describe_task_definition(&cluster, arn)
            .await
            .map_err(|e| Denied::unavailable("ecs_unavailable", &e))?;
        let mut roles = self.roles.lock().unwrap();
        if roles.len() >= ROLES_BOUND {
            roles.clear();
        }
        roles.insert(arn.clone(), def.task_role_arn.clone());
        Ok(def.task_role_arn)
    }
}

/// Task `arn` as `scope`'s ECS describes it.
async fn describe(scope: &AttestScope, task: &TaskArn, arn: &str) -> Result<TaskFacts, Denied> {
    let found = (scope.aws)
        .describe_tasks(&task.cluster, &[arn.to_owned()])
        .await
        .map_err(|e| Denied::unavailable("ecs_unavailable", &e))?;
    found
        .into_iter()
        .find(|t| t.arn == arn)
        .ok_or_else(|| Denied::refused("task_not_found", format!("ECS does not know {arn}")))
}

/// `arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
fn parse_assumed_role(arn: &str) -> Option<Caller> {
    let [_, _, service, region, account, resource] = arn_parts(arn)?;
    let mut path = resource.strip_prefix("assumed-role/")?.split('/');
    let (Some(role), Some(session), None) = (path.next(), path.next(), path.next()) else {
        return None;
    };
    (service == "sts" && region.is_empty() && !role.is_empty() && !session.is_empty()).then(|| {
        Caller {
            account: account.to_owned(),
            role: role.to_owned(),
            session: session.to_owned(),
        }
    })
}

/// `arn:PARTITION:ecs:REGION:ACCOUNT:task/CLUSTER/ID` (the long ARN format; the old one without
/// the cluster is not accepted).
fn parse_task_arn(arn: &str) -> Option<TaskArn> {
    let [_, _, service, region, account, resource] = arn_parts(arn)?;
    let mut path = resource.strip_prefix("task/")?.split('/');
    let (Some(cluster), Some(id), None) = (path.next(), path.next(), path.next()) else {
        return None;
    };
    (service == "ecs" && !cluster.is_empty() && !id.is_empty()).then(|| TaskArn {
        region: region.to_owned(),
        account: account.to_owned(),
        cluster: cluster.to_owned(),
        id: id.to_owned(),
    })
}

/// `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME` → (account, name): an assumed-role ARN names
/// the role without its path.
fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let [_, _, service, _, account, resource] = arn_parts(arn)?;
    let name = resource.strip_prefix("role/")?.rsplit('/').next()?;
    (service == "iam" && !name.is_empty()).then_some((account, name))
}

fn arn_parts(arn: &str) -> Option<[&str; 6]> {
    let mut parts = arn.splitn(6, ':');
    let all = [(); 6].map(|_| parts.next());
    match all {
        [Some("arn"), Some(p), Some(s), Some(r), Some(a), Some(res)] => {
            Some(["arn", p, s, r, a, res])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ecs_task_role_session_is_read_from_the_sts_arn() {
        assert_eq!(
            parse_assumed_role("arn:aws:sts::111122223333:assumed-role/orders-task/0a1b2c"),
            Some(Caller {
                account: "111122223333".into(),
                role: "orders-task".into(),
                session: "0a1b2c".into(),
            })
        );
        for not_a_task in [
            "arn:aws:iam::111122223333:user/alice",
            "arn:aws:sts::111122223333:federated-user/bob",
            "arn:aws:sts::111122223333:assumed-role/r",
            "arn:aws:sts::111122223333:assumed-role/r/s/extra",
            "arn:aws:sts:us-east-1:111122223333:assumed-role/r/s",
        ] {
            assert_eq!(parse_assumed_role(not_a_task), None, "{not_a_task}");
        }
    }

    #[test]
    fn a_task_arn_must_be_the_long_format_with_its_cluster() {
        assert_eq!(
            parse_task_arn("arn:aws:ecs:eu-west-1:111122223333:task/prod/0a1b2c"),
            Some(TaskArn {
                region: "eu-west-1".into(),
                account: "111122223333".into(),
                cluster: "prod".into(),
                id: "0a1b2c".into(),
            })
        );
        assert_eq!(
            parse_task_arn("arn:aws:ecs:eu-west-1:111122223333:task/0a1b2c"),
            None
        );
        assert_eq!(
            parse_task_arn("arn:aws:ecs:eu-west-1:1:service/prod/x"),
            None
        );
    }

    #[test]
    fn a_role_arn_with_a_path_matches_its_assumed_role_name() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::111122223333:role/mesh/orders-task"),
            Some(("111122223333", "orders-task"))
        );
        assert_eq!(
            parse_role_arn("arn:aws:iam::111122223333:user/orders-task"),
            None
        );
    }

    #[test]
    fn watched_clusters_match_by_name_or_arn() {
        let w = Watched::Clusters(vec![
            "arn:aws:ecs:us-east-1:1:cluster/prod".into(),
            "staging".into(),
        ]);
        assert!(w.contains("prod") && w.contains("staging") && !w.contains("dev"));
        assert!(Watched::All.contains("dev"));
    }
}
