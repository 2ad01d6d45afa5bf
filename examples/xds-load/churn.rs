//! The churn soak (`--churn R --duration D`): R endpoint publishes a second for D, each
//! measured from the publish to every stream receiving it (or a later one: a stream that is
//! behind gets the newest, and that answers every publish it skipped). The server's RSS is
//! read before and after, both after the same quiet time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::server::cluster_name;

/// Latencies are counted in 1 ms buckets up to this; longer ones in the last.
const BUCKETS: usize = 10_000;

/// Publish times and the latency histogram, shared by the fleet.
pub struct Churn {
    /// When each generation was published (generation 1 is the single measured push).
    published: Vec<OnceLock<Instant>>,
    buckets: Vec<AtomicU64>,
}

impl Churn {
    pub fn new(generations: usize) -> Churn {
        Churn {
            published: (0..=generations + 1).map(|_| OnceLock::new()).collect(),
            buckets: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Generation `g` is being published now.
    pub fn publishing(&self, g: u16) {
        let _ = self.published[usize::from(g)].set(Instant::now());
    }

    /// A stream that held generation `from` now holds `to`: every publish in between reached it.
    pub fn reached(&self, from: u16, to: u16) {
        let now = Instant::now();
        for g in from.saturating_add(1)..=to {
            if let Some(at) = self.published.get(usize::from(g)).and_then(OnceLock::get) {
                let ms = now.duration_since(*at).as_millis() as usize;
                self.buckets[ms.min(BUCKETS)].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// (samples, p50, p99, max) of the latencies so far.
    pub fn summary(&self) -> (u64, Duration, Duration, Duration) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let at = |p: u64| {
            let want = (total * p).div_ceil(100).max(1);
            let mut seen = 0;
            for (ms, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= want {
                    return Duration::from_millis(ms as u64);
                }
            }
            Duration::ZERO
        };
        let max = counts.iter().rposition(|n| *n > 0).unwrap_or(0);
        (total, at(50), at(99), Duration::from_millis(max as u64))
    }
}

/// The generation an EDS response carries: the first endpoint of the first cluster is moved
/// by one port per generation (`server::load_snapshot`). `None` when the response lacks it.
pub fn generation<'a>(resources: impl IntoIterator<Item = &'a Any>) -> Option<u16> {
    let first = cluster_name(0);
    resources.into_iter().find_map(|any| {
        let cla = ClusterLoadAssignment::decode(any.value.as_slice()).ok()?;
        if cla.cluster_name != first {
            return None;
        }
        let lb = cla.endpoints.first()?.lb_endpoints.first()?;
        let host = match lb.host_identifier.as_ref()? {
            envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
                e,
            ) => e,
            _ => return None,
        };
        let socket = match host.address.as_ref()?.address.as_ref()? {
            envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(s) => s,
            _ => return None,
        };
        match socket.port_specifier.as_ref()? {
            envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                p,
            ) => u16::try_from(*p).ok()?.checked_sub(8000),
            _ => None,
        }
    })
}
