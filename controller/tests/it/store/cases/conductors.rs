//! The `conductors` table, and conductors registering on one database.

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use controller::conductor::{Conductor, ConductorConfig};
use controller::drivers::DriverRegistry;
use controller::model::ConductorRecord;
use controller::store::Store;

use crate::store::Db;
use crate::store::fixtures::t0;

fn record(name: &str) -> ConductorRecord {
    ConductorRecord {
        hostname: name.to_owned(),
        conductor_group: "rack-a".to_owned(),
        drivers: vec!["fake-hardware".to_owned(), "ipmi".to_owned()],
        listen: vec!["api 127.0.0.1:6385".to_owned()],
        version: "0.1.0".to_owned(),
        online: true,
        started_at: t0(),
        created_at: t0(),
        updated_at: t0(),
    }
}

pub async fn conductor_rows(db: &mut Db) {
    let store = &db.store;
    store.register_conductor(&record("c2")).await.unwrap();
    store.register_conductor(&record("c1")).await.unwrap();
    let later = t0() + ChronoDuration::seconds(30);
    assert!(store.touch_conductor("c1", true, later).await.unwrap());
    assert!(!store.touch_conductor("nobody", true, later).await.unwrap());
    let rows = store.list_conductors().await.unwrap();
    assert_eq!(
        rows.iter().map(|c| c.hostname.as_str()).collect::<Vec<_>>(),
        ["c1", "c2"]
    );
    assert_eq!(rows[0].updated_at, later);
    assert_eq!(rows[0].drivers, ["fake-hardware", "ipmi"]);
    assert_eq!(rows[0].conductor_group, "rack-a");
    // Alive: online, heartbeat within the timeout.
    let timeout = Duration::from_secs(10);
    assert!(rows[0].alive(later + ChronoDuration::seconds(9), timeout));
    assert!(!rows[0].alive(later + ChronoDuration::seconds(11), timeout));
    assert!(!rows[1].alive(later, timeout), "c2's heartbeat is 30 s old");
    // Registering again (a restart) keeps created_at; a clean stop is offline at once.
    let mut again = record("c1");
    again.started_at = later;
    again.created_at = later;
    again.updated_at = later;
    store.register_conductor(&again).await.unwrap();
    assert!(store.touch_conductor("c1", false, later).await.unwrap());
    // Another process on the same database sees the same rows.
    let other = db.second().await;
    let rows = other.list_conductors().await.unwrap();
    assert_eq!(rows[0].created_at, t0());
    assert_eq!(rows[0].started_at, later);
    assert!(!rows[0].online);
    assert!(!rows[0].alive(later, timeout));
}

fn config(name: &str) -> ConductorConfig {
    ConductorConfig {
        name: name.to_owned(),
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_millis(1000),
        power_sync_interval: Duration::ZERO,
        ..ConductorConfig::default()
    }
}

/// Two conductors on one database: both registered and heartbeating; a clean stop marks
/// one offline. On PostgreSQL a second conductor of the same name is refused while the
/// first heartbeats.
pub async fn conductors_register_and_heartbeat(db: &mut Db) {
    let store: Arc<dyn Store> = Arc::new(db.second().await);
    let a = Conductor::new(store.clone(), DriverRegistry::builtin(), config("a"));
    a.start().await.expect("start a");
    let other: Arc<dyn Store> = Arc::new(db.second().await);
    let b = Conductor::new(other.clone(), DriverRegistry::builtin(), config("b"));
    b.start().await.expect("start b");
    let first = store.list_conductors().await.unwrap();
    assert_eq!(first.len(), 2);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let now = store.list_conductors().await.unwrap();
    for (before, after) in first.iter().zip(&now) {
        assert!(
            after.updated_at > before.updated_at,
            "{} heartbeats",
            after.hostname
        );
        assert!(after.alive(chrono::Utc::now(), Duration::from_secs(1)));
        assert_eq!(
            after.drivers,
            ["fake-hardware", "ipmi", "manual", "redfish"]
        );
    }
    // Ownership: each node has exactly one owner, and both own a share.
    let nodes: Vec<controller::model::Node> = (0..200)
        .map(|i| {
            controller::model::Node::new(
                uuid::Uuid::from_u128(i * 7_919 + 1),
                "fake-hardware",
                chrono::Utc::now(),
            )
        })
        .collect();
    let owned_by_a = nodes.iter().filter(|n| a.owns(n)).count();
    let owned_by_b = nodes.iter().filter(|n| b.owns(n)).count();
    assert_eq!(owned_by_a + owned_by_b, nodes.len(), "one owner each");
    assert!(
        owned_by_a > 60 && owned_by_b > 60,
        "{owned_by_a} / {owned_by_b}"
    );
    for n in &nodes {
        assert_eq!(a.owner_of(n), b.owner_of(n), "both agree");
    }
    if store.is_shared() {
        let third: Arc<dyn Store> = Arc::new(db.second().await);
        let namesake = Conductor::new(third, DriverRegistry::builtin(), config("a"));
        let err = namesake
            .start()
            .await
            .expect_err("a live namesake is refused");
        assert!(
            format!("{err:#}").contains("give each replica its own conductor_name"),
            "{err:#}"
        );
    }
    b.shutdown().await;
    let rows = store.list_conductors().await.unwrap();
    let b_row = rows.iter().find(|c| c.hostname == "b").expect("b");
    assert!(!b_row.online, "a clean stop is offline at once");
    // At its next heartbeat, a owns every node.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(nodes.iter().all(|n| a.owns(n)), "a took b's nodes over");
    a.shutdown().await;
    if store.is_shared() {
        // Its previous run stopped: a new "a" starts without waiting.
        let again = Conductor::new(other, DriverRegistry::builtin(), config("a"));
        again.start().await.expect("restart a");
        again.shutdown().await;
    }
}
