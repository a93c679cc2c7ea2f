//! Agent-driven waits (manual hardware), timeouts, aborts and restart recovery.

use std::time::Duration;

use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_fails_transient_states_and_adopts_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir).await;
    let deploying = enroll(&store, "fake-hardware", "deploying").await;
    let verifying = enroll(&store, "fake-hardware", "verifying").await;
    let deleting = enroll(&store, "fake-hardware", "deleting").await;
    let clean_wait = enroll(&store, "manual", "clean wait").await;
    let stable = enroll(&store, "fake-hardware", "active").await;
    // A node that entered its wait state after the start was put there by the new run
    // (the API answers while recovery runs): recovery must leave it alone.
    let live = enroll(&store, "manual", "inspect wait").await;
    let mut node = get(&store, live).await;
    node.provision_updated_at = Some(Utc::now() + chrono::Duration::seconds(5));
    store.update_node(&node).await.expect("live node");
    for (uuid, target) in [
        (deploying, "active"),
        (verifying, "manageable"),
        (deleting, "available"),
        (clean_wait, "available"),
    ] {
        let mut node = get(&store, uuid).await;
        node.target_provision_state = Some(target.to_owned());
        store.update_node(&node).await.expect("target");
    }
    // An allocation the previous run never processed, and a node it can take.
    let free = enroll(&store, "fake-hardware", "available").await;
    let mut node = get(&store, free).await;
    node.power_state = Some("power off".to_owned());
    store.update_node(&node).await.expect("power state");
    let pending = new_allocation(&store, None, &[]).await;
    // The previous run held a lock on one of them.
    store
        .reserve_node(deploying, "test-conductor")
        .await
        .expect("reserve");

    let conductor = Conductor::new(store.clone(), DriverRegistry::builtin(), config());
    conductor.start().await.expect("start");

    let node = wait_state(&store, deploying, "deploy failed").await;
    assert_eq!(node.target_provision_state.as_deref(), Some("active"));
    assert!(node.last_error.is_some_and(|e| e.contains("restarted")));
    let node = wait_state(&store, verifying, "enroll").await;
    assert_eq!(node.target_provision_state, None);
    assert!(node.last_error.is_some());
    let node = wait_state(&store, deleting, "error").await;
    assert_eq!(node.target_provision_state, None);
    // A wait keeps waiting (its agent's session and commands are in the database); its
    // agent's result finishes it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !store
        .list_history(clean_wait)
        .await
        .expect("history")
        .iter()
        .any(|h| h.event_type == "takeover")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "clean wait never adopted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_state(&store, clean_wait, "clean wait").await;
    conductor
        .agent_finished(clean_wait, Ok(()))
        .await
        .expect("result after the restart");
    let node = wait_state(&store, clean_wait, "available").await;
    assert_eq!(node.last_error, None);
    let node = get(&store, stable).await;
    assert_eq!(
        (node.provision_state.as_str(), node.last_error),
        ("active", None)
    );
    let node = get(&store, live).await;
    assert_eq!(
        (node.provision_state.as_str(), node.last_error),
        ("inspect wait", None)
    );
    let allocation = wait_allocation(&store, pending).await;
    assert_eq!(
        (allocation.state.as_str(), allocation.node_uuid),
        ("active", Some(free))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_hardware_waits_for_the_agent_and_times_out() {
    let timeout = Duration::from_secs(1800);
    let (config, clock) = manual_clock(timeout);
    let env = env_with(config).await;
    let manual = env
        .conductor
        .registry()
        .manual_hardware()
        .expect("manual")
        .clone();
    let uuid = enroll(&env.store, "manual", "available").await;

    // Deploy validation needs an image.
    let err = env
        .conductor
        .provision(uuid, ProvisionRequest::new(Verb::Deploy))
        .await;
    assert!(matches!(err, Err(ConductorError::BadRequest(ref m)) if m.contains("image_source")));
    let mut node = get(&env.store, uuid).await;
    node.instance_info
        .insert("image_source".into(), json!("http://127.0.0.1:1/img.raw"));
    node.instance_info
        .insert("image_checksum".into(), json!("0".repeat(64)));
    // A root_gb the node's disk cannot hold is refused up front.
    node.properties.insert("local_gb".into(), json!(20));
    node.instance_info.insert("root_gb".into(), json!(40));
    env.store.update_node(&node).await.expect("image");
    let err = env
        .conductor
        .provision(uuid, ProvisionRequest::new(Verb::Deploy))
        .await;
    assert!(
        matches!(err, Err(ConductorError::BadRequest(ref m)) if m.contains("root_gb 40")),
        "{err:?}"
    );
    let mut node = get(&env.store, uuid).await;
    node.instance_info.insert("root_gb".into(), json!(10));
    env.store.update_node(&node).await.expect("root_gb");

    provision(&env, uuid, Verb::Deploy).await;
    let node = wait_state(&env.store, uuid, "wait call-back").await;
    assert_eq!(node.target_provision_state.as_deref(), Some("active"));
    assert_eq!(node.power_state.as_deref(), Some("power on"));
    let texts: Vec<_> = manual.instructions().into_iter().map(|i| i.text).collect();
    assert_eq!(
        texts,
        vec![
            format!("boot node {uuid} from pxe (next time)"),
            format!("power on node {uuid}"),
            "agent: deploy the instance image".to_owned(),
        ]
    );
    wait_sleepers(&clock, 1).await;
    clock.advance(timeout - Duration::from_secs(1));
    assert_stays(&env.store, uuid, "wait call-back").await;
    clock.advance(Duration::from_secs(1));
    let node = wait_state(&env.store, uuid, "deploy failed").await;
    assert_eq!(node.target_provision_state.as_deref(), Some("active"));
    assert_eq!(
        node.last_error,
        Some(format!(
            "Timeout reached while waiting for callback for node {uuid}"
        ))
    );

    // A retried deploy that the agent completes reaches active.
    provision(&env, uuid, Verb::Deploy).await;
    wait_state(&env.store, uuid, "wait call-back").await;
    env.conductor
        .agent_finished(uuid, Ok(()))
        .await
        .expect("callback");
    let node = wait_state(&env.store, uuid, "active").await;
    assert_eq!(node.last_error, None);
    assert_eq!(node.target_provision_state, None);
    // The timer of the completed wait must not fire later.
    clock.advance(timeout * 2);
    assert_stays(&env.store, uuid, "active").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_waits_can_be_aborted_or_completed() {
    let env = env().await;
    let uuid = enroll(&env.store, "manual", "manageable").await;
    provision(&env, uuid, Verb::Inspect).await;
    let node = wait_state(&env.store, uuid, "inspect wait").await;
    assert_eq!(node.target_provision_state.as_deref(), Some("manageable"));
    assert!(node.inspection_started_at.is_some());
    env.conductor
        .agent_finished(uuid, Ok(()))
        .await
        .expect("inspection reported");
    let node = wait_state(&env.store, uuid, "manageable").await;
    assert!(node.inspection_finished_at.is_some());

    provision(&env, uuid, Verb::Provide).await;
    let node = wait_state(&env.store, uuid, "clean wait").await;
    assert_eq!(node.target_provision_state.as_deref(), Some("available"));
    assert_eq!(
        node.clean_step.as_ref().map(|s| s["step"].clone()),
        Some(json!("erase_devices_metadata"))
    );
    provision(&env, uuid, Verb::Abort).await;
    let node = wait_state(&env.store, uuid, "clean failed").await;
    assert_eq!(
        node.last_error.as_deref(),
        Some("Cleaning was aborted by an operator")
    );
    assert!(
        env.conductor.lock_timers().is_empty(),
        "abort cancels the wait timer"
    );

    // The agent failing a step fails cleaning with its reason.
    provision(&env, uuid, Verb::Manage).await;
    wait_state(&env.store, uuid, "manageable").await;
    provision(&env, uuid, Verb::Provide).await;
    wait_state(&env.store, uuid, "clean wait").await;
    env.conductor
        .agent_finished(uuid, Err("wipe of /dev/sda failed".to_owned()))
        .await
        .expect("report");
    let node = wait_state(&env.store, uuid, "clean failed").await;
    assert_eq!(
        node.last_error,
        Some(format!(
            "Agent returned error for clean step {{'interface': 'deploy', 'step': \
             'erase_devices_metadata'}} on node {uuid}: wipe of /dev/sda failed"
        ))
    );

    // Maintenance blocks provisioning verbs with Ironic's message.
    let avail = enroll(&env.store, "fake-hardware", "available").await;
    let mut node = get(&env.store, avail).await;
    node.maintenance = true;
    env.store.update_node(&node).await.expect("maintenance");
    let err = env
        .conductor
        .provision(avail, ProvisionRequest::new(Verb::Deploy))
        .await;
    assert!(
        matches!(err, Err(ConductorError::BadRequest(ref m)) if m.contains("maintenance mode"))
    );
}

#[test]
fn an_agent_failure_names_the_step_it_ran() {
    use crate::model::Node;
    let mut node = Node::new(uuid::Uuid::new_v4(), "fake-hardware", chrono::Utc::now());
    let step = |i: &str, s: &str| {
        serde_json::json!({"interface": i, "step": s, "priority": 0, "args": {}})
            .as_object()
            .cloned()
    };
    assert_eq!(super::super::agent_step_error(&node, "EIO"), "EIO");
    node.clean_step = step("deploy", "erase_devices");
    assert_eq!(
        super::super::agent_step_error(&node, "wipe failed on /dev/vda: EIO"),
        format!(
            "Agent returned error for clean step {{'interface': 'deploy', 'step': 'erase_devices'}} on node {}: wipe failed on /dev/vda: EIO",
            node.uuid
        )
    );
    node.clean_step = None;
    node.service_step = step("inspect", "inspect");
    assert!(super::super::agent_step_error(&node, "x").starts_with(
        "Agent returned error for service step {'interface': 'inspect', 'step': 'inspect'}"
    ));
    node.service_step = None;
    node.deploy_step = step("deploy", "deploy");
    assert!(super::super::agent_step_error(&node, "checksum mismatch").contains("deploy step"));
}
