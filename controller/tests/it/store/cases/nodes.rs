//! Node cases: CRUD, lookups, duplicates, filters, sorting and paging.

use chrono::Duration;
use controller::model::Node;
use controller::store::{NodeQuery, SortDir, Store, StoreError};
use uuid::Uuid;

use crate::store::Db;
use crate::store::fixtures::{node, t0};

pub async fn node_crud(db: &mut Db) {
    let store = &db.store;
    let created = node(1);
    store.create_node(&created).await.unwrap();
    let got = store.get_node_by_uuid(created.uuid).await.unwrap().unwrap();
    assert_eq!(got, created);

    let mut changed = got.clone();
    changed.provision_state = "manageable".to_owned();
    changed
        .extra
        .insert("k".to_owned(), serde_json::json!([1, "two"]));
    changed.updated_at = Some(t0() + Duration::hours(1));
    changed.maintenance = true;
    changed.name = Some("renamed".to_owned());
    let revision = store.update_node(&changed).await.unwrap();
    assert_eq!(revision, 1);
    changed.revision = 1;
    assert_eq!(
        store.get_node_by_uuid(created.uuid).await.unwrap().unwrap(),
        changed
    );
    assert_eq!(store.get_node("renamed").await.unwrap().unwrap(), changed);
    assert!(store.get_node("node-0001").await.unwrap().is_none());

    let listed = store.list_nodes(&NodeQuery::default()).await.unwrap();
    assert_eq!(listed, vec![changed.clone()]);

    store.delete_node(created.uuid).await.unwrap();
    assert!(
        store
            .get_node_by_uuid(created.uuid)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .list_nodes(&NodeQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    let err = store.delete_node(created.uuid).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "node", .. }),
        "{err:?}"
    );
    let err = store.update_node(&changed).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "node", .. }),
        "{err:?}"
    );
}

pub async fn node_get_by_ident(db: &mut Db) {
    let store = &db.store;
    let mut first = node(1);
    let second = node(2);
    first.name = Some("first".to_owned());
    store.create_node(&first).await.unwrap();
    store.create_node(&second).await.unwrap();
    let by_uuid = store
        .get_node(&first.uuid.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_uuid.uuid, first.uuid);
    let by_upper = store
        .get_node(&second.uuid.to_string().to_uppercase())
        .await
        .unwrap();
    assert_eq!(by_upper.map(|node| node.uuid), Some(second.uuid));
    assert_eq!(
        store.get_node("first").await.unwrap().map(|n| n.uuid),
        Some(first.uuid)
    );
    assert_eq!(
        store.get_node("node-0002").await.unwrap().map(|n| n.uuid),
        Some(second.uuid)
    );
    assert!(store.get_node("nope").await.unwrap().is_none());
    assert!(
        store
            .get_node(&Uuid::new_v4().to_string())
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn node_duplicates(db: &mut Db) {
    let store = &db.store;
    let first = node(1);
    store.create_node(&first).await.unwrap();

    let mut same_uuid = node(2);
    same_uuid.uuid = first.uuid;
    let err = store.create_node(&same_uuid).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { kind: "node", field: "uuid", value } if *value == first.uuid.to_string()),
        "{err:?}"
    );

    let mut same_name = node(3);
    same_name.name = first.name.clone();
    let err = store.create_node(&same_name).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { kind: "node", field: "name", value } if value == "node-0001"),
        "{err:?}"
    );

    // Nameless nodes do not clash with each other.
    for i in 4..6 {
        let mut nameless = node(i);
        nameless.name = None;
        store.create_node(&nameless).await.unwrap();
    }

    let mut other = node(7);
    store.create_node(&other).await.unwrap();
    other.name = first.name.clone();
    let err = store.update_node(&other).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { field: "name", .. }),
        "{err:?}"
    );
    // The failed update changed nothing.
    let stored = store.get_node_by_uuid(other.uuid).await.unwrap().unwrap();
    assert_eq!(stored.name.as_deref(), Some("node-0007"));
    assert_eq!(stored.revision, 0);
    assert_eq!(
        store.list_nodes(&NodeQuery::default()).await.unwrap().len(),
        4
    );

    // One instance cannot be on two nodes.
    let instance = Uuid::new_v4();
    let mut with_instance = node(8);
    with_instance.instance_uuid = Some(instance);
    store.create_node(&with_instance).await.unwrap();
    let mut stored = store.get_node_by_uuid(other.uuid).await.unwrap().unwrap();
    stored.instance_uuid = Some(instance);
    let err = store.update_node(&stored).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { kind: "node", field: "instance_uuid", value } if *value == instance.to_string()),
        "{err:?}"
    );
}

/// Nodes with distinct values for every filtered field.
async fn filter_fixture(store: &dyn Store) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..8u32 {
        let mut n = node(i);
        n.provision_state =
            ["enroll", "manageable", "available", "active"][(i % 4) as usize].to_owned();
        n.resource_class = Some(if i < 4 { "small" } else { "large" }.to_owned());
        n.maintenance = i % 3 == 0;
        n.driver = if i % 2 == 0 { "ipmi" } else { "redfish" }.to_owned();
        n.owner = (i % 2 == 1).then(|| "tenant-a".to_owned());
        n.lessee = (i == 5).then(|| "tenant-b".to_owned());
        n.fault = (i == 6).then(|| "power failure".to_owned());
        n.retired = i == 7;
        n.conductor_group = if i < 2 { "rack1" } else { "" }.to_owned();
        n.shard = (i >= 6).then(|| "s1".to_owned());
        n.chassis_uuid = (i == 2).then(Uuid::new_v4);
        n.parent_node = (i == 3).then(|| "parent-x".to_owned());
        n.description = Some(match i {
            0 => "Has 100% GPU".to_owned(),
            1 => "has a_b under score".to_owned(),
            _ => format!("plain {i}"),
        });
        if i == 4 || i == 5 {
            n.instance_uuid = Some(Uuid::new_v4());
            n.instance_name = Some(format!("vm-{i}"));
        }
        store.create_node(&n).await.unwrap();
        nodes.push(n);
    }
    nodes
}

async fn check_filter(
    store: &dyn Store,
    nodes: &[Node],
    query: NodeQuery,
    keep: impl Fn(&Node) -> bool,
) {
    let expected: Vec<Uuid> = nodes.iter().filter(|n| keep(n)).map(|n| n.uuid).collect();
    assert!(
        !expected.is_empty() && expected.len() < nodes.len(),
        "filter {query:?} must select some"
    );
    let got: Vec<Uuid> = store
        .list_nodes(&query)
        .await
        .unwrap()
        .iter()
        .map(|n| n.uuid)
        .collect();
    assert_eq!(got, expected, "{query:?}");
}

pub async fn node_filters(db: &mut Db) {
    let store: &dyn Store = &db.store;
    let nodes = filter_fixture(store).await;
    let q = NodeQuery::default;
    let s = |text: &str| Some(text.to_owned());
    check_filter(
        store,
        &nodes,
        NodeQuery {
            provision_state: s("available"),
            ..q()
        },
        |n| n.provision_state == "available",
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            resource_class: s("large"),
            ..q()
        },
        |n| n.resource_class.as_deref() == Some("large"),
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            maintenance: Some(true),
            ..q()
        },
        |n| n.maintenance,
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            maintenance: Some(false),
            ..q()
        },
        |n| !n.maintenance,
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            associated: Some(true),
            ..q()
        },
        |n| n.instance_uuid.is_some(),
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            associated: Some(false),
            ..q()
        },
        |n| n.instance_uuid.is_none(),
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            driver: s("redfish"),
            ..q()
        },
        |n| n.driver == "redfish",
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            owner: s("tenant-a"),
            ..q()
        },
        |n| n.owner.is_some(),
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            lessee: s("tenant-b"),
            ..q()
        },
        |n| n.lessee.is_some(),
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            fault: s("power failure"),
            ..q()
        },
        |n| n.fault.is_some(),
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            retired: Some(true),
            ..q()
        },
        |n| n.retired,
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            retired: Some(false),
            ..q()
        },
        |n| !n.retired,
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            conductor_group: s("rack1"),
            ..q()
        },
        |n| n.conductor_group == "rack1",
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            conductor_group: s(""),
            ..q()
        },
        |n| n.conductor_group.is_empty(),
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            shard: s("s1"),
            ..q()
        },
        |n| n.shard.is_some(),
    )
    .await;
    let chassis = nodes[2].chassis_uuid;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            chassis_uuid: chassis,
            ..q()
        },
        |n| n.chassis_uuid == chassis,
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            parent_node: s("parent-x"),
            ..q()
        },
        |n| n.parent_node.is_some(),
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            instance_name: s("vm-5"),
            ..q()
        },
        |n| n.instance_name.as_deref() == Some("vm-5"),
    )
    .await;
    let instance = nodes[4].instance_uuid;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            instance_uuid: instance,
            ..q()
        },
        |n| n.instance_uuid == instance,
    )
    .await;
    // Case-insensitive substring; LIKE wildcards in the needle are literal.
    check_filter(
        store,
        &nodes,
        NodeQuery {
            description_contains: s("PLAIN"),
            ..q()
        },
        |n| {
            n.description
                .as_deref()
                .is_some_and(|d| d.starts_with("plain"))
        },
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            description_contains: s("100%"),
            ..q()
        },
        |n| n.uuid == nodes[0].uuid,
    )
    .await;
    check_filter(
        store,
        &nodes,
        NodeQuery {
            description_contains: s("a_b"),
            ..q()
        },
        |n| n.uuid == nodes[1].uuid,
    )
    .await;
    assert!(
        store
            .list_nodes(&NodeQuery {
                description_contains: s("1%"),
                ..q()
            })
            .await
            .unwrap()
            .is_empty()
    );
    // Filters combine with AND.
    check_filter(
        store,
        &nodes,
        NodeQuery {
            resource_class: s("small"),
            driver: s("ipmi"),
            maintenance: Some(false),
            ..q()
        },
        |n| n.resource_class.as_deref() == Some("small") && n.driver == "ipmi" && !n.maintenance,
    )
    .await;
    assert!(
        store
            .list_nodes(&NodeQuery {
                provision_state: s("deploying"),
                ..q()
            })
            .await
            .unwrap()
            .is_empty()
    );
}

/// The order the store must produce: `key ASC NULLS FIRST, id ASC`, or the exact reverse.
fn expected_order(nodes: &[Node], key: &str, dir: SortDir) -> Vec<Uuid> {
    let value = |n: &Node| -> Option<String> {
        match key {
            "id" => None,
            "uuid" => Some(n.uuid.to_string()),
            "name" => n.name.clone(),
            "provision_state" => Some(n.provision_state.clone()),
            "maintenance" => Some(n.maintenance.to_string()),
            "created_at" => Some(format!("{:020}", n.created_at.timestamp_micros())),
            "updated_at" => n
                .updated_at
                .map(|t| format!("{:020}", t.timestamp_micros())),
            other => panic!("no expectation for {other}"),
        }
    };
    // `nodes` is in creation (id) order.
    let mut indexed: Vec<(usize, &Node)> = nodes.iter().enumerate().collect();
    indexed.sort_by(|(ia, a), (ib, b)| value(a).cmp(&value(b)).then(ia.cmp(ib)));
    let mut order: Vec<Uuid> = indexed.into_iter().map(|(_, n)| n.uuid).collect();
    if dir == SortDir::Desc {
        order.reverse();
    }
    order
}

/// Nodes with repeated and missing values in the sort columns.
async fn sort_fixture(store: &dyn Store) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..9u32 {
        let mut n = node(i);
        n.name = match i % 3 {
            0 => None,
            _ => Some(format!("n{}", (i * 7) % 5)),
        };
        if n.name.is_some() && nodes.iter().any(|o: &Node| o.name == n.name) {
            n.name = Some(format!("{}-{i}", n.name.clone().unwrap_or_default()));
        }
        n.provision_state = ["enroll", "available", "active"][(i % 3) as usize].to_owned();
        n.maintenance = i % 2 == 0;
        // Creation times out of creation order.
        n.created_at = t0() + Duration::seconds(i64::from((i * 5) % 9));
        n.updated_at = (i % 4 != 0).then(|| t0() + Duration::minutes(i64::from(i % 3)));
        store.create_node(&n).await.unwrap();
        nodes.push(n);
    }
    nodes
}

const SORT_KEYS: [&str; 7] = [
    "id",
    "uuid",
    "name",
    "provision_state",
    "maintenance",
    "created_at",
    "updated_at",
];

pub async fn node_sorting(db: &mut Db) {
    let store: &dyn Store = &db.store;
    let nodes = sort_fixture(store).await;
    for key in SORT_KEYS {
        for dir in [SortDir::Asc, SortDir::Desc] {
            let query = NodeQuery {
                sort_key: Some(key.to_owned()),
                sort_dir: dir,
                ..Default::default()
            };
            let got: Vec<Uuid> = store
                .list_nodes(&query)
                .await
                .unwrap()
                .iter()
                .map(|n| n.uuid)
                .collect();
            assert_eq!(got, expected_order(&nodes, key, dir), "sort {key} {dir:?}");
        }
    }
    let default: Vec<Uuid> = store
        .list_nodes(&NodeQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|n| n.uuid)
        .collect();
    assert_eq!(default, nodes.iter().map(|n| n.uuid).collect::<Vec<_>>());
    let bogus = NodeQuery {
        sort_key: Some("driver_info".to_owned()),
        ..Default::default()
    };
    assert!(store.list_nodes(&bogus).await.is_err());
    for key in controller::store::NODE_SORT_KEYS {
        let query = NodeQuery {
            sort_key: Some((*key).to_owned()),
            ..Default::default()
        };
        assert_eq!(
            store.list_nodes(&query).await.unwrap().len(),
            nodes.len(),
            "sort key {key}"
        );
    }
}

pub async fn node_paging(db: &mut Db) {
    let store: &dyn Store = &db.store;
    let nodes = sort_fixture(store).await;
    for key in SORT_KEYS {
        for dir in [SortDir::Asc, SortDir::Desc] {
            for limit in [1u32, 2, 4, 20] {
                let mut walked = Vec::new();
                let mut marker = None;
                loop {
                    let query = NodeQuery {
                        sort_key: Some(key.to_owned()),
                        sort_dir: dir,
                        marker,
                        limit: Some(limit),
                        ..Default::default()
                    };
                    let page = store.list_nodes(&query).await.unwrap();
                    assert!(page.len() <= limit as usize);
                    walked.extend(page.iter().map(|n| n.uuid));
                    if page.len() < limit as usize {
                        break;
                    }
                    marker = page.last().map(|n| n.uuid);
                }
                assert_eq!(
                    walked,
                    expected_order(&nodes, key, dir),
                    "paging {key} {dir:?} limit {limit}"
                );
            }
        }
    }
    // Paging combines with filters.
    let query = NodeQuery {
        provision_state: Some("active".to_owned()),
        limit: Some(2),
        ..Default::default()
    };
    let page = store.list_nodes(&query).await.unwrap();
    assert_eq!(page.len(), 2);
    let rest = store
        .list_nodes(&NodeQuery {
            marker: Some(page[1].uuid),
            ..query
        })
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert!(rest.iter().all(|n| n.provision_state == "active"));
    // An unknown marker is an error, not an empty page.
    let unknown = NodeQuery {
        marker: Some(Uuid::new_v4()),
        ..Default::default()
    };
    let err = store.list_nodes(&unknown).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "node", .. }),
        "{err:?}"
    );
    let zero = store
        .list_nodes(&NodeQuery {
            limit: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(zero.is_empty());
}

/// A lookup's system UUID is found through the indexed column: from `properties` or
/// `extra`, any case, kept in step by updates.
pub async fn node_by_system_uuid(db: &mut Db) {
    let store: &dyn Store = &db.store;
    let sys = "4C4C4544-0000-1111-2222-333344445555";
    let mut a = node(1);
    a.properties
        .insert("system_uuid".into(), serde_json::json!(sys.to_lowercase()));
    let mut b = node(2);
    b.extra
        .insert("system_uuid".into(), serde_json::json!("ABCD-0002"));
    let c = node(3);
    for n in [&a, &b, &c] {
        store.create_node(n).await.unwrap();
    }
    let find = |s: &str| NodeQuery {
        system_uuid: Some(s.to_owned()),
        ..NodeQuery::default()
    };
    let uuids = |nodes: Vec<Node>| nodes.iter().map(|n| n.uuid).collect::<Vec<_>>();
    assert_eq!(uuids(store.list_nodes(&find(sys)).await.unwrap()), [a.uuid]);
    assert_eq!(
        uuids(store.list_nodes(&find("abcd-0002")).await.unwrap()),
        [b.uuid]
    );
    assert!(store.list_nodes(&find("nope")).await.unwrap().is_empty());
    // The column follows the document.
    let mut a = store.get_node_by_uuid(a.uuid).await.unwrap().unwrap();
    a.properties.remove("system_uuid");
    a.extra
        .insert("system_uuid".into(), serde_json::json!("new-uuid"));
    store.update_node(&a).await.unwrap();
    assert!(store.list_nodes(&find(sys)).await.unwrap().is_empty());
    assert_eq!(
        uuids(store.list_nodes(&find("NEW-UUID")).await.unwrap()),
        [a.uuid]
    );
}

/// "Which nodes use this BMC" goes through the indexed `bmc_host` column: the canonical
/// host of `ipmi_address` or `redfish_address`, kept in step by updates, and filled from the
/// documents of rows an older controller wrote (NULL) when the store opens.
pub async fn node_by_bmc_host(db: &mut Db) {
    let mut a = node(1);
    a.driver_info
        .insert("ipmi_address".into(), serde_json::json!("FD00:0::5"));
    let mut b = node(2);
    b.driver_info.remove("ipmi_address");
    b.driver_info.insert(
        "redfish_address".into(),
        serde_json::json!("https://BMC-2.example.com:8000/redfish/v1"),
    );
    let mut c = node(3);
    c.driver_info.clear();
    for n in [&a, &b, &c] {
        db.store.create_node(n).await.unwrap();
    }
    let find = |h: &str| NodeQuery {
        bmc_host: Some(h.to_owned()),
        ..NodeQuery::default()
    };
    let uuids = |nodes: Vec<Node>| nodes.iter().map(|n| n.uuid).collect::<Vec<_>>();
    let store: &dyn Store = &db.store;
    assert_eq!(
        uuids(store.list_nodes(&find("fd00::5")).await.unwrap()),
        [a.uuid]
    );
    assert_eq!(
        uuids(store.list_nodes(&find("bmc-2.example.com")).await.unwrap()),
        [b.uuid]
    );
    // A node without a BMC is not found by the empty host.
    assert!(store.list_nodes(&find("")).await.unwrap().is_empty());
    // The column follows the document.
    let mut a = store.get_node_by_uuid(a.uuid).await.unwrap().unwrap();
    a.driver_info
        .insert("ipmi_address".into(), serde_json::json!("10.0.0.7"));
    store.update_node(&a).await.unwrap();
    assert!(store.list_nodes(&find("fd00::5")).await.unwrap().is_empty());
    assert_eq!(
        uuids(store.list_nodes(&find("10.0.0.7")).await.unwrap()),
        [a.uuid]
    );
    // Rows from before the column are filled when the store opens.
    db.raw_exec("UPDATE nodes SET bmc_host = NULL").await;
    assert!(
        db.store
            .list_nodes(&find("10.0.0.7"))
            .await
            .unwrap()
            .is_empty()
    );
    db.reopen().await;
    let store: &dyn Store = &db.store;
    assert_eq!(
        uuids(store.list_nodes(&find("10.0.0.7")).await.unwrap()),
        [a.uuid]
    );
    assert_eq!(
        uuids(store.list_nodes(&find("bmc-2.example.com")).await.unwrap()),
        [b.uuid]
    );
    assert!(store.list_nodes(&find("")).await.unwrap().is_empty());
}

/// `/metrics` counts nodes by provision and power state in the database, and the counts agree
/// with the nodes themselves (a null power state is its own group).
pub async fn node_state_counts(db: &mut Db) {
    let store = &db.store;
    assert_eq!(store.count_nodes_by_state().await.unwrap(), vec![]);
    for i in 0..7u32 {
        let mut n = node(i);
        n.provision_state = if i < 4 { "available" } else { "active" }.to_owned();
        n.power_state = match i % 3 {
            0 => None,
            1 => Some("power on".to_owned()),
            _ => Some("power off".to_owned()),
        };
        store.create_node(&n).await.unwrap();
    }
    let got: Vec<(String, Option<String>, i64)> = store
        .count_nodes_by_state()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.provision_state, c.power_state, c.nodes))
        .collect();
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        got,
        vec![
            ("active".to_owned(), None, 1),
            ("active".to_owned(), s("power off"), 1),
            ("active".to_owned(), s("power on"), 1),
            ("available".to_owned(), None, 2),
            ("available".to_owned(), s("power off"), 1),
            ("available".to_owned(), s("power on"), 1),
        ]
    );
}
