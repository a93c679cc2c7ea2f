//! The controller the HTTP targets talk to: the operator API router and the agent API
//! router of `ingot serve`, over one in-memory SQLite store, with one `fake-hardware` node
//! (and its port) the agent API knows, the agent session token its lookup was given, and a
//! second node in `enroll` for the operator's verbs.
//! Requests go through `tower::ServiceExt::oneshot`: no socket.
//!
//! The store keeps what earlier inputs did, so the controller is built again every
//! [`REBUILD_EVERY`] inputs: a finding then replays from a fresh controller plus at most
//! that many earlier inputs.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use controller::agent_api::limits::SourceLimiter;
use controller::agent_api::{AgentApiState, router as agent_router};
use controller::api::{ApiSettings, ApiState, router as api_router};
use controller::conductor::{Conductor, ConductorConfig};
use controller::discovery::{Discovery, DiscoveryConfig};
use controller::drivers::DriverRegistry;
use controller::hub::AgentHub;
use controller::store::{SqlStore, Store};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use uuid::Uuid;

/// Inputs handled by one controller before it is built again.
pub const REBUILD_EVERY: u32 = 2000;
/// The node every input may address.
pub const NODE: Uuid = Uuid::from_u128(0x0f0f_0000_0000_4000_8000_0000_0000_0001);
/// A second node, left in `enroll`, for the operator's verbs to move through the lifecycle.
pub const NODE2: Uuid = Uuid::from_u128(0x0f0f_0000_0000_4000_8000_0000_0000_0003);
/// Its port.
pub const PORT: Uuid = Uuid::from_u128(0x0f0f_0000_0000_4000_8000_0000_0000_0002);
/// The port's MAC.
pub const MAC: &str = "52:54:00:f0:0f:01";
/// The command id seeds use; replaced by [`Ctl::command_id`] before a request is sent.
pub const COMMAND_PLACEHOLDER: &str = "11111111-2222-4333-8444-555555555555";
/// Where agent requests come from.
pub const SOURCE: ([u8; 4], u16) = ([10, 9, 0, 50], 40000);

/// One controller.
pub struct Ctl {
    pub api: Router,
    pub agent: Router,
    pub store: Arc<dyn Store>,
    /// The session token of the node's agent (`None` if the lookup did not give one).
    pub token: Option<String>,
    /// The id of the command the agent was handed (an `inspect`), which events may report.
    pub command_id: Option<String>,
    used: u32,
}

/// A response: status and body.
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Sends one request to `router`.
pub async fn send(
    router: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:6385")
        .header("content-type", "application/json")
        .header("x-openstack-ironic-api-version", "1.115");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::from(body)).expect("a valid request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(SOURCE)));
    let resp = router
        .clone()
        .oneshot(req)
        .await
        .expect("axum routers are infallible");
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("an in-memory body")
        .to_vec();
    Answer { status, body }
}

async fn build() -> Ctl {
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect("sqlite::memory:")
            .await
            .expect("an in-memory store"),
    );
    let config = ConductorConfig {
        name: "fuzz".to_owned(),
        power_sync_interval: Duration::ZERO,
        ..ConductorConfig::default()
    };
    let conductor = Conductor::new(store.clone(), DriverRegistry::builtin(), config);
    let api = api_router(ApiState::new(
        store.clone(),
        conductor.clone(),
        ApiSettings::default(),
    ));
    let hub = AgentHub::new();
    let agent = agent_router(AgentApiState {
        store: store.clone(),
        conductor,
        hub: hub.clone(),
        discovery: Arc::new(Discovery::new(DiscoveryConfig {
            enabled: true,
            ..DiscoveryConfig::default()
        })),
        heartbeat_timeout: Duration::ZERO,
        lookup_limit: Arc::new(SourceLimiter::new(u32::MAX, Duration::from_secs(60))),
        metrics: Arc::default(),
    });
    let node = json!({"uuid": NODE, "name": "fuzz-node", "driver": "fake-hardware",
        "driver_info": {"ipmi_password": "fuzz-S3CRET"}, "resource_class": "baremetal",
        "properties": {"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"}});
    let created = send(
        &api,
        Method::POST,
        "/v1/nodes",
        &[],
        node.to_string().into(),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "seeding the node");
    let node2 = json!({"uuid": NODE2, "name": "fuzz-node-2", "driver": "fake-hardware",
        "resource_class": "baremetal", "properties": {"cpus": 4, "memory_mb": 8192, "local_gb": 50,
        "cpu_arch": "x86_64"}, "instance_info": {"image_source": "http://10.9.0.1/i.raw",
        "image_checksum": format!("sha256:{}", "ab".repeat(32))}});
    let created = send(
        &api,
        Method::POST,
        "/v1/nodes",
        &[],
        node2.to_string().into(),
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "seeding the second node"
    );
    let port = json!({"uuid": PORT, "address": MAC, "node_uuid": NODE});
    let created = send(
        &api,
        Method::POST,
        "/v1/ports",
        &[],
        port.to_string().into(),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "seeding the port");
    // The node waits for its agent to clean it: the lookup hands the agent a token.
    let mut n = store
        .get_node_by_uuid(NODE)
        .await
        .expect("store")
        .expect("the seeded node");
    n.provision_state = "clean wait".to_owned();
    n.target_provision_state = Some("available".to_owned());
    store.update_node(&n).await.expect("store");
    hub.boot_requested(NODE).await.expect("booting the agent");
    let lookup = serde_json::to_value(lookup_request(MAC)).expect("a lookup serializes");
    let answer = send(
        &agent,
        Method::POST,
        proto::protocol::PATH_LOOKUP,
        &[],
        lookup.to_string().into(),
    )
    .await;
    let token = answer
        .json()
        .and_then(|v| v.get("token").and_then(Value::as_str).map(str::to_owned));
    // Hand the agent a command, so that event reports have one to report on.
    hub.enqueue(NODE, proto::protocol::Command::Inspect)
        .await
        .expect("queueing a command");
    let heartbeat = json!({"node_uuid": NODE, "state": {"state": "idle"}});
    let answer = send(
        &agent,
        Method::POST,
        proto::protocol::PATH_HEARTBEAT,
        &[(
            proto::protocol::TOKEN_HEADER,
            token.as_deref().unwrap_or_default(),
        )],
        heartbeat.to_string().into(),
    )
    .await;
    let command_id = answer.json().and_then(|v| {
        v.get("command_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    Ctl {
        api,
        agent,
        store,
        token,
        command_id,
        used: 0,
    }
}

/// The lookup an agent with one NIC of `mac` sends.
pub fn lookup_request(mac: &str) -> proto::protocol::LookupRequest {
    proto::protocol::LookupRequest {
        protocol_version: proto::PROTOCOL_VERSION,
        agent_version: "fuzz".to_owned(),
        macs: vec![mac.to_owned()],
        boot_mac: Some(mac.to_owned()),
        system_uuid: None,
        system_serial: None,
        inventory: proto::Inventory::default(),
        steps: Vec::new(),
    }
}

thread_local! {
    static CTL: RefCell<Option<Ctl>> = const { RefCell::new(None) };
}

/// Runs `f` with the current controller (built on first use and every `REBUILD_EVERY`
/// inputs).
pub fn with<F>(f: F)
where
    F: AsyncFnOnce(&Ctl),
{
    let mut ctl = CTL.with(|c| c.borrow_mut().take());
    crate::rt::block_on(async {
        if ctl.as_ref().is_none_or(|c| c.used >= REBUILD_EVERY) {
            ctl = Some(build().await);
        }
        if let Some(c) = ctl.as_mut() {
            c.used += 1;
            f(c).await;
        }
    });
    CTL.with(|c| *c.borrow_mut() = ctl);
}
