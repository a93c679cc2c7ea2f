//! Fake-hardware lifecycle, locks, caps, allocations, power and boot device.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_lifecycle_with_allocation_and_history() {
    let env = env().await;
    let uuid = enroll(&env.store, "fake-hardware", "enroll").await;

    provision(&env, uuid, Verb::Manage).await;
    let node = get(&env.store, uuid).await;
    // The 202 contract: the next GET sees the transient state with its target, or the end.
    assert!(
        (node.provision_state == "verifying"
            && node.target_provision_state.as_deref() == Some("manageable"))
            || node.provision_state == "manageable",
        "{node:?}"
    );
    let node = wait_state(&env.store, uuid, "manageable").await;
    assert_eq!(node.target_provision_state, None);

    provision(&env, uuid, Verb::Provide).await;
    let node = wait_state(&env.store, uuid, "available").await;
    assert_eq!(node.target_provision_state, None);
    let steps: Vec<_> = env
        .fake
        .calls_for(uuid)
        .into_iter()
        .filter(|c| c.op == FakeOp::CleanStep)
        .map(|c| c.detail)
        .collect();
    assert_eq!(
        steps,
        vec!["erase_devices_metadata"],
        "automated clean runs priority > 0 steps"
    );

    // Allocation needs a known power state.
    env.conductor
        .set_power(uuid, PowerTarget::Off, None)
        .await
        .expect("power off");
    wait_power(&env.store, uuid, "power off").await;
    let allocation = new_allocation(&env.store, Some("alloc1"), &["CUSTOM_GPU"]).await;
    let mut node = get(&env.store, uuid).await;
    node.traits = vec!["CUSTOM_GPU".to_owned(), "CUSTOM_X".to_owned()];
    env.store.update_node(&node).await.expect("add traits");
    env.conductor.process_allocation(allocation);
    let done = wait_allocation(&env.store, allocation).await;
    assert_eq!(
        (done.state.as_str(), done.node_uuid),
        ("active", Some(uuid))
    );

    let mut req = ProvisionRequest::new(Verb::Deploy);
    req.configdrive = Some(json!({"meta_data": {"hostname": "n1"}}));
    env.conductor.provision(uuid, req).await.expect("deploy");
    let node = wait_state(&env.store, uuid, "active").await;
    assert_eq!(node.target_provision_state, None);
    assert_eq!(node.instance_uuid, Some(allocation));
    assert_eq!(node.instance_info["image_type"], json!("whole-disk"));
    assert_eq!(node.instance_info["traits"], json!(["CUSTOM_GPU"]));
    assert_eq!(
        node.instance_info["configdrive"]["meta_data"]["hostname"],
        json!("n1")
    );
    assert_eq!(node.deploy_step, None);

    provision(&env, uuid, Verb::Undeploy).await;
    let node = wait_state(&env.store, uuid, "available").await;
    assert!(node.instance_info.is_empty());
    assert_eq!((node.instance_uuid, node.allocation_uuid), (None, None));
    assert!(
        env.store
            .get_allocation(&allocation.to_string())
            .await
            .expect("get")
            .is_none()
    );

    let history: Vec<_> = env
        .store
        .list_history(uuid)
        .await
        .expect("history")
        .into_iter()
        .filter(|h| h.event_type != "power")
        .map(|h| h.event)
        .collect();
    let expected = [
        "manage requested: enroll -> verifying",
        "verify done: verifying -> manageable",
        "provide requested: manageable -> cleaning",
        "clean done: cleaning -> available",
        "active requested: available -> deploying",
        "deploy done: deploying -> active",
        "deleted requested: active -> deleting",
        "undeploy done: deleting -> cleaning",
        "clean done: cleaning -> available",
    ];
    assert_eq!(history, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_clean_step_needs_manage_before_provide() {
    let env = env().await;
    let uuid = enroll(&env.store, "fake-hardware", "manageable").await;
    env.fake
        .fail_clean_step("erase_devices", "disk sdb did not answer");
    let mut req = ProvisionRequest::new(Verb::Clean);
    req.clean_steps = Some(vec![
        json!({"interface": "deploy", "step": "erase_devices"}),
    ]);
    env.conductor.provision(uuid, req).await.expect("clean");
    let node = wait_state(&env.store, uuid, "clean failed").await;
    assert_eq!(node.target_provision_state.as_deref(), Some("manageable"));
    let error = node.last_error.expect("last_error set");
    assert!(error.contains("disk sdb did not answer"), "{error}");

    let err = env
        .conductor
        .provision(uuid, ProvisionRequest::new(Verb::Provide))
        .await;
    match err {
        Err(ConductorError::InvalidTransition(msg)) => assert_eq!(
            msg,
            format!(
                "The requested action \"provide\" can not be performed on node \"{uuid}\" \
                 while it is in state \"clean failed\"."
            )
        ),
        other => panic!("expected 400, got {other:?}"),
    }
    provision(&env, uuid, Verb::Manage).await;
    let node = wait_state(&env.store, uuid, "manageable").await;
    assert_eq!(node.target_provision_state, None);
    assert!(
        node.last_error.is_some(),
        "last_error kept until the next action"
    );

    // An unknown step also fails cleaning, asynchronously, as Ironic does.
    let mut req = ProvisionRequest::new(Verb::Clean);
    req.clean_steps = Some(vec![json!({"interface": "deploy", "step": "bogus"})]);
    env.conductor.provision(uuid, req).await.expect("clean");
    let node = wait_state(&env.store, uuid, "clean failed").await;
    assert!(node.last_error.is_some_and(|e| e.contains("bogus")));

    // Clean without steps is refused up front.
    let err = env
        .conductor
        .provision(uuid, ProvisionRequest::new(Verb::Manage))
        .await;
    assert!(err.is_ok());
    wait_state(&env.store, uuid, "manageable").await;
    let err = env
        .conductor
        .provision(uuid, ProvisionRequest::new(Verb::Clean))
        .await;
    assert!(matches!(err, Err(ConductorError::BadRequest(_))), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_node_gives_conflict() {
    let env = env().await;
    let uuid = enroll(&env.store, "fake-hardware", "available").await;
    env.fake.pause(FakeOp::Deploy);
    provision(&env, uuid, Verb::Deploy).await;
    let node = get(&env.store, uuid).await;
    assert_eq!(node.provision_state, "deploying");
    assert_eq!(node.reservation.as_deref(), Some("test-conductor"));

    let err = env.conductor.set_power(uuid, PowerTarget::On, None).await;
    assert!(matches!(err, Err(ConductorError::Locked { .. })), "{err:?}");
    let err = env
        .conductor
        .set_boot_device(uuid, BootDevice::Pxe, false)
        .await;
    match err {
        Err(e @ ConductorError::Locked { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "Node {uuid} is locked by host test-conductor, please retry after the current \
                 operation is completed."
            )
        ),
        other => panic!("expected 409, got {other:?}"),
    }
    // A verb that is invalid in the state is a 400 even while locked (Ironic checks first).
    let err = env
        .conductor
        .provision(uuid, ProvisionRequest::new(Verb::Deploy))
        .await;
    assert!(
        matches!(err, Err(ConductorError::InvalidTransition(_))),
        "{err:?}"
    );

    env.fake.resume(FakeOp::Deploy);
    wait_state(&env.store, uuid, "active").await;

    // A lock held by another conductor also gives 409 to a valid verb.
    env.store
        .reserve_node(uuid, "other-host")
        .await
        .expect("reserve");
    let err = env
        .conductor
        .provision(uuid, ProvisionRequest::new(Verb::Undeploy))
        .await;
    assert!(
        matches!(err, Err(ConductorError::Locked { ref holder, .. }) if holder == "other-host")
    );
    assert_eq!(
        get(&env.store, uuid).await.provision_state,
        "active",
        "state unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_over_the_cap_queue() {
    let env = env_with(ConductorConfig {
        max_concurrent_deploys: 2,
        ..config()
    })
    .await;
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(enroll(&env.store, "fake-hardware", "available").await);
    }
    env.fake.pause(FakeOp::Deploy);
    for &uuid in &nodes {
        provision(&env, uuid, Verb::Deploy).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.fake.concurrency(FakeOp::Deploy).0 < 2 {
        assert!(Instant::now() < deadline, "deploys never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Give queued tasks a chance to (wrongly) start.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(env.fake.concurrency(FakeOp::Deploy), (2, 2));
    for &uuid in &nodes {
        let node = get(&env.store, uuid).await;
        assert_eq!(
            node.provision_state, "deploying",
            "queued nodes show their transient state"
        );
        assert_eq!(node.target_provision_state.as_deref(), Some("active"));
    }
    // Let them through one at a time; never more than two at once.
    env.fake.release(FakeOp::Deploy, 5);
    for &uuid in &nodes {
        wait_state(&env.store, uuid, "active").await;
    }
    assert_eq!(env.fake.concurrency(FakeOp::Deploy), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanings_over_the_cap_queue() {
    let env = env_with(ConductorConfig {
        max_concurrent_cleanings: 1,
        ..config()
    })
    .await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(enroll(&env.store, "fake-hardware", "manageable").await);
    }
    env.fake.pause(FakeOp::CleanStep);
    for &uuid in &nodes {
        provision(&env, uuid, Verb::Provide).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.fake.concurrency(FakeOp::CleanStep).0 < 1 {
        assert!(Instant::now() < deadline, "cleaning never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(env.fake.concurrency(FakeOp::CleanStep), (1, 1));
    for &uuid in &nodes {
        let node = get(&env.store, uuid).await;
        assert_eq!(node.provision_state, "cleaning");
        assert_eq!(node.target_provision_state.as_deref(), Some("available"));
    }
    env.fake.resume(FakeOp::CleanStep);
    for &uuid in &nodes {
        wait_state(&env.store, uuid, "available").await;
    }
    assert_eq!(env.fake.concurrency(FakeOp::CleanStep), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_allocations_never_share_a_node() {
    let env = env().await;
    let mut nodes = Vec::new();
    for _ in 0..8 {
        let uuid = enroll(&env.store, "fake-hardware", "available").await;
        let mut node = get(&env.store, uuid).await;
        node.power_state = Some("power off".to_owned());
        env.store.update_node(&node).await.expect("power state");
        nodes.push(uuid);
    }
    // A node without a power state is never picked.
    let unpowered = enroll(&env.store, "fake-hardware", "available").await;
    let mut allocations = Vec::new();
    for _ in 0..9 {
        allocations.push(new_allocation(&env.store, None, &[]).await);
    }
    for &a in &allocations {
        env.conductor.process_allocation(a);
    }
    let mut picked = Vec::new();
    let mut errors = Vec::new();
    for &a in &allocations {
        let done = wait_allocation(&env.store, a).await;
        match done.state.as_str() {
            "active" => picked.push(done.node_uuid.expect("node")),
            _ => errors.push(done.last_error.expect("error")),
        }
    }
    picked.sort();
    let before = picked.len();
    picked.dedup();
    assert_eq!(picked.len(), before, "a node was given twice");
    assert_eq!(picked.len(), 8);
    assert!(!picked.contains(&unpowered));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("Failed to process allocation "),
        "{}",
        errors[0]
    );

    let traits = new_allocation(&env.store, None, &["CUSTOM_GPU"]).await;
    let mut node = get(&env.store, unpowered).await;
    node.power_state = Some("power on".to_owned());
    env.store.update_node(&node).await.expect("power");
    env.conductor.process_allocation(traits);
    let done = wait_allocation(&env.store, traits).await;
    assert_eq!(
        done.last_error.as_deref(),
        Some(
            format!(
                "Failed to process allocation {traits}: no suitable nodes have the requested \
                 traits CUSTOM_GPU."
            )
            .as_str()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_target_completes_and_sync_follows_the_driver() {
    let env = env().await;
    let uuid = enroll(&env.store, "fake-hardware", "manageable").await;
    env.fake.pause(FakeOp::SetPower);
    env.conductor
        .set_power(uuid, PowerTarget::Reboot, None)
        .await
        .expect("reboot");
    let node = get(&env.store, uuid).await;
    assert_eq!(node.target_power_state.as_deref(), Some("rebooting"));
    assert_eq!(node.power_state, None);
    env.fake.resume(FakeOp::SetPower);
    wait_power(&env.store, uuid, "power on").await;

    // The BMC changed behind our back: the sync records it without touching last_error.
    let mut node = get(&env.store, uuid).await;
    node.last_error = Some("a real error".to_owned());
    env.store.update_node(&node).await.expect("error");
    let n = get(&env.store, uuid).await;
    let drivers = env.conductor.registry().resolve(&n).expect("drivers");
    drivers
        .power
        .set_power_state(&n, PowerTarget::Off, None)
        .await
        .expect("off");
    assert_eq!(env.fake.power_state(uuid), Some(PowerState::Off));
    env.conductor.sync_power_states().await.expect("sync");
    let node = get(&env.store, uuid).await;
    assert_eq!(node.power_state.as_deref(), Some("power off"));
    assert_eq!(node.last_error.as_deref(), Some("a real error"));
    assert_eq!(node.reservation, None);

    // A failing power change records the error and clears the target.
    env.fake.fail(FakeOp::SetPower, "bmc unreachable");
    env.conductor
        .set_power(uuid, PowerTarget::On, None)
        .await
        .expect("accepted");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let node = get(&env.store, uuid).await;
        if node.target_power_state.is_none() && node.reservation.is_none() {
            assert!(
                node.last_error
                    .is_some_and(|e| e.contains("bmc unreachable"))
            );
            assert_eq!(node.power_state.as_deref(), Some("power off"));
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_device_and_validate() {
    let env = env().await;
    let uuid = enroll(&env.store, "fake-hardware", "enroll").await;
    let err = env
        .conductor
        .set_boot_device(uuid, BootDevice::Disk, true)
        .await;
    match err {
        Err(e @ ConductorError::BadRequest(_)) => {
            assert_eq!(e.to_string(), "Invalid boot device disk specified.")
        }
        other => panic!("expected 400, got {other:?}"),
    }
    env.conductor
        .set_boot_device(uuid, BootDevice::Pxe, true)
        .await
        .expect("pxe");
    assert_eq!(
        env.conductor.get_boot_device(uuid).await.expect("get"),
        (Some(BootDevice::Pxe), false)
    );
    assert_eq!(
        env.conductor
            .supported_boot_devices(uuid)
            .await
            .expect("supported"),
        vec![BootDevice::Pxe]
    );
    let node = get(&env.store, uuid).await;
    assert_eq!(
        (node.boot_device.as_deref(), node.reservation),
        (Some("pxe"), None)
    );
    let v = env.conductor.validate(uuid).await.expect("validate");
    assert_eq!(v.len(), 12);
    assert!(v.values().all(|r| r.result));
    let missing = Uuid::new_v4();
    assert!(matches!(
        env.conductor.validate(missing).await,
        Err(ConductorError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_work() {
    let env = env().await;
    let uuid = enroll(&env.store, "fake-hardware", "enroll").await;
    env.conductor.shutdown().await;
    let err = env
        .conductor
        .provision(uuid, ProvisionRequest::new(Verb::Manage))
        .await;
    assert!(
        matches!(err, Err(ConductorError::ShuttingDown(_))),
        "{err:?}"
    );
}

/// DESIGN.md section 7: 50 nodes through manage, provide, deploy, undeploy with fake
/// hardware. The bound here is loose because tests run unoptimised next to other builds;
/// the figure is printed (run with `--release --nocapture` for the real one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_lifecycle_is_fast() {
    let env = env().await;
    let mut nodes = Vec::new();
    for _ in 0..50 {
        nodes.push(enroll(&env.store, "fake-hardware", "enroll").await);
    }
    let started = Instant::now();
    for (verb, end) in [
        (Verb::Manage, "manageable"),
        (Verb::Provide, "available"),
        (Verb::Deploy, "active"),
        (Verb::Undeploy, "available"),
    ] {
        for &uuid in &nodes {
            provision(&env, uuid, verb).await;
        }
        for &uuid in &nodes {
            wait_state(&env.store, uuid, end).await;
        }
    }
    let elapsed = started.elapsed();
    eprintln!("50 nodes manage+provide+deploy+undeploy: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescue_rebuild_and_protection_with_fake() {
    let env = env().await;
    let uuid = enroll(&env.store, "fake-hardware", "active").await;
    let err = env
        .conductor
        .provision(uuid, ProvisionRequest::new(Verb::Rescue))
        .await;
    assert!(matches!(err, Err(ConductorError::BadRequest(ref m)) if m.contains("rescue_password")));
    let mut req = ProvisionRequest::new(Verb::Rescue);
    req.rescue_password = Some("hunter2".to_owned());
    env.conductor.provision(uuid, req).await.expect("rescue");
    let node = wait_state(&env.store, uuid, "rescue").await;
    assert_eq!(node.instance_info["rescue_password"], json!("hunter2"));
    provision(&env, uuid, Verb::Unrescue).await;
    let node = wait_state(&env.store, uuid, "active").await;
    assert!(!node.instance_info.contains_key("rescue_password"));

    provision(&env, uuid, Verb::Rebuild).await;
    wait_state(&env.store, uuid, "active").await;
    let deploys = env
        .fake
        .calls_for(uuid)
        .into_iter()
        .filter(|c| c.op == FakeOp::Deploy)
        .count();
    assert_eq!(deploys, 1);

    let mut node = get(&env.store, uuid).await;
    node.protected = true;
    env.store.update_node(&node).await.expect("protect");
    let err = env
        .conductor
        .provision(uuid, ProvisionRequest::new(Verb::Undeploy))
        .await;
    assert!(matches!(err, Err(ConductorError::Forbidden(_))), "{err:?}");

    // A failing deploy ends in deploy failed, from which undeploy is allowed.
    let other = enroll(&env.store, "fake-hardware", "available").await;
    env.fake.fail(FakeOp::Deploy, "image checksum mismatch");
    provision(&env, other, Verb::Deploy).await;
    let node = wait_state(&env.store, other, "deploy failed").await;
    assert_eq!(node.target_provision_state.as_deref(), Some("active"));
    assert!(
        node.last_error
            .is_some_and(|e| e.contains("image checksum mismatch"))
    );
    env.fake.clear_faults();
    provision(&env, other, Verb::Undeploy).await;
    let node = wait_state(&env.store, other, "available").await;
    assert_eq!(node.last_error, None, "a new action clears last_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_power_sync_runs_on_its_interval() {
    let env = env_with(ConductorConfig {
        power_sync_interval: Duration::from_millis(20),
        ..config()
    })
    .await;
    let uuid = enroll(&env.store, "fake-hardware", "available").await;
    let node = get(&env.store, uuid).await;
    let drivers = env.conductor.registry().resolve(&node).expect("drivers");
    drivers
        .power
        .set_power_state(&node, PowerTarget::On, None)
        .await
        .expect("on");
    wait_power(&env.store, uuid, "power on").await;
    env.conductor.shutdown().await;
}
