//! Mutual TLS and authorization builders: the one place TLS contexts and RBAC filters are made.
//!
//! - Upstream: every discovered cluster a node type with `[mtls]` reaches over TLS presents the
//!   agent's certificate and accepts only the callee's own SPIFFE ID (exact URI SAN), so an
//!   address reused by another task cannot pose as the service.
//! - Ingress: the template's ingress listener requires a client certificate of the trust
//!   domain (`strict`), or takes TLS and plaintext side by side (`permissive`: TLS inspector,
//!   one filter chain each); an RBAC filter whose principals are the allowed callers' SPIFFE IDs
//!   goes before the router, enforcing or in shadow. With `[authz] shadow_log_cluster`, a
//!   chain whose rules are in shadow also has a gRPC access log to ecs-xds through that
//!   bootstrap cluster, filtered on the RBAC filter's dynamic metadata
//!   (`<prefix>shadow_engine_result = "denied"`), so only the requests its rules would deny are
//!   reported ([`SHADOW_DENIED_LOG`]).
//!
//! Certificates and the trust bundle come from the agent's files through file-based SDS
//! (`<certificate_dir>/tls_certificate.yaml`, `validation_context.yaml`): the key never leaves
//! the task, Envoy reloads both on the agent's atomic swap, and a handshake needs no xDS.
//!
//! Proxyless gRPC clients (gRFC A29) get the same check of the callee's SPIFFE ID, but gRPC
//! reads neither SDS nor the typed SAN matchers: their clusters' TLS context names the
//! certificate provider instance of the client's bootstrap (`tls_certificate_provider_instance`
//! and `ca_certificate_provider_instance`, a `file_watcher` over the agent's PEM files) and
//! states the SAN both ways ([`grpc_upstream_tls`]). xDS-enabled gRPC servers get their
//! listeners from `grpc_server.rs`, with these RBAC rules.

use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log, access_log_filter::FilterSpecifier, AccessLog, AccessLogFilter, MetadataFilter,
};
use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, grpc_service, transport_socket, ApiVersion, ConfigSource,
    GrpcService, PathConfigSource, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac, Permission, Policy, Principal, Rbac,
};
use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3::{
    CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails},
    http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext, SdsSecretConfig, SubjectAltNameMatcher, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::metadata_matcher::{path_segment, PathSegment};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, value_matcher, MetadataMatcher, StringMatcher, ValueMatcher,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use prost::{Message, Name};

use crate::inventory::MtlsMode;
use crate::synthesize::templates::Mtls;

const HCM: &str = "envoy.filters.network.http_connection_manager";
pub(super) const HTTP_RBAC: &str = "envoy.filters.http.rbac";
const NETWORK_RBAC: &str = "envoy.filters.network.rbac";
const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
/// The agent's SDS files and secret names (`agent/files.rs`).
const CERTIFICATE_FILE: &str = "tls_certificate.yaml";
const BUNDLE_FILE: &str = "validation_context.yaml";
const CERTIFICATE_SECRET: &str = "workload";
const BUNDLE_SECRET: &str = "trust_bundle";
/// The one RBAC policy's name, as Envoy's access logs and stats name it.
pub const POLICY_NAME: &str = "allow-from";
/// Stats of the plaintext chain's shadow rules in `permissive`:
/// `http.<stat_prefix>.rbac.plaintext_shadow_denied`.
const PLAINTEXT_SHADOW_PREFIX: &str = "plaintext_";
/// The `log_name` of the access log through which Envoy reports the requests that rules in
/// shadow would deny; ecs-xds's access log service counts the entries of this log only.
pub const SHADOW_DENIED_LOG: &str = "ecs-xds/shadow-denied";
const GRPC_ACCESS_LOG: &str = "envoy.access_loggers.http_grpc";
/// The RBAC filter's dynamic metadata key (in its filter's namespace, after the shadow rules'
/// stat prefix) holding what the shadow rules decided: `allowed` or `denied`.
const SHADOW_ENGINE_RESULT: &str = "shadow_engine_result";

/// Who may call a service, as its ingress enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Callers {
    /// Any workload of the trust domain (the TLS handshake already checks that).
    AnyWorkload,
    /// Exactly these SPIFFE IDs (empty: nobody).
    Only(Vec<String>),
}

/// Everything a service's ingress listener is made from, besides the template's listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IngressPolicy {
    pub mode: MtlsMode,
    pub callers: Callers,
    /// Rules evaluated and counted, not enforced (`authz = shadow`).
    pub shadow: bool,
}

pub(super) fn pack<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// A file-based SDS reference to one of the agent's secrets.
fn sds(mtls: &Mtls, file: &str, secret: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: secret.to_owned(),
        sds_config: Some(ConfigSource {
            resource_api_version: ApiVersion::V3 as i32,
            config_source_specifier: Some(ConfigSourceSpecifier::PathConfigSource(
                PathConfigSource {
                    path: format!("{}/{file}", mtls.certificate_dir),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
    }
}

fn uri_san(pattern: MatchPattern) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(pattern),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The agent's certificate, and the trust bundle with one of `peers` checked on top.
fn common_context(mtls: &Mtls, peers: Vec<SubjectAltNameMatcher>) -> CommonTlsContext {
    let combined = CombinedCertificateValidationContext {
        default_validation_context: Some(CertificateValidationContext {
            match_typed_subject_alt_names: peers,
            ..Default::default()
        }),
        validation_context_sds_secret_config: Some(sds(mtls, BUNDLE_FILE, BUNDLE_SECRET)),
        ..Default::default()
    };
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(mtls, CERTIFICATE_FILE, CERTIFICATE_SECRET)],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(combined)),
        ..Default::default()
    }
}

pub(super) fn tls_socket<M: Message + Name>(context: &M) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(context))),
    }
}

/// What a cluster to the service named `callee` (its SPIFFE IDs: one per account and region
/// it was merged from) connects with.
pub fn upstream_tls(mtls: &Mtls, callee: &[String]) -> TransportSocket {
    tls_socket(&UpstreamTlsContext {
        common_tls_context: Some(common_context(mtls, exact_uri_sans(callee))),
        ..Default::default()
    })
}

fn exact_uri_sans(ids: &[String]) -> Vec<SubjectAltNameMatcher> {
    let exact = |id: &String| uri_san(MatchPattern::Exact(id.clone()));
    ids.iter().map(exact).collect()
}

/// What a proxyless gRPC client's cluster to the service named `callee` (a SPIFFE ID)
/// connects with, as gRFC A29 has it: the certificate and the roots of the bootstrap's
/// certificate provider instance `[mtls] certificate_provider`, and `callee`'s SPIFFE IDs as
/// the only SANs accepted, exactly.
///
/// The SAN is in `match_subject_alt_names`, the field gRPC reads (grpc-core, grpc-go and
/// grpc-java match it against every SAN of the peer's leaf); the same URI matcher is also in
/// `match_typed_subject_alt_names`, which those ignore and Envoy prefers, so a reader of either
/// accepts only `callee`.
pub fn grpc_upstream_tls(mtls: &Mtls, callee: &[String]) -> TransportSocket {
    let provider = CertificateProviderPluginInstance {
        instance_name: mtls.certificate_provider.clone(),
        certificate_name: String::new(),
    };
    let exact = |id: &String| StringMatcher {
        match_pattern: Some(MatchPattern::Exact(id.clone())),
        ..Default::default()
    };
    #[allow(deprecated)] // deprecated in Envoy; the only SAN matchers gRPC reads
    let validation = CertificateValidationContext {
        ca_certificate_provider_instance: Some(provider.clone()),
        match_subject_alt_names: callee.iter().map(exact).collect(),
        match_typed_subject_alt_names: exact_uri_sans(callee),
        ..Default::default()
    };
    let combined = CombinedCertificateValidationContext {
        default_validation_context: Some(validation),
        ..Default::default()
    };
    tls_socket(&UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_provider_instance: Some(provider),
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                combined,
            )),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// What the ingress takes: a client certificate of a workload of the trust domain.
fn downstream_tls(mtls: &Mtls) -> TransportSocket {
    let workloads = format!("spiffe://{}/ecs/", mtls.trust_domain);
    tls_socket(&DownstreamTlsContext {
        common_tls_context: Some(common_context(
            mtls,
            vec![uri_san(MatchPattern::Prefix(workloads))],
        )),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    })
}

/// The RBAC rules of `callers`; `None` for any workload (the handshake checked it).
pub(super) fn rules(callers: &Callers) -> Option<Rbac> {
    let Callers::Only(ids) = callers else {
        return None;
    };
    let principals = ids.iter().map(|id| Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(id.clone())),
                    ..Default::default()
                }),
            },
        )),
    });
    let policy = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: principals.collect(),
        ..Default::default()
    };
    // One policy, so the map encodes the same bytes every time (content-hashed versions).
    let policies = match ids.is_empty() {
        true => Default::default(),
        false => [(POLICY_NAME.to_owned(), policy)].into(),
    };
    Some(Rbac {
        action: rbac::Action::Allow as i32,
        policies,
        ..Default::default()
    })
}

/// Where a chain's rules go: enforced, or only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enforcement {
    Enforce,
    /// Counted under `shadow_denied`, with this stats prefix.
    Shadow(&'static str),
}

/// Edits each HTTP connection manager of `chain` in place (one decode and encode each).
fn edit_hcms(chain: &mut FilterChain, edit: impl Fn(&mut HttpConnectionManager)) {
    for filter in &mut chain.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &mut filter.config_type else {
            continue;
        };
        if filter.name != HCM {
            continue;
        }
        if let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) {
            edit(&mut hcm);
            any.value = hcm.encode_to_vec();
        }
    }
}

/// The RBAC filter of `rules` (enforced or counted), as HTTP and as network filter configs.
fn rbac_configs(rules: &Rbac, how: Enforcement) -> (HttpRbac, NetworkRbac) {
    let (enforced, shadow, prefix) = match how {
        Enforcement::Enforce => (Some(rules.clone()), None, ""),
        Enforcement::Shadow(prefix) => (None, Some(rules.clone()), prefix),
    };
    let http = HttpRbac {
        rules: enforced.clone(),
        shadow_rules: shadow.clone(),
        shadow_rules_stat_prefix: prefix.to_owned(),
        ..Default::default()
    };
    let network = NetworkRbac {
        rules: enforced,
        shadow_rules: shadow,
        shadow_rules_stat_prefix: prefix.to_owned(),
        stat_prefix: "ingress".to_owned(),
        ..Default::default()
    };
    (http, network)
}

/// An access log sending, through the bootstrap cluster `cluster`, the requests that the
/// shadow rules of stats prefix `prefix` would deny (and no others: a request the rules did not
/// see is not logged either).
fn shadow_denied_log(cluster: &str, prefix: &str) -> AccessLog {
    let config = HttpGrpcAccessLogConfig {
        common_config: Some(CommonGrpcAccessLogConfig {
            log_name: SHADOW_DENIED_LOG.to_owned(),
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: cluster.to_owned(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let denied = MetadataMatcher {
        filter: HTTP_RBAC.to_owned(),
        path: vec![PathSegment {
            segment: Some(path_segment::Segment::Key(format!(
                "{prefix}{SHADOW_ENGINE_RESULT}"
            ))),
        }],
        value: Some(ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::Exact("denied".to_owned())),
                ..Default::default()
            })),
        }),
        invert: false,
    };
    let filter = MetadataFilter {
        matcher: Some(denied),
        // Unset means true: every request without the key would be logged.
        match_if_key_not_found: Some(BoolValue { value: false }),
    };
    AccessLog {
        name: GRPC_ACCESS_LOG.to_owned(),
        filter: Some(AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::MetadataFilter(filter)),
        }),
        config_type: Some(access_log::ConfigType::TypedConfig(pack(&config))),
    }
}

/// `chain` made ready for rules enforced or counted as `rules` says (if any; the rules
/// themselves come with [`PreparedIngress::secure`]): with `tell_app`, its app is told who
/// called (`x-forwarded-client-cert` with the caller's URI SAN, set by this Envoy: a caller's
/// own header is replaced); rules in shadow on an HTTP connection manager report what they
/// would deny through `shadow_log` (a bootstrap cluster), when given.
fn authorized(
    mut chain: FilterChain,
    rules: Option<Enforcement>,
    tell_app: bool,
    shadow_log: Option<&str>,
) -> FilterChain {
    let access_log = match (shadow_log, rules) {
        (Some(cluster), Some(Enforcement::Shadow(prefix))) => {
            Some(shadow_denied_log(cluster, prefix))
        }
        _ => None,
    };
    if access_log.is_none() && !tell_app {
        return chain;
    }
    edit_hcms(&mut chain, |hcm| {
        if tell_app {
            hcm.forward_client_cert_details = ForwardClientCertDetails::SanitizeSet as i32;
            hcm.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
                uri: true,
                ..Default::default()
            });
        }
        hcm.access_log.extend(access_log.clone());
    });
    chain
}

/// Puts the RBAC filter of `rules` first in each HTTP connection manager of `chain` (so before
/// its router), or first among its network filters when it has none.
fn add_rules(chain: &mut FilterChain, rules: &Rbac, how: Enforcement) {
    let (http, network) = rbac_configs(rules, how);
    let filter = HttpFilter {
        name: HTTP_RBAC.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(&http))),
        ..Default::default()
    };
    let mut has_hcm = false;
    for f in chain.filters.iter_mut().filter(|f| f.name == HCM) {
        if let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type {
            any.value = first_http_filter(&filter, &any.value);
            has_hcm = true;
        }
    }
    if !has_hcm {
        let filter = Filter {
            name: NETWORK_RBAC.to_owned(),
            config_type: Some(filter::ConfigType::TypedConfig(pack(&network))),
        };
        chain.filters.insert(0, filter);
    }
}

/// `HttpConnectionManager.http_filters`' field number.
const HTTP_FILTERS_FIELD: u32 = 5;

/// The encoded HTTP connection manager `hcm` with `filter` as its first HTTP filter. The
/// elements of a repeated field decode in the order they come, wherever they are among the
/// other fields, so writing it in front is inserting it first: one small encode per service
/// instead of decoding and re-encoding the whole manager.
fn first_http_filter(filter: &HttpFilter, hcm: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(filter.encoded_len() + 8 + hcm.len());
    prost::encoding::message::encode(HTTP_FILTERS_FIELD, filter, &mut out);
    out.extend_from_slice(hcm);
    out
}

fn on_transport(mut chain: FilterChain, protocol: &str) -> FilterChain {
    let matching = chain
        .filter_chain_match
        .get_or_insert_with(FilterChainMatch::default);
    matching.transport_protocol = protocol.to_owned();
    chain
}

/// What of a policy shapes its ingress listener, all but the callers' SPIFFE IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IngressShape {
    pub mode: MtlsMode,
    pub shadow: bool,
    /// Whether there are RBAC rules (only some callers), or none (any workload).
    pub rules: bool,
}

impl IngressPolicy {
    pub fn shape(&self) -> IngressShape {
        IngressShape {
            mode: self.mode,
            shadow: self.shadow,
            rules: matches!(self.callers, Callers::Only(_)),
        }
    }
}

/// The template's ingress listener secured for one [`IngressShape`]: everything but the RBAC
/// rules, which [`PreparedIngress::secure`] adds for each service's callers. Services with the
/// same shape differ only in those, so the rest is made once.
#[derive(Debug, Clone)]
pub struct PreparedIngress {
    listener: Listener,
    /// The filter chains that take the rules, by index, and how.
    rules_at: Vec<(usize, Enforcement)>,
}

impl PreparedIngress {
    /// The template's ingress `listener` as a policy of `shape` secures it; rules in shadow
    /// report what they would deny through the bootstrap cluster `shadow_log`, when given.
    pub fn new(
        listener: &Listener,
        mtls: &Mtls,
        shape: IngressShape,
        shadow_log: Option<&str>,
    ) -> PreparedIngress {
        let mut secured = listener.clone();
        let mut rules_at = Vec::new();
        if shape.mode == MtlsMode::Off {
            // Plaintext: no identity to authorize by; the template's listener as written.
            return PreparedIngress {
                listener: secured,
                rules_at,
            };
        }
        let how = match shape.shadow {
            true => Enforcement::Shadow(""),
            false => Enforcement::Enforce,
        };
        // Permissive protects nothing yet: plaintext is served, its would-be denials counted.
        let plaintext = Enforcement::Shadow(PLAINTEXT_SHADOW_PREFIX);
        let (tls_rules, plain_rules) = match shape.rules {
            true => (Some(how), Some(plaintext)),
            false => (None, None),
        };
        let mut chains = Vec::new();
        let socket = downstream_tls(mtls);
        for chain in &listener.filter_chains {
            let mut tls = authorized(chain.clone(), tls_rules, true, shadow_log);
            tls.transport_socket = Some(socket.clone());
            rules_at.extend(tls_rules.map(|how| (chains.len(), how)));
            if shape.mode == MtlsMode::Strict {
                chains.push(tls);
                continue;
            }
            chains.push(on_transport(tls, "tls"));
            let plain = authorized(chain.clone(), plain_rules, false, shadow_log);
            rules_at.extend(plain_rules.map(|how| (chains.len(), how)));
            chains.push(on_transport(plain, "raw_buffer"));
        }
        secured.filter_chains = chains;
        let inspecting = (secured.listener_filters.iter()).any(|f| f.name == TLS_INSPECTOR);
        if shape.mode == MtlsMode::Permissive && !inspecting {
            secured.listener_filters.push(ListenerFilter {
                name: TLS_INSPECTOR.to_owned(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
                    &TlsInspector::default(),
                ))),
                ..Default::default()
            });
        }
        PreparedIngress {
            listener: secured,
            rules_at,
        }
    }

    /// The listener with the rules of `callers` (of this shape) in place.
    pub fn secure(&self, callers: &Callers) -> Listener {
        let mut listener = self.listener.clone();
        if let Some(rules) = rules(callers) {
            for &(index, how) in &self.rules_at {
                add_rules(&mut listener.filter_chains[index], &rules, how);
            }
        }
        listener
    }
}

/// The template's ingress `listener` as `policy` secures it; rules in shadow report what they
/// would deny through the bootstrap cluster `shadow_log`, when given.
pub fn secured_ingress(
    listener: &Listener,
    mtls: &Mtls,
    policy: &IngressPolicy,
    shadow_log: Option<&str>,
) -> Listener {
    PreparedIngress::new(listener, mtls, policy.shape(), shadow_log).secure(&policy.callers)
}
