//! Allocations: create, list, show, delete (the store part; processing is the conductor's).

use axum::http::StatusCode;
use controller::store::{AllocationQuery, Store};
use serde_json::json;

use super::{Api, BASE};

#[tokio::test]
async fn create_list_show_delete() {
    let api = Api::new().await;
    let r = api
        .post("/v1/allocations", json!({"resource_class": "baremetal", "traits": ["CUSTOM_GPU"], "name": "alloc1", "extra": {"a": 1}}))
        .await
        .expect(StatusCode::CREATED);
    let a = r.body.clone();
    let uuid = a["uuid"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("{BASE}/v1/allocations/{uuid}").as_str())
    );
    assert_eq!(a["state"], "allocating");
    assert!(a["node_uuid"].is_null());
    assert!(a["last_error"].is_null());
    assert_eq!(a["traits"], json!(["CUSTOM_GPU"]));
    assert_eq!(a["candidate_nodes"], json!([]));
    assert_eq!(a.as_object().unwrap().len(), 13);
    // With no nodes at all the conductor fails it in the background.
    let mut a = a;
    for _ in 0..2000 {
        a = api
            .get(&format!("/v1/allocations/{uuid}"))
            .await
            .expect(StatusCode::OK)
            .body;
        if a["state"] != "allocating" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(a["state"], "error");
    assert_eq!(
        a["last_error"],
        format!(
            "Failed to process allocation {uuid}: no available nodes match the resource class baremetal."
        )
    );
    assert_eq!(
        api.get("/v1/allocations/alloc1")
            .await
            .expect(StatusCode::OK)
            .body,
        a
    );
    let r = api.get("/v1/allocations").await.expect(StatusCode::OK);
    assert_eq!(r.body["allocations"][0], a);
    let r = api
        .get("/v1/allocations/?state=error&resource_class=baremetal")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["allocations"].as_array().unwrap().len(), 1);
    let r = api
        .get("/v1/allocations?state=active")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body, json!({"allocations": []}));

    // Finished allocations can be deleted; deleting frees the node.
    let n = api.node("n1").await;
    let node_uuid = uuid::Uuid::parse_str(n["uuid"].as_str().unwrap()).unwrap();
    let alloc_uuid = uuid::Uuid::parse_str(&uuid).unwrap();
    let mut stored = api.store.get_allocation(&uuid).await.unwrap().unwrap();
    stored.state = "active".into();
    stored.node_uuid = Some(node_uuid);
    api.store.update_allocation(&stored).await.unwrap();
    assert!(api.store.claim_node(node_uuid, alloc_uuid).await.unwrap());
    let r = api
        .get("/v1/allocations?node=n1")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["allocations"][0]["uuid"], uuid.as_str());
    let shown = api.get("/v1/nodes/n1").await.body;
    assert_eq!(shown["allocation_uuid"], uuid.as_str());
    assert_eq!(shown["instance_uuid"], uuid.as_str());

    api.delete("/v1/allocations/alloc1")
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get("/v1/allocations/alloc1").await.expect_fault(
        StatusCode::NOT_FOUND,
        "Allocation alloc1 could not be found.",
    );
    let node = api.stored_node("n1").await;
    assert_eq!(node.allocation_uuid, None);
    assert_eq!(node.instance_uuid, None);
    assert_eq!(node.provision_state, "enroll");
}

#[tokio::test]
async fn allocation_errors_change_nothing() {
    let api = Api::new().await;
    api.post(
        "/v1/allocations",
        json!({"resource_class": "rc", "name": "a1"}),
    )
    .await
    .expect(StatusCode::CREATED);
    let cases = [
        (
            json!({"resource_class": "rc", "name": "a1"}),
            StatusCode::CONFLICT,
            "An allocation with name a1 already exists.",
        ),
        (
            json!({"traits": []}),
            StatusCode::BAD_REQUEST,
            "The resource_class field is mandatory when not backfilling",
        ),
        (
            json!({"resource_class": "rc", "bogus": 1}),
            StatusCode::BAD_REQUEST,
            "Schema error for allocation: Additional properties are not allowed ('bogus' was unexpected)",
        ),
        (
            json!({"resource_class": "rc", "traits": ["lower"]}),
            StatusCode::BAD_REQUEST,
            "Schema error for trait: 'lower' does not match '^CUSTOM_[A-Z0-9_]+$'",
        ),
        (
            json!({"resource_class": "rc", "name": "bad name"}),
            StatusCode::BAD_REQUEST,
            "Cannot create allocation with invalid name 'bad name'",
        ),
        (
            json!({"resource_class": "rc", "candidate_nodes": ["ghost"]}),
            StatusCode::BAD_REQUEST,
            "Candidate node ghost: Node ghost could not be found.",
        ),
        (
            json!("x"),
            StatusCode::BAD_REQUEST,
            "Schema error for allocation: 'x' is not of type 'object'",
        ),
    ];
    for (body, status, fault) in cases {
        api.post("/v1/allocations", body)
            .await
            .expect_fault(status, fault);
    }
    assert_eq!(
        api.store
            .list_allocations(&AllocationQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
    api.delete("/v1/allocations/a1")
        .await
        .expect(StatusCode::NO_CONTENT);
    api.delete("/v1/allocations/a1")
        .await
        .expect_fault(StatusCode::NOT_FOUND, "Allocation a1 could not be found.");
    api.get("/v1/allocations?marker=nope")
        .await
        .expect_fault(StatusCode::BAD_REQUEST, "Expected UUID for marker: nope");
}

#[tokio::test]
async fn candidate_names_are_resolved_to_uuids() {
    let api = Api::new().await;
    let n = api.node("n1").await;
    let a = api
        .post(
            "/v1/allocations",
            json!({"resource_class": "baremetal", "candidate_nodes": ["n1"]}),
        )
        .await
        .expect(StatusCode::CREATED)
        .body;
    assert_eq!(a["candidate_nodes"], json!([n["uuid"]]));
}
