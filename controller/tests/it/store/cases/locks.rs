//! Concurrency cases: stale updates, reservations, claims and releasing a dead holder's locks.

use std::collections::HashSet;
use std::sync::Arc;

use controller::store::{NodeQuery, Store, StoreError};
use uuid::Uuid;

use crate::store::Db;
use crate::store::fixtures::node;

pub async fn stale_update(db: &mut Db) {
    let store = &db.store;
    let created = node(1);
    store.create_node(&created).await.unwrap();
    let mut first = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    let mut second = first.clone();
    first.provision_state = "manageable".to_owned();
    assert_eq!(store.update_node(&first).await.unwrap(), 1);
    second.provision_state = "available".to_owned();
    let err = store.update_node(&second).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Stale { uuid } if uuid == created.uuid),
        "{err:?}"
    );
    let stored = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    assert_eq!(stored.provision_state, "manageable");
    first.revision = 1;
    first.provision_state = "cleaning".to_owned();
    assert_eq!(store.update_node(&first).await.unwrap(), 2);

    // Racing updates from one revision: exactly one wins.
    let base = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    let store = Arc::new(db.store.clone());
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let mut copy = base.clone();
            tokio::spawn(async move {
                copy.last_error = Some(format!("writer {i}"));
                store.update_node(&copy).await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(revision) => {
                assert_eq!(revision, 3);
                wins += 1;
            }
            Err(StoreError::Stale { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1);
}

pub async fn concurrent_reserve(db: &mut Db) {
    let created = node(1);
    db.store.create_node(&created).await.unwrap();
    let second = db.second().await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            // Half the contenders go through another store, as another process would.
            let store = if i % 2 == 0 {
                db.store.clone()
            } else {
                second.clone()
            };
            tokio::spawn(
                async move { (i, store.reserve_node(created.uuid, &format!("c{i}")).await) },
            )
        })
        .collect();
    let mut winner = None;
    let mut locked = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (i, Ok(node)) => {
                assert!(winner.is_none(), "two winners");
                assert_eq!(node.reservation, Some(format!("c{i}")));
                winner = Some(format!("c{i}"));
            }
            (_, Err(StoreError::Locked { uuid, holder })) => {
                assert_eq!(uuid, created.uuid);
                locked.push(holder);
            }
            (_, Err(other)) => panic!("unexpected {other:?}"),
        }
    }
    let winner = winner.expect("one winner");
    assert_eq!(locked.len(), 31);
    assert!(locked.iter().all(|holder| *holder == winner));
    let stored = db
        .store
        .get_node_by_uuid(created.uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.reservation.as_deref(), Some(winner.as_str()));
    second.close().await;
}

pub async fn reserve_release(db: &mut Db) {
    let store = &db.store;
    let created = node(1);
    store.create_node(&created).await.unwrap();
    let reserved = store.reserve_node(created.uuid, "c1").await.unwrap();
    assert_eq!(reserved.reservation.as_deref(), Some("c1"));
    assert_eq!(reserved.revision, 0, "reserving does not bump the revision");
    let err = store.reserve_node(created.uuid, "c1").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Locked { holder, .. } if holder == "c1"),
        "{err:?}"
    );

    // update_node leaves the reservation alone, whatever the caller's copy says.
    let mut copy = reserved.clone();
    copy.reservation = None;
    copy.power_state = Some("power on".to_owned());
    store.update_node(&copy).await.unwrap();
    let stored = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    assert_eq!(stored.reservation.as_deref(), Some("c1"));
    assert_eq!(stored.power_state.as_deref(), Some("power on"));

    store.release_node(created.uuid, "c2").await.unwrap();
    assert!(
        store
            .get_node_by_uuid(created.uuid)
            .await
            .unwrap()
            .unwrap()
            .reservation
            .is_some()
    );
    store.release_node(created.uuid, "c1").await.unwrap();
    assert!(
        store
            .get_node_by_uuid(created.uuid)
            .await
            .unwrap()
            .unwrap()
            .reservation
            .is_none()
    );
    store.release_node(created.uuid, "c1").await.unwrap();
    assert_eq!(
        store
            .reserve_node(created.uuid, "c2")
            .await
            .unwrap()
            .reservation
            .as_deref(),
        Some("c2")
    );

    let err = store.reserve_node(Uuid::new_v4(), "c1").await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "node", .. }),
        "{err:?}"
    );
}

pub async fn concurrent_claim(db: &mut Db) {
    let created = node(1);
    db.store.create_node(&created).await.unwrap();
    let second = db.second().await;
    let allocations: Vec<Uuid> = (0..24).map(|_| Uuid::new_v4()).collect();
    let tasks: Vec<_> = allocations
        .iter()
        .enumerate()
        .map(|(i, allocation)| {
            let store = if i % 2 == 0 {
                db.store.clone()
            } else {
                second.clone()
            };
            let allocation = *allocation;
            tokio::spawn(
                async move { (allocation, store.claim_node(created.uuid, allocation).await) },
            )
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (allocation, result) = task.await.unwrap();
        if result.unwrap() {
            winners.push(allocation);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins");
    let stored = db
        .store
        .get_node_by_uuid(created.uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.allocation_uuid, Some(winners[0]));
    assert_eq!(stored.instance_uuid, Some(winners[0]));
    assert_eq!(stored.revision, 1, "a claim bumps the revision");
    // A copy from before the claim can no longer overwrite it.
    let err = db.store.update_node(&created).await.unwrap_err();
    assert!(matches!(err, StoreError::Stale { .. }), "{err:?}");
    // Clearing the association through update_node frees the node for a new claim.
    let mut cleared = stored.clone();
    cleared.allocation_uuid = None;
    cleared.instance_uuid = None;
    db.store.update_node(&cleared).await.unwrap();
    assert!(
        db.store
            .claim_node(created.uuid, allocations[0])
            .await
            .unwrap()
    );
    let err = db
        .store
        .claim_node(Uuid::new_v4(), Uuid::new_v4())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "node", .. }),
        "{err:?}"
    );
    second.close().await;
}

pub async fn release_all(db: &mut Db) {
    let store = &db.store;
    let mut mine = HashSet::new();
    for i in 0..6 {
        let n = node(i);
        store.create_node(&n).await.unwrap();
        match i % 3 {
            0 | 1 => {
                store.reserve_node(n.uuid, "dead-conductor").await.unwrap();
                mine.insert(n.uuid);
            }
            _ => {
                store.reserve_node(n.uuid, "live-conductor").await.unwrap();
            }
        }
    }
    let released: HashSet<Uuid> = store
        .release_all("dead-conductor")
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(released, mine);
    for n in store.list_nodes(&NodeQuery::default()).await.unwrap() {
        if mine.contains(&n.uuid) {
            assert_eq!(n.reservation, None);
        } else {
            assert_eq!(n.reservation.as_deref(), Some("live-conductor"));
        }
    }
    assert!(
        store
            .release_all("dead-conductor")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn commit_transition(db: &mut Db) {
    use crate::store::fixtures::{event, t0};
    let store = &db.store;
    let created = node(1);
    store.create_node(&created).await.unwrap();
    let mut locked = store.reserve_node(created.uuid, "c1").await.unwrap();
    let stale = locked.clone();

    // Node, history row and release in one go.
    locked.provision_state = "manageable".to_owned();
    let first = event(created.uuid, t0(), "manage done");
    let revision = store
        .commit_transition(&locked, Some(&first), Some("c1"))
        .await
        .unwrap();
    assert_eq!(revision, 1);
    let stored = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.provision_state.as_str(),
            stored.revision,
            stored.reservation
        ),
        ("manageable", 1, None)
    );
    assert_eq!(store.list_history(created.uuid).await.unwrap(), vec![first]);

    // A stale copy changes nothing: no node write, no history, the lock stays.
    store.reserve_node(created.uuid, "c1").await.unwrap();
    let lost = event(created.uuid, t0(), "lost");
    let err = store
        .commit_transition(&stale, Some(&lost), Some("c1"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale { .. }), "{err:?}");
    let stored = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    assert_eq!(stored.reservation.as_deref(), Some("c1"));
    assert_eq!(stored.provision_state, "manageable");
    assert_eq!(store.list_history(created.uuid).await.unwrap().len(), 1);

    // Another holder's lock is not released; without history or release it is an update.
    let mut copy = stored.clone();
    copy.provision_state = "cleaning".to_owned();
    copy.revision = store
        .commit_transition(&copy, None, Some("c2"))
        .await
        .unwrap();
    copy.provision_state = "available".to_owned();
    assert_eq!(store.commit_transition(&copy, None, None).await.unwrap(), 3);
    let stored = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.provision_state.as_str(),
            stored.reservation.as_deref()
        ),
        ("available", Some("c1"))
    );
    copy.revision = 3;
    store
        .commit_transition(&copy, Some(&event(created.uuid, t0(), "x")), Some("c1"))
        .await
        .unwrap();
    let stored = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    assert_eq!(stored.reservation, None);
    assert_eq!(store.list_history(created.uuid).await.unwrap().len(), 2);

    // A deleted node is not found.
    store.delete_node(created.uuid).await.unwrap();
    let err = store
        .commit_transition(&copy, Some(&event(created.uuid, t0(), "y")), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

/// A task's first transition taking the lock in its own transaction: it takes it only when
/// nobody holds it and the copy is current; a task that ends there leaves it empty.
pub async fn reserve_and_commit(db: &mut Db) {
    use crate::store::fixtures::{event, t0};
    let store = &db.store;
    let created = node(1);
    store.create_node(&created).await.unwrap();
    let mut copy = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    let stale = copy.clone();

    copy.provision_state = "verifying".to_owned();
    let first = event(created.uuid, t0(), "manage");
    copy.revision = store
        .reserve_and_commit(&copy, Some(&first), "c1", false)
        .await
        .unwrap();
    let stored = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.provision_state.as_str(),
            stored.revision,
            stored.reservation.as_deref()
        ),
        ("verifying", 1, Some("c1"))
    );
    assert_eq!(store.list_history(created.uuid).await.unwrap(), vec![first]);

    // Held (by anyone, itself too): Locked, nothing written.
    for holder in ["c1", "c2"] {
        let err = store
            .reserve_and_commit(&copy, Some(&event(created.uuid, t0(), "no")), holder, false)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Locked { holder, .. } if holder == "c1"),
            "{err:?}"
        );
    }
    assert_eq!(store.list_history(created.uuid).await.unwrap().len(), 1);
    store.release_node(created.uuid, "c1").await.unwrap();

    // A copy read before another write: Stale, the lock stays free.
    let err = store
        .reserve_and_commit(&stale, None, "c2", false)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale { .. }), "{err:?}");
    let stored = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    assert_eq!((stored.revision, stored.reservation), (1, None));

    // Taken and given back in one transition.
    copy.provision_state = "manageable".to_owned();
    store
        .reserve_and_commit(&copy, None, "c2", true)
        .await
        .unwrap();
    let stored = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.provision_state.as_str(),
            stored.revision,
            stored.reservation
        ),
        ("manageable", 2, None)
    );
}
