//! `discover_once`, the path `ecs-xds discover` takes: settings → the standard credential chain
//! → one poll. This binary holds a single test because it sets process environment variables
//! (dummy credentials, region, no instance metadata) as a user's shell would.

mod support;

use std::net::TcpListener;

use ecs_xds::aws::AwsError;
use ecs_xds::discover::{discover_once, DiscoverError};
use ecs_xds::settings::DiscoverSettings;
use support::moto::{Moto, REGION};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_once_reads_the_settings_and_fails_clearly_when_aws_is_unreachable() {
    // Set before any SDK code runs; this binary has no other test to race with.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", REGION);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::remove_var("AWS_PROFILE");
    std::env::remove_var("AWS_ENDPOINT_URL");

    let moto = Moto::start();
    moto.seed(&[
        "--tasks-per-service",
        "1",
        "--cloudmap-instance",
        "127.0.0.1:8081",
    ]);
    let settings: DiscoverSettings = toml::from_str(&format!(
        r#"
        [aws]
        endpoint_url = "{}"
        [ecs]
        clusters = ["demo"]
        [cloud_map]
        namespaces = ["demo.local"]
        "#,
        moto.endpoint
    ))
    .unwrap();
    let inventory = discover_once(settings.clone().check().unwrap())
        .await
        .unwrap();
    assert_eq!(
        inventory
            .clusters
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        [
            "api.grpc",
            "api.http",
            "cloudmap.backend.demo.local",
            "orders",
            "web"
        ]
    );
    let table = ecs_xds::cli::inventory_table(&inventory);
    assert!(
        table.contains("127.0.0.1:8081") && table.contains("healthy"),
        "{table}"
    );
    let json = serde_json::to_string(&inventory).unwrap();
    assert_eq!(
        serde_json::from_str::<ecs_xds::inventory::Inventory>(&json).unwrap(),
        inventory
    );
    drop(moto);

    // Nothing listens there: the error names the operation and the cluster.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut unreachable = settings.clone();
    unreachable.aws.endpoint_url = Some(format!("http://127.0.0.1:{closed}"));
    let err = discover_once(unreachable.check().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DiscoverError::Aws(AwsError::Call {
                operation: "ListTasks",
                ..
            })
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("ListTasks on ECS cluster demo failed:"),
        "{err}"
    );

    // Invalid settings are refused before any call.
    let mut invalid = settings;
    invalid.ecs.include_services = vec!["[".into()];
    let err = invalid.check().unwrap_err();
    assert!(
        err.to_string()
            .contains("ecs.include_services[0]: invalid glob"),
        "{err}"
    );
}
