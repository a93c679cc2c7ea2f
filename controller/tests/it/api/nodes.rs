//! Node create, show and delete.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use controller::api::ApiSettings;
use controller::store::{NodeQuery, PortQuery, Store};
use serde_json::{Value, json};

use super::{Api, BASE, HOST};

const FULL_KEYS: [&str; 69] = controller::api::render::NODE_FIELDS;

#[tokio::test]
async fn create_returns_the_full_node_with_location() {
    let api = Api::new().await;
    let r = api
        .post(
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "n1", "resource_class": "baremetal",
                   "properties": {"cpus": 8, "memory_mb": "4096"},
                   "driver_info": {"ipmi_address": "10.0.0.1", "ipmi_password": "pw", "ipmi_port": 623}}),
        )
        .await
        .expect(StatusCode::CREATED);
    let n = &r.body;
    let uuid = n["uuid"].as_str().unwrap();
    assert_eq!(
        r.header("location"),
        Some(format!("{BASE}/v1/nodes/{uuid}").as_str())
    );
    let obj = n.as_object().unwrap();
    assert_eq!(obj.len(), 69, "keys: {:?}", obj.keys().collect::<Vec<_>>());
    for k in FULL_KEYS {
        assert!(obj.contains_key(k), "missing {k}");
    }
    assert_eq!(n["provision_state"], "enroll");
    assert!(n["power_state"].is_null());
    assert!(n["target_provision_state"].is_null());
    assert!(n["target_power_state"].is_null());
    assert_eq!(n["maintenance"], false);
    for k in [
        "extra",
        "instance_info",
        "driver_internal_info",
        "clean_step",
        "deploy_step",
    ] {
        assert_eq!(n[k], json!({}), "{k}");
    }
    assert_eq!(n["traits"], json!([]));
    assert_eq!(n["conductor_group"], "");
    assert!(n["updated_at"].is_null());
    assert_eq!(n["properties"], json!({"cpus": 8, "memory_mb": "4096"}));
    assert_eq!(n["driver_info"]["ipmi_password"], "******");
    assert_eq!(n["driver_info"]["ipmi_port"], 623);
    assert_eq!(
        n["links"][0],
        json!({"href": format!("{BASE}/v1/nodes/{uuid}"), "rel": "self"})
    );
    assert_eq!(
        n["links"][1],
        json!({"href": format!("{BASE}/nodes/{uuid}"), "rel": "bookmark"})
    );
    assert_eq!(
        n["states"][0]["href"],
        format!("{BASE}/v1/nodes/{uuid}/states")
    );
    let created = n["created_at"].as_str().unwrap();
    assert!(
        created.ends_with("+00:00") && created.len() == 32,
        "{created}"
    );
    // The password is stored, only masked on the way out.
    let stored = api.stored_node("n1").await;
    assert_eq!(stored.driver_info["ipmi_password"], "pw");
    // Show returns the same document.
    let shown = api
        .get(&format!("/v1/nodes/{uuid}"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(shown, *n);
    let by_name = api.get("/v1/nodes/n1").await.expect(StatusCode::OK).body;
    assert_eq!(by_name, *n);
}

#[tokio::test]
async fn create_with_given_uuid_and_all_writable_fields() {
    let api = Api::new().await;
    let uuid = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
    let n = api
        .post(
            "/v1/nodes",
            json!({"driver": "fake-hardware", "uuid": uuid, "description": "d", "extra": {"a": 1},
                   "owner": "o", "lessee": "l", "shard": "s1", "automated_clean": false,
                   "boot_interface": "fake", "conductor_group": "Group1", "protected": false,
                   "retired": true, "retired_reason": "old", "network_data": {"links": []},
                   "instance_info": {"configdrive": "H4sI", "image_source": "http://x"}}),
        )
        .await
        .expect(StatusCode::CREATED)
        .body;
    assert_eq!(n["uuid"], uuid);
    assert_eq!(n["boot_interface"], "fake");
    assert_eq!(n["conductor_group"], "group1");
    assert_eq!(n["retired_reason"], "old");
    assert_eq!(n["instance_info"]["configdrive"], "******");
    assert_eq!(n["instance_info"]["image_source"], "http://x");
    assert!(n["name"].is_null());
    let r = api
        .post(
            "/v1/nodes",
            json!({"driver": "fake-hardware", "uuid": uuid}),
        )
        .await;
    r.expect_fault(
        StatusCode::CONFLICT,
        &format!("A node with UUID {uuid} already exists."),
    );
}

#[tokio::test]
async fn create_rejections_change_nothing() {
    let api = Api::new().await;
    api.node("n2").await;
    let cases = [
        (
            json!({"name": "x"}),
            StatusCode::BAD_REQUEST,
            "Schema error for node: 'driver' is a required property",
        ),
        (
            json!({"driver": "fake-hardware", "bogus": 1}),
            StatusCode::BAD_REQUEST,
            "Schema error for node: Additional properties are not allowed ('bogus' was unexpected)",
        ),
        (
            json!([1, 2]),
            StatusCode::BAD_REQUEST,
            "Schema error for node: [1, 2] is not of type 'object'",
        ),
        (
            json!({"driver": "fake-hardware", "name": "bad name!"}),
            StatusCode::BAD_REQUEST,
            "Cannot create node with invalid name 'bad name!'",
        ),
        (
            json!({"driver": "fake-hardware", "name": "n2"}),
            StatusCode::CONFLICT,
            "A node with name n2 already exists.",
        ),
        (
            json!({"driver": "fake-hardware", "uuid": "nope"}),
            StatusCode::BAD_REQUEST,
            "Schema error for node: 'nope' is not a 'uuid'",
        ),
        (
            json!({"driver": 5}),
            StatusCode::BAD_REQUEST,
            "Schema error for node: 5 is not of type 'string'",
        ),
        (
            json!({"driver": "fake-hardware", "extra": "x"}),
            StatusCode::BAD_REQUEST,
            "Schema error for node: 'x' is not of type 'object'",
        ),
        (
            json!({"driver": "fake-hardware", "maintenance": true}),
            StatusCode::BAD_REQUEST,
            "Schema error for node: Additional properties are not allowed ('maintenance' was unexpected)",
        ),
        (
            json!({"driver": "fake-hardware", "instance_uuid": "zz"}),
            StatusCode::BAD_REQUEST,
            "Expected UUID for instance_uuid: zz",
        ),
    ];
    for (body, status, fault) in cases {
        api.post("/v1/nodes", body)
            .await
            .expect_fault(status, fault);
    }
    let all = api.store.list_nodes(&NodeQuery::default()).await.unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn malformed_json_is_400_and_oversize_is_413() {
    let api = Api::with_settings(ApiSettings {
        body_limit: 1024,
        ..ApiSettings::default()
    })
    .await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/nodes")
        .header("host", HOST)
        .header("content-type", "application/json")
        .header("x-openstack-ironic-api-version", "1.115")
        .body(Body::from("{bad"))
        .unwrap();
    let r = api.request(req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.fault().starts_with("Invalid JSON in request body"),
        "{}",
        r.fault()
    );
    assert!(r.header("x-openstack-request-id").is_some());

    let big = json!({"driver": "fake-hardware", "extra": {"blob": "x".repeat(4096)}});
    let r = api.post("/v1/nodes", big).await;
    r.expect_fault(
        StatusCode::PAYLOAD_TOO_LARGE,
        "The request body is too large.",
    );
    assert!(r.header("x-openstack-ironic-api-version").is_some());
    assert!(
        api.store
            .list_nodes(&NodeQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn show_with_fields_keeps_links() {
    let api = Api::new().await;
    api.node("n1").await;
    let r = api
        .get("/v1/nodes/n1?fields=uuid,provision_state")
        .await
        .expect(StatusCode::OK);
    let mut keys: Vec<&String> = r.body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["links", "provision_state", "uuid"]);
    let r = api.get("/v1/nodes/n1?fields=bogus").await;
    r.expect_fault(StatusCode::BAD_REQUEST, "Field(s) \"bogus\" are not valid");
    let r = api.get("/v1/nodes/bad%20name!").await;
    r.expect_fault(
        StatusCode::BAD_REQUEST,
        "Expected a logical name or UUID but received bad name!.",
    );
}

#[tokio::test]
async fn delete_rules_and_port_cascade() {
    let api = Api::new().await;
    let n = api.node("n1").await;
    let uuid = n["uuid"].as_str().unwrap().to_owned();
    api.post(
        "/v1/ports",
        json!({"address": "52:54:00:00:00:01", "node_uuid": uuid}),
    )
    .await
    .expect(StatusCode::CREATED);
    api.set_state("n1", "active").await;
    let r = api.delete("/v1/nodes/n1").await;
    r.expect_fault(
        StatusCode::CONFLICT,
        &format!("Can not delete node \"{uuid}\" while it is in provision state \"active\". Valid provision states to perform deletion are: \"('manageable', 'enroll', 'adopt failed', 'available')\", or set the node into maintenance mode"),
    );
    assert!(api.store.get_node("n1").await.unwrap().is_some());
    assert!(
        api.stored_node("n1").await.reservation.is_none(),
        "reservation released"
    );
    api.put("/v1/nodes/n1/maintenance", Some(json!({"reason": "gone"})))
        .await
        .expect(StatusCode::ACCEPTED);
    let r = api
        .delete("/v1/nodes/n1")
        .await
        .expect(StatusCode::NO_CONTENT);
    assert!(r.raw.is_empty());
    assert!(r.header("content-type").is_none());
    assert!(api.store.get_node("n1").await.unwrap().is_none());
    let ports = api.store.list_ports(&PortQuery::default()).await.unwrap();
    assert!(ports.is_empty());
    api.delete("/v1/nodes/n1")
        .await
        .expect_fault(StatusCode::NOT_FOUND, "Node n1 could not be found.");

    for state in ["enroll", "manageable", "available", "adopt failed"] {
        let n = api.node("x").await;
        api.set_state("x", state).await;
        api.delete(&format!("/v1/nodes/{}", n["uuid"].as_str().unwrap()))
            .await
            .expect(StatusCode::NO_CONTENT);
    }
}

#[tokio::test]
async fn locked_node_refuses_changes_with_409() {
    let api = Api::new().await;
    let n = api.node("n1").await;
    let uuid = uuid::Uuid::parse_str(n["uuid"].as_str().unwrap()).unwrap();
    api.store
        .reserve_node(uuid, "other-conductor")
        .await
        .unwrap();
    let msg = format!(
        "Node {uuid} is locked by host other-conductor, please retry after the current operation is completed."
    );
    api.delete("/v1/nodes/n1")
        .await
        .expect_fault(StatusCode::CONFLICT, &msg);
    api.patch(
        "/v1/nodes/n1",
        json!([{"op": "add", "path": "/extra/a", "value": 1}]),
    )
    .await
    .expect_fault(StatusCode::CONFLICT, &msg);
    api.put("/v1/nodes/n1/maintenance", None)
        .await
        .expect_fault(StatusCode::CONFLICT, &msg);
    let stored = api.stored_node("n1").await;
    assert_eq!(stored.reservation.as_deref(), Some("other-conductor"));
    assert!(stored.extra.is_empty() && !stored.maintenance);
    let shown: Value = api.get("/v1/nodes/n1").await.expect(StatusCode::OK).body;
    assert_eq!(shown["reservation"], "other-conductor");
}
