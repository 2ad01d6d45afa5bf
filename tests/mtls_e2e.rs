//! Mutual TLS between services and authorization from tags, with real parts: three services
//! (web, api, orders), each an app on 127.0.0.1 behind its own real Envoy 1.40 holding the
//! certificate its real agent got from ecs-xds (moto's STS and ECS attest the seeded tasks);
//! a second ecs-xds serves the mesh from a saved inventory whose endpoints are those Envoys'
//! ingress ports (moto's tasks have 10.x addresses, which must get no traffic), and follows
//! each change to the file the way it would follow a retag.
//!
//! Each Envoy has a node type of its own (`web.toml`, ...) only because all three share one
//! machine: each has its own certificate directory and ports. In ECS every task has its own
//! `/certs`, and one `sidecar` template serves them all.

mod fleet;
mod rotation;

use std::time::Duration;

use ecs_xds::inventory::{AllowFrom, AuthzMode, MtlsMode, Security};
use serde_json::Value;

use fleet::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_may_call_orders_over_mtls_api_may_not_until_retagged() {
    let fleet = Fleet::start("strict", allow_from(&["web"]), "").await;

    // web → orders: 200 over mutual TLS; orders' app is told web's SPIFFE ID by its Envoy.
    let body = fleet.wait_for_call("web", "orders", 200).await;
    let web_id = fleet.spiffe_id("web");
    assert!(
        body.starts_with("orders xfcc=") && body.contains(&format!("URI={web_id}")),
        "{body}"
    );
    let handshakes = fleet
        .envoy("web")
        .stat("cluster.orders.ssl.handshake")
        .await;
    assert!(handshakes >= 1, "web's Envoy reached orders over TLS");

    // api → orders: denied by orders' RBAC; api → web (no allow-from) is fine.
    let (status, body) = fleet.call("api", "orders").await;
    assert_eq!(status, 403, "{body}");
    let denied = fleet.envoy("orders").stat("http.ingress.rbac.denied").await;
    assert!(denied >= 1, "orders' Envoy counted the denial");
    fleet.wait_for_call("api", "web", 200).await;
    // ecs-xds's /nodes says which policy each Envoy is served.
    let shown = fleet.ingress_shown("orders").await;
    assert_eq!(
        shown,
        format!("strict allow {}", fleet.spiffe_id("web")).as_str()
    );
    assert_eq!(fleet.ingress_shown("web").await, serde_json::Value::Null);

    // A tag that stops parsing keeps orders' policy: web still passes, api is still denied.
    let broken = Security {
        allow_from: Some(AllowFrom::Invalid),
        ..Default::default()
    };
    let listeners = fleet
        .envoy("orders")
        .stat("listener_manager.lds.update_success")
        .await;
    fleet.write_and_wait(&fleet.inventory(broken, None)).await;
    assert_eq!(fleet.call("web", "orders").await.0, 200);
    assert_eq!(fleet.call("api", "orders").await.0, 403);
    let after = fleet
        .envoy("orders")
        .stat("listener_manager.lds.update_success")
        .await;
    assert_eq!(after, listeners, "orders' listener did not change");

    // A plaintext client is refused in strict mode.
    assert_eq!(fleet.plaintext("orders").await, None);

    // authz = shadow: api passes, and the would-be denial is counted.
    let shadow = Security {
        authz: Some(AuthzMode::Shadow),
        ..allow_from(&["web"])
    };
    fleet.write(&fleet.inventory(shadow, None));
    fleet.wait_for_call("api", "orders", 200).await;
    let shadow_denied = fleet
        .envoy("orders")
        .stat("http.ingress.rbac.shadow_denied")
        .await;
    assert!(shadow_denied >= 1, "the shadow denial is in orders' stats");
    // ... and reported to ecs-xds ([authz] shadow_log_cluster): api, and not web (allowed).
    fleet.wait_for_call("web", "orders", 200).await;
    let api_id = fleet.spiffe_id("api");
    let denials = fleet.wait_for_shadow_denial("orders", &api_id).await;
    assert_eq!(denials.as_object().unwrap().len(), 1, "only api: {denials}");
    assert_eq!(fleet.node_shown("web").await["shadow_denials"], Value::Null);
    let admin = fleet.xds.as_ref().unwrap().admin;
    let (_, metrics) = crate::support::http::get(admin, "/metrics").await;
    let line =
        format!("ecs_xds_authz_shadow_denials_total{{service=\"orders\",caller=\"{api_id}\"}} ");
    let counted = crate::support::http::metric(&metrics, &line);
    assert!(counted.is_some_and(|n| n >= 1.0), "{line} in:\n{metrics}");
    let web_line = format!("caller=\"{web_id}\"");
    assert!(!metrics.contains(&web_line), "web is allowed:\n{metrics}");

    // allow-from = "web api", enforced: api passes with no restart.
    fleet.write(&fleet.inventory(allow_from(&["web", "api"]), None));
    let denied_before = fleet.envoy("orders").stat("http.ingress.rbac.denied").await;
    fleet.wait_for_call("api", "orders", 200).await;
    let (status, _) = fleet.call("api", "orders").await;
    assert_eq!(status, 200);
    let denied_after = fleet.envoy("orders").stat("http.ingress.rbac.denied").await;
    assert_eq!(denied_after, denied_before, "nothing denied once allowed");

    // mtls = permissive on orders: a plaintext client is served, web still uses TLS.
    let permissive = Security {
        mtls: Some(MtlsMode::Permissive),
        ..Default::default()
    };
    fleet.write(&fleet.inventory(permissive, None));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fleet.plaintext("orders").await != Some(200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "plaintext not served in permissive"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = fleet
        .envoy("web")
        .stat("cluster.orders.ssl.handshake")
        .await;
    let body = fleet.wait_for_call("web", "orders", 200).await;
    assert!(body.contains(&format!("URI={web_id}")), "{body}");
    let after = fleet
        .envoy("web")
        .stat("cluster.orders.ssl.handshake")
        .await;
    assert!(after >= before, "web → orders stays TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_with_another_services_certificate_cannot_pose_as_orders() {
    let fleet = Fleet::start("strict", Security::default(), "").await;
    fleet.wait_for_call("web", "orders", 200).await;
    // orders' one endpoint is now api's Envoy (an address reused by another task).
    let api_ingress = fleet.service("api").ingress;
    fleet.write(&fleet.inventory(Security::default(), Some(api_ingress)));
    let body = fleet.wait_for_call("web", "orders", 503).await;
    let san_failures = fleet
        .envoy("web")
        .stat("cluster.orders.ssl.fail_verify_san")
        .await;
    assert!(
        san_failures >= 1,
        "web's Envoy refused api's certificate: {body}"
    );
}
