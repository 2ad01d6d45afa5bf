//! Workload identity across accounts and regions (`[[ecs.sources]]`): a task of a member
//! account proves its service with its own task role (moto's STS answers for the member's
//! account), ecs-xds checks the task in that account's ECS through the reader role it assumes,
//! and the certificate names the member's account, region and cluster.

use serde_json::Value;

use super::{
    ca_files, certificate_identity, identity_settings, prepared_dir, wait_for_certificate, Mesh,
    TRUST_DOMAIN,
};
use crate::support::moto::Moto;

const READER: &str = "arn:aws:iam::222222222222:role/ecs-xds-reader";

fn first_task(seed: &Value, service: &str) -> (String, String) {
    let entry = &seed["ecs"]["services"][service];
    let task = entry["tasks"][0].as_str().unwrap().to_owned();
    (task, entry["task_role"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_accounts_task_gets_a_certificate_naming_its_account_region_and_cluster() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let prod = ["--tasks-per-service", "1", "--cluster", "prod"];
    let member = moto.seed_in(Some(READER), "eu-west-1", &prod);
    let dir = prepared_dir();
    let sources = format!(
        r#"clusters = []
sources = [{{ clusters = ["demo"] }}, {{ role_arn = "{READER}", regions = ["eu-west-1"], clusters = ["prod"] }}]"#
    );
    let settings = identity_settings(&moto, &ca_files(dir.path())).raw("ecs", &sources);
    let config = settings.write(dir.path());
    let mesh = Mesh::serve(moto, seed, dir, &config).await;

    let (task, role) = first_task(&member, "web");
    assert!(
        role.starts_with("arn:aws:iam::222222222222:role/"),
        "{role}"
    );
    let creds = mesh.task_credentials(&role, &task).await;
    let certs = mesh.dir.path().join("member-web");
    let agent = mesh.agent(&creds, &task, &certs);
    wait_for_certificate(&certs, &agent).await;
    let (san, _) = certificate_identity(&certs);
    assert_eq!(
        san,
        format!("spiffe://{TRUST_DOMAIN}/ecs/222222222222/eu-west-1/prod/web")
    );

    // The own account's task still gets its own.
    let (own, _, _agent) = mesh.certified("web", "own-web").await;
    assert!(own.contains(":123456789012:"), "{own}");
    let (san, _) = certificate_identity(&mesh.dir.path().join("own-web"));
    assert_eq!(
        san,
        format!("spiffe://{TRUST_DOMAIN}/ecs/123456789012/us-east-1/demo/web")
    );
}
