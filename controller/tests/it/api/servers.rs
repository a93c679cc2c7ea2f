//! `/v1/ingot/{flavors,images,servers}` through the router on a real SQLite store with the
//! `fake-hardware` type: a server by flavor is deployed with the image and a config drive
//! (never shown), a flavor no node meets ends in `error` with nothing deployed, delete
//! undeploys, and bodies are checked.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use controller::api::ApiSettings;
use controller::flavors::Flavor;
use controller::images::ImageStore;
use controller::store::Store;
use serde_json::{Value, json};

use super::{Api, HOST};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ user@host";

fn flavors() -> Vec<Flavor> {
    vec![
        Flavor {
            name: "small".into(),
            resource_class: Some("baremetal".into()),
            cpus: Some(2),
            memory_mb: Some(2048),
            cpu_arch: Some("x86_64".into()),
            ..Flavor::default()
        },
        Flavor {
            name: "huge".into(),
            cpus: Some(64),
            memory_mb: Some(1 << 20),
            ..Flavor::default()
        },
    ]
}

/// An API with the flavors above and an image store holding `debian-12` (its record only:
/// the fake deploy downloads nothing).
async fn api(images: &tempfile::TempDir) -> Api {
    let dir = images.path().join("images/debian-12");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("image.json"),
        json!({"name": "debian-12", "source_format": "qcow2", "size": 2147483648u64,
               "raw_sha256": "ab", "stored_size": 400000000, "sha256": "cd",
               "zstd_level": 3, "created_at": "2026-12-01T00:00:00Z"})
        .to_string(),
    )
    .unwrap();
    Api::with_settings(ApiSettings {
        flavors: flavors(),
        images: Some(ImageStore::new(images.path())),
        ..ApiSettings::default()
    })
    .await
}

/// An `available`, powered fake node with inspected properties.
async fn available_node(api: &Api, name: &str) {
    api.node(name).await;
    api.provision(name, json!({"target": "manage"}), "manageable")
        .await;
    api.provision(name, json!({"target": "provide"}), "available")
        .await;
    api.put(
        &format!("/v1/nodes/{name}/states/power"),
        Some(json!({"target": "power off"})),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    api.wait_node(name, |n| n["power_state"] == "power off")
        .await;
}

async fn wait_server(api: &Api, uuid: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..2000 {
        let s = api
            .get(&format!("/v1/ingot/servers/{uuid}"))
            .await
            .expect(StatusCode::OK)
            .body;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("server {uuid} did not reach the expected state");
}

#[tokio::test]
async fn flavors_and_images_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(&dir).await;
    let f = api
        .get("/v1/ingot/flavors")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(
        f["flavors"][0],
        json!({"name": "small", "resource_class": "baremetal", "traits": [], "cpus": 2,
               "memory_mb": 2048, "local_gb": null, "cpu_arch": "x86_64"})
    );
    assert_eq!(f["flavors"][1]["name"], "huge");
    let i = api
        .get("/v1/ingot/images")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(i["images"][0]["name"], "debian-12");
    assert_eq!(i["images"][0]["size"], 2147483648u64);
    assert_eq!(i["images"][0]["sha256"], "cd");
}

#[tokio::test]
async fn a_server_by_flavor_is_deployed_with_its_keys_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(&dir).await;
    available_node(&api, "n1").await;

    // No node meets "huge": error with the reason, nothing deployed, the node stays free.
    let r = api
        .post(
            "/v1/ingot/servers",
            json!({"flavor": "huge", "image": "debian-12", "ssh_keys": [KEY]}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.body["state"], "allocating");
    let huge = r.body["uuid"].as_str().unwrap().to_owned();
    let s = wait_server(&api, &huge, |s| s["state"] != "allocating").await;
    assert_eq!(s["state"], "error", "{s}");
    let err = s["last_error"].as_str().unwrap();
    assert!(
        err.contains("meets the minimum properties cpus >= 64") && err.contains("n1: cpus 8 < 64"),
        "{err}"
    );
    assert!(s["node_uuid"].is_null());
    let n1 = api.get("/v1/nodes/n1").await.expect(StatusCode::OK).body;
    assert_eq!(n1["provision_state"], "available");
    assert!(n1["allocation_uuid"].is_null() && n1["instance_info"] == json!({}));
    api.delete(&format!("/v1/ingot/servers/{huge}"))
        .await
        .expect(StatusCode::ACCEPTED);
    api.get(&format!("/v1/ingot/servers/{huge}"))
        .await
        .expect(StatusCode::NOT_FOUND);

    // "small" fits n1: it is claimed and deployed with the image and a config drive.
    let r = api
        .post(
            "/v1/ingot/servers",
            json!({"name": "web-1", "flavor": "small", "image": "debian-12",
                   "ssh_keys": [KEY], "user_data": "#cloud-config\nSECRET-USER-DATA\n"}),
        )
        .await
        .expect(StatusCode::CREATED);
    let uuid = r.body["uuid"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("http://{HOST}/v1/ingot/servers/{uuid}").as_str())
    );
    assert!(!r.raw.windows(6).any(|w| w == b"SECRET"));
    let s = wait_server(&api, &uuid, |s| s["state"] == "active").await;
    assert_eq!(s["name"], "web-1");
    assert_eq!(s["flavor"], "small");
    assert_eq!(s["image"], "debian-12");
    assert_eq!(s["node_name"], "n1");
    assert_eq!(s["provision_state"], "active");
    assert_eq!(s["addresses"], json!([]));
    let n1 = api.get("/v1/nodes/n1").await.expect(StatusCode::OK).body;
    assert_eq!(n1["instance_info"]["image_source"], "ingot://debian-12");
    assert_eq!(n1["instance_info"]["configdrive"], "******");
    assert_eq!(n1["instance_uuid"], uuid.as_str());
    // What the deploy got (read from the store, never printed).
    let stored = api.stored_node("n1").await;
    let cd = &stored.instance_info["configdrive"];
    assert_eq!(cd["meta_data"]["public_keys"]["key-0"], KEY);
    assert_eq!(cd["meta_data"]["hostname"], "web-1");
    assert_eq!(cd["meta_data"]["uuid"], uuid.as_str());
    assert!(
        cd["user_data"]
            .as_str()
            .is_some_and(|u| u.contains("SECRET-USER-DATA"))
    );
    // The allocation no longer keeps the user data; Ironic sees a plain allocation.
    let a = api.store.get_allocation(&uuid).await.unwrap().unwrap();
    let spec = a.server.as_ref().unwrap();
    assert!(spec.deploy_started && spec.user_data.is_none());
    let ironic = api
        .get(&format!("/v1/allocations/{uuid}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ironic.body["state"], "active");
    assert_eq!(
        ironic.body.as_object().unwrap().len(),
        13,
        "{}",
        ironic.body
    );
    // A plain Ironic allocation is no server.
    let plain = api
        .post("/v1/allocations", json!({"resource_class": "baremetal"}))
        .await
        .expect(StatusCode::CREATED);
    let list = api
        .get("/v1/ingot/servers")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(list["servers"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["servers"][0]["uuid"], uuid.as_str());
    api.get(&format!(
        "/v1/ingot/servers/{}",
        plain.body["uuid"].as_str().unwrap()
    ))
    .await
    .expect(StatusCode::NOT_FOUND);
    // By name too.
    api.get("/v1/ingot/servers/web-1")
        .await
        .expect(StatusCode::OK);

    // Delete: the node is undeployed back to available and the server is gone.
    api.delete(&format!("/v1/ingot/servers/{uuid}"))
        .await
        .expect(StatusCode::ACCEPTED);
    let n1 = api
        .wait_node("n1", |n| {
            n["provision_state"] == "available" && n["target_provision_state"].is_null()
        })
        .await;
    assert!(n1["instance_uuid"].is_null() && n1["allocation_uuid"].is_null());
    assert_eq!(n1["instance_info"], json!({}));
    api.get(&format!("/v1/ingot/servers/{uuid}"))
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn requests_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(&dir).await;
    let rows = [
        (
            json!({"flavor": "tiny", "image": "debian-12", "ssh_keys": [KEY]}),
            "No flavor named \"tiny\" (flavors: small, huge).",
        ),
        (
            json!({"flavor": "small", "image": "centos", "ssh_keys": [KEY]}),
            "No image named \"centos\" in the image store.",
        ),
        (
            json!({"flavor": "small", "image": "debian-12", "ssh_keys": ["ssh-rsa no*pe"]}),
            "ssh_keys[0]: the ssh-rsa key's data is not base64",
        ),
    ];
    for (body, want) in rows {
        let r = api.post("/v1/ingot/servers", body).await;
        r.expect_fault(StatusCode::BAD_REQUEST, want);
    }
    // JSON only, as the rest of the API.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/ingot/servers")
        .header("host", HOST)
        .header("content-type", "text/plain")
        .body(Body::from(
            json!({"flavor": "small", "image": "debian-12", "ssh_keys": [KEY]}).to_string(),
        ))
        .unwrap();
    let r = api.request(req).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A duplicate name is a conflict.
    let body = json!({"name": "a", "flavor": "small", "image": "debian-12", "ssh_keys": [KEY]});
    api.post("/v1/ingot/servers", body.clone())
        .await
        .expect(StatusCode::CREATED);
    api.post("/v1/ingot/servers", body)
        .await
        .expect(StatusCode::CONFLICT);
}
