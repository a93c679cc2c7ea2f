//! `ingot serve` as a process: it starts fast, answers the API, shuts down cleanly on SIGTERM,
//! and a restart on the same database picks every node up as it was. The operator CLI
//! (`ingot node list/show`) reads it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{call, free_port, wait_state};
use serde_json::json;

const INGOT: &str = env!("CARGO_BIN_EXE_ingot");

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(dir: &Path, port: u16) -> Server {
        let db = format!("sqlite://{}", dir.join("ingot.db").display());
        let child = Command::new(INGOT)
            .args([
                "serve",
                "--api-listen",
                &format!("127.0.0.1:{port}"),
                "--database",
                &db,
            ])
            .arg("--state-dir")
            .arg(dir)
            .env("INGOT_LOG", "warn")
            // Variables of the operator CLI and of the tests are not configuration: they
            // must not break the server ("unknown field url").
            .env("INGOT_URL", "http://127.0.0.1:1")
            .env("INGOT_PYTHON", "/nonexistent/python3")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ingot serve");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "ingot serve did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, url }
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                assert!(st.success(), "ingot serve exited with {st} after SIGTERM");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ingot serve did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_nodes_and_cli_reads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::new();

    let server = Server::start(dir.path(), port);
    let url = server.url.clone();
    let (s, n1) = call(
        &c,
        reqwest::Method::POST,
        format!("{url}/v1/nodes"),
        Some(
            json!({"driver": "fake-hardware", "name": "n1", "properties": {"cpus": 4},
                    "driver_info": {"ipmi_password": "s3cret"}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{n1}");
    let uuid = n1["uuid"].as_str().expect("uuid").to_owned();
    let (s, _) = call(
        &c,
        reqwest::Method::POST,
        format!("{url}/v1/ports"),
        Some(json!({"address": "52:54:00:12:34:56", "node_uuid": uuid})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = call(
        &c,
        reqwest::Method::PUT,
        format!("{url}/v1/nodes/n1/states/provision"),
        Some(json!({"target": "manage"})),
    )
    .await;
    assert_eq!(s, 202);
    wait_state(&c, &url, "n1", "manageable").await;
    let (s, n2) = call(
        &c,
        reqwest::Method::POST,
        format!("{url}/v1/nodes"),
        Some(json!({"driver": "fake-hardware", "name": "n2"})),
    )
    .await;
    assert_eq!(s, 201, "{n2}");

    // The operator CLI reads the same API.
    let out = Command::new(INGOT)
        .args(["node", "list", "--url", &url])
        .output()
        .expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("UUID"), "{table}");
    assert!(
        table.contains("n1") && table.contains("manageable") && table.contains("n2"),
        "{table}"
    );
    let out = Command::new(INGOT)
        .args(["node", "show", "n1", "--url", &url])
        .output()
        .expect("cli");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && shown.contains(&uuid) && shown.contains("******"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");
    // `ingot image` reads the same configuration: the CLI's variable does not break it.
    let out = Command::new(INGOT)
        .args(["image", "list", "--state-dir"])
        .arg(dir.path())
        .env("INGOT_URL", &url)
        .env("INGOT_PYTHON", "/nonexistent/python3")
        .output()
        .expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(INGOT)
        .args(["node", "show", "nope", "--url", &url])
        .output()
        .expect("cli");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Node nope could not be found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    server.stop();

    let server = Server::start(dir.path(), port);
    let (s, list) = call(
        &c,
        reqwest::Method::GET,
        format!("{url}/v1/nodes/detail"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let nodes = list["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2);
    let n1 = nodes.iter().find(|n| n["name"] == "n1").expect("n1 back");
    assert_eq!(n1["uuid"], uuid.as_str());
    assert_eq!(n1["provision_state"], "manageable");
    assert_eq!(n1["properties"]["cpus"], 4);
    let (s, ports) = call(
        &c,
        reqwest::Method::GET,
        format!("{url}/v1/ports/detail?node={uuid}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ports["ports"][0]["address"], "52:54:00:12:34:56");
    server.stop();
}
