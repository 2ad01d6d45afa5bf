//! Workload identity: a task proves which ECS service it is with its task IAM role, and
//! ecs-xds, as the mesh's CA, gives it a short-lived certificate naming that service.
//! docs/identity.md has the threat model: what is trusted, and what an attacker can and cannot
//! do.
//!
//! - [`crate::spiffe`] (shared with settings and serve): the SPIFFE ID a certificate names.
//! - `ca.rs`: the signing CA (an intermediate), issuing certificates built here from a CSR's
//!   public key alone; `ca init` for a first try.
//! - `proof.rs`: the checks on a task's signed, unsent `sts:GetCallerIdentity` request before
//!   ecs-xds sends it to its pinned STS endpoint.
//! - `attest.rs`: proof → STS → ECS → certificate, or a refusal with its reason.
//! - `endpoint.rs`: the HTTPS endpoint agents call, its limits and its answers.
//! - `tls.rs`: the rustls configurations of the listeners and of the agent.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

pub mod attest;
pub mod ca;
pub mod endpoint;
pub mod proof;
pub mod tls;

/// The CA in force, replaceable while ecs-xds runs (a renewed intermediate read from Secrets
/// Manager). Cheap to clone: clones share it.
#[derive(Clone)]
pub struct CaHolder(Arc<RwLock<Arc<ca::Ca>>>);

impl CaHolder {
    pub fn new(ca: ca::Ca) -> Self {
        CaHolder(Arc::new(RwLock::new(Arc::new(ca))))
    }

    pub fn current(&self) -> Arc<ca::Ca> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, ca: ca::Ca) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ca);
    }
}

impl std::fmt::Debug for CaHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaHolder(..)")
    }
}

/// What the identity endpoint did, for `/metrics`.
#[derive(Debug, Default)]
pub struct IdentityStats {
    /// (outcome, reason) → requests: `issued`/`ok`, `bad_request`/…, `refused`/…,
    /// `unavailable`/….
    outcomes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    issued: AtomicU64,
    /// The newest certificate of each task: (service, expiry), dropped once expired.
    latest: Mutex<HashMap<String, (String, SystemTime)>>,
}

impl IdentityStats {
    pub(crate) fn record(&self, outcome: &'static str, reason: &'static str) {
        *self
            .outcomes
            .lock()
            .unwrap()
            .entry((outcome, reason))
            .or_default() += 1;
    }

    pub(crate) fn issued(&self, task: &str, service: &str, expires: SystemTime) {
        self.issued.fetch_add(1, Ordering::Relaxed);
        self.record("issued", "ok");
        self.latest
            .lock()
            .unwrap()
            .insert(task.to_owned(), (service.to_owned(), expires));
    }

    /// Identity requests so far, by (outcome, reason).
    pub fn outcomes(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.outcomes.lock().unwrap().clone()
    }

    /// Certificates issued so far.
    pub fn certificates_issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Per service, the soonest expiry among its tasks' newest certificates: a service whose
    /// agents stopped renewing shows here before its Envoys fail.
    pub fn soonest_expiry(&self, now: SystemTime) -> BTreeMap<String, SystemTime> {
        let mut latest = self.latest.lock().unwrap();
        latest.retain(|_, (_, expires)| *expires > now);
        let mut soonest: BTreeMap<String, SystemTime> = BTreeMap::new();
        for (service, expires) in latest.values() {
            let entry = soonest.entry(service.clone()).or_insert(*expires);
            *entry = (*entry).min(*expires);
        }
        soonest
    }
}
