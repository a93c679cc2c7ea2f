//! Steps the agent offers, played over the wire: the agent reports them at lookup; the
//! controller offers them for automated and manual cleaning, deploy templates and
//! `service`, and runs them with `RunStep` (no controller change for a new agent step);
//! required arguments are checked before anything runs; steps beyond the protocol's
//! bounds refuse the lookup.

use chrono::Utc;
use controller::deploy_templates::{DeployTemplate, parse_steps};
use proto::protocol::{AgentStep, Command, Report, StepArg};
use reqwest::Method;
use serde_json::{Value, json};

use super::flows::{failed, manage_rules, wiped};
use super::*;

const MAC: &str = "52:54:00:5e:00:03";

fn offered() -> Vec<AgentStep> {
    let step = |name: &str, clean: Option<u32>, deploy: Option<u32>, service: bool| AgentStep {
        interface: "deploy".into(),
        step: name.into(),
        clean_priority: clean,
        deploy_priority: deploy,
        service,
        abortable: false,
        argsinfo: Default::default(),
    };
    let mut scan = step("scan_disks", Some(0), None, true);
    scan.argsinfo.insert(
        "max_bytes".into(),
        StepArg {
            description: "bytes to read per disk".into(),
            required: false,
        },
    );
    let mut tag = step("tag_disks", Some(0), Some(0), true);
    tag.argsinfo.insert(
        "label".into(),
        StepArg {
            description: "the label".into(),
            required: true,
        },
    );
    vec![
        scan,
        tag,
        // Runs in automated cleaning, after the built-in metadata erase (99).
        step("check_firmware", Some(40), None, false),
    ]
}

fn agent_lookup() -> proto::protocol::LookupRequest {
    let mut req = lookup_req(&[MAC], "S3", "us3");
    req.steps = offered();
    req
}

fn done(detail: Value) -> Report {
    Report::Succeeded {
        inventory: None,
        detail: Some(detail),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_own_steps_run_in_cleaning_deploy_templates_and_service() {
    let env = start(manage_rules()).await;
    let lr = env.lookup(&agent_lookup()).await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    env.wait_state(id, "manageable").await;
    // Automated cleaning: the built-in erase (99), then the agent's own step (40).
    provision_as(&env, id, json!({"target": "provide"})).await;
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert!(matches!(cmd, Command::Wipe { .. }), "{cmd:?}");
    assert_eq!(env.report(id, &token, cmd_id, wiped()).await, 204);
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(
        cmd,
        Command::RunStep {
            interface: "deploy".into(),
            step: "check_firmware".into(),
            args: Default::default()
        }
    );
    // The command is handed out before the conductor's transaction saves the step with
    // the wait: the node shows it once in the wait.
    let n = env.wait_state(id, "clean wait").await;
    assert_eq!(n["clean_step"]["step"], "check_firmware", "{n}");
    assert_eq!(
        env.report(id, &token, cmd_id, done(json!({"ok": true})))
            .await,
        204
    );
    env.wait_state(id, "available").await;

    // Manual cleaning with the agent's scan, its arguments passed through.
    provision_as(&env, id, json!({"target": "manage"})).await;
    env.wait_state(id, "manageable").await;
    let (s, b) = provision_as(
        &env,
        id,
        json!({"target": "clean", "clean_steps": [
            {"interface": "deploy", "step": "scan_disks", "args": {"max_bytes": 1048576}}
        ]}),
    )
    .await;
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
        ("deploy", "scan_disks")
    );
    assert_eq!(args["max_bytes"], 1048576);
    let detail = json!({"disks": [{"device": "/dev/vda", "bytes_read": 1048576}]});
    assert_eq!(
        env.report(id, &token, cmd_id, done(detail.clone())).await,
        204
    );
    let n = env.wait_state(id, "manageable").await;
    assert_eq!(
        n["driver_internal_info"]["agent_last_result"], detail,
        "{n}"
    );

    // A required argument missing: the cleaning fails before the agent is asked.
    provision_as(
        &env,
        id,
        json!({"target": "clean", "clean_steps": [{"interface": "deploy", "step": "tag_disks"}]}),
    )
    .await;
    let n = env.wait_state(id, "clean failed").await;
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("requires the argument(s) label"), "{err}");
    // A step the agent does not offer.
    provision_as(&env, id, json!({"target": "manage"})).await;
    env.wait_state(id, "manageable").await;
    provision_as(
        &env,
        id,
        json!({"target": "clean", "clean_steps": [{"interface": "deploy", "step": "no_such_step"}]}),
    )
    .await;
    let n = env.wait_state(id, "clean failed").await;
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("not supported by the driver"), "{err}");

    // A deploy template naming the agent's deploy step: it runs before the image.
    provision_as(&env, id, json!({"target": "manage"})).await;
    env.wait_state(id, "manageable").await;
    provision_as(&env, id, json!({"target": "provide"})).await;
    for _ in 0..2 {
        let (cmd_id, _) = env.next_command(id, &token).await;
        assert_eq!(env.report(id, &token, cmd_id, wiped()).await, 204);
    }
    env.wait_state(id, "available").await;
    env.services
        .store
        .create_deploy_template(&DeployTemplate {
            uuid: Uuid::new_v4(),
            name: "CUSTOM_TAGGED".into(),
            steps: parse_steps(&json!([{"interface": "deploy", "step": "tag_disks",
                                         "args": {"label": "web"}, "priority": 120}]))
            .expect("steps"),
            extra: Default::default(),
            created_at: Utc::now(),
            updated_at: None,
        })
        .await
        .expect("template");
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/traits"),
            Some(json!({"traits": ["CUSTOM_TAGGED"]})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    env.patch_node(id, json!([
                {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:9/os.raw.zst"},
                {"op": "add", "path": "/instance_info/image_checksum", "value": "ab".repeat(32)},
                {"op": "add", "path": "/instance_info/traits", "value": ["CUSTOM_TAGGED"]}
            ])).await;
    provision_as(&env, id, json!({"target": "active"})).await;
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert!(
        matches!(&cmd, Command::RunStep { step, args, .. } if step == "tag_disks" && args["label"] == "web"),
        "{cmd:?}"
    );
    assert_eq!(env.report(id, &token, cmd_id, done(json!({}))).await, 204);
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert!(matches!(cmd, Command::Deploy(_)), "{cmd:?}");
    let written = done(json!({"device": "/dev/vda", "format": "zstd", "bytes_written": 1}));
    assert_eq!(env.report(id, &token, cmd_id, written).await, 204);
    env.wait_state(id, "active").await;

    // Service: a required argument missing is a 400 before anything boots; a failed agent
    // step leaves `service failed` with its text.
    let (s, b) = provision_as(
        &env,
        id,
        json!({"target": "service", "service_steps": [{"interface": "deploy", "step": "tag_disks"}]}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b.to_string().contains("requires the argument(s) label"),
        "{b}"
    );
    provision_as(
        &env,
        id,
        json!({"target": "service", "service_steps": [{"interface": "deploy", "step": "scan_disks"}]}),
    )
    .await;
    env.wait_state(id, "service wait").await;
    let (found, token) = env.session(&agent_lookup()).await;
    assert_eq!(found, id);
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert!(
        matches!(&cmd, Command::RunStep { step, .. } if step == "scan_disks"),
        "{cmd:?}"
    );
    let report = failed("reading /dev/vdb failed at byte 4096", "EIO");
    assert_eq!(env.report(id, &token, cmd_id, report).await, 204);
    let n = env.wait_state(id, "service failed").await;
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("'step': 'scan_disks'") && err.contains("at byte 4096: EIO"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn steps_beyond_the_protocols_bounds_refuse_the_lookup() {
    let env = start(manage_rules()).await;
    let mut req = agent_lookup();
    req.steps[0].step = "Scan Disks".into();
    let r = env.lookup_raw(&req).await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("lower-case"), "{text}");
    let mut req = agent_lookup();
    let many = req.steps[0].clone();
    req.steps = (0..100)
        .map(|i| {
            let mut s = many.clone();
            s.step = format!("s{i}");
            s
        })
        .collect();
    assert_eq!(env.lookup_raw(&req).await.status(), 400);
}
