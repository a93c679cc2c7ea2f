//! The HTTP workload of `cargo xtask bench api`, the same for Ingot and for the peer.
//!
//! Phases: enroll (node + port, `concurrency` clients), list `/v1/nodes/detail` (one client,
//! repeated), lifecycle (manage, provide, deploy, undeploy, `concurrency` clients, each node
//! polled until it reaches every state). Requests and time are bounded: every phase has a
//! fixed number of operations and every wait has a deadline. The server is plain HTTP or
//! HTTPS (the client trusts only the given CA), with or without HTTP basic credentials,
//! sent on every request as the `baremetal` CLI does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};

/// Sizes of the workload.
#[derive(Debug, Clone)]
pub struct Config {
    /// Nodes to enroll, each with one port.
    pub nodes: usize,
    /// Concurrent clients for enroll and lifecycle.
    pub concurrency: usize,
    /// How many times `/v1/nodes/detail` is fetched.
    pub list_repeats: usize,
    /// Nodes taken through manage, provide, deploy, undeploy.
    pub lifecycle_nodes: usize,
    /// Deadline for one node to reach one state.
    pub transition_timeout: Duration,
    /// Poll (and retry a 409) at this fixed interval; `None`: back off from 1 ms to 100 ms.
    pub poll_every: Option<Duration>,
}

/// The pause before the next poll or retry: `fixed`, or `backoff` (then doubled, to 100 ms).
fn pause_next(fixed: Option<Duration>, backoff: &mut Duration) -> Duration {
    if let Some(every) = fixed {
        return every;
    }
    let now = *backoff;
    *backoff = (now * 2).min(Duration::from_millis(100));
    now
}

/// Where the workload sends its requests, and how it gets in.
#[derive(Clone)]
pub struct Target {
    /// `http://127.0.0.1:PORT` or `https://...`.
    pub base: String,
    /// HTTP basic user and password.
    pub credentials: Option<(String, String)>,
    /// The CA (PEM) an `https://` server's certificate must chain to.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("base", &self.base)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("ca", &self.ca_pem.is_some())
            .finish()
    }
}

/// Wall time and server CPU time of one phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phase {
    pub wall: Duration,
    pub cpu_secs: f64,
}

/// Everything measured by one workload run.
#[derive(Debug, Default)]
pub struct Outcome {
    pub enroll: Phase,
    pub list: Phase,
    pub lifecycle: Phase,
    /// Latencies per request kind.
    pub latencies: BTreeMap<&'static str, Vec<Duration>>,
    pub requests: u64,
    /// Provision requests answered 409 (node locked) and retried, as the clients do.
    pub conflicts: u64,
    pub error_count: usize,
    /// The first few errors, for the report.
    pub errors: Vec<String>,
    /// Nodes in the last `/v1/nodes/detail` answer.
    pub listed_nodes: usize,
    /// Nodes that completed the whole lifecycle.
    pub lifecycle_done: usize,
}

pub const KIND_NODE_CREATE: &str = "POST /v1/nodes";
pub const KIND_PORT_CREATE: &str = "POST /v1/ports";
pub const KIND_DETAIL: &str = "GET /v1/nodes/detail (all)";
pub const KIND_PAGE: &str = "GET /v1/nodes/detail?limit=1000 (each page)";
pub const KIND_FILTERED: &str = "GET /v1/nodes?provision_state=..&sort_key=name&limit=1000";
pub const KIND_PROVISION: &str = "PUT .../states/provision";
pub const KIND_POLL: &str = "GET /v1/nodes/{uuid} (poll)";

const MAX_KEPT_ERRORS: usize = 10;
/// The lifecycle: (target verb, stable state to wait for).
const LIFECYCLE: [(&str, &str); 4] = [
    ("manage", "manageable"),
    ("provide", "available"),
    ("active", "active"),
    ("deleted", "available"),
];

/// Per-task measurements, merged into the outcome after each phase.
#[derive(Debug, Default)]
struct Recorder {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    requests: u64,
    conflicts: u64,
    error_count: usize,
    errors: Vec<String>,
}

impl Recorder {
    fn error(&mut self, msg: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_KEPT_ERRORS {
            self.errors.push(msg);
        }
    }

    fn merge_into(self, out: &mut Outcome) {
        for (k, mut v) in self.latencies {
            out.latencies.entry(k).or_default().append(&mut v);
        }
        out.requests += self.requests;
        out.conflicts += self.conflicts;
        out.error_count += self.error_count;
        for e in self.errors {
            if out.errors.len() < MAX_KEPT_ERRORS {
                out.errors.push(e);
            }
        }
    }
}

/// The client every task shares; sends the microversion the `baremetal` CLI sends, and the
/// target's credentials.
fn client(target: &Target, concurrency: usize) -> anyhow::Result<reqwest::Client> {
    use base64::Engine as _;
    let mut headers = HeaderMap::new();
    headers.insert(
        "X-OpenStack-Ironic-API-Version",
        HeaderValue::from_static("1.115"),
    );
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    if let Some((user, password)) = &target.credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = HeaderValue::from_str(&format!("Basic {token}"))
            .context("building the Authorization header")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(60))
        .no_proxy();
    if let Some(pem) = &target.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).context("reading the bench CA")?;
        builder = builder.tls_certs_only(certs);
    }
    builder.build().context("building the HTTP client")
}

/// Answer to a request that may be retried.
enum Reply {
    Ok(Vec<u8>),
    /// 409: the node is locked by a running task; clients retry.
    Conflict,
    Failed,
}

/// Sends one request, times it to the end of the body and records failures.
async fn call(
    rec: &mut Recorder,
    kind: &'static str,
    req: reqwest::RequestBuilder,
    want: u16,
) -> Option<Vec<u8>> {
    match call_retryable(rec, kind, req, want, false).await {
        Reply::Ok(body) => Some(body),
        Reply::Conflict | Reply::Failed => None,
    }
}

/// Like `call`; with `conflict_ok` a 409 is counted as a conflict rather than an error.
async fn call_retryable(
    rec: &mut Recorder,
    kind: &'static str,
    req: reqwest::RequestBuilder,
    want: u16,
    conflict_ok: bool,
) -> Reply {
    let started = Instant::now();
    rec.requests += 1;
    let result = async {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    }
    .await;
    rec.latencies
        .entry(kind)
        .or_default()
        .push(started.elapsed());
    match result {
        Ok((status, body)) if status == want => Reply::Ok(body.to_vec()),
        Ok((409, _)) if conflict_ok => {
            rec.conflicts += 1;
            Reply::Conflict
        }
        Ok((status, body)) => {
            let text = String::from_utf8_lossy(&body);
            rec.error(format!(
                "{kind}: HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            ));
            Reply::Failed
        }
        Err(err) => {
            rec.error(format!("{kind}: {err}"));
            Reply::Failed
        }
    }
}

fn node_body(i: usize) -> Value {
    json!({
        "driver": "fake-hardware",
        "name": format!("bench-{i:05}"),
        "resource_class": "bench",
        "properties": {"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"},
        "driver_info": {"ipmi_address": format!("10.1.{}.{}", i / 250, i % 250 + 1)},
    })
}

fn mac(i: usize) -> String {
    format!(
        "52:54:01:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

/// Runs all phases against `target`; `cpu` reads the server's CPU seconds.
pub async fn run(target: &Target, cfg: &Config, cpu: &dyn Fn() -> f64) -> anyhow::Result<Outcome> {
    let client = client(target, cfg.concurrency)?;
    let base = target.base.as_str();
    let mut out = Outcome::default();

    // Enroll.
    let cpu0 = cpu();
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..cfg.concurrency {
        let client = client.clone();
        let next = Arc::clone(&next);
        let base = base.to_owned();
        let total = cfg.nodes;
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            let mut enrolled = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let req = client.post(format!("{base}/v1/nodes")).json(&node_body(i));
                let Some(body) = call(&mut rec, KIND_NODE_CREATE, req, 201).await else {
                    continue;
                };
                let uuid = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("uuid").and_then(Value::as_str).map(str::to_owned));
                let Some(uuid) = uuid else {
                    rec.error(format!("{KIND_NODE_CREATE}: no uuid in the answer"));
                    continue;
                };
                let port = json!({"address": mac(i), "node_uuid": uuid});
                let req = client.post(format!("{base}/v1/ports")).json(&port);
                call(&mut rec, KIND_PORT_CREATE, req, 201).await;
                enrolled.push((i, uuid));
            }
            (rec, enrolled)
        }));
    }
    let mut enrolled = Vec::new();
    for task in tasks {
        let (rec, mut nodes) = task.await.context("enroll task panicked")?;
        rec.merge_into(&mut out);
        enrolled.append(&mut nodes);
    }
    enrolled.sort();
    out.enroll = Phase {
        wall: started.elapsed(),
        cpu_secs: cpu() - cpu0,
    };

    // List.
    let cpu0 = cpu();
    let started = Instant::now();
    let mut rec = Recorder::default();
    for _ in 0..cfg.list_repeats {
        let req = client.get(format!("{base}/v1/nodes/detail"));
        if let Some(body) = call(&mut rec, KIND_DETAIL, req, 200).await {
            out.listed_nodes = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("nodes").and_then(Value::as_array).map(Vec::len))
                .unwrap_or(0);
        }
    }
    // Paged: every page of 1,000 by its `next` link, then a filtered, sorted page.
    for _ in 0..cfg.list_repeats.div_ceil(10) {
        let mut url = format!("{base}/v1/nodes/detail?limit=1000");
        for _ in 0..1_000 {
            let Some(body) = call(&mut rec, KIND_PAGE, client.get(&url), 200).await else {
                break;
            };
            let next = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("next").and_then(Value::as_str).map(str::to_owned));
            match next {
                // The link names the server's own address; keep ours (the same server).
                Some(n) => match n.split_once("/v1/") {
                    Some((_, rest)) => url = format!("{base}/v1/{rest}"),
                    None => break,
                },
                None => break,
            }
        }
        let req = client.get(format!(
            "{base}/v1/nodes?provision_state=enroll&sort_key=name&sort_dir=desc&limit=1000"
        ));
        call(&mut rec, KIND_FILTERED, req, 200).await;
    }
    rec.merge_into(&mut out);
    out.list = Phase {
        wall: started.elapsed(),
        cpu_secs: cpu() - cpu0,
    };

    // Lifecycle.
    let cpu0 = cpu();
    let started = Instant::now();
    let uuids: Arc<Vec<String>> = Arc::new(
        enrolled
            .into_iter()
            .take(cfg.lifecycle_nodes)
            .map(|(_, u)| u)
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..cfg.concurrency {
        let client = client.clone();
        let next = Arc::clone(&next);
        let uuids = Arc::clone(&uuids);
        let base = base.to_owned();
        let timeout = cfg.transition_timeout;
        let poll = cfg.poll_every;
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            let mut done = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(uuid) = uuids.get(i) else { break };
                if lifecycle(&client, &mut rec, &base, uuid, timeout, poll).await {
                    done += 1;
                }
            }
            (rec, done)
        }));
    }
    for task in tasks {
        let (rec, done) = task.await.context("lifecycle task panicked")?;
        rec.merge_into(&mut out);
        out.lifecycle_done += done;
    }
    out.lifecycle = Phase {
        wall: started.elapsed(),
        cpu_secs: cpu() - cpu0,
    };
    Ok(out)
}

/// Takes one node through the four transitions; false if any step failed.
///
/// A 409 (node still locked by the task that just finished) is retried at the pace of
/// polling, as the clients retry it (the CLI every 2 s).
async fn lifecycle(
    client: &reqwest::Client,
    rec: &mut Recorder,
    base: &str,
    uuid: &str,
    timeout: Duration,
    poll: Option<Duration>,
) -> bool {
    for (verb, want) in LIFECYCLE {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let req = client
                .put(format!("{base}/v1/nodes/{uuid}/states/provision"))
                .json(&json!({"target": verb}));
            match call_retryable(rec, KIND_PROVISION, req, 202, true).await {
                Reply::Ok(_) => break,
                Reply::Failed => return false,
                Reply::Conflict if Instant::now() > deadline => {
                    rec.error(format!(
                        "node {uuid} stayed locked for {timeout:?} ({verb})"
                    ));
                    return false;
                }
                Reply::Conflict => {
                    tokio::time::sleep(pause_next(poll, &mut pause)).await;
                }
            }
        }
        if !wait_for_state(client, rec, base, uuid, want, timeout, poll).await {
            return false;
        }
    }
    true
}

/// Polls a node until it is in `want` with no target, at the pace `poll` says.
async fn wait_for_state(
    client: &reqwest::Client,
    rec: &mut Recorder,
    base: &str,
    uuid: &str,
    want: &str,
    timeout: Duration,
    poll: Option<Duration>,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        let req = client.get(format!("{base}/v1/nodes/{uuid}"));
        if let Some(body) = call(rec, KIND_POLL, req, 200).await {
            let node: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let state = node
                .get("provision_state")
                .and_then(Value::as_str)
                .unwrap_or("");
            let target = node.get("target_provision_state").and_then(Value::as_str);
            if state == want && target.is_none() {
                return true;
            }
            if state == "error" || state.ends_with(" failed") {
                let last = node.get("last_error").cloned().unwrap_or(Value::Null);
                rec.error(format!(
                    "node {uuid} went to {state} waiting for {want}: {last}"
                ));
                return false;
            }
        }
        if Instant::now() > deadline {
            rec.error(format!(
                "node {uuid} did not reach {want} within {timeout:?}"
            ));
            return false;
        }
        tokio::time::sleep(pause_next(poll, &mut pause)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_distinct_and_valid() {
        assert_eq!(mac(0), "52:54:01:00:00:00");
        assert_eq!(mac(0x1_02_03), "52:54:01:01:02:03");
        let all: std::collections::HashSet<String> = (0..5000).map(mac).collect();
        assert_eq!(all.len(), 5000);
    }

    #[test]
    fn polls_back_off_or_keep_a_fixed_pace() {
        let mut b = Duration::from_millis(1);
        let got: Vec<u128> = (0..9)
            .map(|_| pause_next(None, &mut b).as_millis())
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 64, 100, 100]);
        let five = Some(Duration::from_millis(5));
        let mut b = Duration::from_millis(1);
        assert_eq!(pause_next(five, &mut b), Duration::from_millis(5));
        assert_eq!(pause_next(five, &mut b), Duration::from_millis(5));
    }

    #[test]
    fn node_bodies_have_unique_names() {
        assert_eq!(node_body(7)["name"], "bench-00007");
        assert_eq!(node_body(7)["driver"], "fake-hardware");
    }
}
