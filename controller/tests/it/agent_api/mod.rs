//! The agent protocol, discovery and fast-track flows, played over real HTTP on 127.0.0.1
//! against `ingot serve`'s routers (operator API + provisioning router) on a real SQLite
//! store. The "agent" here is this test speaking the wire protocol.
//!
//! The flows of `flows`, `watch` and `timeouts` play the fast track (the agent of a
//! discovered machine takes every command without a reboot), so their config turns
//! `[deploy] fast_track` on; `sessions` plays the attacks on agent sessions with it on and
//! off.

mod agent_steps;
mod bmc_enrol;
mod cleaning;
mod deploy_steps;
mod flows;
mod raid;
mod rules;
mod service;
mod sessions;
mod timeouts;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::conductor::clock::{Clock, SystemClock};
use controller::config::{ConductorSection, Config, DeploySection, DiscoverySection, FileConfig};
use controller::discovery::rules::Rule;
use controller::netboot::service::NetbootSection;
use controller::serve::{Services, build_with_clock};
use proto::protocol::{
    AgentState, Command, EventReport, HeartbeatRequest, HeartbeatResponse, LookupRequest,
    LookupResponse, PATH_EVENTS, PATH_HEARTBEAT, PATH_LOOKUP, Report, TOKEN_HEADER,
};
use proto::{Disk, Interface, Inventory, PROTOCOL_VERSION};
use serde_json::Value;
use uuid::Uuid;

pub struct Env {
    pub api: String,
    pub boot: String,
    pub http: reqwest::Client,
    pub services: Services,
    pub dir: tempfile::TempDir,
}

pub fn config_with(
    dir: &std::path::Path,
    discovery: DiscoverySection,
    conductor: ConductorSection,
    fast_track: bool,
) -> Config {
    let kernel = dir.join("vmlinuz");
    let initramfs = dir.join("initramfs.cpio.zst");
    std::fs::write(
        &kernel,
        (0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    )
    .expect("kernel");
    std::fs::write(&initramfs, vec![7u8; 1000]).expect("initramfs");
    FileConfig {
        database: Some(format!("sqlite://{}", dir.join("ingot.db").display())),
        state_dir: Some(dir.to_path_buf()),
        conductor_name: Some("test".into()),
        conductor,
        netboot: NetbootSection {
            agent_kernel: Some(kernel),
            agent_initramfs: Some(initramfs),
            ..Default::default()
        },
        discovery: DiscoverySection {
            heartbeat_timeout_secs: Some(1),
            ..discovery
        },
        deploy: DeploySection {
            fast_track: Some(fast_track),
            fast_track_timeout_secs: None,
        },
        ..Default::default()
    }
    .validate()
    .expect("config")
}

pub fn rules(json: Value) -> Vec<Rule> {
    serde_json::from_value(json).expect("rules")
}

pub async fn start(discovery: DiscoverySection) -> Env {
    start_with(discovery, ConductorSection::default()).await
}

pub async fn start_with(discovery: DiscoverySection, conductor: ConductorSection) -> Env {
    start_full(discovery, conductor, true).await
}

/// A controller with fast track on or off.
pub async fn start_full(
    discovery: DiscoverySection,
    conductor: ConductorSection,
    fast_track: bool,
) -> Env {
    start_clocked(discovery, conductor, fast_track, Arc::new(SystemClock)).await
}

/// A controller whose wait timers run on `clock`.
pub async fn start_clocked(
    discovery: DiscoverySection,
    conductor: ConductorSection,
    fast_track: bool,
    clock: Arc<dyn Clock>,
) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_with(dir.path(), discovery, conductor, fast_track);
    let services = build_with_clock(&cfg, clock).await.expect("build");
    let api_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let boot_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = format!("http://{}", api_l.local_addr().expect("addr"));
    let boot = format!("http://{}", boot_l.local_addr().expect("addr"));
    let api_router = services.api.clone();
    tokio::spawn(async move { axum::serve(api_l, api_router).await });
    let boot_app = services
        .boot
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(boot_l, boot_app).await });
    Env {
        api,
        boot,
        http: reqwest::Client::new(),
        services,
        dir,
    }
}

/// Serial of the one disk of [`inventory`].
pub const DISK_SERIAL: &str = "VDA-SERIAL-1";

pub fn inventory(macs: &[&str], serial: &str) -> Inventory {
    let mut inv = Inventory {
        interfaces: macs
            .iter()
            .enumerate()
            .map(|(i, m)| Interface {
                name: format!("eth{i}"),
                mac_address: (*m).to_owned(),
                has_carrier: true,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    inv.cpu.count = 4;
    inv.cpu.architecture = "x86_64".into();
    inv.cpu.model_name = "QEMU Virtual CPU".into();
    inv.memory.total = 4 * 1024 * 1024 * 1024;
    inv.disks = vec![Disk {
        name: "/dev/vda".into(),
        size: 20 * 1024 * 1024 * 1024,
        serial: Some(DISK_SERIAL.into()),
        ..Default::default()
    }];
    inv.system_vendor.manufacturer = Some("QEMU".into());
    inv.system_vendor.serial_number = Some(serial.into());
    inv
}

/// A provision request as the operator sends it: accepted (202) or refused (400); returns
/// the status and the body.
pub async fn provision_as(
    env: &Env,
    id: Uuid,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let (s, b) = env
        .api(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{id}/states/provision"),
            Some(body),
        )
        .await;
    assert!(s == 202 || s == 400, "{s} {b}");
    (s, b)
}

pub fn lookup_req(macs: &[&str], serial: &str, system_uuid: &str) -> LookupRequest {
    LookupRequest {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "test".into(),
        macs: macs.iter().map(|m| (*m).to_owned()).collect(),
        boot_mac: macs.first().map(|m| (*m).to_owned()),
        system_uuid: Some(system_uuid.into()),
        system_serial: Some(serial.into()),
        inventory: inventory(macs, serial),
        steps: Vec::new(),
    }
}

impl Env {
    pub async fn lookup_raw(&self, req: &LookupRequest) -> reqwest::Response {
        self.lookup_as(req, None).await
    }

    /// A lookup sending `token` (the one an agent holds) in the token header.
    pub async fn lookup_as(&self, req: &LookupRequest, token: Option<&str>) -> reqwest::Response {
        let mut r = self
            .http
            .post(format!("{}{PATH_LOOKUP}", self.boot))
            .json(req);
        if let Some(t) = token {
            r = r.header(TOKEN_HEADER, t);
        }
        r.send().await.expect("lookup")
    }

    pub async fn lookup(&self, req: &LookupRequest) -> LookupResponse {
        let r = self.lookup_raw(req).await;
        assert_eq!(r.status(), 200);
        r.json().await.expect("lookup json")
    }

    /// A lookup that must start a session: its token.
    pub async fn session(&self, req: &LookupRequest) -> (Uuid, String) {
        let r = self.lookup(req).await;
        (
            r.node_uuid,
            r.token.expect("a new session brings its token"),
        )
    }

    pub async fn heartbeat_raw(&self, node: Uuid, token: Option<&str>) -> reqwest::Response {
        self.heartbeat_state(node, token, AgentState::Idle).await
    }

    pub async fn heartbeat_state(
        &self,
        node: Uuid,
        token: Option<&str>,
        state: AgentState,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .post(format!("{}{PATH_HEARTBEAT}", self.boot))
            .json(&HeartbeatRequest {
                node_uuid: node,
                state,
            });
        if let Some(t) = token {
            r = r.header(TOKEN_HEADER, t);
        }
        r.send().await.expect("heartbeat")
    }

    /// Heartbeats until a command other than `wait` arrives.
    pub async fn next_command(&self, node: Uuid, token: &str) -> (Uuid, Command) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.heartbeat_raw(node, Some(token)).await;
            assert_eq!(r.status(), 200);
            let hb: HeartbeatResponse = r.json().await.expect("hb json");
            if !matches!(hb.command, Command::Wait { .. }) {
                return (hb.command_id, hb.command);
            }
            assert!(Instant::now() < deadline, "no command for {node}");
        }
    }

    pub async fn report(&self, node: Uuid, token: &str, command_id: Uuid, report: Report) -> u16 {
        self.http
            .post(format!("{}{PATH_EVENTS}", self.boot))
            .header(TOKEN_HEADER, token)
            .json(&EventReport {
                node_uuid: node,
                command_id,
                report,
            })
            .send()
            .await
            .expect("events")
            .status()
            .as_u16()
    }

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.api))
            .header("X-OpenStack-Ironic-API-Version", "1.115");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("api");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// `PATCH /v1/nodes/{node}` with JSON patch `ops`, which must succeed; the node after.
    pub async fn patch_node(&self, node: Uuid, ops: Value) -> Value {
        let (s, b) = self
            .api(
                reqwest::Method::PATCH,
                &format!("/v1/nodes/{node}"),
                Some(ops),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    pub async fn wait_state(&self, node: Uuid, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (s, n) = self
                .api(reqwest::Method::GET, &format!("/v1/nodes/{node}"), None)
                .await;
            assert_eq!(s, 200, "{n}");
            if n["provision_state"] == want {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} stuck in {} (want {want}): {}",
                n["provision_state"],
                n["last_error"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kernel_path(&self) -> PathBuf {
        self.dir.path().join("vmlinuz")
    }
}
