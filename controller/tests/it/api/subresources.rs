//! Maintenance, traits, history and inventory.

use axum::http::StatusCode;
use chrono::Utc;
use controller::model::HistoryEvent;
use controller::store::Store;
use serde_json::json;

use super::{Api, BASE};

#[tokio::test]
async fn maintenance_set_and_unset() {
    let api = Api::new().await;
    api.node("n1").await;
    let r = api
        .put(
            "/v1/nodes/n1/maintenance",
            Some(json!({"reason": "fan broken"})),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert!(r.raw.is_empty());
    assert!(r.header("location").is_none());
    let n = api.get("/v1/nodes/n1").await.body;
    assert_eq!(n["maintenance"], true);
    assert_eq!(n["maintenance_reason"], "fan broken");
    api.put("/v1/nodes/n1/maintenance", Some(json!({"reason": null})))
        .await
        .expect(StatusCode::ACCEPTED);
    assert!(api.get("/v1/nodes/n1").await.body["maintenance_reason"].is_null());
    api.delete("/v1/nodes/n1/maintenance")
        .await
        .expect(StatusCode::ACCEPTED);
    let n = api.get("/v1/nodes/n1").await.body;
    assert_eq!(n["maintenance"], false);
    assert!(n["maintenance_reason"].is_null());
    api.put("/v1/nodes/n1/maintenance", Some(json!({"reason": 5})))
        .await
        .expect_fault(
            StatusCode::BAD_REQUEST,
            "Schema error for maintenance: 5 is not of type 'string', 'null'",
        );
    assert!(!api.stored_node("n1").await.maintenance);
}

#[tokio::test]
async fn traits() {
    let api = Api::new().await;
    api.node("n1").await;
    let r = api
        .put("/v1/nodes/n1/traits/CUSTOM_GPU", None)
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(
        r.header("location"),
        Some(format!("{BASE}/v1/nodes/n1/traits/CUSTOM_GPU").as_str())
    );
    api.put("/v1/nodes/n1/traits/HW_CPU_X86_AVX2", None)
        .await
        .expect(StatusCode::NO_CONTENT);
    api.put("/v1/nodes/n1/traits/CUSTOM_GPU", None)
        .await
        .expect(StatusCode::NO_CONTENT);
    let r = api.get("/v1/nodes/n1/traits").await.expect(StatusCode::OK);
    assert_eq!(r.body, json!({"traits": ["CUSTOM_GPU", "HW_CPU_X86_AVX2"]}));
    assert_eq!(
        api.get("/v1/nodes/n1").await.body["traits"],
        json!(["CUSTOM_GPU", "HW_CPU_X86_AVX2"])
    );
    api.put("/v1/nodes/n1/traits/lower_case", None)
        .await
        .expect_fault(
            StatusCode::BAD_REQUEST,
            "Schema error for trait: 'lower_case' does not match '^CUSTOM_[A-Z0-9_]+$'",
        );
    api.delete("/v1/nodes/n1/traits/CUSTOM_GPU")
        .await
        .expect(StatusCode::NO_CONTENT);
    let r = api
        .delete("/v1/nodes/n1/traits/CUSTOM_GPU")
        .await
        .expect(StatusCode::NOT_FOUND);
    assert!(r.fault().contains("doesn't have a trait CUSTOM_GPU"));
    api.put(
        "/v1/nodes/n1/traits",
        Some(json!({"traits": ["CUSTOM_A", "CUSTOM_B"]})),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    assert_eq!(
        api.get("/v1/nodes/n1/traits").await.body,
        json!({"traits": ["CUSTOM_A", "CUSTOM_B"]})
    );
    api.put(
        "/v1/nodes/n1/traits",
        Some(json!({"traits": ["CUSTOM_C", "bad"]})),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    assert_eq!(api.stored_node("n1").await.traits, ["CUSTOM_A", "CUSTOM_B"]);
    api.delete("/v1/nodes/n1/traits")
        .await
        .expect(StatusCode::NO_CONTENT);
    assert!(api.stored_node("n1").await.traits.is_empty());
}

#[tokio::test]
async fn history_and_inventory() {
    let api = Api::new().await;
    let n = api.node("n1").await;
    let node_uuid = uuid::Uuid::parse_str(n["uuid"].as_str().unwrap()).unwrap();
    assert_eq!(
        api.get("/v1/nodes/n1/history")
            .await
            .expect(StatusCode::OK)
            .body,
        json!({"history": []})
    );
    let event = HistoryEvent {
        uuid: uuid::Uuid::new_v4(),
        node_uuid,
        created_at: Utc::now(),
        severity: "ERROR".into(),
        event_type: "cleaning".into(),
        event: "wipe failed on /dev/sda".into(),
        conductor: Some("ingot".into()),
        user: None,
    };
    api.store.add_history(&event).await.unwrap();
    let r = api.get("/v1/nodes/n1/history").await.expect(StatusCode::OK);
    let item = &r.body["history"][0];
    assert_eq!(item["uuid"], event.uuid.to_string());
    assert_eq!(item["severity"], "ERROR");
    assert_eq!(item["event_type"], "cleaning");
    assert_eq!(item["event"], "wipe failed on /dev/sda");
    assert_eq!(item["conductor"], "ingot");
    assert!(item["user"].is_null());
    assert_eq!(item.as_object().unwrap().len(), 7);
    let one = api
        .get(&format!("/v1/nodes/n1/history/{}", event.uuid))
        .await
        .expect(StatusCode::OK);
    assert_eq!(one.body, *item);
    let other = uuid::Uuid::new_v4();
    api.get(&format!("/v1/nodes/n1/history/{other}"))
        .await
        .expect_fault(
            StatusCode::NOT_FOUND,
            &format!("Node history record {other} could not be found."),
        );

    api.get("/v1/nodes/n1/inventory").await.expect_fault(
        StatusCode::NOT_FOUND,
        &format!("Node inventory for node {node_uuid} could not be found."),
    );
    let inv =
        json!({"cpu": {"count": 4, "architecture": "x86_64"}, "memory": {"physical_mb": 4096}});
    api.store.put_inventory(node_uuid, &inv).await.unwrap();
    let r = api
        .get("/v1/nodes/n1/inventory")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body, json!({"inventory": inv, "plugin_data": {}}));
}
