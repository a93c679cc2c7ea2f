//! Two conductors on one database: a starting replica leaves a live one's waits alone; when
//! a replica's heartbeat stops, the survivor adopts its waits (which then finish) and fails
//! the steps it was executing with a reason that names it, so no node is left in a wait
//! nobody serves or in a transient state.

use super::*;

fn replica(name: &str) -> ConductorConfig {
    ConductorConfig {
        name: name.to_owned(),
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_millis(800),
        ..config()
    }
}

/// Replica `a`, started, with a node it put in `inspect wait`.
async fn inspecting_under_a(store: &Arc<dyn Store>) -> (Arc<Conductor>, Uuid, crate::model::Node) {
    let a = Conductor::new(store.clone(), DriverRegistry::builtin(), replica("a"));
    a.start().await.expect("start a");
    let node = enroll(store, "manual", "manageable").await;
    a.provision(node, ProvisionRequest::new(Verb::Inspect))
        .await
        .expect("inspect");
    let waiting = wait_state(store, node, "inspect wait").await;
    (a, node, waiting)
}

/// Waits (5 s at most) until `by` adopted the node, unlocked and still in `inspect wait`.
async fn wait_adopted(store: &Arc<dyn Store>, node: Uuid, by: &str) {
    let started = Instant::now();
    loop {
        let n = get(store, node).await;
        let affinity = n
            .driver_internal_info
            .get(super::super::takeover::CONDUCTOR_AFFINITY_KEY)
            .cloned();
        if affinity == Some(serde_json::json!(by)) && n.reservation.is_none() {
            assert_eq!(n.provision_state, "inspect wait");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never adopted: {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_leaves_a_live_ones_wait_and_adopts_a_dead_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir).await;
    let (a, node, waiting) = inspecting_under_a(&store).await;
    assert_eq!(
        waiting.driver_internal_info[super::super::takeover::CONDUCTOR_AFFINITY_KEY],
        "a"
    );

    // A second replica starts while `a` lives: the wait is `a`'s, left alone.
    let b = Conductor::new(store.clone(), DriverRegistry::builtin(), replica("b"));
    b.start().await.expect("start b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&store, node).await.provision_state, "inspect wait");

    // `a` is killed: its heartbeat stops; within the timeout and a heartbeat, `b` adopts
    // the wait, and the agent's result (reaching `b`) finishes the inspection.
    a.stop_periodic();
    wait_adopted(&store, node, "b").await;
    let history = store.list_history(node).await.expect("history");
    assert!(
        history
            .iter()
            .any(|h| h.event_type == "takeover" && h.event.contains("Conductor a went offline")),
        "{history:?}"
    );
    b.agent_finished(node, Ok(())).await.expect("result");
    let done = wait_state(&store, node, "manageable").await;
    assert_eq!(done.last_error, None);
    assert!(
        !done
            .driver_internal_info
            .contains_key(super::super::takeover::CONDUCTOR_AFFINITY_KEY),
        "a node at rest has no affinity"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_locked_node_is_released_and_failed_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir).await;
    // `gone` registered once, long ago, and died holding a node's lock mid-deploy.
    let old = crate::model::ConductorRecord {
        hostname: "gone".into(),
        conductor_group: String::new(),
        drivers: vec![],
        listen: vec![],
        version: "0".into(),
        online: true,
        started_at: Utc::now() - chrono::Duration::hours(1),
        created_at: Utc::now() - chrono::Duration::hours(1),
        updated_at: Utc::now() - chrono::Duration::hours(1),
    };
    store.register_conductor(&old).await.expect("register");
    let node = enroll(&store, "manual", "deploying").await;
    let mut n = get(&store, node).await;
    n.target_provision_state = Some("active".into());
    n.provision_updated_at = Some(Utc::now() - chrono::Duration::minutes(5));
    n.driver_internal_info.insert(
        super::super::takeover::CONDUCTOR_AFFINITY_KEY.into(),
        serde_json::json!("gone"),
    );
    store.update_node(&n).await.expect("node");
    store.reserve_node(node, "gone").await.expect("lock");

    let b = Conductor::new(store.clone(), DriverRegistry::builtin(), replica("b"));
    b.start().await.expect("start b");
    let failed = wait_state(&store, node, "deploy failed").await;
    assert!(
        failed
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("The conductor gone went offline")),
        "{failed:?}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_missed_by_the_takeover_is_adopted_by_a_later_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir).await;
    let (a, node, _) = inspecting_under_a(&store).await;
    let b = Conductor::new(store.clone(), DriverRegistry::builtin(), replica("b"));
    b.start().await.expect("start b");
    // Someone else (an operator's API call, say) holds the node when `a` dies: the
    // takeover pass must leave it.
    store.reserve_node(node, "busy").await.expect("lock");
    a.stop_periodic();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let affinity = |n: &crate::model::Node| {
        n.driver_internal_info
            .get(super::super::takeover::CONDUCTOR_AFFINITY_KEY)
            .cloned()
    };
    assert_eq!(
        affinity(&get(&store, node).await),
        Some(serde_json::json!("a")),
        "not adopted while locked"
    );
    store.release_node(node, "busy").await.expect("unlock");
    // A sweep (every 10 heartbeats of 100 ms) adopts it.
    wait_adopted(&store, node, "b").await;
    b.agent_finished(node, Ok(())).await.expect("result");
    wait_state(&store, node, "manageable").await;
    b.shutdown().await;
}
