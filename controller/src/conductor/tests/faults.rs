//! The fault paths of issue 6 at conductor level, on manual hardware (the agent's answers
//! are `agent_finished` calls): a deploy whose agent never calls back, a conductor killed
//! while nodes deploy and restarted on the same database, and the way back from `deploy
//! failed` through undeploy and cleaning.

use std::time::Duration;

use serde_json::json;

use super::*;

/// Gives a node the image a deploy needs.
async fn with_image(store: &Arc<dyn Store>, uuid: Uuid) {
    let mut node = get(store, uuid).await;
    node.instance_info
        .insert("image_source".into(), json!("http://127.0.0.1:1/img.raw"));
    node.instance_info
        .insert("image_checksum".into(), json!("0".repeat(64)));
    store.update_node(&node).await.expect("image");
}

/// Undeploy from `deploy failed`: teardown, cleaning through the agent, `available`.
async fn undeploy_to_available(env: &Env, uuid: Uuid) {
    provision(env, uuid, Verb::Undeploy).await;
    let node = wait_state(&env.store, uuid, "clean wait").await;
    assert_eq!(node.target_provision_state.as_deref(), Some("available"));
    assert_eq!(
        node.instance_info.get("image_source"),
        None,
        "instance cleared"
    );
    env.conductor
        .agent_finished(uuid, Ok(()))
        .await
        .expect("cleaning reported");
    let node = wait_state(&env.store, uuid, "available").await;
    assert_eq!(node.target_provision_state, None);
    assert_eq!(node.last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_agent_times_out_and_undeploy_recovers() {
    let timeout = Duration::from_secs(1800);
    let (config, clock) = manual_clock(timeout);
    let env = env_with(config).await;
    let uuid = enroll(&env.store, "manual", "available").await;
    with_image(&env.store, uuid).await;
    provision(&env, uuid, Verb::Deploy).await;
    wait_state(&env.store, uuid, "wait call-back").await;
    wait_sleepers(&clock, 1).await;

    // The machine died while writing: nothing calls back. Just short of the timeout the
    // node still waits; at it, the deploy fails.
    clock.advance(timeout - Duration::from_secs(1));
    assert_stays(&env.store, uuid, "wait call-back").await;
    clock.advance(Duration::from_secs(1));
    let node = wait_state(&env.store, uuid, "deploy failed").await;
    assert_eq!(
        node.last_error,
        Some(format!(
            "Timeout reached while waiting for callback for node {uuid}"
        ))
    );
    assert!(env.conductor.lock_timers().is_empty());

    // A report arriving after the timeout changes nothing.
    let late = env.conductor.agent_finished(uuid, Ok(())).await;
    assert!(late.is_err(), "a late callback was accepted");
    let node = get(&env.store, uuid).await;
    assert_eq!(node.provision_state, "deploy failed");

    // Deploy again is allowed from deploy failed, and so is undeploy.
    undeploy_to_available(&env, uuid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_wait_alive_past_the_timeout_and_it_fails_when_they_stop() {
    let timeout = Duration::from_secs(60);
    let (config, clock) = manual_clock(timeout);
    let env = env_with(config).await;
    let alive = enroll(&env.store, "manual", "available").await;
    let silent = enroll(&env.store, "manual", "available").await;
    for uuid in [alive, silent] {
        with_image(&env.store, uuid).await;
        provision(&env, uuid, Verb::Deploy).await;
        wait_state(&env.store, uuid, "wait call-back").await;
    }
    wait_sleepers(&clock, 2).await;
    // The agent of `alive` writes a long image and heartbeats every 10 s, for three
    // timeouts; the agent of `silent` died.
    for _ in 0..18 {
        assert!(env.conductor.agent_alive(alive), "no wait timer to move on");
        clock.advance(Duration::from_secs(10));
    }
    let node = wait_state(&env.store, silent, "deploy failed").await;
    assert_eq!(
        node.last_error,
        Some(format!(
            "Timeout reached while waiting for callback for node {silent}"
        ))
    );
    assert_stays(&env.store, alive, "wait call-back").await;
    // Its heartbeats stop (the last was 10 s ago): the wait fails one timeout after it,
    // not a second earlier.
    clock.advance(timeout - Duration::from_secs(11));
    assert_stays(&env.store, alive, "wait call-back").await;
    clock.advance(Duration::from_secs(1));
    let node = wait_state(&env.store, alive, "deploy failed").await;
    assert_eq!(
        node.last_error,
        Some(format!(
            "Timeout reached while waiting for callback for node {alive}"
        ))
    );
    // A node in no wait has no timer: a heartbeat changes nothing.
    assert!(!env.conductor.agent_alive(alive));
    assert!(env.conductor.lock_timers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_progress_of_one_operation_does_not_show_in_the_next() {
    let env = env().await;
    let uuid = enroll(&env.store, "manual", "manageable").await;
    let mut node = get(&env.store, uuid).await;
    node.driver_internal_info.insert(
        crate::hub::PROGRESS_KEY.into(),
        json!({"phase": "wipe", "bytes_written": 1024, "bytes_total": 1024}),
    );
    env.store.update_node(&node).await.expect("progress");
    provision(&env, uuid, Verb::Provide).await;
    let node = wait_state(&env.store, uuid, "clean wait").await;
    assert_eq!(
        node.driver_internal_info.get(crate::hub::PROGRESS_KEY),
        None,
        "the last wipe's progress shows in the new cleaning"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conductor_killed_mid_deploy_fails_its_steps_and_adopts_its_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir).await;
    let drivers = DriverRegistry::builtin();
    let first = Conductor::new(store.clone(), drivers, config());
    first.start().await.expect("start");

    // One node waits for its agent's callback (no lock held), one is in the middle of
    // its deploy task (the lock is held by the run that gets killed).
    let waiting = enroll(&store, "manual", "available").await;
    with_image(&store, waiting).await;
    first
        .provision(waiting, ProvisionRequest::new(Verb::Deploy))
        .await
        .expect("deploy");
    wait_state(&store, waiting, "wait call-back").await;
    let busy = enroll(&store, "manual", "deploying").await;
    let mut node = get(&store, busy).await;
    node.target_provision_state = Some("active".to_owned());
    store.update_node(&node).await.expect("target");
    store
        .reserve_node(busy, "test-conductor")
        .await
        .expect("reserve");
    // SIGKILL: the first run does nothing more (no shutdown, its timers never fire: the
    // callback timeout is the 30 min default).

    let drivers = DriverRegistry::builtin();
    let fake = drivers.fake_hardware().expect("fake hardware").clone();
    let second = Conductor::new(store.clone(), drivers, config());
    second.start().await.expect("restart");
    let env = Env {
        conductor: second,
        store: store.clone(),
        fake,
        _dir: dir,
    };
    // The busy node was in a step the killed run executed itself: failed, named.
    let node = wait_state(&env.store, busy, "deploy failed").await;
    assert_eq!(node.reservation, None);
    assert_eq!(node.target_provision_state.as_deref(), Some("active"));
    let err = node.last_error.unwrap_or_default();
    assert!(err.contains("restarted"), "{err}");
    // The waiting node keeps waiting under the new run (its agent's session and commands
    // are in the database): the agent's callback finishes the deploy.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let history = env.store.list_history(waiting).await.expect("history");
        if history
            .iter()
            .any(|h| h.event_type == "takeover" && h.event.contains("restarted"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never adopted: {history:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_state(&env.store, waiting, "wait call-back").await;
    assert_eq!(
        get(&env.store, waiting).await.provision_state,
        "wait call-back"
    );
    env.conductor
        .agent_finished(waiting, Ok(()))
        .await
        .expect("callback after the restart");
    let node = wait_state(&env.store, waiting, "active").await;
    assert_eq!(node.last_error, None);

    // The failed one is recoverable.
    undeploy_to_available(&env, busy).await;
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_wipe_during_undeploy_never_reaches_available() {
    let env = env().await;
    let uuid = enroll(&env.store, "manual", "active").await;
    provision(&env, uuid, Verb::Undeploy).await;
    wait_state(&env.store, uuid, "clean wait").await;
    env.conductor
        .agent_finished(
            uuid,
            Err("wipe failed on /dev/vda: Read-only file system (os error 30)".to_owned()),
        )
        .await
        .expect("report");
    let node = wait_state(&env.store, uuid, "clean failed").await;
    assert!(
        node.last_error
            .as_deref()
            .is_some_and(|e| e.contains("Read-only file system")),
        "{node:?}"
    );
    // provide is refused; manage, then provide runs cleaning again.
    let err = env
        .conductor
        .provision(uuid, ProvisionRequest::new(Verb::Provide))
        .await;
    assert!(
        matches!(err, Err(ConductorError::InvalidTransition(_))),
        "{err:?}"
    );
    provision(&env, uuid, Verb::Manage).await;
    wait_state(&env.store, uuid, "manageable").await;
    provision(&env, uuid, Verb::Provide).await;
    wait_state(&env.store, uuid, "clean wait").await;
    env.conductor
        .agent_finished(uuid, Ok(()))
        .await
        .expect("report");
    let node = wait_state(&env.store, uuid, "available").await;
    assert_eq!(node.last_error, None);
}
