//! `/v1/drivers` and driver validation on node create.

use axum::http::StatusCode;
use serde_json::json;

use super::{Api, BASE};

#[tokio::test]
async fn driver_list_detail_show_properties() {
    let api = Api::new().await;
    for path in ["/v1/drivers", "/v1/drivers/", "/v1/drivers/?type=dynamic"] {
        let r = api.get(path).await.expect(StatusCode::OK);
        let drivers = r.body["drivers"].as_array().unwrap();
        let fake = drivers
            .iter()
            .find(|d| d["name"] == "fake-hardware")
            .expect("fake-hardware listed");
        assert_eq!(fake["hosts"], json!(["ingot"]));
        assert_eq!(fake["type"], "dynamic");
        assert_eq!(
            fake["links"][0]["href"],
            format!("{BASE}/v1/drivers/fake-hardware")
        );
        assert_eq!(
            fake["properties"][0]["href"],
            format!("{BASE}/v1/drivers/fake-hardware/properties")
        );
        assert!(fake.get("default_power_interface").is_none());
    }
    let r = api
        .get("/v1/drivers?detail=True")
        .await
        .expect(StatusCode::OK);
    let fake = r.body["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "fake-hardware")
        .unwrap()
        .clone();
    for kind in [
        "bios",
        "boot",
        "console",
        "deploy",
        "firmware",
        "inspect",
        "management",
        "network",
        "power",
        "raid",
        "rescue",
        "storage",
        "vendor",
    ] {
        assert!(
            fake[format!("default_{kind}_interface")].is_string(),
            "{kind}"
        );
        assert!(
            fake[format!("enabled_{kind}_interfaces")].is_array(),
            "{kind}"
        );
    }
    let shown = api
        .get("/v1/drivers/fake-hardware")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(shown, fake);
    let props = api
        .get("/v1/drivers/fake-hardware/properties")
        .await
        .expect(StatusCode::OK)
        .body;
    assert!(props.is_object());
    api.get("/v1/drivers?type=classic")
        .await
        .expect(StatusCode::OK);
    api.get("/v1/drivers/nope").await.expect_fault(
        StatusCode::NOT_FOUND,
        "Could not find the requested driver nope.",
    );
}

#[tokio::test]
async fn nodes_are_checked_against_the_registry() {
    let api = Api::new().await;
    api.post("/v1/nodes", json!({"driver": "nope"})).await.expect_fault(
        StatusCode::BAD_REQUEST,
        "No valid host was found. Reason: No conductor service registered which supports driver nope for conductor group \"\".",
    );
    let r = api
        .post(
            "/v1/nodes",
            json!({"driver": "fake-hardware", "power_interface": "ipmitool"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().starts_with("Could not find the following interface in the 'ironic.hardware.interfaces.power' entrypoint: ipmitool."), "{}", r.fault());
    let n = api.node("n1").await;
    // Interfaces show the driver defaults.
    let detail = api.get("/v1/drivers/fake-hardware").await.body;
    assert_eq!(n["power_interface"], detail["default_power_interface"]);
    assert_eq!(n["boot_interface"], detail["default_boot_interface"]);
    assert_eq!(n["conductor"], "ingot");
    api.patch(
        "/v1/nodes/n1",
        json!([{"op": "replace", "path": "/driver", "value": "nope"}]),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    assert_eq!(api.stored_node("n1").await.driver, "fake-hardware");
}
