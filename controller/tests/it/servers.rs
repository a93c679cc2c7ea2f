//! Requesting a machine the way a dashboard user does, through a real `ingot serve` (SQLite,
//! `fake-hardware`, http_basic with roles and projects) and the `ingot server` CLI: a project
//! member creates a server by flavor with `--wait` and gets its project's node, deployed
//! with `ingot://IMAGE` and a config drive of its key and user data (in the database, never
//! in an answer or the log); another project neither sees nor deletes it, and a flavor no
//! node of its own meets ends in `error` with nothing deployed; a reader gets 403 on create;
//! delete brings the node back to `available`. A server claimed before a restart of
//! `ingot serve` but not yet deployed is deployed by the restarted one.

use crate::support;

use std::path::Path;
use std::time::Duration;

use controller::store::{SqlStore, Store};
use serde_json::{Value, json};
use support::{Serve, cli, free_port, htpasswd};

const PW: &str = "pw-0f4c2a";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ alice@test";
const USER_DATA_MARKER: &str = "USERDATA-SECRET-51f0";

fn config(dir: &Path, port: u16) -> String {
    htpasswd(
        &dir.join("htpasswd"),
        &[("op", PW), ("ro", PW), ("alice", PW), ("bob", PW)],
    );
    format!(
        r#"api_listen = "127.0.0.1:{port}"
state_dir = "{state}"
auth_strategy = "http_basic"
http_basic_auth_user_file = "{state}/htpasswd"
enabled_hardware_types = ["fake-hardware"]

[conductor]
power_sync_interval_secs = 0

[auth.users.ro]
role = "reader"
[auth.users.alice]
role = "member"
project = "p1"
[auth.users.bob]
role = "member"
project = "p2"

[[flavors]]
name = "small"
resource_class = "baremetal"
cpus = 2
memory_mb = 2048
cpu_arch = "x86_64"

[[flavors]]
name = "huge"
cpus = 64
"#,
        state = dir.display()
    )
}

/// `ingot image import` of a small raw disk (an MBR boot signature is all it checks).
fn import_image(dir: &Path, name: &str) {
    let raw = dir.join("disk.raw");
    let mut d = vec![0u8; 1 << 20];
    d[510] = 0x55;
    d[511] = 0xAA;
    std::fs::write(&raw, d).expect("raw disk");
    let out = std::process::Command::new(support::INGOT)
        .args(["image", "import", "--name", name, "--state-dir"])
        .arg(dir)
        .arg(&raw)
        .output()
        .expect("ingot image import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        user: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .basic_auth(user, Some(PW))
            .header("X-OpenStack-Ironic-API-Version", "1.115");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, user: &str, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, user, path, None).await
    }

    /// An `available`, powered fake node of project `owner` with inspected properties.
    async fn available_node(&self, name: &str, owner: &str) -> String {
        let (s, n) = self
            .send(
                reqwest::Method::POST,
                "op",
                "/v1/nodes",
                Some(json!({"driver": "fake-hardware", "name": name, "owner": owner,
                    "resource_class": "baremetal",
                    "properties": {"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"}})),
            )
            .await;
        assert_eq!(s, 201, "{n}");
        for (verb, want) in [("manage", "manageable"), ("provide", "available")] {
            let (s, b) = self
                .send(
                    reqwest::Method::PUT,
                    "op",
                    &format!("/v1/nodes/{name}/states/provision"),
                    Some(json!({"target": verb})),
                )
                .await;
            assert_eq!(s, 202, "{b}");
            self.wait_node(name, |n| n["provision_state"] == want).await;
        }
        let (s, b) = self
            .send(
                reqwest::Method::PUT,
                "op",
                &format!("/v1/nodes/{name}/states/power"),
                Some(json!({"target": "power off"})),
            )
            .await;
        assert_eq!(s, 202, "{b}");
        self.wait_node(name, |n| n["power_state"] == "power off")
            .await;
        n["uuid"].as_str().expect("uuid").to_owned()
    }

    async fn wait_node(&self, name: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..500 {
            let (_, n) = self.get("op", &format!("/v1/nodes/{name}")).await;
            if done(&n) && n["target_provision_state"].is_null() {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("node {name} did not get there");
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn project_members_request_machines_by_flavor_with_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = config(dir.path(), port);
    import_image(dir.path(), "debian-12");
    let serve = Serve::start_logging(dir.path(), &cfg, port, "info");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = Client {
        http: reqwest::Client::new(),
        url: serve.url.clone(),
    };
    let n1 = c.available_node("n1", "p1").await;
    c.available_node("n2", "p2").await;
    let key = dir.path().join("id.pub");
    std::fs::write(&key, format!("{KEY}\n")).expect("key");
    let user_data = dir.path().join("user-data");
    std::fs::write(&user_data, format!("#cloud-config\n# {USER_DATA_MARKER}\n"))
        .expect("user data");
    let key = key.to_str().expect("utf-8");
    let user_data = user_data.to_str().expect("utf-8");

    // What a user can choose from.
    let (s, f) = c.get("ro", "/v1/ingot/flavors").await;
    assert_eq!(s, 200);
    assert_eq!(f["flavors"][0]["name"], "small");
    let (_, i) = c.get("alice", "/v1/ingot/images").await;
    assert_eq!(i["images"][0]["name"], "debian-12");

    // A reader cannot request a machine.
    let create = [
        "server",
        "create",
        "--flavor",
        "small",
        "--image",
        "debian-12",
        "--key",
        key,
    ];
    let out = cli(&serve.url, Some(("ro", PW)), &create);
    assert!(!out.status.success());
    assert!(text(&out).contains("HTTP 403"), "{}", text(&out));

    // alice (project p1) gets p1's node, deployed with the image and her key.
    let mut args = create.to_vec();
    args.extend(["--user-data", user_data, "--name", "web-1", "--wait"]);
    let out = cli(&serve.url, Some(("alice", PW)), &args);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("state            active"), "{shown}");
    assert!(shown.contains("node_name        n1"), "{shown}");
    assert!(
        !shown.contains(USER_DATA_MARKER),
        "user data in the CLI output"
    );
    let (_, node) = c.get("op", "/v1/nodes/n1").await;
    assert_eq!(node["provision_state"], "active");
    assert_eq!(node["instance_info"]["image_source"], "ingot://debian-12");
    assert_eq!(node["instance_info"]["configdrive"], "******");
    // The deploy got the config drive: the database holds it (read without printing it).
    let store = SqlStore::connect(&format!(
        "sqlite://{}",
        dir.path().join("ingot.db").display()
    ))
    .await
    .expect("open the database");
    let stored = store.get_node("n1").await.expect("read").expect("node n1");
    let cd = &stored.instance_info["configdrive"];
    assert!(
        cd["meta_data"]["public_keys"]["key-0"] == KEY,
        "the config drive lacks the key"
    );
    assert!(
        cd["user_data"]
            .as_str()
            .is_some_and(|u| u.contains(USER_DATA_MARKER)),
        "the config drive lacks the user data"
    );
    let server = stored.instance_uuid.expect("instance uuid").to_string();

    // alice sees it; bob (p2) neither sees, shows nor deletes it.
    let out = cli(&serve.url, Some(("alice", PW)), &["server", "list"]);
    assert!(text(&out).contains("web-1"), "{}", text(&out));
    let out = cli(&serve.url, Some(("bob", PW)), &["server", "list"]);
    assert!(out.status.success() && !text(&out).contains("web-1"));
    for cmd in [["server", "show", &server], ["server", "delete", &server]] {
        let out = cli(&serve.url, Some(("bob", PW)), &cmd);
        assert!(!out.status.success());
        assert!(text(&out).contains("HTTP 404"), "{}", text(&out));
    }
    let (s, list) = c.get("op", "/v1/ingot/servers").await;
    assert_eq!(s, 200);
    assert_eq!(list["servers"][0]["node_uuid"], n1.as_str());

    // bob asks for more than p2's node has: error, nothing deployed.
    let out = cli(
        &serve.url,
        Some(("bob", PW)),
        &[
            "server",
            "create",
            "--flavor",
            "huge",
            "--image",
            "debian-12",
            "--key",
            key,
            "--wait",
        ],
    );
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("state            error"), "{shown}");
    assert!(
        shown.contains("minimum properties cpus >= 64") && shown.contains("n2: cpus 8 < 64"),
        "{shown}"
    );
    let (_, n2) = c.get("op", "/v1/nodes/n2").await;
    assert_eq!(n2["provision_state"], "available");
    assert!(n2["instance_uuid"].is_null());

    // alice deletes hers: the node is undeployed back to available.
    let out = cli(
        &serve.url,
        Some(("alice", PW)),
        &["server", "delete", "web-1"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let node = c
        .wait_node("n1", |n| n["provision_state"] == "available")
        .await;
    assert!(node["instance_uuid"].is_null() && node["allocation_uuid"].is_null());
    assert_eq!(node["instance_info"], json!({}));
    let out = cli(
        &serve.url,
        Some(("alice", PW)),
        &["server", "show", "web-1"],
    );
    assert!(text(&out).contains("HTTP 404"), "{}", text(&out));

    // Secrets stay out of the log.
    let log = std::fs::read_to_string(dir.path().join("serve.log")).expect("log");
    assert!(log.contains("server requested"), "{log}");
    assert!(!log.contains(USER_DATA_MARKER), "user data in the log");
    assert!(!log.contains(PW), "a password in the log");
}

/// A server whose allocation claimed a node while the previous `ingot serve` ran, but whose
/// deploy had not begun (it stopped in between), is deployed after the restart; one still
/// allocating is processed and deployed too.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_does_not_lose_a_server_in_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = config(dir.path(), port);
    import_image(dir.path(), "debian-12");
    let serve = Serve::start(dir.path(), &cfg, port);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = Client {
        http: reqwest::Client::new(),
        url: serve.url.clone(),
    };
    let n1 = c.available_node("n1", "p1").await;
    c.available_node("n2", "p1").await;
    serve.stop(Duration::from_secs(20));

    // What a run that stopped at the wrong moment leaves: one server claimed n1 and never
    // started its deploy, another was still allocating.
    let store = SqlStore::connect(&format!(
        "sqlite://{}",
        dir.path().join("ingot.db").display()
    ))
    .await
    .expect("open the database");
    let spec = controller::model::ServerSpec {
        flavor: "small".into(),
        image: "debian-12".into(),
        ssh_keys: vec![KEY.into()],
        user_data: Some(controller::model::Secret("#cloud-config\n".into())),
        deploy_started: false,
        error: None,
    };
    let mut claimed = controller::model::Allocation {
        uuid: uuid::Uuid::new_v4(),
        name: Some("claimed".into()),
        resource_class: Some("baremetal".into()),
        traits: vec![],
        candidate_nodes: vec![],
        extra: Default::default(),
        owner: Some("p1".into()),
        state: "allocating".into(),
        node_uuid: None,
        last_error: None,
        created_at: chrono::Utc::now() - chrono::Duration::seconds(5),
        updated_at: None,
        min_properties: controller::model::PropertyMinimums {
            cpus: Some(2),
            ..Default::default()
        },
        server: Some(spec),
    };
    let mut pending = claimed.clone();
    pending.uuid = uuid::Uuid::new_v4();
    pending.name = Some("pending".into());
    store.create_allocation(&claimed).await.expect("create");
    store.create_allocation(&pending).await.expect("create");
    let n1_uuid: uuid::Uuid = n1.parse().expect("uuid");
    assert!(
        store
            .claim_node(n1_uuid, claimed.uuid)
            .await
            .expect("claim")
    );
    claimed.state = "active".into();
    claimed.node_uuid = Some(n1_uuid);
    claimed.updated_at = Some(chrono::Utc::now() - chrono::Duration::seconds(4));
    store.update_allocation(&claimed).await.expect("update");
    store.close().await;

    let _serve = Serve::start(dir.path(), &cfg, port);
    for name in ["claimed", "pending"] {
        let mut last = Value::Null;
        for _ in 0..500 {
            last = c.get("alice", &format!("/v1/ingot/servers/{name}")).await.1;
            if last["state"] == "active" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(last["state"], "active", "{name}: {last}");
    }
    let (_, list) = c.get("alice", "/v1/ingot/servers").await;
    let nodes: Vec<&str> = list["servers"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["node_name"].as_str())
        .collect();
    assert!(nodes.contains(&"n1") && nodes.contains(&"n2"), "{list}");
}
