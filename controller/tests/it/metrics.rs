//! `/metrics` through the real `ingot serve`: behind the API's http_basic unless
//! `metrics_public`, and after a node's lifecycle it holds what that lifecycle produced
//! (transitions, nodes by state, phase durations, API requests by folded route).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{ChildGuard as Server, free_port};
use serde_json::{Value, json};

const INGOT: &str = env!("CARGO_BIN_EXE_ingot");
const PASSWORD: &str = "MetricsPw-2718";

fn start(dir: &std::path::Path, extra: &str) -> (Server, String) {
    let port = free_port();
    let htpasswd = dir.join("htpasswd");
    let hash = bcrypt::hash(PASSWORD, 4).expect("hash");
    std::fs::write(&htpasswd, format!("op:{hash}\n")).expect("htpasswd");
    let config = dir.join("ingot.toml");
    std::fs::write(
        &config,
        format!(
            "api_listen = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\nauth_strategy = \"http_basic\"\n\
             http_basic_auth_user_file = \"{}\"\n{extra}",
            dir.display(),
            htpasswd.display()
        ),
    )
    .expect("config");
    let child = Command::new(INGOT)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("INGOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "ingot serve did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Server(child), format!("http://127.0.0.1:{port}"))
}

async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, String) {
    let mut r = c
        .request(method, url)
        .basic_auth("op", Some(PASSWORD))
        .header("X-OpenStack-Ironic-API-Version", "1.115");
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_after_a_lifecycle_behind_auth() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, url) = start(dir.path(), "");
    let c = reqwest::Client::new();
    use reqwest::Method as M;

    let anonymous = c
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(
        anonymous.status().as_u16(),
        401,
        "metrics are behind the API's auth"
    );

    let (s, b) = call(
        &c,
        M::POST,
        &format!("{url}/v1/nodes"),
        Some(json!({"driver": "fake-hardware", "name": "m1"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    for (target, want) in [("manage", "manageable"), ("provide", "available")] {
        let (s, b) = call(
            &c,
            M::PUT,
            &format!("{url}/v1/nodes/m1/states/provision"),
            Some(json!({"target": target})),
        )
        .await;
        assert_eq!(s, 202, "{b}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, n) = call(&c, M::GET, &format!("{url}/v1/nodes/m1"), None).await;
            if n.contains(&format!("\"provision_state\":\"{want}\"")) {
                break;
            }
            assert!(Instant::now() < deadline, "never {want}: {n}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (s, _) = call(
        &c,
        M::GET,
        &format!("{url}/v1/nodes/no-such-node-name-4242"),
        None,
    )
    .await;
    assert_eq!(s, 404);

    let (s, text) = call(&c, M::GET, &format!("{url}/metrics"), None).await;
    assert_eq!(s, 200, "{text}");
    for want in [
        "ingot_node_transitions_total{from=\"enroll\",to=\"verifying\"} 1",
        "ingot_node_transitions_total{from=\"cleaning\",to=\"available\"} 1",
        "ingot_nodes{state=\"available\"} 1",
        "ingot_phase_duration_seconds_count{phase=\"clean\"} 1",
        "ingot_phase_duration_seconds_count{phase=\"verify\"} 1",
        "ingot_api_requests_total{method=\"PUT\",route=\"/v1/nodes/{ident}/states/provision\",status=\"202\"} 2",
        "ingot_api_requests_total{method=\"GET\",route=\"/v1/nodes/{ident}\",status=\"404\"} 1",
        "ingot_api_requests_total{method=\"GET\",route=\"/metrics\",status=\"401\"} 1",
        "ingot_api_request_duration_seconds_count{route=\"/v1/nodes\"}",
        // Verification read the power state through the fake driver's power interface.
        "ingot_bmc_call_duration_seconds_count{driver=\"fake\",call=\"get_power_state\"}",
        "ingot_conductor_work{work=\"clean\",state=\"running\"} 0",
        "ingot_conductor_work{work=\"deploy\",state=\"waiting\"} 0",
        "ingot_agent_sessions 0",
        "ingot_agent_write_rate_bytes_per_second 0",
        "ingot_db_pool_connections{pool=\"write\",state=\"max\"}",
        "ingot_db_pool_connections{pool=\"read\",state=\"open\"}",
        "# EOF",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    // A node name never becomes a label.
    assert!(!text.contains("no-such-node-name-4242"), "{text}");
    assert!(!text.contains("m1"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_public_needs_no_credentials() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, url) = start(dir.path(), "metrics_public = true\n");
    let c = reqwest::Client::new();
    let r = c
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.expect("body").ends_with("# EOF\n"));
    // The second scrape counts the first.
    let text = c
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert!(
        text.contains(
            "ingot_api_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"} 1"
        ),
        "{text}"
    );
    // Only /metrics: the rest of the API still needs credentials.
    let r = c
        .get(format!("{url}/v1/nodes"))
        .send()
        .await
        .expect("nodes");
    assert_eq!(r.status().as_u16(), 401);
}
