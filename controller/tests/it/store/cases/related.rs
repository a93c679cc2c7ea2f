//! Ports, allocations, history and inventory cases, and the node delete cascade.

use chrono::Duration;
use controller::store::{AllocationQuery, NodeQuery, PortQuery, SortDir, Store, StoreError};
use serde_json::json;
use uuid::Uuid;

use crate::store::Db;
use crate::store::fixtures::{allocation, event, node, port, t0};

pub async fn port_crud(db: &mut Db) {
    let store = &db.store;
    let owner = node(1);
    store.create_node(&owner).await.unwrap();
    let mut first = port(owner.uuid, 1);
    first.address = "52:54:00:AB:CD:01".to_owned();
    store.create_port(&first).await.unwrap();
    let got = store.get_port(first.uuid).await.unwrap().unwrap();
    assert_eq!(
        got.address, "52:54:00:ab:cd:01",
        "MACs are stored lower-case"
    );
    let mut expected = first.clone();
    expected.address = got.address.clone();
    assert_eq!(got, expected);

    let by_address = PortQuery {
        address: Some("52:54:00:AB:CD:01".to_owned()),
        ..Default::default()
    };
    assert_eq!(
        store.list_ports(&by_address).await.unwrap(),
        vec![expected.clone()]
    );

    // Duplicate MAC, whatever its case, and duplicate UUID.
    let mut clash = port(owner.uuid, 2);
    clash.address = "52:54:00:ab:cd:01".to_owned();
    let err = store.create_port(&clash).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { kind: "port", field: "address", value } if value == "52:54:00:ab:cd:01"),
        "{err:?}"
    );
    let mut same_uuid = port(owner.uuid, 3);
    same_uuid.uuid = first.uuid;
    let err = store.create_port(&same_uuid).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Duplicate {
                kind: "port",
                field: "uuid",
                ..
            }
        ),
        "{err:?}"
    );

    // A port needs an existing node.
    let orphan = port(Uuid::new_v4(), 4);
    let err = store.create_port(&orphan).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "node", .. }),
        "{err:?}"
    );

    let second = port(owner.uuid, 5);
    store.create_port(&second).await.unwrap();
    let mut moved = second.clone();
    moved.address = "52:54:00:AB:CD:01".to_owned();
    let err = store.update_port(&moved).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Duplicate {
                field: "address",
                ..
            }
        ),
        "{err:?}"
    );
    moved.address = "52:54:00:FF:FF:FF".to_owned();
    moved.pxe_enabled = false;
    moved.extra.insert("x".to_owned(), json!(1));
    store.update_port(&moved).await.unwrap();
    let got = store.get_port(second.uuid).await.unwrap().unwrap();
    assert_eq!(got.address, "52:54:00:ff:ff:ff");
    assert!(!got.pxe_enabled);
    assert_eq!(got.extra.get("x"), Some(&json!(1)));
    let mut lost = moved.clone();
    lost.uuid = Uuid::new_v4();
    let err = store.update_port(&lost).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "port", .. }),
        "{err:?}"
    );

    store.delete_port(first.uuid).await.unwrap();
    assert!(store.get_port(first.uuid).await.unwrap().is_none());
    let err = store.delete_port(first.uuid).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "port", .. }),
        "{err:?}"
    );
    // The MAC is free again.
    store.create_port(&clash).await.unwrap();
}

pub async fn port_paging(db: &mut Db) {
    let store = &db.store;
    let a = node(1);
    let b = node(2);
    store.create_node(&a).await.unwrap();
    store.create_node(&b).await.unwrap();
    let mut ports = Vec::new();
    for i in 0..7 {
        let p = port(if i % 2 == 0 { a.uuid } else { b.uuid }, i);
        store.create_port(&p).await.unwrap();
        ports.push(p);
    }
    let uuids =
        |list: Vec<controller::model::Port>| list.iter().map(|p| p.uuid).collect::<Vec<_>>();
    let all = uuids(store.list_ports(&PortQuery::default()).await.unwrap());
    assert_eq!(all, ports.iter().map(|p| p.uuid).collect::<Vec<_>>());
    let desc = uuids(
        store
            .list_ports(&PortQuery {
                sort_dir: SortDir::Desc,
                ..Default::default()
            })
            .await
            .unwrap(),
    );
    assert_eq!(desc, all.iter().rev().copied().collect::<Vec<_>>());
    let of_a = uuids(
        store
            .list_ports(&PortQuery {
                node_uuid: Some(a.uuid),
                ..Default::default()
            })
            .await
            .unwrap(),
    );
    assert_eq!(
        of_a,
        ports
            .iter()
            .filter(|p| p.node_uuid == a.uuid)
            .map(|p| p.uuid)
            .collect::<Vec<_>>()
    );
    for dir in [SortDir::Asc, SortDir::Desc] {
        let mut walked = Vec::new();
        let mut marker = None;
        loop {
            let page = store
                .list_ports(&PortQuery {
                    sort_dir: dir,
                    marker,
                    limit: Some(3),
                    ..Default::default()
                })
                .await
                .unwrap();
            walked.extend(page.iter().map(|p| p.uuid));
            if page.len() < 3 {
                break;
            }
            marker = page.last().map(|p| p.uuid);
        }
        let mut expected = all.clone();
        if dir == SortDir::Desc {
            expected.reverse();
        }
        assert_eq!(walked, expected);
    }
    let err = store
        .list_ports(&PortQuery {
            marker: Some(Uuid::new_v4()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "port", .. }),
        "{err:?}"
    );
}

pub async fn allocation_crud(db: &mut Db) {
    let store = &db.store;
    let first = allocation(1);
    store.create_allocation(&first).await.unwrap();
    assert_eq!(
        store
            .get_allocation(&first.uuid.to_string())
            .await
            .unwrap()
            .unwrap(),
        first
    );
    assert_eq!(
        store.get_allocation("alloc-1").await.unwrap().unwrap(),
        first
    );
    assert!(store.get_allocation("alloc-9").await.unwrap().is_none());

    let mut same_name = allocation(2);
    same_name.name = first.name.clone();
    let err = store.create_allocation(&same_name).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Duplicate {
                kind: "allocation",
                field: "name",
                ..
            }
        ),
        "{err:?}"
    );
    let mut same_uuid = allocation(3);
    same_uuid.uuid = first.uuid;
    let err = store.create_allocation(&same_uuid).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Duplicate {
                kind: "allocation",
                field: "uuid",
                ..
            }
        ),
        "{err:?}"
    );
    let mut unnamed = allocation(4);
    unnamed.name = None;
    store.create_allocation(&unnamed).await.unwrap();
    let mut unnamed2 = allocation(5);
    unnamed2.name = None;
    store.create_allocation(&unnamed2).await.unwrap();

    let target = node(1);
    store.create_node(&target).await.unwrap();
    let mut done = first.clone();
    done.state = "active".to_owned();
    done.node_uuid = Some(target.uuid);
    done.updated_at = Some(t0() + Duration::seconds(3));
    store.update_allocation(&done).await.unwrap();
    assert_eq!(
        store.get_allocation("alloc-1").await.unwrap().unwrap(),
        done
    );
    let mut renamed = unnamed.clone();
    renamed.name = Some("alloc-1".to_owned());
    let err = store.update_allocation(&renamed).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { field: "name", .. }),
        "{err:?}"
    );

    let q = AllocationQuery::default;
    let uuids =
        |list: Vec<controller::model::Allocation>| list.iter().map(|a| a.uuid).collect::<Vec<_>>();
    assert_eq!(
        uuids(
            store
                .list_allocations(&AllocationQuery {
                    state: Some("active".to_owned()),
                    ..q()
                })
                .await
                .unwrap()
        ),
        vec![first.uuid]
    );
    assert_eq!(
        uuids(
            store
                .list_allocations(&AllocationQuery {
                    node_uuid: Some(target.uuid),
                    ..q()
                })
                .await
                .unwrap()
        ),
        vec![first.uuid]
    );
    assert_eq!(
        store
            .list_allocations(&AllocationQuery {
                resource_class: Some("baremetal".to_owned()),
                ..q()
            })
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(
        store
            .list_allocations(&AllocationQuery {
                resource_class: Some("gpu".to_owned()),
                ..q()
            })
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_allocations(&AllocationQuery {
                owner: Some("x".to_owned()),
                ..q()
            })
            .await
            .unwrap()
            .is_empty()
    );

    store.delete_allocation(first.uuid).await.unwrap();
    assert!(store.get_allocation("alloc-1").await.unwrap().is_none());
    let err = store.delete_allocation(first.uuid).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                kind: "allocation",
                ..
            }
        ),
        "{err:?}"
    );
    let err = store.update_allocation(&done).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                kind: "allocation",
                ..
            }
        ),
        "{err:?}"
    );
}

pub async fn allocation_paging(db: &mut Db) {
    let store = &db.store;
    let mut created = Vec::new();
    for i in 0..7 {
        let mut a = allocation(i);
        a.owner = (i % 2 == 0).then(|| "p1".to_owned());
        store.create_allocation(&a).await.unwrap();
        created.push(a);
    }
    let mut walked = Vec::new();
    let mut marker = None;
    loop {
        let page = store
            .list_allocations(&AllocationQuery {
                marker,
                limit: Some(2),
                owner: Some("p1".to_owned()),
                ..Default::default()
            })
            .await
            .unwrap();
        walked.extend(page.iter().map(|a| a.uuid));
        if page.len() < 2 {
            break;
        }
        marker = page.last().map(|a| a.uuid);
    }
    let expected: Vec<Uuid> = created
        .iter()
        .filter(|a| a.owner.is_some())
        .map(|a| a.uuid)
        .collect();
    assert_eq!(walked, expected);
    let err = store
        .list_allocations(&AllocationQuery {
            marker: Some(Uuid::new_v4()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                kind: "allocation",
                ..
            }
        ),
        "{err:?}"
    );
}

pub async fn history_order(db: &mut Db) {
    let store = &db.store;
    let a = node(1);
    let b = node(2);
    store.create_node(&a).await.unwrap();
    store.create_node(&b).await.unwrap();
    // Added out of time order; two share a timestamp (then insertion order decides).
    let late = event(a.uuid, t0() + Duration::seconds(30), "late");
    let early = event(a.uuid, t0() + Duration::seconds(10), "early");
    let tie1 = event(a.uuid, t0() + Duration::seconds(20), "tie1");
    let tie2 = event(a.uuid, t0() + Duration::seconds(20), "tie2");
    let other = event(b.uuid, t0(), "other node");
    for e in [&late, &early, &tie1, &other, &tie2] {
        store.add_history(e).await.unwrap();
    }
    let got = store.list_history(a.uuid).await.unwrap();
    assert_eq!(
        got,
        vec![early.clone(), tie1.clone(), tie2.clone(), late.clone()]
    );
    assert_eq!(store.list_history(b.uuid).await.unwrap(), vec![other]);
    assert!(store.list_history(Uuid::new_v4()).await.unwrap().is_empty());
    let err = store
        .add_history(&event(Uuid::new_v4(), t0(), "orphan"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "node", .. }),
        "{err:?}"
    );
}

pub async fn inventory(db: &mut Db) {
    let store = &db.store;
    let a = node(1);
    store.create_node(&a).await.unwrap();
    assert!(store.get_inventory(a.uuid).await.unwrap().is_none());
    let first = json!({"inventory": {"cpu": {"count": 4}, "memory": {"physical_mb": 8192}}, "plugin_data": {}});
    store.put_inventory(a.uuid, &first).await.unwrap();
    assert_eq!(store.get_inventory(a.uuid).await.unwrap(), Some(first));
    let second = json!({"inventory": {"cpu": {"count": 8}, "disks": [{"name": "/dev/vda", "size": 10737418240u64}]}});
    store.put_inventory(a.uuid, &second).await.unwrap();
    assert_eq!(store.get_inventory(a.uuid).await.unwrap(), Some(second));
    let err = store
        .put_inventory(Uuid::new_v4(), &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "node", .. }),
        "{err:?}"
    );
}

pub async fn delete_cascade(db: &mut Db) {
    let store = &db.store;
    let doomed = node(1);
    let kept = node(2);
    store.create_node(&doomed).await.unwrap();
    store.create_node(&kept).await.unwrap();
    for (i, owner) in [doomed.uuid, doomed.uuid, kept.uuid]
        .into_iter()
        .enumerate()
    {
        store.create_port(&port(owner, i as u32)).await.unwrap();
        store.add_history(&event(owner, t0(), "x")).await.unwrap();
        store.put_inventory(owner, &json!({"n": i})).await.unwrap();
    }
    let doomed_ports = store
        .list_ports(&PortQuery {
            node_uuid: Some(doomed.uuid),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(doomed_ports.len(), 2);
    store.delete_node(doomed.uuid).await.unwrap();
    for p in &doomed_ports {
        assert!(store.get_port(p.uuid).await.unwrap().is_none());
    }
    assert!(
        store
            .list_ports(&PortQuery {
                node_uuid: Some(doomed.uuid),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list_history(doomed.uuid).await.unwrap().is_empty());
    assert!(store.get_inventory(doomed.uuid).await.unwrap().is_none());
    // The other node keeps everything.
    assert_eq!(
        store.list_ports(&PortQuery::default()).await.unwrap().len(),
        1
    );
    assert_eq!(store.list_history(kept.uuid).await.unwrap().len(), 1);
    assert_eq!(
        store.get_inventory(kept.uuid).await.unwrap(),
        Some(json!({"n": 2}))
    );
    assert_eq!(
        store.list_nodes(&NodeQuery::default()).await.unwrap().len(),
        1
    );
    // The doomed node's MAC can be enrolled again.
    let reused = controller::model::Port {
        uuid: Uuid::new_v4(),
        node_uuid: kept.uuid,
        ..doomed_ports[0].clone()
    };
    store.create_port(&reused).await.unwrap();
}

pub async fn node_state_by_mac(db: &mut Db) {
    let store = &db.store;
    let mut owner = node(7);
    owner.provision_state = "inspect wait".to_owned();
    store.create_node(&owner).await.unwrap();
    let mut p = port(owner.uuid, 7);
    p.address = "52:54:00:AB:CD:07".to_owned();
    store.create_port(&p).await.unwrap();
    for mac in ["52:54:00:ab:cd:07", "52:54:00:AB:CD:07"] {
        assert_eq!(
            store.node_state_by_mac(mac).await.unwrap(),
            Some((owner.uuid, "inspect wait".to_owned())),
            "{mac}"
        );
    }
    assert_eq!(
        store.node_state_by_mac("52:54:00:00:00:00").await.unwrap(),
        None
    );
    store.delete_node(owner.uuid).await.unwrap();
    assert_eq!(
        store.node_state_by_mac("52:54:00:ab:cd:07").await.unwrap(),
        None
    );
}

/// A discovered machine: node, inventory and ports in one transaction; a MAC another node
/// has stays that node's; a clash on the name stores nothing at all; a port asking for a
/// DHCP reservation or of another node is refused.
pub async fn create_discovered(db: &mut Db) {
    let store = &db.store;
    let other = node(1);
    store.create_node(&other).await.unwrap();
    let taken = port(other.uuid, 7);
    store.create_port(&taken).await.unwrap();

    let found = node(2);
    let inventory = json!({"inventory": {"cpu": {"count": 4}}, "plugin_data": {}});
    let mut ports = vec![port(found.uuid, 8), port(found.uuid, 9)];
    ports[1].address = ports[1].address.to_ascii_uppercase();
    let mut clash = port(found.uuid, 70);
    clash.address.clone_from(&taken.address);
    ports.push(clash);
    store
        .create_discovered(&found, &inventory, &ports)
        .await
        .unwrap();
    let got = store.get_node_by_uuid(found.uuid).await.unwrap().unwrap();
    assert_eq!(got.name, found.name);
    assert_eq!(
        store.get_inventory(found.uuid).await.unwrap(),
        Some(inventory.clone())
    );
    let mut mine: Vec<String> = store
        .list_ports(&PortQuery {
            node_uuid: Some(found.uuid),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.address)
        .collect();
    mine.sort();
    let mut want = vec![
        ports[0].address.clone(),
        ports[1].address.to_ascii_lowercase(),
    ];
    want.sort();
    assert_eq!(
        mine, want,
        "the taken MAC is skipped, MACs stored lower-case"
    );
    let owner = store
        .list_ports(&PortQuery {
            address: Some(taken.address.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(owner.len(), 1);
    assert_eq!(
        owner[0].node_uuid, other.uuid,
        "the other node keeps its MAC"
    );

    // Same name as an existing node: a duplicate, and nothing of the machine stored.
    let mut twin = node(3);
    twin.name.clone_from(&found.name);
    let twin_ports = vec![port(twin.uuid, 11)];
    let err = store
        .create_discovered(&twin, &inventory, &twin_ports)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { field: "name", .. }),
        "{err:?}"
    );
    assert!(store.get_node_by_uuid(twin.uuid).await.unwrap().is_none());
    assert!(store.get_inventory(twin.uuid).await.unwrap().is_none());
    let orphan = store
        .list_ports(&PortQuery {
            address: Some(twin_ports[0].address.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(orphan.is_empty(), "no port of a node that was not stored");

    // Ports the call may not write: one asking for a DHCP reservation, one of another node.
    let fresh = node(4);
    let mut reserving = port(fresh.uuid, 12);
    reserving
        .extra
        .insert("dhcp_address".into(), json!("192.0.2.50"));
    for bad in [reserving, port(other.uuid, 13)] {
        let err = store
            .create_discovered(&fresh, &inventory, &[bad])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Database(_)), "{err:?}");
        assert!(store.get_node_by_uuid(fresh.uuid).await.unwrap().is_none());
    }
}
