//! JSON Patch on nodes (contract section 6).

use axum::http::StatusCode;
use serde_json::json;

use super::Api;

#[tokio::test]
async fn cli_style_patches() {
    let api = Api::new().await;
    api.node("n1").await;
    let r = api
        .patch(
            "/v1/nodes/n1",
            json!([
                {"op": "add", "path": "/properties/memory_mb", "value": "4096"},
                {"op": "add", "path": "/extra/a", "value": {"b": 1}},
                {"op": "add", "path": "/extra/a/c", "value": 2},
                {"op": "add", "path": "/instance_info/image_source", "value": "http://img"},
                {"op": "add", "path": "/driver_info/ipmi_username", "value": "admin"},
                {"op": "add", "path": "/description", "value": "rack 1"},
                {"op": "add", "path": "/name", "value": "n1b"},
                {"op": "replace", "path": "/resource_class", "value": "gpu"}
            ]),
        )
        .await
        .expect(StatusCode::OK);
    let n = &r.body;
    assert_eq!(n["properties"]["memory_mb"], "4096");
    assert_eq!(n["properties"]["cpus"], 8);
    assert_eq!(n["extra"], json!({"a": {"b": 1, "c": 2}}));
    assert_eq!(n["instance_info"]["image_source"], "http://img");
    assert_eq!(n["driver_info"]["ipmi_username"], "admin");
    assert_eq!(n["driver_info"]["ipmi_password"], "******");
    assert_eq!(n["description"], "rack 1");
    assert_eq!(n["name"], "n1b");
    assert_eq!(n["resource_class"], "gpu");
    assert!(n["updated_at"].is_string());
    assert_eq!(n.as_object().unwrap().len(), 69);
    // The stored secret is untouched by the masked rendering.
    assert_eq!(
        api.stored_node("n1b").await.driver_info["ipmi_password"],
        "secret"
    );
    assert!(api.stored_node("n1b").await.reservation.is_none());

    let n = api
        .patch(
            "/v1/nodes/n1b",
            json!([
                {"op": "remove", "path": "/extra/a"},
                {"op": "remove", "path": "/description"},
                {"op": "add", "path": "/extra", "value": {"z": true}},
                {"op": "remove", "path": "/name"}
            ]),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(n["extra"], json!({"z": true}));
    assert!(n["description"].is_null());
    assert!(n["name"].is_null());
    // Reachable only by UUID now.
    api.get("/v1/nodes/n1b").await.expect(StatusCode::NOT_FOUND);
    api.get(&format!("/v1/nodes/{}", n["uuid"].as_str().unwrap()))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn maintenance_and_flags_by_patch() {
    let api = Api::new().await;
    api.node("n1").await;
    let n = api
        .patch(
            "/v1/nodes/n1",
            json!([{"op": "replace", "path": "/maintenance", "value": true}]),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(n["maintenance"], true);
    api.patch(
        "/v1/nodes/n1",
        json!([{"op": "add", "path": "/protected", "value": true}]),
    )
    .await
    .expect(StatusCode::CONFLICT);
    api.set_state("n1", "active").await;
    let n = api
        .patch("/v1/nodes/n1", json!([{"op": "add", "path": "/protected", "value": true},
                                       {"op": "add", "path": "/protected_reason", "value": "prod"}]))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(n["protected"], true);
    assert_eq!(n["protected_reason"], "prod");
    api.patch(
        "/v1/nodes/n1",
        json!([{"op": "add", "path": "/retired_reason", "value": "x"}]),
    )
    .await
    .expect_fault(
        StatusCode::BAD_REQUEST,
        "The retired_reason field can only be set when retired is True",
    );
}

#[tokio::test]
async fn rejected_patches_change_nothing() {
    let api = Api::new().await;
    let original = api.node("n1").await;
    api.node("n2").await;
    let uuid = original["uuid"].as_str().unwrap();
    let before = api.stored_node("n1").await;
    let allowed = "automated_clean, bios_interface, boot_interface, chassis_uuid, conductor_group, console_interface, deploy_interface, description, disable_power_off, driver, driver_info, extra, firmware_interface, inspect_interface, instance_info, instance_name, instance_uuid, lessee, maintenance, management_interface, name, network_data, network_interface, owner, parent_node, power_interface, properties, protected, protected_reason, raid_interface, rescue_interface, resource_class, retired, retired_reason, shard, storage_interface, vendor_interface";
    let cases = [
        (json!([{"op": "remove", "path": "/extra/nonexist"}]), StatusCode::BAD_REQUEST,
         "Couldn't apply patch '[{'op': 'remove', 'path': '/extra/nonexist'}]'. Reason: can't remove a non-existent object 'nonexist'".to_owned()),
        (json!([{"op": "replace", "path": "/extra/nonexist", "value": 1}]), StatusCode::BAD_REQUEST,
         "Couldn't apply patch '[{'op': 'replace', 'path': '/extra/nonexist', 'value': 1}]'. Reason: can't replace a non-existent object 'nonexist'".to_owned()),
        (json!([{"op": "replace", "path": "/provision_state", "value": "active"}]), StatusCode::BAD_REQUEST,
         format!("Cannot patch /provision_state. Only the following can be updated: {allowed}")),
        (json!([{"op": "add", "path": "/uuid", "value": "x"}]), StatusCode::BAD_REQUEST,
         format!("Cannot patch /uuid. Only the following can be updated: {allowed}")),
        (json!([{"op": "test", "path": "/extra", "value": {}}]), StatusCode::BAD_REQUEST,
         "Schema error for patch: 'test' is not one of ['add', 'replace', 'remove']".to_owned()),
        (json!([{"op": "move", "from": "/extra", "path": "/extra"}]), StatusCode::BAD_REQUEST,
         "Schema error for patch: Additional properties are not allowed ('from' was unexpected)".to_owned()),
        (json!({"op": "add", "path": "/extra/a", "value": 1}), StatusCode::BAD_REQUEST,
         "Schema error for patch: {'op': 'add', 'path': '/extra/a', 'value': 1} is not of type 'array'".to_owned()),
        (json!([{"op": "add", "path": "/extra", "value": [1]}]), StatusCode::BAD_REQUEST,
         "Schema error for node: [1] is not of type 'object'".to_owned()),
        (json!([{"op": "add", "path": "/name", "value": "n2"}]), StatusCode::CONFLICT,
         "A node with name n2 already exists.".to_owned()),
        (json!([{"op": "add", "path": "/name", "value": "bad name!"}]), StatusCode::BAD_REQUEST,
         format!("Node {uuid}: Cannot change name to invalid name 'bad name!'")),
        (json!([{"op": "add", "path": "/extra/a", "value": 1}, {"op": "add", "path": "/maintenance", "value": "yes"}]),
         StatusCode::BAD_REQUEST, "Schema error for node: 'yes' is not of type 'boolean'".to_owned()),
        (json!([{"op": "add", "path": "/instance_uuid", "value": "nope"}]), StatusCode::BAD_REQUEST,
         "Expected UUID for instance_uuid: nope".to_owned()),
    ];
    for (body, status, fault) in cases {
        api.patch("/v1/nodes/n1", body)
            .await
            .expect_fault(status, &fault);
    }
    let after = api.stored_node("n1").await;
    assert_eq!(after, before);
    api.patch("/v1/nodes/nope", json!([]))
        .await
        .expect_fault(StatusCode::NOT_FOUND, "Node nope could not be found.");
}

#[tokio::test]
async fn parent_node_is_resolved_and_children_hidden() {
    let api = Api::new().await;
    let parent = api.node("parent").await;
    api.node("child").await;
    let n = api
        .patch(
            "/v1/nodes/child",
            json!([{"op": "add", "path": "/parent_node", "value": "parent"}]),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(n["parent_node"], parent["uuid"]);
    let r = api.get("/v1/nodes").await.expect(StatusCode::OK);
    assert_eq!(r.body["nodes"].as_array().unwrap().len(), 1);
    let r = api
        .get("/v1/nodes?include_children=True")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["nodes"].as_array().unwrap().len(), 2);
    let r = api
        .get("/v1/nodes?parent_node=parent")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["nodes"][0]["name"], "child");
    api.patch(
        "/v1/nodes/child",
        json!([{"op": "add", "path": "/parent_node", "value": "ghost"}]),
    )
    .await
    .expect_fault(StatusCode::BAD_REQUEST, "Node ghost could not be found.");
}

/// A PATCH that walks into a secret gets an error naming the path, never the stored value
/// (issue 12: "Document ''S3cretPW'' does not support indexing").
#[tokio::test]
async fn patch_errors_never_show_stored_secrets() {
    let api = Api::new().await;
    api.node("n1").await;
    api.patch(
        "/v1/nodes/n1",
        json!([
            {"op": "add", "path": "/instance_info/configdrive", "value": "#cloud-config\npassword: U5erData"},
            {"op": "add", "path": "/driver_info/ipmi_hex_kg_key", "value": "0011223344"}
        ]),
    )
    .await
    .expect(StatusCode::OK);
    for path in [
        "/driver_info/ipmi_password/x",
        "/driver_info/nope/x",
        "/instance_info/configdrive/nope/x",
        "/driver_info/ipmi_hex_kg_key/x",
    ] {
        let r = api
            .patch(
                "/v1/nodes/n1",
                json!([{"op": "add", "path": path, "value": "N3wS3cret"}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        let text = String::from_utf8_lossy(&r.raw).to_string();
        for secret in [
            "secret\\\"",
            "'secret'",
            "U5erData",
            "0011223344",
            "10.0.0.1",
        ] {
            assert!(!text.contains(secret), "{path}: {secret} in {text}");
        }
    }
    let shown = api.get("/v1/nodes/n1").await.body;
    assert_eq!(shown["driver_info"]["ipmi_hex_kg_key"], "******");
}
