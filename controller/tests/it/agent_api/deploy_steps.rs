//! Deploy steps played over the wire with the agent's protocol: a deploy template named by
//! the instance's traits adds `deploy.erase_devices_metadata` before the image is written
//! (`deploy_step` shows the running step); plans that cannot run as asked are refused with
//! 400 before anything boots; the operator's `deploy_steps` override a template's; an agent
//! failure in a template's step leaves `deploy failed` naming the step.

use chrono::Utc;
use controller::deploy_templates::{DeployTemplate, parse_steps};
use proto::WipeMode;
use proto::protocol::{Command, Report};
use reqwest::Method;
use serde_json::{Value, json};

use super::flows::{failed, manage_rules, wiped};
use super::*;

const MAC: &str = "52:54:00:5e:00:02";

/// A discovered machine, cleaned (fast track: its agent stays up), with an image to
/// deploy and the node traits `traits`; returns the node and the agent's token.
async fn available_node(env: &Env, traits: &[&str]) -> (Uuid, String) {
    let lr = env.lookup(&lookup_req(&[MAC], "S2", "us2")).await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    env.wait_state(id, "manageable").await;
    provision_as(env, id, json!({"target": "provide"})).await;
    let (cmd_id, _) = env.next_command(id, &token).await;
    assert_eq!(env.report(id, &token, cmd_id, wiped()).await, 204);
    env.wait_state(id, "available").await;
    env.patch_node(id, json!([
                {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:9/os.raw.zst"},
                {"op": "add", "path": "/instance_info/image_checksum", "value": "ab".repeat(32)}
            ])).await;
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/traits"),
            Some(json!({"traits": traits})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    (id, token)
}

async fn template(env: &Env, name: &str, steps: Value) {
    env.services
        .store
        .create_deploy_template(&DeployTemplate {
            uuid: Uuid::new_v4(),
            name: name.to_owned(),
            steps: parse_steps(&steps).expect("steps"),
            extra: Default::default(),
            created_at: Utc::now(),
            updated_at: None,
        })
        .await
        .expect("template");
}

async fn instance_traits(env: &Env, id: Uuid, traits: &[&str]) {
    env.patch_node(
        id,
        json!([{"op": "add", "path": "/instance_info/traits", "value": traits}]),
    )
    .await;
}

fn written() -> Report {
    Report::Succeeded {
        inventory: None,
        detail: Some(json!({"device": "/dev/vda", "format": "zstd", "bytes_written": 1})),
    }
}

async fn deploy_step(env: &Env, id: Uuid) -> Value {
    let (_, n) = env.api(Method::GET, &format!("/v1/nodes/{id}"), None).await;
    n["deploy_step"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_template_erases_metadata_before_the_image_is_written() {
    let env = start(manage_rules()).await;
    template(
        &env,
        "CUSTOM_WIPE_FIRST",
        json!([{"interface": "deploy", "step": "erase_devices_metadata", "priority": 150}]),
    )
    .await;
    let (id, token) = available_node(&env, &["CUSTOM_WIPE_FIRST", "CUSTOM_OTHER"]).await;
    instance_traits(&env, id, &["CUSTOM_WIPE_FIRST"]).await;
    let (s, b) = provision_as(&env, id, json!({"target": "active"})).await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(
        cmd,
        Command::Wipe {
            mode: WipeMode::Metadata,
            devices: vec![]
        }
    );
    let step = deploy_step(&env, id).await;
    assert_eq!(
        (&step["interface"], &step["step"], &step["priority"]),
        (
            &json!("deploy"),
            &json!("erase_devices_metadata"),
            &json!(150)
        ),
        "{step}"
    );
    assert_eq!(env.report(id, &token, cmd_id, wiped()).await, 204);
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert!(matches!(cmd, Command::Deploy(_)), "{cmd:?}");
    assert_eq!(deploy_step(&env, id).await["step"], "deploy");
    assert_eq!(env.report(id, &token, cmd_id, written()).await, 204);
    let n = env.wait_state(id, "active").await;
    assert!(n["last_error"].is_null(), "{n}");
    assert_eq!(n["deploy_step"], json!({}), "{n}");
    assert!(
        n["driver_internal_info"].get("deploy_steps").is_none(),
        "{n}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plans_that_cannot_run_are_refused_and_the_operator_overrides_a_template() {
    let env = start(manage_rules()).await;
    template(
        &env,
        "CUSTOM_LATE_WIPE",
        json!([{"interface": "deploy", "step": "erase_devices_metadata", "priority": 50}]),
    )
    .await;
    template(
        &env,
        "CUSTOM_RAID",
        json!([{"interface": "raid", "step": "apply_configuration", "priority": 90}]),
    )
    .await;
    template(
        &env,
        "CUSTOM_WIPE_FIRST",
        json!([{"interface": "deploy", "step": "erase_devices_metadata", "priority": 150}]),
    )
    .await;
    let (id, token) = available_node(
        &env,
        &["CUSTOM_LATE_WIPE", "CUSTOM_RAID", "CUSTOM_WIPE_FIRST"],
    )
    .await;
    let cases: [(&[&str], Option<Value>, &str); 5] = [
        (
            &["CUSTOM_NOT_ON_NODE"],
            None,
            "Cannot specify instance traits that are not also node traits: CUSTOM_NOT_ON_NODE",
        ),
        (
            &["CUSTOM_LATE_WIPE"],
            None,
            "deploy step deploy.erase_devices_metadata must run before deploy.deploy",
        ),
        (
            &["CUSTOM_RAID"],
            None,
            "Deploy step {'interface': 'raid', 'step': 'apply_configuration'} of deploy template CUSTOM_RAID is not supported by the driver",
        ),
        (
            &["CUSTOM_WIPE_FIRST", "CUSTOM_LATE_WIPE"],
            None,
            "both name deploy step deploy.erase_devices_metadata",
        ),
        (
            &[],
            Some(
                json!([{"interface": "deploy", "step": "erase_devices_metadata", "priority": 100}]),
            ),
            "have the same priority 100",
        ),
    ];
    for (traits, steps, want) in cases {
        instance_traits(&env, id, traits).await;
        let mut body = json!({"target": "active"});
        if let Some(steps) = steps {
            body["deploy_steps"] = steps;
        }
        let (s, b) = provision_as(&env, id, body).await;
        assert_eq!(s, 400, "{traits:?}: {b}");
        assert!(b.to_string().contains(want), "{traits:?}: {b}");
        let (_, n) = env.api(Method::GET, &format!("/v1/nodes/{id}"), None).await;
        assert_eq!(n["provision_state"], "available", "{n}");
    }
    // The operator's deploy_steps win: the template's erase disabled, only the image runs.
    instance_traits(&env, id, &["CUSTOM_WIPE_FIRST"]).await;
    let (s, b) = provision_as(
        &env,
        id,
        json!({"target": "active", "deploy_steps": [
            {"interface": "deploy", "step": "erase_devices_metadata", "args": {}, "priority": 0}
        ]}),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert!(matches!(cmd, Command::Deploy(_)), "{cmd:?}");
    assert_eq!(env.report(id, &token, cmd_id, written()).await, 204);
    env.wait_state(id, "active").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_template_step_fails_the_deploy_and_names_the_step() {
    let env = start(manage_rules()).await;
    template(
        &env,
        "CUSTOM_WIPE_FIRST",
        json!([{"interface": "deploy", "step": "erase_devices_metadata", "priority": 150}]),
    )
    .await;
    let (id, token) = available_node(&env, &["CUSTOM_WIPE_FIRST"]).await;
    instance_traits(&env, id, &["CUSTOM_WIPE_FIRST"]).await;
    provision_as(&env, id, json!({"target": "active"})).await;
    let (cmd_id, _) = env.next_command(id, &token).await;
    let report = failed("wiping /dev/vda failed", "EIO");
    assert_eq!(env.report(id, &token, cmd_id, report).await, 204);
    let n = env.wait_state(id, "deploy failed").await;
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("deploy step {'interface': 'deploy', 'step': 'erase_devices_metadata'}")
            && err.contains("wiping /dev/vda failed: EIO"),
        "{err}"
    );
}
