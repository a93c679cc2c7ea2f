//! Bounded work per request, through the real `ingot serve`: while clients send the
//! heaviest operator requests the API accepts (bodies near the 1 MiB and 16 MiB caps, PATCHes
//! at the 64-op cap, detail lists of large nodes), agent lookups on the provisioning listener
//! keep answering within milliseconds (the operator API runs on a runtime of its own).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{ChildGuard as Server, free_port};
use proto::PROTOCOL_VERSION;
use proto::protocol::{LookupRequest, PATH_LOOKUP};
use serde_json::{Value, json};

const INGOT: &str = env!("CARGO_BIN_EXE_ingot");

const VERSION: (&str, &str) = ("X-OpenStack-Ironic-API-Version", "1.115");

/// The bodies of the heavy requests, serialized once before the clock starts (so that the
/// test's own CPU does not stand in for the controller's).
struct Bodies {
    patch: Vec<u8>,
    node: Vec<u8>,
    provision: Vec<u8>,
}

fn bodies() -> Bodies {
    // 64 ops (the cap) of ~15 KiB each: a body just under the 1 MiB cap.
    let ops: Vec<Value> = (0..64)
        .map(|k| json!({"op": "add", "path": format!("/extra/p{k}"), "value": {"v": [k, "z".repeat(15 * 1024)]}}))
        .collect();
    Bodies {
        patch: serde_json::to_vec(&ops).expect("json"),
        // A node body just under the 1 MiB cap.
        node: serde_json::to_vec(
            &json!({"driver": "fake-hardware", "extra": {"pad": "y".repeat(1000 * 1024)}}),
        )
        .expect("json"),
        // A config drive just under the 16 MiB cap of provision requests, refused (the node
        // is in enroll) only after it was read and parsed.
        provision: serde_json::to_vec(
            &json!({"target": "active", "configdrive": "c".repeat(15 * 1024 * 1024)}),
        )
        .expect("json"),
    }
}

/// One heavy operator request of kind `i % 4`; its kind, status and duration.
async fn heavy(
    http: reqwest::Client,
    api: String,
    bodies: std::sync::Arc<Bodies>,
    i: usize,
) -> (usize, u16, Duration, String) {
    let r = match i % 4 {
        0 => http
            .patch(format!("{api}/v1/nodes/heavy"))
            .body(bodies.patch.clone()),
        1 => http.get(format!("{api}/v1/nodes/detail")),
        2 => http
            .post(format!("{api}/v1/nodes"))
            .body(bodies.node.clone()),
        _ => http
            .put(format!("{api}/v1/nodes/heavy/states/provision"))
            .body(bodies.provision.clone()),
    };
    let started = Instant::now();
    let resp = r
        .header(VERSION.0, VERSION.1)
        .header("Content-Type", "application/json")
        .send()
        .await
        .expect("heavy request");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (
        i % 4,
        status,
        started.elapsed(),
        body.chars().take(200).collect(),
    )
}

/// Agent lookups, one every 10 ms until `until`, from a thread and runtime of their own.
fn probe_lookups(url: String, count: usize, until: Option<Instant>) -> Vec<Duration> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let http = reqwest::Client::new();
            let lookup = LookupRequest {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "load".into(),
                macs: vec!["52:54:00:de:ad:01".into()],
                boot_mac: None,
                system_uuid: None,
                system_serial: None,
                inventory: Default::default(),
                steps: Vec::new(),
            };
            let body = serde_json::to_vec(&lookup).expect("json");
            let mut took = Vec::new();
            while took.len() < count && until.is_none_or(|u| Instant::now() < u) {
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("lookup");
                // An unknown MAC is a 404 after a store read; past 300 a minute, 429.
                assert!(matches!(r.status().as_u16(), 404 | 429), "{}", r.status());
                took.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            took
        })
    })
    .join()
    .expect("probe thread")
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_operator_requests_do_not_stall_agent_lookups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (api_port, boot_port) = (free_port(), free_port());
    let kernel = dir.path().join("vmlinuz");
    let initramfs = dir.path().join("initramfs");
    std::fs::write(&kernel, [1u8; 64]).expect("kernel");
    std::fs::write(&initramfs, [2u8; 64]).expect("initramfs");
    let child = Command::new(INGOT)
        .args(["serve", "--api-listen", &format!("127.0.0.1:{api_port}")])
        .arg("--state-dir")
        .arg(dir.path())
        .env("INGOT_NETBOOT__MODE", "off")
        .env(
            "INGOT_NETBOOT__HTTP_LISTEN",
            format!("127.0.0.1:{boot_port}"),
        )
        .env("INGOT_NETBOOT__AGENT_KERNEL", &kernel)
        .env("INGOT_NETBOOT__AGENT_INITRAMFS", &initramfs)
        .env("INGOT_LOG", "warn")
        .spawn()
        .expect("spawn ingot serve");
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in [api_port, boot_port] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "ingot serve did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{api_port}");
    let boot = format!("http://127.0.0.1:{boot_port}");
    // A node with a large `extra`, the document the PATCHes and detail lists work on.
    let big: serde_json::Map<String, Value> = (0..2000)
        .map(|i| {
            (
                format!("k{i}"),
                json!({"a": [i, i + 1, {"b": "x".repeat(200)}]}),
            )
        })
        .collect();
    let resp = http
        .post(format!("{api}/v1/nodes"))
        .header(VERSION.0, VERSION.1)
        .json(&json!({"driver": "fake-hardware", "name": "heavy", "extra": big}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status().as_u16(), 201);

    let url = format!("{boot}{PATH_LOOKUP}");
    let u = url.clone();
    let mut idle = tokio::task::spawn_blocking(move || probe_lookups(u, 20, None))
        .await
        .expect("probe");
    idle.sort();

    let bodies = std::sync::Arc::new(bodies());
    let mut results = Vec::new();
    let mut loaded = Vec::new();
    for round in 0..2 {
        let tasks: Vec<_> = (0..8)
            .map(|i| tokio::spawn(heavy(http.clone(), api.clone(), bodies.clone(), i + round)))
            .collect();
        let until = Instant::now() + Duration::from_millis(1500);
        let u = url.clone();
        loaded.extend(
            tokio::task::spawn_blocking(move || probe_lookups(u, usize::MAX, Some(until)))
                .await
                .expect("probe"),
        );
        for t in tasks {
            results.push(t.await.expect("task"));
        }
    }
    loaded.sort();
    let pct = |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    println!(
        "agent lookup idle: p50 {:?} max {:?}; under heavy operator load: {} lookups, p50 {:?}, p99 {:?}, max {:?}; heavy requests (kind, status, time): {:?}",
        pct(&idle, 50),
        idle[idle.len() - 1],
        loaded.len(),
        pct(&loaded, 50),
        pct(&loaded, 99),
        loaded[loaded.len() - 1],
        results
            .iter()
            .map(|(k, s, t, _)| (k, s, t))
            .collect::<Vec<_>>()
    );
    for (kind, status, _, body) in &results {
        let want: &[u16] = match kind {
            // Two PATCHes of one node at once: the second may find it locked.
            0 => &[200, 409],
            1 => &[200],
            2 => &[201],
            _ => &[400, 409],
        };
        assert!(
            want.contains(status),
            "heavy request kind {kind}: {status} {body}"
        );
    }
    // Debug build on a 2-core machine (this test runs alone, see .config/nextest.toml).
    // Measured: p99 4-7 ms, max 10-14 ms; with the operator API on the same runtime as the
    // agent API, p99 38 ms and max 93 ms.
    let p99 = pct(&loaded, 99);
    assert!(
        p99 < Duration::from_millis(25),
        "agent lookups waited behind operator requests: p99 {p99:?}"
    );
}
