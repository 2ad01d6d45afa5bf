//! Would-be denials: the requests that a service's authorization rules, evaluated in shadow
//! (`ecs-xds.authz = shadow`, or the plaintext chain of `permissive`), would have denied, by
//! caller, as its Envoys report them on the access log service (`serve/access_log.rs`).
//!
//! The serve module adds, the admin views (`/nodes`, `/metrics`) read. What a stream reports is
//! its peer's word (a caller's URI SAN, or a service an unverified node claims), so the map is
//! bounded: at most [`MAX_SERVICES`] services of [`MAX_CALLERS`] callers each, names of at most
//! [`MAX_NAME`] bytes. What does not fit is still counted, under [`OTHER`], so a total stays
//! right. A std `Mutex`: each add is a few map operations, never held across an `.await`.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Services with would-be denials kept by name; the others are counted under [`OTHER`].
pub const MAX_SERVICES: usize = 256;
/// Callers kept by name per service; the others are counted under [`OTHER`].
pub const MAX_CALLERS: usize = 64;
/// A longer service or caller name is counted under [`OTHER`] (a SPIFFE ID ecs-xds issues is
/// at most about 810 bytes: a 255-byte trust domain, ECS cluster and service name).
pub const MAX_NAME: usize = 1024;
/// Where what does not fit is counted: neither an ECS service name nor a SPIFFE ID.
pub const OTHER: &str = "(other)";

/// Would-be denials by service, then by caller (a SPIFFE ID, or `plaintext`).
pub type DenialCounts = BTreeMap<String, BTreeMap<String, u64>>;

/// The counts, shared by the streams that report and the views that read them.
#[derive(Debug, Default)]
pub struct ShadowDenials {
    counts: Mutex<DenialCounts>,
}

impl ShadowDenials {
    /// Counts `n` requests of `caller` that `service`'s rules in shadow would have denied.
    pub fn add(&self, service: &str, caller: &str, n: u64) {
        let mut counts = self.counts.lock().unwrap();
        let service = kept(
            service,
            counts.contains_key(service),
            counts.len(),
            MAX_SERVICES,
        );
        let callers = counts.entry(service.to_owned()).or_default();
        let caller = kept(
            caller,
            callers.contains_key(caller),
            callers.len(),
            MAX_CALLERS,
        );
        *callers.entry(caller.to_owned()).or_default() += n;
    }

    /// `service`'s would-be denials by caller; `None` when there were none.
    pub fn of(&self, service: &str) -> Option<BTreeMap<String, u64>> {
        self.counts.lock().unwrap().get(service).cloned()
    }

    /// Every service's would-be denials by caller.
    pub fn all(&self) -> DenialCounts {
        self.counts.lock().unwrap().clone()
    }
}

/// `name` if it is already kept, or fits: short enough, with fewer than `max` names `held`
/// beside it; else [`OTHER`].
fn kept(name: &str, known: bool, held: usize, max: usize) -> &str {
    let fits = name.len() <= MAX_NAME && held < max;
    match known || fits {
        true => name,
        false => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_denials_are_counted_by_service_and_caller() {
        let denials = ShadowDenials::default();
        denials.add("orders", "spiffe://m/ecs/1/r/c/api", 2);
        denials.add("orders", "spiffe://m/ecs/1/r/c/api", 1);
        denials.add("orders", "plaintext", 1);
        let orders = denials.of("orders").unwrap();
        assert_eq!(orders["spiffe://m/ecs/1/r/c/api"], 3);
        assert_eq!(orders["plaintext"], 1);
        assert_eq!(denials.of("web"), None);
    }

    #[test]
    fn made_up_names_past_the_caps_are_counted_as_other() {
        let denials = ShadowDenials::default();
        for i in 0..MAX_CALLERS * 4 {
            denials.add("orders", &format!("spiffe://m/ecs/made-up-{i}"), 1);
        }
        denials.add("orders", &"x".repeat(MAX_NAME + 1), 1);
        let orders = denials.of("orders").unwrap();
        assert!(orders.len() <= MAX_CALLERS + 1, "{}", orders.len());
        assert_eq!(orders.values().sum::<u64>(), (MAX_CALLERS * 4 + 1) as u64);
        assert!(orders[OTHER] > 0);
        // A caller kept before the cap is still counted by name.
        denials.add("orders", "spiffe://m/ecs/made-up-0", 1);
        assert_eq!(denials.of("orders").unwrap()["spiffe://m/ecs/made-up-0"], 2);
        for i in 0..MAX_SERVICES * 2 {
            denials.add(&format!("service-{i}"), "plaintext", 1);
        }
        assert!(denials.all().len() <= MAX_SERVICES + 1);
        assert!(denials.of(OTHER).is_some());
    }
}
