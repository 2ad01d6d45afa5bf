//! `/metrics`: Prometheus metrics (prometheus-client, OpenMetrics text).
//!
//! Most figures already live somewhere (the AWS call counter, the status registry, the cache,
//! the daemon's counters, the latest inventory), so a [`Collector`] reads them at scrape time
//! instead of mirroring them. What discovery reports as it works (poll cycles, ECS events, the
//! reconcile's corrections, the mode) is recorded as it happens, through [`Observe`].

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::stats::{DaemonStats, ReloadErrorKind};
use crate::cache::Cache;
use crate::discover::events::{DetailType, EventOutcome, Mode};
use crate::discover::{Observe, Observer, PollCycle};
use crate::http_listener::ConnectionStats;
use crate::identity::{CaHolder, IdentityStats};
use crate::inventory::{Inventory, Source};
use crate::snapshot::ResourceType;

mod authz;
mod identity;

/// The metrics registry and the few metrics recorded as events.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    poll_cycles: Family<Vec<(&'static str, &'static str)>, Counter>,
    poll_duration: Histogram,
    events_received: Family<Vec<(&'static str, &'static str)>, Counter>,
    event_lag: Histogram,
    reconcile_corrections: Counter,
    reconciles: Counter,
    mode: Family<Vec<(&'static str, &'static str)>, Gauge>,
    /// Where `/readyz` reads the sources never discovered.
    stats: Arc<DaemonStats>,
}

/// The AWS requests made so far: (source, operation, outcome, count), each attempt counted,
/// the source an `account/region`. The daemon hands the one counter every AWS request goes
/// through (`aws::CallCounter`).
pub trait RequestCounts: std::fmt::Debug + Send + Sync {
    fn request_counts(&self) -> Vec<(Arc<str>, &'static str, &'static str, u64)>;
}

/// Where the scrape-time figures come from.
#[derive(Debug, Clone)]
pub struct LiveState {
    pub cache: Cache,
    pub stats: Arc<DaemonStats>,
    pub aws_calls: Arc<dyn RequestCounts>,
    pub inventory: watch::Receiver<Arc<Inventory>>,
    /// This replica's name, the one label that tells replicas apart in a shared Prometheus.
    pub replica: Arc<str>,
    /// Each listener's connections, by its name (`xds`, `admin`).
    pub connections: Vec<(&'static str, Arc<ConnectionStats>)>,
    /// The identity endpoint's figures and the CA in force, when `[identity]` is on.
    pub identity: Option<(Arc<IdentityStats>, CaHolder)>,
}

impl Metrics {
    pub fn new(live: LiveState) -> Self {
        let mut registry = Registry::with_prefix("ecs_xds");
        let poll_cycles = Family::default();
        registry.register(
            "poll_cycles",
            "Discovery poll cycles, by outcome (failed: at least one source failed and kept its last good state)",
            poll_cycles.clone(),
        );
        // 5 ms to about 20 s: a poll of one small cluster up to a throttled large account.
        let poll_duration = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        registry.register(
            "poll_duration_seconds",
            "Duration of one discovery poll cycle over every source",
            poll_duration.clone(),
        );
        let events_received = Family::default();
        registry.register(
            "events_received",
            "ECS events received from SQS, by detail type (none: undecodable) and outcome (applied, unchanged, stale, ignored, undecodable, failed)",
            events_received.clone(),
        );
        // 50 ms to about 100 s. The event's time has whole seconds, so a lag reads up to 1 s long.
        let event_lag = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "event_lag_seconds",
            "From an applied ECS event's time to its change being published",
            event_lag.clone(),
        );
        let reconcile_corrections = Counter::default();
        registry.register(
            "reconcile_corrections",
            "Endpoints a reconcile poll (events on) added, removed or changed: what events had missed",
            reconcile_corrections.clone(),
        );
        let reconciles = Counter::default();
        registry.register(
            "reconciles",
            "Reconcile polls run while events were being received",
            reconciles.clone(),
        );
        let mode: Family<Vec<(&'static str, &'static str)>, Gauge> = Family::default();
        registry.register(
            "discovery_mode",
            "1 for the mode discovery is in: polling (events off), events, or fallback (events on, receiving fails: polling)",
            mode.clone(),
        );
        let stats = live.stats.clone();
        registry.register_collector(Box::new(live));
        Self {
            stats,
            registry,
            poll_cycles,
            poll_duration,
            events_received,
            event_lag,
            reconcile_corrections,
            reconciles,
            mode,
        }
    }

    /// An observer for [`crate::discover::Poller::with_observer`].
    pub fn discovery_observer(self: &Arc<Self>) -> Observer {
        self.clone()
    }

    /// The exposition text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Observe for Metrics {
    fn poll_cycle(&self, cycle: PollCycle) {
        let outcome = if cycle.failed_sources == 0 {
            "ok"
        } else {
            "failed"
        };
        self.poll_cycles
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
        self.poll_duration.observe(cycle.duration.as_secs_f64());
    }

    fn event(&self, detail_type: Option<DetailType>, outcome: EventOutcome) {
        let detail_type = detail_type.map_or("none", DetailType::as_str);
        self.events_received
            .get_or_create(&vec![
                ("detail_type", detail_type),
                ("outcome", outcome.as_str()),
            ])
            .inc();
    }

    fn event_lag(&self, lag: std::time::Duration) {
        self.event_lag.observe(lag.as_secs_f64());
    }

    fn reconciled(&self, corrections: usize) {
        self.reconciles.inc();
        self.reconcile_corrections.inc_by(corrections as u64);
    }

    fn undiscovered(&self, sources: &[String]) {
        self.stats.set_undiscovered(sources);
    }

    fn mode(&self, mode: Mode) {
        for m in Mode::ALL {
            self.mode
                .get_or_create(&vec![("mode", m.as_str())])
                .set(i64::from(m == mode));
        }
    }
}

impl Collector for LiveState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        family(
            &mut encoder,
            MetricType::Gauge,
            "replica_info",
            "This replica (ECS task id, or host name); value 1",
            [(vec![("replica", &*self.replica)], gauge(1))],
        )?;
        self.encode_discovery(&mut encoder)?;
        self.encode_snapshots(&mut encoder)?;
        self.encode_xds(&mut encoder)?;
        self.encode_identity(&mut encoder)?;
        self.encode_authz(&mut encoder)?;
        self.encode_connections(&mut encoder)
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes one metric family of `kind`: `samples` of (labels, value).
fn family<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    kind: MetricType,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut descriptor = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(descriptor.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Clusters by (kind, account, region): an ECS cluster's from its tasks' ARNs, a Cloud Map
/// one's region from its first endpoint. A kind with no cluster has one zero series.
fn clusters_by_source(inventory: &Inventory) -> BTreeMap<(&'static str, &str, &str), usize> {
    let mut clusters = BTreeMap::new();
    for cluster in inventory.clusters.values() {
        let workload = cluster.security.workload.as_ref();
        let key = match cluster.source {
            Source::Ecs { .. } => (
                "ecs",
                workload.map_or("", |w| w.account.as_str()),
                workload.map_or("", |w| w.region.as_str()),
            ),
            Source::CloudMap { .. } => {
                let first = cluster.endpoints.first();
                (
                    "cloud_map",
                    "",
                    first.map_or("", |e| e.locality.region.as_str()),
                )
            }
        };
        *clusters.entry(key).or_default() += 1;
    }
    for kind in ["ecs", "cloud_map"] {
        if !clusters.keys().any(|(k, _, _)| *k == kind) {
            clusters.insert((kind, "", ""), 0);
        }
    }
    clusters
}

fn count(n: u64) -> ConstCounter {
    ConstCounter::new(n)
}

fn gauge(n: usize) -> ConstGauge {
    ConstGauge::new(n as i64)
}

impl LiveState {
    fn encode_discovery(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let calls = self.aws_calls.request_counts();
        family(
            encoder,
            MetricType::Counter,
            "aws_requests",
            "AWS API requests (each retry counts), by account and region (`self` and `default`: the standard chain's), operation and outcome (ok, throttled, error)",
            calls.iter().map(|(source, op, outcome, n)| {
                let (account, region) = source.split_once('/').unwrap_or((source, ""));
                let labels = vec![
                    ("account", account),
                    ("region", region),
                    ("operation", *op),
                    ("outcome", *outcome),
                ];
                (labels, count(*n))
            }),
        )?;
        let inventory = self.inventory.borrow().clone();
        let clusters = clusters_by_source(&inventory);
        let mut endpoints: BTreeMap<&str, usize> = BTreeMap::from([
            ("healthy", 0),
            ("unhealthy", 0),
            ("unknown", 0),
            ("draining", 0),
        ]);
        for endpoint in inventory.clusters.values().flat_map(|c| &c.endpoints) {
            *endpoints.entry(endpoint.health.as_str()).or_default() += 1;
        }
        family(
            encoder,
            MetricType::Gauge,
            "inventory_clusters",
            "Discovered clusters (one per ECS service port or Cloud Map service), by source (ecs, cloud_map) and the account and region of its tasks (a merged cluster: of its first source's)",
            clusters.iter().map(|((source, account, region), n)| {
                let labels = vec![("source", *source), ("account", account), ("region", region)];
                (labels, gauge(*n))
            }),
        )?;
        family(
            encoder,
            MetricType::Gauge,
            "inventory_endpoints",
            "Discovered endpoints, by health as served to Envoy",
            endpoints
                .into_iter()
                .map(|(health, n)| (vec![("health", health)], gauge(n))),
        )?;
        family(
            encoder,
            MetricType::Gauge,
            "inventory_warnings",
            "Discovery warnings a human should fix (see `ecs-xds discover`)",
            [(vec![], gauge(inventory.warnings.len()))],
        )
    }

    fn encode_snapshots(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshots: Vec<_> = self
            .cache
            .node_types()
            .into_iter()
            .filter_map(|nt| self.cache.snapshot(&nt).map(|s| (nt, s)))
            .collect();
        let mut info = Vec::new();
        let mut sizes = Vec::new();
        for (node_type, snapshot) in &snapshots {
            for ty in ResourceType::ALL {
                let labels = vec![("node_type", node_type.as_str()), ("type", ty.short_name())];
                let mut versioned = labels.clone();
                versioned.push(("version", &**snapshot.version(ty)));
                info.push((versioned, gauge(1)));
                sizes.push((labels, gauge(snapshot.of(ty).resources().len())));
            }
        }
        family(
            encoder,
            MetricType::Gauge,
            "snapshot_version_info",
            "The content-hash version served per node type and resource type (value 1)",
            info,
        )?;
        family(
            encoder,
            MetricType::Gauge,
            "snapshot_resources",
            "Resources served per node type and resource type",
            sizes,
        )?;
        let sets = snapshots.iter().map(|(node_type, _)| {
            let count = self.cache.backend_set_count(node_type);
            (vec![("node_type", node_type.as_str())], gauge(count))
        });
        family(
            encoder,
            MetricType::Gauge,
            "backend_sets",
            "Distinct declared backend sets per node type, each a snapshot of its own",
            sets,
        )?;
        let stats = &self.stats;
        family(
            encoder,
            MetricType::Counter,
            "template_reloads",
            "Template/settings reloads, by outcome and, for a failed one (which keeps the running config), its reason",
            std::iter::once((vec![("outcome", "ok")], count(stats.reloads_ok()))).chain(
                ReloadErrorKind::ALL.into_iter().map(|reason| {
                    (
                        vec![("outcome", "failed"), ("reason", reason.as_str())],
                        count(stats.reloads_failed(reason)),
                    )
                }),
            ),
        )?;
        family(
            encoder,
            MetricType::Counter,
            "syntheses",
            "Snapshot syntheses (one per changed inventory or reload)",
            [(vec![], count(stats.syntheses()))],
        )
    }

    fn encode_xds(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.cache.status();
        let mut streams: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for stream in status.streams() {
            *streams.entry((stream.service, stream.mode)).or_default() += 1;
        }
        family(
            encoder,
            MetricType::Gauge,
            "xds_streams",
            "Connected xDS streams, by service (ads, a per-type service, or rest) and mode (sotw, delta, or rest: REST-JSON pollers heard from in the last 2 minutes)",
            streams
                .into_iter()
                .map(|((service, mode), n)| (vec![("service", service), ("mode", mode)], gauge(n))),
        )?;
        let counters = status.counters();
        let per_type = |get: &dyn Fn(ResourceType) -> u64| {
            ResourceType::ALL
                .into_iter()
                .map(|ty| (vec![("type", ty.short_name())], count(get(ty))))
                .collect::<Vec<_>>()
        };
        family(
            encoder,
            MetricType::Counter,
            "xds_pushes",
            "xDS responses sent, by resource type",
            per_type(&|ty| counters.pushes(ty)),
        )?;
        family(
            encoder,
            MetricType::Counter,
            "xds_acks",
            "ACKs received, by resource type",
            per_type(&|ty| counters.acks(ty)),
        )?;
        family(
            encoder,
            MetricType::Counter,
            "xds_nacks",
            "NACKs received (Envoy rejected a version and kept its previous one), by resource type",
            per_type(&|ty| counters.nacks(ty)),
        )
    }

    fn encode_connections(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let each = |get: &dyn Fn(&ConnectionStats) -> u64| {
            self.connections
                .iter()
                .map(|(name, stats)| (vec![("listener", *name)], get(stats)))
                .collect::<Vec<_>>()
        };
        family(
            encoder,
            MetricType::Gauge,
            "connections",
            "Open connections, by listener (xds, admin)",
            each(&|s| s.open() as u64)
                .into_iter()
                .map(|(labels, n)| (labels, gauge(n as usize))),
        )?;
        family(
            encoder,
            MetricType::Counter,
            "connections_refused",
            "Connections closed as soon as accepted because the listener's max_connections were open",
            each(&|s| s.refused()).into_iter().map(|(l, n)| (l, count(n))),
        )?;
        family(
            encoder,
            MetricType::Counter,
            "connections_timed_out",
            "Connections closed because their first request (or, on admin, a request head) did not arrive in time",
            each(&|s| s.timed_out()).into_iter().map(|(l, n)| (l, count(n))),
        )?;
        family(
            encoder,
            MetricType::Counter,
            "connections_tls_failed",
            "Connections whose TLS handshake failed (no client certificate where required, one from another CA, expired, not TLS)",
            each(&|s| s.tls_failed()).into_iter().map(|(l, n)| (l, count(n))),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::aws::{CallCounter, Outcome};
    use crate::cache::{NodeTypeResolver, NodeTypeSource};
    use crate::snapshot::Snapshot;

    #[test]
    fn live_figures_and_poll_cycles_are_exposed_with_the_ecs_xds_prefix() {
        let (cache, publisher) = Cache::new(NodeTypeResolver::new(NodeTypeSource::IdPrefix, None));
        publisher
            .publish("sidecar", Snapshot::builder().build())
            .unwrap();
        let calls = CallCounter::new();
        calls.record("DescribeTasks", Outcome::Ok);
        calls.record("DescribeTasks", Outcome::Throttled);
        let stats = Arc::new(DaemonStats::default());
        stats.reload_failed(ReloadErrorKind::Inconsistent);
        stats.reload_failed(ReloadErrorKind::Inconsistent);
        stats.reload_failed(ReloadErrorKind::Settings);
        let xds = Arc::new(ConnectionStats::default());
        let (_tx, inventory) = watch::channel(Arc::new(Inventory::default()));
        let metrics = Metrics::new(LiveState {
            cache: cache.clone(),
            stats,
            aws_calls: Arc::new(calls),
            inventory,
            replica: "replica-1".into(),
            connections: vec![("xds", xds)],
            identity: None,
        });
        metrics.poll_cycle(PollCycle {
            duration: Duration::from_millis(30),
            failed_sources: 1,
        });
        metrics.event(Some(DetailType::TaskStateChange), EventOutcome::Applied);
        metrics.event(None, EventOutcome::Undecodable);
        metrics.event_lag(Duration::from_millis(700));
        metrics.reconciled(2);
        metrics.mode(Mode::Fallback);
        let api = "spiffe://m/ecs/1/r/c/api";
        cache.status().shadow_denials().add("orders", api, 3);

        let text = metrics.encode().unwrap();
        let version = cache
            .snapshot("sidecar")
            .unwrap()
            .version(ResourceType::Cluster)
            .clone();
        for line in [
            "ecs_xds_aws_requests_total{account=\"self\",region=\"default\",operation=\"DescribeTasks\",outcome=\"throttled\"} 1".to_owned(),
            "ecs_xds_template_reloads_total{outcome=\"failed\",reason=\"inconsistent\"} 2".to_owned(),
            "ecs_xds_template_reloads_total{outcome=\"failed\",reason=\"settings\"} 1".to_owned(),
            "ecs_xds_template_reloads_total{outcome=\"failed\",reason=\"templates\"} 0".to_owned(),
            "ecs_xds_connections{listener=\"xds\"} 0".to_owned(),
            "ecs_xds_replica_info{replica=\"replica-1\"} 1".to_owned(),
            "ecs_xds_connections_refused_total{listener=\"xds\"} 0".to_owned(),
            "ecs_xds_poll_cycles_total{outcome=\"failed\"} 1".to_owned(),
            "ecs_xds_poll_duration_seconds_count 1".to_owned(),
            "ecs_xds_inventory_endpoints{health=\"healthy\"} 0".to_owned(),
            format!("ecs_xds_snapshot_version_info{{node_type=\"sidecar\",type=\"cds\",version=\"{version}\"}} 1"),
            "ecs_xds_xds_nacks_total{type=\"eds\"} 0".to_owned(),
            "ecs_xds_events_received_total{detail_type=\"task_state_change\",outcome=\"applied\"} 1".to_owned(),
            "ecs_xds_events_received_total{detail_type=\"none\",outcome=\"undecodable\"} 1".to_owned(),
            "ecs_xds_event_lag_seconds_count 1".to_owned(),
            "ecs_xds_reconcile_corrections_total 2".to_owned(),
            "ecs_xds_reconciles_total 1".to_owned(),
            "ecs_xds_discovery_mode{mode=\"fallback\"} 1".to_owned(),
            "ecs_xds_discovery_mode{mode=\"events\"} 0".to_owned(),
            format!("ecs_xds_authz_shadow_denials_total{{service=\"orders\",caller=\"{api}\"}} 3"),
        ] {
            assert!(text.contains(&line), "missing {line} in:\n{text}");
        }
    }
}
