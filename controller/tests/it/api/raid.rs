//! `PUT /v1/nodes/{node}/states/raid` (1.12) and the nodes' `target_raid_config` and
//! `raid_config`: each RAID interface's answer (`fake`, `no-raid`, `agent`), versions,
//! policy, and where the fields show.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::Api;
use super::console::{call, console_api, request};

fn hardware_raid() -> Value {
    json!({"logical_disks": [{"raid_level": "5", "size_gb": 100, "is_root_volume": true}]})
}

fn software_raid() -> Value {
    json!({"logical_disks": [
        {"raid_level": "1", "size_gb": 20, "controller": "software", "volume_name": "root",
         "physical_disks": [{"name": "/dev/vda"}, {"serial": "S2"}]},
        {"raid_level": "0", "size_gb": "MAX", "controller": "software",
         "physical_disks": [{"name": "/dev/vda"}, {"serial": "S2"}]}]})
}

#[tokio::test]
async fn fake_raid_stores_a_valid_target_and_every_view_shows_it() {
    let api = Api::new().await;
    let n = api.node("n1").await;
    assert_eq!(n["target_raid_config"], json!({}));
    assert_eq!(n["raid_config"], json!({}));
    assert_eq!(n["raid_interface"], "fake");
    let r = api
        .put("/v1/nodes/n1/states/raid", Some(hardware_raid()))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert!(r.raw.is_empty());
    let shown = api.get("/v1/nodes/n1").await.expect(StatusCode::OK).body;
    assert_eq!(shown["target_raid_config"], hardware_raid());
    let states = api
        .get("/v1/nodes/n1/states")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(states["target_raid_config"], hardware_raid());
    assert_eq!(states["raid_config"], json!({}));
    let fields = api
        .get("/v1/nodes/n1?fields=target_raid_config,raid_config")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(fields["target_raid_config"], hardware_raid());
    let detail = api
        .get("/v1/nodes/detail")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(detail["nodes"][0]["target_raid_config"], hardware_raid());
    assert_eq!(
        api.stored_node("n1").await.target_raid_config,
        *hardware_raid().as_object().unwrap()
    );

    // `{}` clears it.
    api.put("/v1/nodes/n1/states/raid", Some(json!({})))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(
        api.get("/v1/nodes/n1").await.body["target_raid_config"],
        json!({})
    );
}

#[tokio::test]
async fn invalid_targets_versions_and_patches_are_refused() {
    let api = Api::new().await;
    let n = api.node("n1").await;
    let uuid = n["uuid"].as_str().unwrap();
    let cases = [
        (
            json!({"logical_disks": []}),
            "RAID config validation error: [] is too short",
        ),
        (
            json!({"logical_disks": [{"raid_level": "1"}]}),
            "RAID config validation error: 'size_gb' is a required property",
        ),
        (
            json!({"logical_disks": [{"raid_level": "4", "size_gb": 1}]}),
            "RAID config validation error: '4' is not one of ['JBOD', '0', '1', '2', '5', '6', '1+0', '5+0', '6+0']",
        ),
        (
            json!({"raid": 1}),
            "RAID config validation error: Additional properties are not allowed ('raid' was unexpected)",
        ),
        (
            json!({"logical_disks": [
            {"raid_level": "1", "size_gb": 1, "is_root_volume": true},
            {"raid_level": "1", "size_gb": 1, "is_root_volume": true}]}),
            "Raid config cannot have more than one root volume. 2 root volumes were specified",
        ),
        (
            json!([1]),
            "Schema error for target_raid_config: [1] is not of type 'object'",
        ),
    ];
    for (body, fault) in cases {
        api.put("/v1/nodes/n1/states/raid", Some(body))
            .await
            .expect_fault(StatusCode::BAD_REQUEST, fault);
    }
    assert_eq!(api.stored_node("n1").await.target_raid_config.len(), 0);
    // 1.12 introduced it: 406 below (after the node was found, as Ironic).
    let r = api
        .send(
            Method::PUT,
            "/v1/nodes/n1/states/raid",
            Some(hardware_raid()),
            Some("1.11"),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
    api.send(
        Method::PUT,
        "/v1/nodes/n1/states/raid",
        Some(hardware_raid()),
        Some("1.12"),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    api.put("/v1/nodes/nope/states/raid", Some(hardware_raid()))
        .await
        .expect_fault(StatusCode::NOT_FOUND, "Node nope could not be found.");
    // Not settable by PATCH (Ironic's refusal), nor `raid_config`.
    for field in ["target_raid_config", "raid_config"] {
        let r = api
            .patch(
                &format!("/v1/nodes/{uuid}"),
                json!([{"op": "add", "path": format!("/{field}"), "value": {}}]),
            )
            .await
            .expect(StatusCode::BAD_REQUEST);
        assert!(
            r.fault().starts_with(&format!(
                "Cannot patch /{field}. Only the following can be updated:"
            )),
            "{}",
            r.fault()
        );
    }
    // A body over the bound is refused before it is parsed.
    let big = json!({"logical_disks": [{"raid_level": "1", "size_gb": 1, "volume_name": "x".repeat(70_000)}]});
    let r = api.put("/v1/nodes/n1/states/raid", Some(big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn no_raid_refuses_and_agent_raid_takes_software_raid_only() {
    let api = Api::new().await;
    api.post(
        "/v1/nodes",
        json!({"driver": "ipmi", "name": "bm", "driver_info": {"ipmi_address": "10.0.0.9"}}),
    )
    .await
    .expect(StatusCode::CREATED);
    let shown = api.get("/v1/nodes/bm").await.body;
    assert_eq!(shown["raid_interface"], "no-raid");
    api.put("/v1/nodes/bm/states/raid", Some(software_raid()))
        .await
        .expect_fault(
            StatusCode::NOT_FOUND,
            "Driver ipmi does not support raid (disabled or not implemented).",
        );
    // Clearing is taken by every interface (Ironic validates only a non-empty target).
    api.put("/v1/nodes/bm/states/raid", Some(json!({})))
        .await
        .expect(StatusCode::NO_CONTENT);

    api.patch(
        "/v1/nodes/bm",
        json!([{"op": "replace", "path": "/raid_interface", "value": "agent"}]),
    )
    .await
    .expect(StatusCode::OK);
    let refused = [
        (
            hardware_raid(),
            "every logical disk needs \"controller\": \"software\"",
        ),
        (
            json!({"logical_disks": [
                {"raid_level": "1", "size_gb": 10, "controller": "software"},
                {"raid_level": "1+0", "size_gb": "MAX", "controller": "software"}]}),
            "RAID level \"1+0\" is not supported by Ingot's software RAID",
        ),
        (
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 0, "controller": "software"}]}),
            "size_gb 0 is refused",
        ),
        (
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 10, "controller": "software",
                                      "physical_disks": ["/dev/vda", "/dev/vdb"]}]}),
            "physical_disks of software RAID are root device hints",
        ),
        (
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 10, "controller": "software",
                                      "physical_disks": [{"name": "/dev/vda"}, {"colour": "red"}]}]}),
            "invalid root device hints",
        ),
        (
            json!({"logical_disks": [{"raid_level": "1", "size_gb": "max"}]}),
            "RAID config validation error",
        ),
    ];
    for (body, part) in refused {
        let r = api
            .put("/v1/nodes/bm/states/raid", Some(body.clone()))
            .await
            .expect(StatusCode::BAD_REQUEST);
        assert!(r.fault().contains(part), "{body}: {}", r.fault());
    }
    api.put("/v1/nodes/bm/states/raid", Some(software_raid()))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(
        api.get("/v1/nodes/bm").await.body["target_raid_config"],
        software_raid()
    );
    let v = api
        .get("/v1/nodes/bm/validate")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(v["raid"], json!({"result": true}));
    // Back to no-raid, the stored target no longer fits: `validate` says so.
    api.patch(
        "/v1/nodes/bm",
        json!([{"op": "replace", "path": "/raid_interface", "value": "no-raid"}]),
    )
    .await
    .expect(StatusCode::OK);
    let v = api
        .get("/v1/nodes/bm/validate")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(v["raid"]["result"], false);
}

#[tokio::test]
async fn set_raid_state_policy_is_system_member_or_owner_member() {
    let (app, _store, _dir) = console_api(4).await;
    let create = |name: &str, owner: &str, lessee: &str| {
        request(
            Method::POST,
            "/v1/nodes",
            Some("admin"),
            Some(
                json!({"driver": "fake-hardware", "name": name, "owner": owner, "lessee": lessee}),
            ),
        )
    };
    assert_eq!(
        call(&app, create("owned", "p1", "p9")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        call(&app, create("leased", "p2", "p1")).await.0,
        StatusCode::CREATED
    );
    let put = |node: &str, user: &str| {
        request(
            Method::PUT,
            &format!("/v1/nodes/{node}/states/raid"),
            Some(user),
            Some(hardware_raid()),
        )
    };
    assert_eq!(
        call(&app, put("owned", "ro")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, put("owned", "member")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&app, put("owned", "p1")).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = call(&app, put("leased", "p1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.to_string().contains("baremetal:node:set_raid_state"),
        "{body}"
    );
}
