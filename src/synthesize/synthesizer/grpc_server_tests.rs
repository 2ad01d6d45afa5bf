//! xDS-enabled gRPC servers: the listener each asks for, secured by its service's policy.

use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::rbac::v3::{principal, Rbac};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;

use super::security_tests::{allowing, chains, ecs, id, TD};
use super::tests::{inventory, templates};
use super::*;
use crate::inventory::{AuthzMode, MtlsMode};

const NAME: &str = "grpc/server?xds.resource.listening_address=0.0.0.0:50051";

fn servers(mtls: &str) -> Templates {
    let text = format!("[grpc]\nenabled = true\nserver_addresses = [\"0.0.0.0:50051\"]\n{mtls}");
    templates(&[("grpc", &text)])
}

fn strict() -> Templates {
    servers(&format!(
        "[mtls]\nmode = \"strict\"\ntrust_domain = \"{TD}\""
    ))
}

fn server(snapshot: &Snapshot) -> Listener {
    let listener = snapshot.of(ResourceType::Listener).get(NAME);
    listener.expect("the server's listener").decode().unwrap()
}

/// Each principal's name matcher: `=ID` exact, `ID*` prefix.
fn principals(rules: &Rbac) -> Vec<String> {
    let principals = rules.policies.values().flat_map(|p| p.principals.iter());
    let name = |p: &envoy_types::pb::envoy::config::rbac::v3::Principal| match &p.identifier {
        Some(principal::Identifier::Authenticated(a)) => {
            match &a.principal_name.as_ref().unwrap().match_pattern {
                Some(MatchPattern::Exact(id)) => format!("={id}"),
                Some(MatchPattern::Prefix(prefix)) => format!("{prefix}*"),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    };
    principals.map(name).collect()
}

#[test]
fn a_server_without_mtls_gets_a_plaintext_listener_at_its_address() {
    let synthesis = synthesize(&inventory([ecs("orders")]), &servers(""));
    let listener = server(&synthesis.snapshots["grpc"]);
    let Some(address::Address::SocketAddress(socket)) = listener.address.clone().unwrap().address
    else {
        panic!("a socket address");
    };
    assert_eq!(
        (socket.address.as_str(), socket.port_specifier.is_some()),
        ("0.0.0.0", true)
    );
    assert_eq!(chains(&listener), [(String::new(), false, None)]);
}

#[test]
fn a_strict_server_requires_a_certificate_and_any_workload_of_the_trust_domain() {
    let synthesis = synthesize(&inventory([ecs("web")]), &strict());
    let chains = chains(&server(&synthesis.snapshots["grpc"]));
    let (_, tls, rbac) = &chains[0];
    assert!(tls, "a DownstreamTlsContext");
    let rules = rbac.clone().expect("RBAC").rules.expect("enforced");
    assert_eq!(principals(&rules), [format!("spiffe://{TD}/ecs/*")]);
}

#[test]
fn allow_from_becomes_the_servers_rbac_and_shadow_enforces_only_the_trust_domain() {
    let mut shadowed = allowing("users", &["web"]);
    shadowed.security.authz = Some(AuthzMode::Shadow);
    let inventory = inventory([allowing("orders", &["web"]), shadowed, ecs("web")]);
    let synthesis = synthesize(&inventory, &strict());
    let (orders, key) = synthesis.snapshot_of_service("grpc", "orders").unwrap();
    assert!(key.is_some_and(|k| k.contains("strict allow")), "{key:?}");
    let rbac = chains(&server(orders))[0].2.clone().unwrap();
    assert_eq!(
        principals(&rbac.rules.unwrap()),
        [format!("={}", id("web"))]
    );
    let (users, _) = synthesis.snapshot_of_service("grpc", "users").unwrap();
    let rbac = chains(&server(users))[0].2.clone().unwrap();
    assert_eq!(
        principals(&rbac.rules.unwrap()),
        [format!("spiffe://{TD}/ecs/*")]
    );
    assert_eq!(
        principals(&rbac.shadow_rules.unwrap()),
        [format!("={}", id("web"))]
    );
    orders.check_consistency().unwrap();
}

#[test]
fn a_permissive_or_off_server_is_plaintext_without_rules() {
    for mode in [MtlsMode::Permissive, MtlsMode::Off] {
        let mut orders = allowing("orders", &["web"]);
        orders.security.mtls = Some(mode);
        let synthesis = synthesize(&inventory([orders, ecs("web")]), &strict());
        let (orders, _) = synthesis.snapshot_of_service("grpc", "orders").unwrap();
        assert_eq!(
            chains(&server(orders)),
            [(String::new(), false, None)],
            "{mode:?}"
        );
    }
}
