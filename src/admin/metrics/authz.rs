//! The authorization figures: the requests services' rules in shadow would have denied, as
//! their Envoys report them on the access log service (`[authz] shadow_log_cluster`).

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{count, family, LiveState};
use crate::cache::{MAX_CALLERS, MAX_SERVICES, OTHER};

impl LiveState {
    pub(super) fn encode_authz(
        &self,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let denials = self.cache.status().shadow_denials().all();
        let samples = denials.iter().flat_map(|(service, callers)| {
            callers.iter().map(move |(caller, n)| {
                let labels = vec![("service", service.as_str()), ("caller", caller.as_str())];
                (labels, count(*n))
            })
        });
        let help = format!(
            "Requests a service's rules in shadow would have denied, as its Envoys report them, by service and caller (its SPIFFE ID, or plaintext; {OTHER} past {MAX_SERVICES} services, or {MAX_CALLERS} callers of one)"
        );
        family(
            encoder,
            MetricType::Counter,
            "authz_shadow_denials",
            &help,
            samples,
        )
    }
}
