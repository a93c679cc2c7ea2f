//! Ports: create, list filters, show, patch, delete.

use axum::http::StatusCode;
use controller::store::{PortQuery, Store};
use serde_json::json;

use super::{Api, BASE};

#[tokio::test]
async fn create_show_list_patch_delete() {
    let api = Api::new().await;
    let n1 = api.node("n1").await["uuid"].as_str().unwrap().to_owned();
    let n2 = api.node("n2").await["uuid"].as_str().unwrap().to_owned();
    let r = api
        .post(
            "/v1/ports",
            json!({"address": "52:54:00:AA:00:01", "node_uuid": n1}),
        )
        .await
        .expect(StatusCode::CREATED);
    let p = r.body.clone();
    let uuid = p["uuid"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("{BASE}/v1/ports/{uuid}").as_str())
    );
    assert_eq!(p["address"], "52:54:00:aa:00:01");
    assert_eq!(p["pxe_enabled"], true);
    assert_eq!(p["node_uuid"], n1);
    assert_eq!(p.as_object().unwrap().len(), 18);
    for k in [
        "uuid",
        "created_at",
        "updated_at",
        "address",
        "extra",
        "internal_info",
        "is_smartnic",
        "local_link_connection",
        "physical_network",
        "pxe_enabled",
        "node_uuid",
        "name",
        "description",
        "vendor",
        "category",
        "available_for_dynamic_portgroup",
        "links",
        "portgroup_uuid",
    ] {
        assert!(p.get(k).is_some(), "{k}");
    }
    api.post(
        "/v1/ports",
        json!({"address": "52:54:00:aa:00:02", "node_uuid": n2}),
    )
    .await
    .expect(StatusCode::CREATED);

    let r = api.get("/v1/ports").await.expect(StatusCode::OK);
    assert_eq!(r.body["ports"].as_array().unwrap().len(), 2);
    let mut keys: Vec<&String> = r.body["ports"][0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["address", "links", "uuid"]);
    for path in [
        "/v1/ports/?node=n1",
        "/v1/ports?node_uuid=".to_owned().leak(),
        "/v1/ports/detail?address=52:54:00:aa:00:01",
        "/v1/ports/detail?address=52%3A54%3A00%3AAA%3A00%3A01",
    ] {
        let path = if path.ends_with("node_uuid=") {
            format!("{path}{n1}")
        } else {
            path.to_owned()
        };
        let r = api.get(&path).await.expect(StatusCode::OK);
        let ports = r.body["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1, "{path}");
        assert_eq!(ports[0]["uuid"], uuid.as_str());
    }
    let r = api
        .get("/v1/ports/detail?node=n2")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["ports"][0]["address"], "52:54:00:aa:00:02");
    assert_eq!(r.body["ports"][0].as_object().unwrap().len(), 18);
    let r = api.get("/v1/nodes/n1/ports").await.expect(StatusCode::OK);
    assert_eq!(r.body["ports"].as_array().unwrap().len(), 1);
    let r = api.get("/v1/ports?limit=1").await.expect(StatusCode::OK);
    assert_eq!(
        r.body["next"],
        format!(
            "{BASE}/v1/ports?sort_key=id&sort_dir=asc&fields=uuid,address&limit=1&marker={uuid}"
        )
    );

    let shown = api
        .get(&format!("/v1/ports/{uuid}"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(shown, p);

    let r = api
        .patch(
            &format!("/v1/ports/{uuid}"),
            json!([{"op": "add", "path": "/extra/vif", "value": "x"},
                   {"op": "add", "path": "/physical_network", "value": "p"},
                   {"op": "replace", "path": "/node_uuid", "value": n2}]),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["extra"], json!({"vif": "x"}));
    assert_eq!(r.body["physical_network"], "p");
    assert_eq!(r.body["node_uuid"], n2);
    let r = api
        .patch(
            &format!("/v1/ports/{uuid}"),
            json!([{"op": "remove", "path": "/physical_network"}]),
        )
        .await
        .expect(StatusCode::OK);
    assert!(r.body["physical_network"].is_null());

    api.delete(&format!("/v1/ports/{uuid}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&format!("/v1/ports/{uuid}")).await.expect_fault(
        StatusCode::NOT_FOUND,
        &format!("Port {uuid} could not be found."),
    );
}

#[tokio::test]
async fn port_errors_change_nothing() {
    let api = Api::new().await;
    let n1 = api.node("n1").await["uuid"].as_str().unwrap().to_owned();
    let p = api
        .post(
            "/v1/ports",
            json!({"address": "52:54:00:00:00:01", "node_uuid": n1}),
        )
        .await
        .expect(StatusCode::CREATED)
        .body;
    let ghost = uuid::Uuid::new_v4();
    let cases = [
        (
            json!({"address": "52:54:00:00:00:01", "node_uuid": n1}),
            StatusCode::CONFLICT,
            "A port with MAC address 52:54:00:00:00:01 already exists.".to_owned(),
        ),
        (
            json!({"address": "52:54:00:00:00:09", "node_uuid": "n1"}),
            StatusCode::BAD_REQUEST,
            "Expected UUID for node_uuid: n1".to_owned(),
        ),
        (
            json!({"address": "52:54:00:00:00:09", "node_uuid": ghost}),
            StatusCode::BAD_REQUEST,
            format!("Node {ghost} could not be found."),
        ),
        (
            json!({"address": "not-a-mac", "node_uuid": n1}),
            StatusCode::BAD_REQUEST,
            "Expected valid MAC address for address: not-a-mac".to_owned(),
        ),
        (
            json!({"address": "52:54:00:00:00:09", "node_uuid": n1, "bogus": 1}),
            StatusCode::BAD_REQUEST,
            "Schema error for port: Additional properties are not allowed ('bogus' was unexpected)"
                .to_owned(),
        ),
        (
            json!({"node_uuid": n1}),
            StatusCode::BAD_REQUEST,
            "Schema error for port: 'address' is a required property".to_owned(),
        ),
        (
            json!({"address": "52:54:00:00:00:09", "node_uuid": n1, "pxe_enabled": "yes"}),
            StatusCode::BAD_REQUEST,
            "Schema error for port: 'yes' is not of type 'boolean'".to_owned(),
        ),
    ];
    for (body, status, fault) in cases {
        api.post("/v1/ports", body)
            .await
            .expect_fault(status, &fault);
    }
    let url = format!("/v1/ports/{}", p["uuid"].as_str().unwrap());
    api.patch(
        &url,
        json!([{"op": "replace", "path": "/address", "value": "zz"}]),
    )
    .await
    .expect_fault(
        StatusCode::BAD_REQUEST,
        "Expected valid MAC address for address: zz",
    );
    api.patch(
        &url,
        json!([{"op": "replace", "path": "/node_uuid", "value": ghost.to_string()}]),
    )
    .await
    .expect_fault(
        StatusCode::BAD_REQUEST,
        &format!("Node {ghost} could not be found."),
    );
    api.patch(
        &url,
        json!([{"op": "replace", "path": "/internal_info", "value": {}}]),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    let ports = api.store.list_ports(&PortQuery::default()).await.unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].address, "52:54:00:00:00:01");
    assert_eq!(ports[0].node_uuid.to_string(), n1);
    api.get("/v1/ports?node=ghost")
        .await
        .expect_fault(StatusCode::NOT_FOUND, "Node ghost could not be found.");
    api.get("/v1/ports?address=bad").await.expect_fault(
        StatusCode::BAD_REQUEST,
        "Expected valid MAC address for address: bad",
    );
    api.get("/v1/ports/not-a-uuid")
        .await
        .expect_fault(StatusCode::NOT_FOUND, "Port not-a-uuid could not be found.");
}
