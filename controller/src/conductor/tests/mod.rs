//! Conductor tests against a real SQLite store (a file in a temporary directory).

mod agent;
mod faults;
mod lifecycle;
mod power_sync;
mod takeover;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tempfile::TempDir;
use uuid::Uuid;

use super::*;
use crate::drivers::fake::{FakeHardware, FakeOp};
use crate::drivers::{BootDevice, PowerState, PowerTarget};
use crate::machine::Verb;
use crate::model::{Allocation, Node};
use crate::store::Store;
use crate::store::sql::SqlStore;

pub(super) struct Env {
    pub(super) conductor: Arc<Conductor>,
    pub(super) store: Arc<dyn Store>,
    pub(super) fake: Arc<FakeHardware>,
    _dir: TempDir,
}

pub(super) fn config() -> ConductorConfig {
    ConductorConfig {
        name: "test-conductor".to_owned(),
        power_sync_interval: Duration::ZERO,
        shutdown_timeout: Duration::from_secs(5),
        ..ConductorConfig::default()
    }
}

pub(super) async fn open_store(dir: &TempDir) -> Arc<dyn Store> {
    let url = format!("sqlite://{}/ingot.db", dir.path().display());
    Arc::new(SqlStore::connect(&url).await.expect("open sqlite store"))
}

pub(super) async fn env_with(config: ConductorConfig) -> Env {
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

/// A config whose wait timers run on a [`clock::ManualClock`] with `timeout` as the
/// callback timeout: time passes only when the test advances the clock.
pub(super) fn manual_clock(timeout: Duration) -> (ConductorConfig, Arc<clock::ManualClock>) {
    let clock = Arc::new(clock::ManualClock::default());
    let config = ConductorConfig {
        callback_timeout: timeout,
        clock: clock.clone(),
        ..config()
    };
    (config, clock)
}

/// Waits (in real time, briefly) until `n` wait timers sleep on `clock`, so that time
/// advanced next is time they see.
pub(super) async fn wait_sleepers(clock: &clock::ManualClock, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while clock.sleepers() < n {
        assert!(
            Instant::now() < deadline,
            "{} timers sleep, not {n}",
            clock.sleepers()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Asserts that the node stays in `state` while its timer tasks run (100 ms of real time).
pub(super) async fn assert_stays(store: &Arc<dyn Store>, uuid: Uuid, state: &str) {
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(get(store, uuid).await.provision_state, state);
    }
}

pub(super) async fn env() -> Env {
    env_with(config()).await
}

pub(super) async fn enroll(store: &Arc<dyn Store>, driver: &str, state: &str) -> Uuid {
    let mut node = Node::new(Uuid::new_v4(), driver, Utc::now());
    node.provision_state = state.to_owned();
    node.resource_class = Some("baremetal".to_owned());
    store.create_node(&node).await.expect("create node");
    node.uuid
}

pub(super) async fn get(store: &Arc<dyn Store>, uuid: Uuid) -> Node {
    store
        .get_node_by_uuid(uuid)
        .await
        .expect("get node")
        .expect("node exists")
}

/// Waits until the node rests unlocked in `state`.
pub(super) async fn wait_state(store: &Arc<dyn Store>, uuid: Uuid, state: &str) -> Node {
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

pub(super) async fn provision(env: &Env, uuid: Uuid, verb: Verb) {
    env.conductor
        .provision(uuid, ProvisionRequest::new(verb))
        .await
        .expect("verb accepted");
}

pub(super) async fn wait_power(store: &Arc<dyn Store>, uuid: Uuid, state: &str) -> Node {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let node = get(store, uuid).await;
        // The task saves the state before it releases the lock; wait for both.
        if node.power_state.as_deref() == Some(state)
            && node.target_power_state.is_none()
            && node.reservation.is_none()
        {
            return node;
        }
        assert!(
            Instant::now() < deadline,
            "power never reached {state}: {node:#?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(super) async fn new_allocation(
    store: &Arc<dyn Store>,
    name: Option<&str>,
    traits: &[&str],
) -> Uuid {
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
        min_properties: Default::default(),
        server: None,
    };
    store
        .create_allocation(&allocation)
        .await
        .expect("create allocation");
    allocation.uuid
}

pub(super) async fn wait_allocation(store: &Arc<dyn Store>, uuid: Uuid) -> Allocation {
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
