//! The identity figures: requests by outcome and reason, certificates issued, the CA's and the
//! agents' certificates' time left, and xDS streams refused for their identity.

use std::time::SystemTime;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{count, family, LiveState};

/// Seconds from `now` to `at`, negative once past.
fn seconds_left(at: SystemTime, now: SystemTime) -> ConstGauge<f64> {
    let left = match at.duration_since(now) {
        Ok(left) => left.as_secs_f64(),
        Err(past) => -past.duration().as_secs_f64(),
    };
    ConstGauge::new(left)
}

impl LiveState {
    pub(super) fn encode_identity(
        &self,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let refused = self.cache.status().counters().refusals();
        family(
            encoder,
            MetricType::Counter,
            "xds_identity_refused",
            "xDS streams refused for their identity, by reason (foreign_certificate, service_mismatch, zone_mismatch, region_mismatch); TLS handshakes refused are in connections_tls_failed",
            refused.iter().map(|(reason, n)| (vec![("reason", *reason)], count(*n))),
        )?;
        let Some((stats, ca)) = &self.identity else {
            return Ok(());
        };
        let outcomes = stats.outcomes();
        family(
            encoder,
            MetricType::Counter,
            "identity_requests",
            "Identity requests, by outcome (issued, bad_request, refused, unavailable) and reason",
            outcomes.iter().map(|((outcome, reason), n)| {
                (vec![("outcome", *outcome), ("reason", *reason)], count(*n))
            }),
        )?;
        family(
            encoder,
            MetricType::Counter,
            "identity_certificates_issued",
            "Workload certificates issued",
            [(vec![], count(stats.certificates_issued()))],
        )?;
        let now = SystemTime::now();
        family(
            encoder,
            MetricType::Gauge,
            "identity_ca_expiry_seconds",
            "Seconds until the signing CA (the intermediate) of this replica expires",
            [(vec![], seconds_left(ca.current().not_after(), now))],
        )?;
        let soonest = stats.soonest_expiry(now);
        family(
            encoder,
            MetricType::Gauge,
            "identity_certificate_expiry_seconds",
            "Per service, seconds until the soonest expiry among its tasks' newest certificates: falling towards 0 means agents stopped renewing",
            soonest
                .iter()
                .map(|(service, at)| (vec![("service", service.as_str())], seconds_left(*at, now))),
        )
    }
}
