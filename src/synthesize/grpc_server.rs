//! The listeners xDS-enabled gRPC servers ask for (gRFC A36), secured as gRFC A29 (mutual
//! TLS from the bootstrap's certificate provider) and A41 (the RBAC HTTP filter) have it.
//!
//! A server asks for `[grpc] server_listener_name` with its listening address in it, and
//! serves once the listener's `address` is that address. Its one filter chain holds an
//! HttpConnectionManager with an inline route configuration (gRPC servers route to the
//! application, so the one route is a `non_forwarding_action`), the RBAC filter when the
//! policy has rules, and the router last. gRPC takes no listener filters, so it cannot tell TLS
//! from plaintext on one port, and what it does differs from Envoy's ingress on purpose:
//! - `strict`: the chain's `DownstreamTlsContext` requires a client certificate of the
//!   bundle's CA (the certificate provider instance `[mtls] certificate_provider`), and the
//!   RBAC filter allows the policy's callers by `authenticated.principal_name`, exact; a
//!   service that accepts any workload still gets a rule: a SPIFFE ID of the trust domain's
//!   ECS workloads (a prefix), since gRPC servers take no SAN matcher on their side;
//! - `shadow`: the allow-from rules go in `shadow_rules`, which gRPC ignores (it counts
//!   nothing), and the trust-domain rule is enforced;
//! - `permissive` and `off`: plaintext, no rules (without a certificate there is nobody to
//!   authorize); permissive is for moving callers over, and protects nothing.

use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac, Permission, Policy, Principal, Rbac,
};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_match::PathSpecifier, NonForwardingAction, Route, RouteConfiguration,
    RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, CertificateProviderPluginInstance,
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::BoolValue;

use super::endpoints::socket_address;
use super::security::{pack, rules, tls_socket, Callers, IngressPolicy, HTTP_RBAC};
use super::templates::{Mtls, ServerListener};
use crate::inventory::MtlsMode;

const HCM: &str = "envoy.filters.network.http_connection_manager";
/// The policy name of the trust-domain rule (any ECS workload of the mesh).
const WORKLOADS_POLICY: &str = "workloads";

/// The listener `server` asks for: plaintext without `secured`, else as its policy says.
pub fn server_listener(
    server: &ServerListener,
    secured: Option<(&Mtls, &IngressPolicy)>,
) -> Listener {
    let strict = secured.filter(|(_, policy)| policy.mode == MtlsMode::Strict);
    let mut filters = Vec::new();
    if let Some((mtls, policy)) = strict {
        filters.push(rbac_filter(mtls, policy));
    }
    filters.push(HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(
            &Router::default(),
        ))),
        ..Default::default()
    });
    let hcm = HttpConnectionManager {
        stat_prefix: "grpc_server".into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(to_the_application())),
        http_filters: filters,
        ..Default::default()
    };
    let chain = FilterChain {
        filters: vec![Filter {
            name: HCM.into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
        }],
        transport_socket: strict.map(|(mtls, _)| tls_socket(&downstream_tls(mtls))),
        ..Default::default()
    };
    Listener {
        name: server.name.clone(),
        address: Some(socket_address(
            &server.address.ip().to_string(),
            server.address.port(),
        )),
        filter_chains: vec![chain],
        ..Default::default()
    }
}

/// Every call goes to the server's own application.
fn to_the_application() -> RouteConfiguration {
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(String::new())),
            ..Default::default()
        }),
        action: Some(Action::NonForwardingAction(NonForwardingAction {})),
        ..Default::default()
    };
    RouteConfiguration {
        name: "grpc-server".into(),
        virtual_hosts: vec![VirtualHost {
            name: "application".into(),
            domains: vec!["*".into()],
            routes: vec![route],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The server's certificate and the bundle, both from the bootstrap's certificate provider,
/// and a client certificate required.
fn downstream_tls(mtls: &Mtls) -> DownstreamTlsContext {
    let provider = CertificateProviderPluginInstance {
        instance_name: mtls.certificate_provider.clone(),
        certificate_name: String::new(),
    };
    let validation = CertificateValidationContext {
        ca_certificate_provider_instance: Some(provider.clone()),
        ..Default::default()
    };
    DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_provider_instance: Some(provider),
            validation_context_type: Some(ValidationContextType::ValidationContext(validation)),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    }
}

/// The RBAC filter of `policy`: its callers enforced, or in shadow beside the trust-domain
/// rule.
fn rbac_filter(mtls: &Mtls, policy: &IngressPolicy) -> HttpFilter {
    let workloads = trust_domain_rule(mtls);
    let callers = rules(&policy.callers);
    let (enforced, shadow) = match (&policy.callers, policy.shadow) {
        (Callers::AnyWorkload, _) => (workloads, None),
        (Callers::Only(_), true) => (workloads, callers),
        (Callers::Only(_), false) => (callers.unwrap_or_default(), None),
    };
    let config = HttpRbac {
        rules: Some(enforced),
        shadow_rules: shadow,
        ..Default::default()
    };
    HttpFilter {
        name: HTTP_RBAC.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(&config))),
        ..Default::default()
    }
}

/// Allows any ECS workload of the trust domain.
fn trust_domain_rule(mtls: &Mtls) -> Rbac {
    let prefix = format!("spiffe://{}/ecs/", mtls.trust_domain);
    let principal = Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(StringMatcher {
                    match_pattern: Some(MatchPattern::Prefix(prefix)),
                    ..Default::default()
                }),
            },
        )),
    };
    let policy = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![principal],
        ..Default::default()
    };
    Rbac {
        action: rbac::Action::Allow as i32,
        policies: [(WORKLOADS_POLICY.to_owned(), policy)].into(),
        ..Default::default()
    }
}
