//! Software RAID played over the wire with the agent's protocol: the agent offers
//! `raid.create_configuration` and `raid.delete_configuration` at lookup; on a node whose
//! RAID interface is `agent`, a manual cleaning runs them with the `raid` plan taken from
//! `target_raid_config` and stores what was built as `raid_config` (or clears it); a
//! cleaning asking for it without a target is a 400 before anything runs; automated
//! cleaning's erase clears `raid_config`; a deploy sends the plan as `software_raid` (root
//! device hints dropped) and stores the arrays it reports.

use proto::protocol::{AgentStep, Command, Report, StepArg};
use proto::{RaidArray, RaidLevel, RaidMember, RaidReport};
use reqwest::Method;
use serde_json::{Value, json};

use super::flows::{manage_rules, wiped};
use super::*;

const MAC: &str = "52:54:00:5e:00:07";

fn raid_steps() -> Vec<AgentStep> {
    let step = |name: &str| AgentStep {
        interface: "raid".into(),
        step: name.into(),
        clean_priority: Some(0),
        deploy_priority: None,
        service: false,
        abortable: false,
        argsinfo: Default::default(),
    };
    let mut create = step("create_configuration");
    create.argsinfo.insert(
        "raid".into(),
        StepArg {
            description: "the software RAID to build".into(),
            required: true,
        },
    );
    vec![create, step("delete_configuration")]
}

fn target() -> Value {
    json!({"logical_disks": [
        {"raid_level": "1", "size_gb": 20, "controller": "software", "volume_name": "root",
         "physical_disks": [{"name": "/dev/vda"}, {"name": "/dev/vdb"}]},
        {"raid_level": "0", "size_gb": "MAX", "controller": "software",
         "physical_disks": [{"name": "/dev/vda"}, {"name": "/dev/vdb"}]}]})
}

fn plan() -> Value {
    json!({"disks": [{"name": "/dev/vda"}, {"name": "/dev/vdb"}],
           "volumes": [{"level": "1", "size_gb": 20, "name": "root"}, {"level": "0"}]})
}

fn built() -> RaidReport {
    let member = |disk: &str, n: u8| RaidMember {
        device: format!("{disk}{n}"),
        disk: disk.into(),
        serial: None,
        wwn: None,
    };
    let array = |level, name: &str, gib: u64, n, root| RaidArray {
        level,
        name: name.into(),
        uuid: "1:2:3:4".into(),
        metadata: if root { "1.0" } else { "1.2" }.into(),
        size_bytes: (gib << 30) + 4096,
        members: vec![member("/dev/vda", n), member("/dev/vdb", n)],
        root,
    };
    RaidReport {
        arrays: vec![
            array(RaidLevel::Raid1, "root", 20, 1, true),
            array(RaidLevel::Raid0, "data", 70, 2, false),
        ],
    }
}

fn built_config() -> Value {
    json!([
        {"raid_level": "1", "size_gb": 20, "controller": "software", "is_root_volume": true,
         "volume_name": "root", "physical_disks": ["/dev/vda", "/dev/vdb"]},
        {"raid_level": "0", "size_gb": 70, "controller": "software", "is_root_volume": false,
         "volume_name": "data", "physical_disks": ["/dev/vda", "/dev/vdb"]}])
}

fn done(detail: Value) -> Report {
    Report::Succeeded {
        inventory: None,
        detail: Some(detail),
    }
}

async fn node(env: &Env, id: Uuid) -> Value {
    env.api(Method::GET, &format!("/v1/nodes/{id}"), None)
        .await
        .1
}

async fn clean(env: &Env, id: Uuid, step: &str) -> (u16, Value) {
    provision_as(
        env,
        id,
        json!({"target": "clean", "clean_steps": [{"interface": "raid", "step": step}]}),
    )
    .await
}

/// A discovered machine whose agent offers the RAID steps, `manageable`.
async fn manageable(env: &Env) -> (Uuid, String) {
    let mut req = lookup_req(&[MAC], "S7", "us7");
    req.steps = raid_steps();
    let lr = env.lookup(&req).await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    env.wait_state(id, "manageable").await;
    (id, token)
}

async fn set_raid_interface(env: &Env, id: Uuid, iface: &str) {
    env.patch_node(
        id,
        json!([{"op": "replace", "path": "/raid_interface", "value": iface}]),
    )
    .await;
}

async fn set_target(env: &Env, id: Uuid, target: Value) {
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/states/raid"),
            Some(target),
        )
        .await;
    assert_eq!(s, 204, "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_cleaning_creates_and_deletes_software_raid_from_the_target() {
    let env = start(manage_rules()).await;
    let (id, token) = manageable(&env).await;

    // `no-raid` (the default): the agent's RAID steps are not offered.
    let (s, b) = clean(&env, id, "create_configuration").await;
    assert_eq!(s, 202, "{b}");
    let n = env.wait_state(id, "clean failed").await;
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("is not supported by the driver"), "{err}");
    provision_as(&env, id, json!({"target": "manage"})).await;
    env.wait_state(id, "manageable").await;

    // `agent` without a target: refused before anything runs (Ironic's words).
    set_raid_interface(&env, id, "agent").await;
    let (s, b) = clean(&env, id, "create_configuration").await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b.to_string()
            .contains(&format!("Node {id} has no target RAID configuration.")),
        "{b}"
    );
    // An operator's own plan is refused too: the target is the one source.
    let (s, b) = provision_as(
        &env,
        id,
        json!({"target": "clean", "clean_steps": [
            {"interface": "raid", "step": "create_configuration", "args": {"raid": plan()}}]}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(node(&env, id).await["provision_state"], "manageable");

    set_target(&env, id, target()).await;
    let (s, b) = clean(&env, id, "create_configuration").await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    let Command::RunStep {
        interface,
        step,
        args,
    } = cmd
    else {
        panic!("{cmd:?}")
    };
    assert_eq!(
        (interface.as_str(), step.as_str()),
        ("raid", "create_configuration")
    );
    assert_eq!(Value::Object(args), json!({"raid": plan()}));
    let report = serde_json::to_value(built()).expect("report");
    assert_eq!(env.report(id, &token, cmd_id, done(report)).await, 204);
    let n = env.wait_state(id, "manageable").await;
    assert_eq!(n["raid_config"]["logical_disks"], built_config(), "{n}");
    assert!(n["raid_config"]["last_updated"].is_string(), "{n}");
    let (_, states) = env
        .api(Method::GET, &format!("/v1/nodes/{id}/states"), None)
        .await;
    assert_eq!(states["raid_config"]["logical_disks"], built_config());
    assert_eq!(states["target_raid_config"], target());

    // A success the controller cannot read is a failed step, and raid_config stays.
    clean(&env, id, "create_configuration").await;
    let (cmd_id, _) = env.next_command(id, &token).await;
    assert_eq!(
        env.report(id, &token, cmd_id, done(json!({"arrays": 7})))
            .await,
        204
    );
    let n = env.wait_state(id, "clean failed").await;
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("RAID report cannot be read"), "{err}");
    assert_eq!(n["raid_config"]["logical_disks"], built_config());
    provision_as(&env, id, json!({"target": "manage"})).await;
    env.wait_state(id, "manageable").await;

    // delete_configuration clears it.
    let (s, b) = clean(&env, id, "delete_configuration").await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(
        cmd,
        Command::RunStep {
            interface: "raid".into(),
            step: "delete_configuration".into(),
            args: Default::default()
        }
    );
    assert_eq!(
        env.report(
            id,
            &token,
            cmd_id,
            done(json!({"removed": ["/dev/md0", "/dev/md1"]}))
        )
        .await,
        204
    );
    let n = env.wait_state(id, "manageable").await;
    assert_eq!(n["raid_config"], json!({}), "{n}");
    assert_eq!(n["target_raid_config"], target(), "the target stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_builds_the_target_and_automated_cleaning_forgets_the_arrays() {
    let env = start(manage_rules()).await;
    let (id, token) = manageable(&env).await;
    set_raid_interface(&env, id, "agent").await;
    set_target(&env, id, target()).await;
    // Arrays from a manual cleaning...
    clean(&env, id, "create_configuration").await;
    let (cmd_id, _) = env.next_command(id, &token).await;
    let report = serde_json::to_value(built()).expect("report");
    assert_eq!(
        env.report(id, &token, cmd_id, done(report.clone())).await,
        204
    );
    let n = env.wait_state(id, "manageable").await;
    assert!(!n["raid_config"]["logical_disks"].is_null(), "{n}");
    // ...are gone after automated cleaning's erase.
    provision_as(&env, id, json!({"target": "provide"})).await;
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert!(matches!(cmd, Command::Wipe { .. }), "{cmd:?}");
    assert_eq!(env.report(id, &token, cmd_id, wiped()).await, 204);
    let n = env.wait_state(id, "available").await;
    assert_eq!(n["raid_config"], json!({}), "{n}");

    // The deploy carries the plan; root device hints do not apply.
    env.patch_node(id, json!([
                {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:9/os.raw.zst"},
                {"op": "add", "path": "/instance_info/image_checksum", "value": "ab".repeat(32)},
                {"op": "add", "path": "/properties/root_device", "value": {"serial": "S-ROOT"}}
            ])).await;
    let (s, b) = provision_as(&env, id, json!({"target": "active"})).await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    let Command::Deploy(deploy) = cmd else {
        panic!("{cmd:?}")
    };
    assert_eq!(
        serde_json::to_value(&deploy.software_raid).expect("json"),
        plan()
    );
    assert!(
        deploy.root_device_hints.is_empty(),
        "{:?}",
        deploy.root_device_hints
    );
    let result =
        json!({"device": "/dev/md127", "format": "zstd", "bytes_written": 1, "raid": report});
    assert_eq!(env.report(id, &token, cmd_id, done(result)).await, 204);
    let n = env.wait_state(id, "active").await;
    assert_eq!(n["raid_config"]["logical_disks"], built_config(), "{n}");
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_refuses_a_target_software_raid_cannot_build() {
    let env = start(manage_rules()).await;
    let (id, _token) = manageable(&env).await;
    // A target the API would refuse for `agent` RAID (written below the API, as a target
    // stored under another RAID interface stays when the interface changes).
    set_raid_interface(&env, id, "agent").await;
    let mut stored = env
        .services
        .store
        .get_node(&id.to_string())
        .await
        .expect("get")
        .expect("node");
    stored.target_raid_config = json!({"logical_disks": [{"raid_level": "5", "size_gb": 10}]})
        .as_object()
        .cloned()
        .unwrap_or_default();
    stored.instance_info.insert(
        "image_source".into(),
        json!("http://127.0.0.1:9/os.raw.zst"),
    );
    stored
        .instance_info
        .insert("image_checksum".into(), json!("ab".repeat(32)));
    env.services
        .store
        .update_node(&stored)
        .await
        .expect("update");
    provision_as(&env, id, json!({"target": "provide"})).await;
    let (s, b) = env
        .api(Method::GET, &format!("/v1/nodes/{id}/validate"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["raid"]["result"], false, "{b}");
    assert_eq!(b["deploy"]["result"], false, "{b}");
}
