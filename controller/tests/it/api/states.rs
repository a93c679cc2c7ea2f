//! Provision and power state changes, boot device and validate, through the real conductor
//! with `fake-hardware`.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Api, BASE};

#[tokio::test]
async fn provision_202_shows_the_transient_state_at_once() {
    let api = Api::new().await;
    let n = api.node("n1").await;
    let uuid = n["uuid"].as_str().unwrap();
    let r = api
        .put(
            "/v1/nodes/n1/states/provision",
            Some(json!({"target": "manage"})),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert!(r.raw.is_empty());
    assert!(r.header("content-type").is_none());
    assert_eq!(
        r.header("location"),
        Some(format!("{BASE}/v1/nodes/n1/states").as_str())
    );
    // The very next GET sees the transient state with its target, or the end state.
    let now = api.get("/v1/nodes/n1").await.body;
    let state = now["provision_state"].as_str().unwrap();
    match state {
        "verifying" => assert_eq!(now["target_provision_state"], "manageable"),
        "manageable" => {}
        other => panic!("unexpected state {other}"),
    }
    let n = api
        .wait_node("n1", |n| {
            n["provision_state"] == "manageable" && n["target_provision_state"].is_null()
        })
        .await;
    assert!(n["last_error"].is_null());

    let r = api
        .get(&format!("/v1/nodes/{uuid}/states"))
        .await
        .expect(StatusCode::OK);
    let keys: Vec<&String> = r.body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 11);
    assert_eq!(r.body["provision_state"], "manageable");
    assert!(
        r.body["provision_updated_at"]
            .as_str()
            .unwrap()
            .ends_with("+00:00")
    );

    // History records the transitions.
    let h = api
        .get("/v1/nodes/n1/history")
        .await
        .expect(StatusCode::OK)
        .body;
    assert!(!h["history"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn invalid_targets_and_transitions_are_400_and_change_nothing() {
    let api = Api::new().await;
    let n = api.node("n1").await;
    let uuid = n["uuid"].as_str().unwrap();
    let before = api.stored_node("n1").await;
    let cases = [
        (json!({"target": "active"}),
         format!("The requested action \"active\" can not be performed on node \"{uuid}\" while it is in state \"enroll\".")),
        (json!({"target": "bogus"}),
         format!("The requested action \"bogus\" can not be performed on node \"{uuid}\" while it is in state \"enroll\".")),
        (json!({"target": "manage", "bogus": 1}),
         "Schema error for provision: Additional properties are not allowed ('bogus' was unexpected)".to_owned()),
        (json!({}), "Schema error for provision: 'target' is a required property".to_owned()),
        (json!({"target": "manage", "rescue_password": "p"}),
         "\"rescue_password\" is only valid when setting target provision state to rescue".to_owned()),
        (json!({"target": "manage", "configdrive": 5}),
         "Schema error for configdrive: 5 is not of type 'string', 'object'".to_owned()),
    ];
    for (body, fault) in cases {
        api.put("/v1/nodes/n1/states/provision", Some(body))
            .await
            .expect_fault(StatusCode::BAD_REQUEST, &fault);
    }
    assert_eq!(api.stored_node("n1").await, before);
    api.put(
        "/v1/nodes/ghost/states/provision",
        Some(json!({"target": "manage"})),
    )
    .await
    .expect_fault(StatusCode::NOT_FOUND, "Node ghost could not be found.");
    // Verb floors: `deploy` needs 1.73.
    let r = api
        .send(
            axum::http::Method::PUT,
            "/v1/nodes/n1/states/provision",
            Some(json!({"target": "manage"})),
            Some("1.3"),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "names are not resolved below 1.5"
    );
    let r = api
        .send(
            axum::http::Method::PUT,
            &format!("/v1/nodes/{uuid}/states/provision"),
            Some(json!({"target": "manage"})),
            Some("1.3"),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn full_lifecycle_with_config_drive() {
    let api = Api::new().await;
    api.node("n1").await;
    api.provision("n1", json!({"target": "manage"}), "manageable")
        .await;
    api.provision("n1", json!({"target": "provide"}), "available")
        .await;
    api.patch("/v1/nodes/n1", json!([{"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:1/img"}]))
        .await
        .expect(StatusCode::OK);
    let configdrive = json!({"meta_data": {"hostname": "n1.example", "public_keys": {"0": "ssh-ed25519 AAA"}},
                             "user_data": "#cloud-config\n", "network_data": {"links": []}});
    let n = api
        .provision(
            "n1",
            json!({"target": "active", "configdrive": configdrive}),
            "active",
        )
        .await;
    assert_eq!(n["instance_info"]["configdrive"], "******");
    let r = api.delete("/v1/nodes/n1").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    api.provision("n1", json!({"target": "deleted"}), "available")
        .await;
    api.delete("/v1/nodes/n1")
        .await
        .expect(StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn provision_body_may_exceed_the_general_limit() {
    let api = Api::new().await;
    api.node("n1").await;
    api.provision("n1", json!({"target": "manage"}), "manageable")
        .await;
    api.provision("n1", json!({"target": "provide"}), "available")
        .await;
    // A 2 MiB config drive string: over the 1 MiB general cap, under the provision cap.
    let blob = "H".repeat(2 * 1024 * 1024);
    api.patch(
        "/v1/nodes/n1",
        json!([{"op": "add", "path": "/extra/blob", "value": blob.clone()}]),
    )
    .await
    .expect_fault(
        StatusCode::PAYLOAD_TOO_LARGE,
        "The request body is too large.",
    );
    api.provision(
        "n1",
        json!({"target": "active", "configdrive": blob}),
        "active",
    )
    .await;
    let huge = "H".repeat(17 * 1024 * 1024);
    api.put(
        "/v1/nodes/n1/states/provision",
        Some(json!({"target": "rebuild", "configdrive": huge})),
    )
    .await
    .expect(StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn power_changes() {
    let api = Api::new().await;
    api.node("n1").await;
    let r = api
        .put(
            "/v1/nodes/n1/states/power",
            Some(json!({"target": "power on"})),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(
        r.header("location"),
        Some(format!("{BASE}/v1/nodes/n1/states").as_str())
    );
    api.wait_node("n1", |n| {
        n["power_state"] == "power on" && n["target_power_state"].is_null()
    })
    .await;
    api.put(
        "/v1/nodes/n1/states/power",
        Some(json!({"target": "power off", "timeout": 30})),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    api.wait_node("n1", |n| {
        n["power_state"] == "power off" && n["target_power_state"].is_null()
    })
    .await;
    api.put(
        "/v1/nodes/n1/states/power",
        Some(json!({"target": "rebooting"})),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    api.wait_node("n1", |n| {
        n["power_state"] == "power on" && n["target_power_state"].is_null()
    })
    .await;
    let r = api
        .put(
            "/v1/nodes/n1/states/power",
            Some(json!({"target": "sideways"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.fault().starts_with("The requested action \"sideways\""),
        "{}",
        r.fault()
    );
    api.put(
        "/v1/nodes/n1/states/power",
        Some(json!({"target": "power off", "timeout": 0})),
    )
    .await
    .expect_fault(
        StatusCode::BAD_REQUEST,
        "Invalid timeout value 0. The timeout value must be a positive integer.",
    );
    assert_eq!(
        api.stored_node("n1").await.power_state.as_deref(),
        Some("power on")
    );
}

#[tokio::test]
async fn boot_device_and_validate() {
    let api = Api::new().await;
    api.node("n1").await;
    let r = api
        .get("/v1/nodes/n1/management/boot_device/supported")
        .await
        .expect(StatusCode::OK);
    let supported: Vec<String> =
        serde_json::from_value(r.body["supported_boot_devices"].clone()).unwrap();
    assert!(supported.contains(&"pxe".to_owned()), "{supported:?}");
    let r = api
        .put(
            "/v1/nodes/n1/management/boot_device",
            Some(json!({"boot_device": "pxe", "persistent": true})),
        )
        .await
        .expect(StatusCode::NO_CONTENT);
    assert!(r.raw.is_empty());
    let r = api
        .get("/v1/nodes/n1/management/boot_device")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["boot_device"], "pxe");
    assert!(r.body["persistent"].is_boolean());
    api.put(
        "/v1/nodes/n1/management/boot_device",
        Some(json!({"boot_device": "floppy"})),
    )
    .await
    .expect_fault(
        StatusCode::BAD_REQUEST,
        "Invalid boot device floppy specified.",
    );
    if let Some(unsupported) = ["disk", "cdrom", "bios", "safe", "wanboot"]
        .into_iter()
        .find(|d| !supported.iter().any(|s| s == d))
    {
        api.put(
            "/v1/nodes/n1/management/boot_device",
            Some(json!({"boot_device": unsupported})),
        )
        .await
        .expect_fault(
            StatusCode::BAD_REQUEST,
            &format!("Invalid boot device {unsupported} specified."),
        );
    }
    let r = api
        .get("/v1/nodes/n1/validate")
        .await
        .expect(StatusCode::OK);
    for iface in [
        "boot",
        "deploy",
        "management",
        "network",
        "power",
        "bios",
        "console",
        "inspect",
        "raid",
        "rescue",
        "storage",
    ] {
        assert!(r.body[iface]["result"].is_boolean(), "{iface}: {}", r.body);
    }
    assert_eq!(r.body["power"]["result"], true);
}

#[tokio::test]
async fn allocation_is_processed_and_freed() {
    let api = Api::new().await;
    let n = api.node("n1").await;
    api.put("/v1/nodes/n1/traits/CUSTOM_GPU", None)
        .await
        .expect(StatusCode::NO_CONTENT);
    api.provision("n1", json!({"target": "manage"}), "manageable")
        .await;
    api.provision("n1", json!({"target": "provide"}), "available")
        .await;
    api.put(
        "/v1/nodes/n1/states/power",
        Some(json!({"target": "power off"})),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    api.wait_node("n1", |n| n["power_state"] == "power off")
        .await;

    let a = api
        .post(
            "/v1/allocations",
            json!({"resource_class": "baremetal", "traits": ["CUSTOM_GPU"], "name": "alloc1"}),
        )
        .await
        .expect(StatusCode::CREATED)
        .body;
    assert_eq!(a["state"], "allocating");
    let mut done = Value::Null;
    for _ in 0..2000 {
        done = api
            .get("/v1/allocations/alloc1")
            .await
            .expect(StatusCode::OK)
            .body;
        if done["state"] != "allocating" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(done["state"], "active", "{done}");
    assert_eq!(done["node_uuid"], n["uuid"]);
    let node = api.get("/v1/nodes/n1").await.body;
    assert_eq!(node["allocation_uuid"], a["uuid"]);
    assert_eq!(node["instance_uuid"], a["uuid"]);
    let r = api
        .get("/v1/nodes?associated=True")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["nodes"].as_array().unwrap().len(), 1);

    api.delete("/v1/allocations/alloc1")
        .await
        .expect(StatusCode::NO_CONTENT);
    let node = api.get("/v1/nodes/n1").await.body;
    assert!(node["allocation_uuid"].is_null());
    assert!(node["instance_uuid"].is_null());
    assert_eq!(node["provision_state"], "available");

    // No suitable node: the allocation ends in error with Ironic's message.
    let a = api
        .post(
            "/v1/allocations",
            json!({"resource_class": "baremetal", "traits": ["CUSTOM_NOPE"]}),
        )
        .await
        .expect(StatusCode::CREATED)
        .body;
    let url = format!("/v1/allocations/{}", a["uuid"].as_str().unwrap());
    let mut done = Value::Null;
    for _ in 0..2000 {
        done = api.get(&url).await.body;
        if done["state"] != "allocating" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(done["state"], "error");
    assert!(done["last_error"].as_str().unwrap().starts_with(&format!(
        "Failed to process allocation {}",
        a["uuid"].as_str().unwrap()
    )));
}

/// Steps the drivers do not run are refused, never accepted and ignored: `deploy_steps`
/// may only name the deploy's own step at its own priority, `service` needs
/// `service_steps`, and no service step is offered yet.
#[tokio::test]
async fn deploy_and_service_steps_that_would_not_run_are_refused() {
    let api = Api::new().await;
    let uuid = api.node("n1").await["uuid"].as_str().unwrap().to_owned();
    api.provision("n1", json!({"target": "manage"}), "manageable")
        .await;
    api.provision("n1", json!({"target": "provide"}), "available")
        .await;
    api.patch("/v1/nodes/n1", json!([{"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:1/img"}]))
        .await
        .expect(StatusCode::OK);
    let before = api.stored_node("n1").await;
    let refused = [
        (
            json!([{"interface": "deploy", "step": "install_bootloader", "args": {}, "priority": 50}]),
            format!(
                "Failed to validate deploy steps for node {uuid}: Deploy step {{'interface': 'deploy', 'step': 'install_bootloader'}} is not supported by the driver"
            ),
        ),
        (
            json!([{"interface": "deploy", "step": "deploy", "args": {}, "priority": 0}]),
            format!(
                "Failed to validate deploy steps for node {uuid}: deploy step deploy.deploy writes the instance and cannot be disabled"
            ),
        ),
    ];
    for (steps, fault) in refused {
        api.put(
            "/v1/nodes/n1/states/provision",
            Some(json!({"target": "active", "deploy_steps": steps})),
        )
        .await
        .expect_fault(StatusCode::BAD_REQUEST, &fault);
    }
    assert_eq!(
        api.stored_node("n1").await,
        before,
        "a refused deploy changed the node"
    );
    // The deploy's own step at its own priority is what runs anyway.
    let n = api
        .provision(
            "n1",
            json!({"target": "active", "deploy_steps": [{"interface": "deploy", "step": "deploy", "args": {}, "priority": 100}]}),
            "active",
        )
        .await;
    assert!(n["last_error"].is_null(), "{n}");

    let cases = [
        (
            json!({"target": "service"}),
            "\"service_steps\" is required when setting target provision state to service"
                .to_owned(),
        ),
        (
            json!({"target": "service", "service_steps": []}),
            "\"service_steps\" is required when setting target provision state to service"
                .to_owned(),
        ),
        (
            json!({"target": "service", "service_steps": [{"interface": "deploy", "step": "erase_devices"}]}),
            format!(
                "Failed to validate service steps for node {uuid}: Service step {{'interface': 'deploy', 'step': 'erase_devices'}} is not supported by the driver"
            ),
        ),
    ];
    for (body, fault) in cases {
        api.put("/v1/nodes/n1/states/provision", Some(body))
            .await
            .expect_fault(StatusCode::BAD_REQUEST, &fault);
    }
    let n = api.get("/v1/nodes/n1").await.body;
    assert_eq!(n["provision_state"], "active", "{n}");
}
