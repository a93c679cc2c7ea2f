//! `[[webhooks]]` through the real `ingot serve`: receivers on 127.0.0.1 get a signed JSON
//! POST for every provision-state change and a `node_failed` event for a failure, a failed
//! delivery is retried with the same delivery id, a hook that subscribed only to failures
//! gets only those, and a receiver that never answers does not slow the conductor.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{ChildGuard as Server, free_port};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

const INGOT: &str = env!("CARGO_BIN_EXE_ingot");
const SECRET: &str = "hook-secret-5150";

/// One received POST: path, the headers we check, the body.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    status: u16,
    delivery: String,
    event_header: String,
    signature: Option<String>,
    body: Value,
    raw: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// Receivers: `/hook` answers 503 to its very first request, then 204; `/failures` 204.
async fn receiver(log: Log) -> u16 {
    let record = |path: &'static str, log: Log| {
        move |headers: HeaderMap, body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let mut l = log.lock().expect("log");
                let first_on_path = !l.iter().any(|r| r.path == path);
                let status = if path == "/hook" && first_on_path {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                };
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                l.push(Received {
                    path: path.to_owned(),
                    status: status.as_u16(),
                    delivery: h("x-ingot-delivery").unwrap_or_default(),
                    event_header: h("x-ingot-event").unwrap_or_default(),
                    signature: h("x-ingot-signature"),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    raw: body.to_vec(),
                });
                status
            }
        }
    };
    let app = axum::Router::new()
        .route("/hook", post(record("/hook", log.clone())))
        .route("/failures", post(record("/failures", log)));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(l, app).await });
    port
}

/// A receiver that accepts connections and never answers.
fn black_hole() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

async fn api(
    c: &reqwest::Client,
    url: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = c
        .request(method, format!("{url}{path}"))
        .header("X-OpenStack-Ironic-API-Version", "1.115");
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("api");
    let s = resp.status().as_u16();
    let t = resp.text().await.expect("body");
    (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

async fn wait_state(c: &reqwest::Client, url: &str, node: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, n) = api(
            c,
            url,
            reqwest::Method::GET,
            &format!("/v1/nodes/{node}"),
            None,
        )
        .await;
        if n["provision_state"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{node} stuck in {} (want {want}): {}",
            n["provision_state"],
            n["last_error"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_receive_signed_state_changes_and_failures() {
    let log: Log = Arc::default();
    let port = receiver(log.clone()).await;
    let (_hole, hole_port) = black_hole();
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let config = dir.path().join("ingot.toml");
    std::fs::write(
        &config,
        format!(
            r#"api_listen = "127.0.0.1:{api_port}"
state_dir = "{state}"

[conductor]
callback_timeout_secs = 2

[[webhooks]]
url = "http://127.0.0.1:{port}/hook"
secret = "{SECRET}"
retry_base_ms = 100

[[webhooks]]
url = "http://127.0.0.1:{port}/failures"
events = ["node_failed"]

[[webhooks]]
url = "http://127.0.0.1:{hole_port}/never-answers"
"#,
            state = dir.path().display()
        ),
    )
    .expect("config");
    let log_file = dir.path().join("serve.log");
    let child = Command::new(INGOT)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("INGOT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_file).expect("log"))
        .spawn()
        .expect("spawn ingot serve");
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err() {
        assert!(Instant::now() < deadline, "ingot serve did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{api_port}");
    use reqwest::Method as M;

    // A fake-hardware node to `available`; the conductor does not wait for the black hole.
    let started = Instant::now();
    let (s, n) = api(
        &c,
        &url,
        M::POST,
        "/v1/nodes",
        Some(json!({"driver": "fake-hardware", "name": "hooked"})),
    )
    .await;
    assert_eq!(s, 201, "{n}");
    let fake = n["uuid"].as_str().expect("uuid").to_owned();
    for target in ["manage", "provide"] {
        let (s, b) = api(
            &c,
            &url,
            M::PUT,
            &format!("/v1/nodes/{fake}/states/provision"),
            Some(json!({"target": target})),
        )
        .await;
        assert_eq!(s, 202, "{b}");
        wait_state(
            &c,
            &url,
            &fake,
            if target == "manage" {
                "manageable"
            } else {
                "available"
            },
        )
        .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a receiver that never answers slowed the conductor: {:?}",
        started.elapsed()
    );

    // A `manual` node whose cleaning waits for an agent that never comes: clean failed.
    let (s, n) = api(
        &c,
        &url,
        M::POST,
        "/v1/nodes",
        Some(json!({"driver": "manual", "name": "fails"})),
    )
    .await;
    assert_eq!(s, 201, "{n}");
    let manual = n["uuid"].as_str().expect("uuid").to_owned();
    for (target, want) in [("manage", "manageable"), ("provide", "clean failed")] {
        let (s, b) = api(
            &c,
            &url,
            M::PUT,
            &format!("/v1/nodes/{manual}/states/provision"),
            Some(json!({"target": target})),
        )
        .await;
        assert_eq!(s, 202, "{b}");
        wait_state(&c, &url, &manual, want).await;
    }

    // Deliveries arrive shortly after.
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = log.lock().expect("log").clone();
        let delivered_hook = got
            .iter()
            .filter(|r| r.path == "/hook" && r.status == 204)
            .count();
        let failures = got.iter().filter(|r| r.path == "/failures").count();
        let fake_done = got.iter().any(|r| {
            r.status == 204
                && r.body["node_uuid"] == fake.as_str()
                && r.body["provision_state"] == "available"
        });
        if failures >= 1 && delivered_hook >= 6 && fake_done {
            break got;
        }
        assert!(Instant::now() < deadline, "deliveries missing: {got:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let hook: Vec<&Received> = got.iter().filter(|r| r.path == "/hook").collect();
    // The first delivery got 503 and came again with the same delivery id.
    assert_eq!(hook[0].status, 503);
    assert!(
        hook[1..]
            .iter()
            .any(|r| r.delivery == hook[0].delivery && r.status == 204),
        "the refused delivery was not retried: {hook:#?}"
    );
    for r in &hook {
        assert_eq!(
            r.signature.as_deref(),
            Some(hmac_hex(SECRET.as_bytes(), &r.raw).as_str()),
            "{r:?}"
        );
        assert_eq!(r.delivery, r.body["id"].as_str().unwrap_or_default());
        assert_eq!(r.event_header, r.body["event"].as_str().unwrap_or_default());
    }
    // The fake node's whole path, in order, once each (retries collapsed by delivery id).
    let mut seen = std::collections::HashSet::new();
    let path: Vec<(String, String)> = hook
        .iter()
        .filter(|r| {
            r.status == 204
                && r.body["node_uuid"] == fake.as_str()
                && seen.insert(r.delivery.clone())
        })
        .map(|r| {
            (
                r.body["previous_provision_state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                r.body["provision_state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let as_str: Vec<(&str, &str)> = path.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        as_str,
        [
            ("enroll", "verifying"),
            ("verifying", "manageable"),
            ("manageable", "cleaning"),
            ("cleaning", "available"),
        ],
        "{hook:#?}"
    );
    // The failure: `node_failed` on both hooks, with the reason; only failures on the second.
    let failures: Vec<&Received> = got.iter().filter(|r| r.path == "/failures").collect();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    let f = &failures[0];
    assert_eq!(f.body["event"], "node_failed");
    assert_eq!(f.event_header, "node_failed");
    assert_eq!(f.body["node_uuid"], manual.as_str());
    assert_eq!(f.body["node_name"], "fails");
    assert_eq!(f.body["provision_state"], "clean failed");
    assert!(
        f.body["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{:?}",
        f.body
    );
    assert_eq!(f.signature, None, "the second hook has no secret");
    assert!(
        hook.iter()
            .any(|r| r.body["event"] == "node_failed" && r.body["node_uuid"] == manual.as_str())
    );
    // The secret appears in no log line.
    let text = std::fs::read_to_string(&log_file).expect("log");
    assert!(
        !text.contains(SECRET),
        "the webhook secret leaked into the log"
    );
}
