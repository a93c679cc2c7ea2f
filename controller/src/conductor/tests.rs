//! Conductor tests against a real SQLite store (a file in a temporary directory).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tempfile::TempDir;
use uuid::Uuid;

use super::*;
use crate::drivers::fake::{FakeHardware, FakeOp};
use crate::drivers::{BootDevice, PowerState, PowerTarget};
use crate::machine::Verb;
use crate::model::{Allocation, Node};
use crate::store::Store;
use crate::store::sql::SqlStore;

struct Env {
    conductor: Arc<Conductor>,
    store: Arc<dyn Store>,
    fake: Arc<FakeHardware>,
    _dir: TempDir,
}

fn config() -> ConductorConfig {
    ConductorConfig {
        name: "test-conductor".to_owned(),
        power_sync_interval: None,
        shutdown_timeout: Duration::from_secs(5),
        ..ConductorConfig::default()
    }
}

async fn open_store(dir: &TempDir) -> Arc<dyn Store> {
    let url = format!("sqlite://{}/ingot.db", dir.path().display());
    Arc::new(SqlStore::connect(&url).await.expect("open sqlite store"))
}

async fn env_with(config: ConductorConfig) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir).await;
    let drivers = DriverRegistry::builtin();
    let fake = drivers.fake_hardware().expect("fake hardware").clone();
    let conductor = Conductor::new(store.clone(), drivers, config);
    conductor.start().await.expect("start");
    Env {
        conductor,
        store,
        fake,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with(config()).await
}

async fn enroll(store: &Arc<dyn Store>, driver: &str, state: &str) -> Uuid {
    let mut node = Node::new(Uuid::new_v4(), driver, Utc::now());
    node.provision_state = state.to_owned();
    node.resource_class = Some("baremetal".to_owned());
    store.create_node(&node).await.expect("create node");
    node.uuid
}

async fn get(store: &Arc<dyn Store>, uuid: Uuid) -> Node {
    store
        .get_node_by_uuid(uuid)
        .await
        .expect("get node")
        .expect("node exists")
}

/// Waits until the node rests unlocked in `state`.
async fn wait_state(store: &Arc<dyn Store>, uuid: Uuid, state: &str) -> Node {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let node = get(store, uuid).await;
        if node.provision_state == state && node.reservation.is_none() {
            return node;
        }
        assert!(
            Instant::now() < deadline,
            "node never reached {state}: {node:#?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn provision(env: &Env, uuid: Uuid, verb: Verb) {
    env.conductor
        .provision(uuid, ProvisionRequest::new(verb))
        .await
        .expect("verb accepted");
}

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

async fn wait_power(store: &Arc<dyn Store>, uuid: Uuid, state: &str) -> Node {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let node = get(store, uuid).await;
        if node.power_state.as_deref() == Some(state) && node.target_power_state.is_none() {
            return node;
        }
        assert!(
            Instant::now() < deadline,
            "power never reached {state}: {node:#?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn new_allocation(store: &Arc<dyn Store>, name: Option<&str>, traits: &[&str]) -> Uuid {
    let allocation = Allocation {
        uuid: Uuid::new_v4(),
        name: name.map(str::to_owned),
        resource_class: Some("baremetal".to_owned()),
        traits: traits.iter().map(|t| (*t).to_owned()).collect(),
        candidate_nodes: vec![],
        extra: Default::default(),
        owner: None,
        state: "allocating".to_owned(),
        node_uuid: None,
        last_error: None,
        created_at: Utc::now(),
        updated_at: None,
    };
    store
        .create_allocation(&allocation)
        .await
        .expect("create allocation");
    allocation.uuid
}

async fn wait_allocation(store: &Arc<dyn Store>, uuid: Uuid) -> Allocation {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = store
            .get_allocation(&uuid.to_string())
            .await
            .expect("get")
            .expect("exists");
        if a.state != "allocating" {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "allocation never processed: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
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
async fn restart_fails_nodes_left_in_transient_states() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir).await;
    let deploying = enroll(&store, "fake-hardware", "deploying").await;
    let verifying = enroll(&store, "fake-hardware", "verifying").await;
    let deleting = enroll(&store, "fake-hardware", "deleting").await;
    let clean_wait = enroll(&store, "manual", "clean wait").await;
    let stable = enroll(&store, "fake-hardware", "active").await;
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
    let node = wait_state(&store, clean_wait, "clean failed").await;
    assert_eq!(node.target_provision_state.as_deref(), Some("available"));
    let node = get(&store, stable).await;
    assert_eq!(
        (node.provision_state.as_str(), node.last_error),
        ("active", None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_hardware_waits_for_the_agent_and_times_out() {
    let env = env_with(ConductorConfig {
        deploy_callback_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
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
    env.store.update_node(&node).await.expect("image");

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
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&env.store, uuid).await.provision_state, "active");
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
