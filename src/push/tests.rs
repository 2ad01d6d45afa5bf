use serde_json::{json, Value};

use super::store::{DirStore, StoreError, Stored};
use super::*;

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// A listener on `port` asking RDS for `route`.
pub(crate) fn listener(name: &str, port: u16, route: &str) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": HCM,
                "stat_prefix": name,
                "rds": {"route_config_name": route, "config_source": {"ads": {}, "resource_api_version": "V3"}},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]
            }
        }]}]
    })
}

/// A route configuration sending everything to `cluster`.
pub(crate) fn route(name: &str, cluster: &str) -> Value {
    json!({
        "name": name,
        "virtual_hosts": [{"name": name, "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": cluster}}
        ]}]
    })
}

/// A STATIC cluster to 127.0.0.1:`port`.
pub(crate) fn static_cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
        ]}]}
    })
}

pub(crate) fn body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn problems(value: &Value) -> Vec<(String, String)> {
    parse(&body(value))
        .unwrap_err()
        .0
        .into_iter()
        .map(|p| (p.path, p.message))
        .collect()
}

#[test]
fn a_complete_push_parses_into_typed_resources() {
    let pushed = parse(&body(&json!({
        "version": "v1",
        "listeners": [listener("pushed", 15002, "pushed")],
        "routes": [route("pushed", "backend")],
        "clusters": [static_cluster("backend", 8080)],
        "endpoints": [{"cluster_name": "eds", "endpoints": []}],
    })))
    .unwrap();
    assert_eq!(pushed.version.as_deref(), Some("v1"));
    assert_eq!(pushed.listeners[0].name, "pushed");
    assert_eq!(pushed.routes[0].name, "pushed");
    assert_eq!(pushed.clusters[0].name, "backend");
    assert_eq!(pushed.endpoints[0].cluster_name, "eds");
    assert_eq!(
        pushed.counts(),
        Counts {
            listeners: 1,
            clusters: 1,
            endpoints: 1,
            routes: 1
        }
    );
}

#[test]
fn every_key_is_optional_and_a_numeric_version_is_kept_as_text() {
    assert_eq!(parse(b"{}").unwrap(), PushedResources::default());
    assert_eq!(
        parse(br#"{"version": 7}"#).unwrap().version.as_deref(),
        Some("7")
    );
}

#[test]
fn a_bad_value_names_its_field_path() {
    let mut l = listener("l", 1, "r");
    l["address"]["socket_address"]["port_value"] = json!("eighty");
    let found = problems(&json!({"listeners": [l]}));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "listeners[0].address.socket_address.port_value");
}

#[test]
fn unknown_fields_and_types_are_all_reported_with_their_paths() {
    let mut c = static_cluster("c", 1);
    c["conect_timeout"] = json!("1s");
    let mut l = listener("l", 1, "r");
    l["filter_chains"][0]["filters"][0]["typed_config"]["@type"] =
        json!("type.googleapis.com/nope.Nope");
    let found = problems(&json!({"clusters": [c], "listeners": [l], "secrets": []}));
    let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert!(paths.contains(&"secrets"), "{found:?}");
    assert!(paths.contains(&"clusters[0].conect_timeout"), "{found:?}");
    assert!(
        paths.contains(&"listeners[0].filter_chains[0].filters[0].typed_config.@type"),
        "{found:?}"
    );
    let typo = found
        .iter()
        .find(|(p, _)| p.ends_with("conect_timeout"))
        .unwrap();
    assert!(
        typo.1.contains("did you mean \"connect_timeout\""),
        "{typo:?}"
    );
}

#[test]
fn invalid_json_is_one_problem_for_the_whole_body() {
    let err = parse(b"{\"listeners\": [").unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].path, "");
    assert!(err.0[0].message.starts_with("invalid JSON"), "{err}");
    assert_eq!(problems(&json!([1]))[0].0, "");
}

#[test]
fn duplicate_and_missing_names_are_errors() {
    let found = problems(&json!({
        "clusters": [static_cluster("a", 1), static_cluster("a", 2)],
        "endpoints": [{"endpoints": []}],
    }));
    assert_eq!(
        found,
        [
            (
                "clusters[1].name".to_owned(),
                "duplicate name \"a\" (also clusters[0])".to_owned()
            ),
            ("endpoints[0]".to_owned(), "needs a cluster_name".to_owned()),
        ]
    );
}

#[test]
fn a_resource_may_carry_its_own_type_but_not_another() {
    let mut c = static_cluster("c", 1);
    c["@type"] = json!("type.googleapis.com/envoy.config.cluster.v3.Cluster");
    assert_eq!(
        parse(&body(&json!({"clusters": [c.clone()]})))
            .unwrap()
            .clusters
            .len(),
        1
    );
    let found = problems(&json!({"listeners": [c]}));
    assert_eq!(found[0].0, "listeners[0].@type");
}

#[test]
fn node_types_must_be_safe_file_names() {
    for ok in ["sidecar", "edge-1", "a.b_c"] {
        assert_eq!(check_node_type(ok), Ok(()), "{ok}");
    }
    for bad in ["", ".hidden", "..", "a/b", "a b", "é", &"x".repeat(129)] {
        assert!(check_node_type(bad).is_err(), "{bad}");
    }
}

fn stored(value: &Value) -> Stored {
    let body = bytes::Bytes::from(body(value));
    Stored {
        resources: std::sync::Arc::new(parse(&body).unwrap()),
        body,
    }
}

#[test]
fn the_store_persists_puts_and_deletes_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut store = DirStore::open(&state).unwrap();
    let push = json!({"version": "v1", "clusters": [static_cluster("a", 1)]});
    store.put("sidecar", stored(&push)).unwrap();
    store.put("edge", stored(&json!({}))).unwrap();
    store
        .put("edge", stored(&json!({"version": "v2"})))
        .unwrap();

    let reopened = DirStore::open(&state).unwrap();
    let names: Vec<&str> = reopened.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["edge", "sidecar"]);
    assert_eq!(reopened.get("sidecar").unwrap().body, body(&push));
    let edge = &reopened.get("edge").unwrap().resources;
    assert_eq!(edge.version.as_deref(), Some("v2"));

    let mut store = reopened;
    assert!(store.delete("edge").unwrap());
    assert!(!store.delete("edge").unwrap());
    let files: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        files,
        ["sidecar.json"],
        "no temporary files are left behind"
    );
    assert!(DirStore::open(&state).unwrap().get("edge").is_none());
}

#[test]
fn a_corrupt_state_file_is_an_error_naming_it_and_dot_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".tmpAbC"), "half a wri").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a push").unwrap();
    assert_eq!(DirStore::open(dir.path()).unwrap().iter().count(), 0);

    std::fs::write(
        dir.path().join("sidecar.json"),
        r#"{"clusters": [{"nme": "x"}]}"#,
    )
    .unwrap();
    let err = DirStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("sidecar.json"), "{text}");
    assert!(text.contains("clusters[0].nme"), "{text}");
}
