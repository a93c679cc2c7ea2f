//! Three `ingot serve` replicas on one real PostgreSQL, with simulated machines: the real
//! agent run loop (`agent::run::drive_with`) and protocol client, failing over between the
//! three controller URLs, on a `Host` that takes a few seconds per command instead of
//! writing disks. Nodes spread over all three; one replica is SIGKILLed while nodes are in
//! `wait call-back` and `clean wait` with commands it handed out; every one of them ends
//! `active` / `available` under the survivors, the dead one shows offline in
//! `/v1/conductors`, and the history shows no node worked on by two replicas at once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::events::EventSink;
use agent::run::client::HttpController;
use agent::run::exec::Host;
use proto::protocol::{Command, LookupRequest, Report};
use proto::{Interface, Inventory, WipeReport};
use serde_json::{Value, json};

use crate::support::{Serve, call, dummy_agent_files, free_port};
use qemu_tests::pg::PgServer;

const REPLICAS: usize = 3;
const NODES: usize = 24;
/// `[conductor] heartbeat_timeout_secs` of the replicas.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a simulated machine takes per command in the phase with the kill.
const SLOW_WORK: Duration = Duration::from_secs(8);

/// A machine whose agent takes `work` per command and reports success.
struct SimMachine {
    mac: String,
    work: Duration,
}

impl Host for SimMachine {
    fn lookup_request(&self) -> LookupRequest {
        let inventory = Inventory {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac_address: self.mac.clone(),
                has_carrier: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        agent::run::exec::lookup_request(inventory, Some(self.mac.clone()))
    }

    fn execute(&self, command: &Command, _sink: &dyn EventSink) -> Report {
        std::thread::sleep(self.work);
        let detail = match command {
            Command::Wipe { .. } => serde_json::to_value(WipeReport {
                ok: true,
                disks: vec![],
            })
            .ok(),
            Command::Deploy(_) => Some(json!({"bytes_written": 0})),
            _ => None,
        };
        Report::Succeeded {
            inventory: None,
            detail,
        }
    }
}

/// The agent of `mac`, talking to the replicas in `urls` (first one first).
fn spawn_agent(urls: Vec<String>, mac: String, work: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ctl = HttpController::with_replicas(&urls, None).expect("agent client");
        let host = Arc::new(SimMachine { mac, work });
        agent::run::drive_with(&ctl, host, Duration::from_secs(1)).await;
    })
}

fn config(dir: &Path, db: &str, name: &str, api: u16, boot: u16) -> String {
    let (kernel, initramfs) = dummy_agent_files(dir);
    format!(
        r#"api_listen = "127.0.0.1:{api}"
database = "{db}"
state_dir = "{dir}"
conductor_name = "{name}"
enabled_hardware_types = ["manual", "fake-hardware"]

[netboot]
mode = "off"
http_listen = "127.0.0.1:{boot}"
agent_kernel = "{kernel}"
agent_initramfs = "{initramfs}"

[discovery]
heartbeat_timeout_secs = 2

[conductor]
heartbeat_interval_secs = 1
heartbeat_timeout_secs = {timeout}
"#,
        dir = dir.display(),
        kernel = kernel.display(),
        initramfs = initramfs.display(),
        timeout = HEARTBEAT_TIMEOUT.as_secs(),
    )
}

struct Replica {
    name: String,
    serve: Option<Serve>,
    api: String,
    boot: String,
    _dir: tempfile::TempDir,
}

async fn nodes(c: &reqwest::Client, base: &str) -> Vec<Value> {
    let (s, v) = call(c,
        reqwest::Method::GET,
        format!("{base}/v1/nodes?fields=uuid,name,provision_state,conductor,reservation,last_error&limit=1000"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["nodes"].as_array().cloned().unwrap_or_default()
}

async fn verb(c: &reqwest::Client, base: &str, node: &str, target: &str) {
    let (s, v) = call(
        c,
        reqwest::Method::PUT,
        format!("{base}/v1/nodes/{node}/states/provision"),
        Some(json!({"target": target})),
    )
    .await;
    assert_eq!(s, 202, "{target} {node}: {v}");
}

/// Waits until every node in `names` is in `state` and unlocked; panics with the states
/// after `limit`.
async fn wait_all(c: &reqwest::Client, base: &str, names: &[String], state: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let all = nodes(c, base).await;
        let pending: Vec<&Value> = all
            .iter()
            .filter(|n| names.iter().any(|m| n["name"] == m.as_str()))
            .filter(|n| n["provision_state"] != state || !n["reservation"].is_null())
            .collect();
        if pending.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} nodes not {state} after {limit:?}: {pending:#?}",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn mac(i: usize) -> String {
    format!("52:54:00:aa:00:{i:02x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replicas_deploys_and_cleanings_finish_on_the_survivors() {
    let Some(pg) = PgServer::shared() else {
        return;
    };
    let db = pg.create_database();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::new();
    // Replicas share the keys of the secrets at rest (the queued commands are sealed with
    // it) and of the image URLs: the first one creates them, the others get copies.
    let mut replicas: Vec<Replica> = Vec::new();
    for i in 0..REPLICAS {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(first) = replicas.first() {
            for key in [controller::secrets::KEY_FILE, "image-url.key"] {
                let from = first._dir.path().join(key);
                if from.exists() {
                    std::fs::copy(&from, dir.path().join(key)).expect("copy key");
                }
            }
        }
        let (api_port, boot_port) = (free_port(), free_port());
        let name = format!("r{i}");
        let serve = Serve::start(
            dir.path(),
            &config(dir.path(), &db, &name, api_port, boot_port),
            api_port,
        );
        replicas.push(Replica {
            name,
            api: serve.url.clone(),
            serve: Some(serve),
            boot: format!("http://127.0.0.1:{boot_port}"),
            _dir: dir,
        });
    }
    // Every replica sees the three alive (and, a heartbeat later, has the ring of three).
    let deadline = Instant::now() + Duration::from_secs(20);
    for r in &replicas {
        loop {
            let (s, v) = call(
                &c,
                reqwest::Method::GET,
                format!("{}/v1/conductors", r.api),
                None,
            )
            .await;
            assert_eq!(s, 200, "{v}");
            let alive = v["conductors"].as_array().map_or(0, |l| {
                l.iter().filter(|c| c["alive"] == json!(true)).count()
            });
            if alive == REPLICAS {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} sees {alive} alive: {v}",
                r.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let urls: Vec<String> = replicas.iter().map(|r| r.boot.clone()).collect();
    // Each machine's agent starts at another replica.
    let agent_urls = |i: usize| -> Vec<String> {
        (0..REPLICAS)
            .map(|k| urls[(i + k) % REPLICAS].clone())
            .collect()
    };
    let base = replicas[0].api.clone();
    let by_name: HashMap<String, String> = replicas
        .iter()
        .map(|r| (r.name.clone(), r.api.clone()))
        .collect();

    // Enroll, with a port each, and manage.
    let names: Vec<String> = (0..NODES).map(|i| format!("sim-{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        let (s, v) = call(
            &c,
            reqwest::Method::POST,
            format!("{base}/v1/nodes"),
            // Fixed UUIDs: the ring's shares (rendezvous hashing of node and conductor
            // names) are then the same in every run.
            Some(json!({
                "uuid": format!("00000000-0000-4000-8000-{i:012x}"),
                "name": name, "driver": "manual",
                "instance_info": {
                    "image_source": "http://127.0.0.1:9/os.raw",
                    "image_checksum": format!("md5:{}", "c".repeat(32)),
                    "root_gb": 1
                }
            })),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        let uuid = v["uuid"].as_str().expect("uuid").to_owned();
        let (s, v) = call(
            &c,
            reqwest::Method::POST,
            format!("{base}/v1/ports"),
            Some(json!({"address": mac(i), "node_uuid": uuid})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        verb(&c, &base, name, "manage").await;
    }
    wait_all(&c, &base, &names, "manageable", Duration::from_secs(30)).await;

    // Spread: every replica owns a share of the nodes (the `conductor` field).
    let owners: HashMap<String, String> = nodes(&c, &base)
        .await
        .into_iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_owned(),
                n["conductor"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut shares: BTreeMap<&str, usize> = BTreeMap::new();
    for owner in owners.values() {
        *shares.entry(owner.as_str()).or_default() += 1;
    }
    println!("ownership of {NODES} nodes: {shares:?}");
    // Each replica owns a share within 30% of a third (the ring's own table test checks
    // the balance on 10,000 nodes).
    for r in &replicas {
        let n = shares.get(r.name.as_str()).copied().unwrap_or(0);
        let third = NODES as f64 / REPLICAS as f64;
        assert!(
            (n as f64 - third).abs() <= 0.3 * third,
            "{} owns {n} of {NODES}: {shares:?}",
            r.name
        );
    }
    // Each node's verbs go to its owner, so every replica works on some.
    let owner_api = |name: &str| by_name[&owners[name]].clone();

    // Phase 1: every node is cleaned by a quick agent to `available`.
    for name in &names {
        verb(&c, &owner_api(name), name, "provide").await;
    }
    wait_all(&c, &base, &names, "clean wait", Duration::from_secs(30)).await;
    let agents: Vec<_> = (0..NODES)
        .map(|i| spawn_agent(agent_urls(i), mac(i), Duration::from_millis(100)))
        .collect();
    wait_all(&c, &base, &names, "available", Duration::from_secs(60)).await;
    for a in agents {
        a.abort();
    }

    // Phase 2: half deploy, half are cleaned again, each agent taking SLOW_WORK per
    // command. Once every agent holds its command, the replica owning the most waits dies.
    let (deploys, cleans) = names.split_at(NODES / 2);
    for name in deploys {
        verb(&c, &owner_api(name), name, "deploy").await;
    }
    for name in cleans {
        verb(&c, &owner_api(name), name, "manage").await;
    }
    wait_all(&c, &base, cleans, "manageable", Duration::from_secs(30)).await;
    for name in cleans {
        verb(&c, &owner_api(name), name, "provide").await;
    }
    wait_all(
        &c,
        &base,
        deploys,
        "wait call-back",
        Duration::from_secs(30),
    )
    .await;
    wait_all(&c, &base, cleans, "clean wait", Duration::from_secs(30)).await;
    let agents: Vec<_> = (0..NODES)
        .map(|i| spawn_agent(agent_urls(i), mac(i), SLOW_WORK))
        .collect();
    // Every agent has its command (the progress of a busy agent is not needed: the
    // command rows say `sent`).
    let deadline = Instant::now() + Duration::from_secs(30);
    let handed = loop {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db)
            .await
            .expect("connect");
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM agent_commands WHERE state IN ('sent', 'reporting')",
        )
        .fetch_one(&mut conn)
        .await
        .expect("count");
        if n as usize == NODES {
            break n;
        }
        assert!(Instant::now() < deadline, "only {n} commands handed out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let victim_name = {
        let mut waits: BTreeMap<String, usize> = BTreeMap::new();
        for n in deploys.iter().chain(cleans) {
            *waits.entry(owners[n].clone()).or_default() += 1;
        }
        waits
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(name, _)| name)
            .expect("a victim")
    };
    let victim = replicas
        .iter_mut()
        .find(|r| r.name == victim_name)
        .expect("victim");
    let mut serve = victim.serve.take().expect("running");
    let killed_at = chrono::Utc::now();
    let started = Instant::now();
    serve.child.kill().expect("SIGKILL");
    serve.child.wait().expect("reap");
    println!("{handed} commands handed out; SIGKILL to {victim_name}");

    let survivor = replicas
        .iter()
        .find(|r| r.serve.is_some())
        .expect("a survivor")
        .api
        .clone();
    // Everything finishes under the survivors within the heartbeat timeout plus 10 s
    // (plus what the agents still had to do).
    let limit = HEARTBEAT_TIMEOUT + SLOW_WORK + Duration::from_secs(10);
    wait_all(&c, &survivor, deploys, "active", limit).await;
    wait_all(&c, &survivor, cleans, "available", limit).await;
    println!(
        "all {NODES} nodes finished {:?} after the kill",
        started.elapsed()
    );
    for a in agents {
        a.abort();
    }

    // The dead replica is offline.
    let (s, v) = call(
        &c,
        reqwest::Method::GET,
        format!("{survivor}/v1/conductors/{victim_name}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["alive"], json!(false), "{v}");

    // The history: nothing by the dead replica after its death, at most one takeover per
    // node, by a survivor, and each node's last transition by a survivor.
    let mut adopted = 0;
    for n in nodes(&c, &survivor).await {
        let uuid = n["uuid"].as_str().expect("uuid");
        let (s, v) = call(
            &c,
            reqwest::Method::GET,
            format!("{survivor}/v1/nodes/{uuid}/history?detail=true"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let events = v["history"].as_array().cloned().unwrap_or_default();
        let mut takeovers = 0;
        for e in &events {
            let by = e["conductor"].as_str().unwrap_or_default();
            let at: chrono::DateTime<chrono::Utc> = e["created_at"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("created_at");
            assert!(
                !(by == victim_name && at > killed_at + chrono::Duration::milliseconds(500)),
                "{uuid}: the dead replica acted after its death: {e}"
            );
            if e["event_type"] == "takeover" {
                takeovers += 1;
                assert_ne!(by, victim_name, "{e}");
            }
        }
        assert!(
            takeovers <= 1,
            "{uuid} taken over {takeovers} times: {events:#?}"
        );
        adopted += takeovers;
    }
    println!("{adopted} waits adopted by the survivors");
    assert!(adopted > 0, "the dead replica owned no wait");
    drop(replicas);
}
