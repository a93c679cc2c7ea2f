//! `service` on an active node, played over the wire with the agent's protocol: the steps
//! the operator names run in the ramdisk (booted for them, the instance booted again at
//! the end), in order; `service_step` shows the running one; an erase never reaches the
//! instance's own disk (the one the deploy wrote: refused with 400 before anything boots);
//! a failing step leaves `service failed` with its text, and `service` from there runs
//! again.

use proto::WipeMode;
use proto::protocol::{Command, Report};
use reqwest::Method;
use serde_json::json;

use super::flows::{failed, manage_rules, wiped};
use super::*;

const MAC: &str = "52:54:00:5e:00:01";

/// A discovered machine cleaned and deployed (fast track) onto `/dev/vda`; returns the
/// node.
async fn active_node(env: &Env) -> Uuid {
    let lr = env.lookup(&lookup_req(&[MAC], "S1", "us1")).await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    env.wait_state(id, "manageable").await;
    provision_as(env, id, json!({"target": "provide"})).await;
    let (cmd_id, _) = env.next_command(id, &token).await;
    assert_eq!(env.report(id, &token, cmd_id, wiped()).await, 204);
    env.wait_state(id, "available").await;
    let (s, b) = env
        .api(
            Method::PATCH,
            &format!("/v1/nodes/{id}"),
            Some(json!([
                {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:9/os.raw.zst"},
                {"op": "add", "path": "/instance_info/image_checksum", "value": "ab".repeat(32)}
            ])),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    provision_as(env, id, json!({"target": "active"})).await;
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert!(matches!(cmd, Command::Deploy(_)), "{cmd:?}");
    let written = Report::Succeeded {
        inventory: None,
        detail: Some(json!({"device": "/dev/vda", "format": "zstd", "bytes_written": 1})),
    };
    assert_eq!(env.report(id, &token, cmd_id, written).await, 204);
    let n = env.wait_state(id, "active").await;
    assert_eq!(n["driver_internal_info"]["instance_device"], "/dev/vda");
    id
}

/// The agent's answer to `inspect`: the machine's inventory.
fn inventoried() -> Report {
    Report::Succeeded {
        inventory: Some(Box::new(inventory(&[MAC], "S1"))),
        detail: None,
    }
}

/// The ramdisk of a service boots: its agent looks up and gets a new session.
async fn agent_of_new_boot(env: &Env, id: Uuid) -> String {
    env.wait_state(id, "service wait").await;
    let (found, token) = env.session(&lookup_req(&[MAC], "S1", "us1")).await;
    assert_eq!(found, id);
    token
}

#[tokio::test(flavor = "multi_thread")]
async fn service_steps_run_in_the_ramdisk_and_the_instance_boots_again() {
    let env = start(manage_rules()).await;
    let id = active_node(&env).await;
    let (s, _) = provision_as(
        &env,
        id,
        json!({"target": "service", "service_steps": [
            {"interface": "deploy", "step": "erase_devices", "args": {"devices": ["/dev/vdb"]}},
            {"interface": "inspect", "step": "inspect"}
        ]}),
    )
    .await;
    assert_eq!(s, 202);
    let token = agent_of_new_boot(&env, id).await;
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(
        cmd,
        Command::Wipe {
            mode: WipeMode::Secure,
            devices: vec!["/dev/vdb".into()]
        }
    );
    // Shown once the wait is saved (the command is handed out just before).
    let n = env.wait_state(id, "service wait").await;
    assert_eq!(n["service_step"]["step"], "erase_devices", "{n}");
    assert_eq!(n["service_step"]["args"]["devices"], json!(["/dev/vdb"]));
    assert_eq!(env.report(id, &token, cmd_id, wiped()).await, 204);
    // The second step: a fresh inventory through the same agent.
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(cmd, Command::Inspect);
    assert_eq!(env.report(id, &token, cmd_id, inventoried()).await, 204);
    let n = env.wait_state(id, "active").await;
    assert!(n["last_error"].is_null(), "{n}");
    assert_eq!(n["service_step"], json!({}), "{n}");
    // The instance boots again from its disk.
    let (_, bd) = env
        .api(
            Method::GET,
            &format!("/v1/nodes/{id}/management/boot_device"),
            None,
        )
        .await;
    assert_eq!(bd, json!({"boot_device": "disk", "persistent": true}));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_never_erases_the_instance_disk_and_a_failed_step_can_run_again() {
    let env = start(manage_rules()).await;
    let id = active_node(&env).await;
    // Its steps run in the agent: `disable_ramdisk` would run none of them.
    let (s, b) = provision_as(
        &env,
        id,
        json!({"target": "service", "disable_ramdisk": true, "service_steps": [
            {"interface": "inspect", "step": "inspect"}
        ]}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("disable_ramdisk"), "{b}");
    // The instance's own disk, or no list at all (a whole-machine erase is cleaning's
    // job): refused at once, before anything boots; the node stays active.
    for (args, want) in [
        (
            json!({"devices": ["/dev/vdb", "/dev/vda"]}),
            "/dev/vda holds the instance",
        ),
        (json!({}), "args.devices"),
    ] {
        let (s, b) = provision_as(
            &env,
            id,
            json!({"target": "service", "service_steps": [
                {"interface": "deploy", "step": "erase_devices", "args": args}
            ]}),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        assert!(b.to_string().contains(want), "{b}");
        let (_, n) = env.api(Method::GET, &format!("/v1/nodes/{id}"), None).await;
        assert_eq!(n["provision_state"], "active");
    }
    // A step the agent fails: `service failed` with its text; then service again succeeds.
    provision_as(
        &env,
        id,
        json!({"target": "service", "service_steps": [
            {"interface": "deploy", "step": "erase_devices", "args": {"devices": ["/dev/vdb"]}}
        ]}),
    )
    .await;
    let token = agent_of_new_boot(&env, id).await;
    let (cmd_id, _) = env.next_command(id, &token).await;
    assert_eq!(
        env.report(
            id,
            &token,
            cmd_id,
            failed("secure erase of /dev/vdb failed", "EIO")
        )
        .await,
        204
    );
    let n = env.wait_state(id, "service failed").await;
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("secure erase of /dev/vdb failed: EIO"),
        "{err}"
    );
    provision_as(
        &env,
        id,
        json!({"target": "service", "service_steps": [{"interface": "inspect", "step": "inspect"}]}),
    )
    .await;
    let token = agent_of_new_boot(&env, id).await;
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(cmd, Command::Inspect);
    assert_eq!(env.report(id, &token, cmd_id, inventoried()).await, 204);
    let n = env.wait_state(id, "active").await;
    assert!(n["last_error"].is_null(), "{n}");
}
