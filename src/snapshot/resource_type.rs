//! The resource types ecs-xds serves, their type URLs and their push order.

use std::fmt;

/// A resource type, in make-before-break push order: a cluster exists before its endpoints, and
/// a listener before its routes, so Envoy never warms something whose dependency is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
    /// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`.
    Secret,
}

/// A type URL that names no resource type ecs-xds serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource type URL {0:?}")]
pub struct UnknownTypeUrl(pub String);

impl ResourceType {
    /// How many types there are.
    pub const COUNT: usize = 5;

    /// Every type, in push order.
    pub const ALL: [ResourceType; Self::COUNT] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    /// The type URL Envoy uses for this type.
    pub const fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    /// Parses a type URL.
    pub fn from_type_url(url: &str) -> Result<Self, UnknownTypeUrl> {
        Self::ALL
            .into_iter()
            .find(|ty| ty.type_url() == url)
            .ok_or_else(|| UnknownTypeUrl(url.to_owned()))
    }

    /// Position in push order; also the index into per-type arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Wildcard types (CDS, LDS) are subscribed as a whole and always sent whole; the others are
    /// subscribed by name.
    pub const fn is_wildcard_by_default(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// Short name used in logs and metrics.
    pub const fn short_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
            ResourceType::Secret => "sds",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_urls_round_trip_in_push_order() {
        for (i, ty) in ResourceType::ALL.into_iter().enumerate() {
            assert_eq!(ty.index(), i);
            assert_eq!(ResourceType::from_type_url(ty.type_url()), Ok(ty));
        }
        assert!(ResourceType::from_type_url("type.googleapis.com/foo").is_err());
    }

    #[test]
    fn push_order_is_make_before_break() {
        use ResourceType::*;
        assert!(Cluster < Endpoint && Endpoint < Listener && Listener < Route);
    }
}
