//! The agent protocol endpoints (`/agent/v1/lookup`, `/heartbeat`, `/events`), served on
//! the provisioning-side listener next to the boot endpoints.
//!
//! Lookup finds or enrolls the node and issues a fresh token (only its SHA-256 is kept, in
//! the [`hub::AgentHub`] and in `driver_internal_info.agent_token_sha256`); heartbeats
//! long-poll the hub for the next command; result reports complete the node's wait state
//! through [`Conductor::agent_finished`]. A lookup, an idle heartbeat, and a busy heartbeat
//! or event about a command the hub handed out are signs of life
//! ([`Conductor::agent_alive`]): a wait the node is in counts its timeout from then. Every
//! call after lookup needs the token in [`TOKEN_HEADER`]; a missing or stale one gets 401.

pub mod hub;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use proto::protocol::{
    Command, EventReport, HeartbeatRequest, HeartbeatResponse, LookupRequest, LookupResponse,
    PATH_EVENTS, PATH_HEARTBEAT, PATH_LOOKUP, Report, TOKEN_HEADER,
};
use proto::{AgentEvent, PROTOCOL_VERSION};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::conductor::{Conductor, ConductorError, ProvisionRequest};
use crate::discovery::{Discovery, EnrollError};
use crate::drivers::wipe_proof;
use crate::machine::Verb;
use crate::model::Node;
use crate::store::{Store, StoreError};
use hub::{AgentHub, TOKEN_HASH_KEY, hash_token, hashes_equal};

/// `driver_internal_info` key with the latest progress report.
pub const PROGRESS_KEY: &str = "agent_progress";

/// What the agent endpoints share.
#[derive(Debug, Clone)]
pub struct AgentApiState {
    pub store: Arc<dyn Store>,
    pub conductor: Arc<Conductor>,
    pub hub: Arc<AgentHub>,
    pub discovery: Arc<Discovery>,
    /// Longest a heartbeat is held before it is answered `wait`.
    pub heartbeat_timeout: Duration,
}

/// The agent routes (serve with `into_make_service_with_connect_info::<SocketAddr>()`).
pub fn router(state: AgentApiState) -> Router {
    Router::new()
        .route(PATH_LOOKUP, post(lookup))
        .route(PATH_HEARTBEAT, post(heartbeat))
        .route(PATH_EVENTS, post(events))
        .with_state(state)
}

/// An error answer: status plus `{"error": message}`.
#[derive(Debug)]
struct AgentError(StatusCode, String);

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let mut resp = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

impl From<StoreError> for AgentError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "agent API store access failed");
        Self(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store access failed".into(),
        )
    }
}

fn bad_json(e: JsonRejection) -> AgentError {
    AgentError(StatusCode::BAD_REQUEST, e.body_text())
}

fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Re-reads and updates a node until the write is not stale.
async fn edit_node(
    store: &dyn Store,
    uuid: Uuid,
    edit: impl Fn(&mut Node),
) -> Result<(), StoreError> {
    for _ in 0..8 {
        let Some(mut node) = store.get_node_by_uuid(uuid).await? else {
            return Err(StoreError::NotFound {
                kind: "node",
                ident: uuid.to_string(),
            });
        };
        edit(&mut node);
        match store.update_node(&node).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Stale { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Stale { uuid })
}

async fn lookup(
    State(st): State<AgentApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<LookupRequest>, JsonRejection>,
) -> Result<Json<LookupResponse>, AgentError> {
    let Json(req) = body.map_err(bad_json)?;
    if req.protocol_version != PROTOCOL_VERSION {
        return Err(AgentError(
            StatusCode::BAD_REQUEST,
            format!(
                "protocol version {} is not supported (controller speaks {PROTOCOL_VERSION})",
                req.protocol_version
            ),
        ));
    }
    let mut manage_after = false;
    let (node, discovered) = match st.discovery.find(st.store.as_ref(), &req).await? {
        Some(node) => (node, false),
        None => match st
            .discovery
            .enroll(st.store.as_ref(), peer.ip(), &req)
            .await
        {
            Ok((node, manage)) => {
                manage_after = manage;
                (node, true)
            }
            Err(EnrollError::Disabled) => {
                return Err(AgentError(
                    StatusCode::NOT_FOUND,
                    EnrollError::Disabled.to_string(),
                ));
            }
            Err(e @ EnrollError::SubnetRefused(_)) => {
                tracing::warn!(peer = %peer, "discovery refused outside the allowed subnets");
                return Err(AgentError(StatusCode::FORBIDDEN, e.to_string()));
            }
            Err(e @ EnrollError::RateLimited) => {
                return Err(AgentError(StatusCode::TOO_MANY_REQUESTS, e.to_string()));
            }
            Err(EnrollError::Store(e)) => return Err(e.into()),
        },
    };
    let token = new_token();
    let hash = hash_token(&token);
    st.hub.set_token_hash(node.uuid, hash);
    let version = req.agent_version.clone();
    edit_node(st.store.as_ref(), node.uuid, |n| {
        n.driver_internal_info
            .insert(TOKEN_HASH_KEY.into(), Value::String(to_hex(&hash)));
        n.driver_internal_info
            .insert("agent_version".into(), Value::String(version.clone()));
        n.driver_internal_info.insert(
            "agent_last_lookup".into(),
            Value::String(chrono::Utc::now().to_rfc3339()),
        );
    })
    .await?;
    st.conductor.agent_alive(node.uuid);
    // After the token is stored: the manage task's node writes must not drop it.
    if manage_after
        && let Err(e) = st
            .conductor
            .provision(node.uuid, ProvisionRequest::new(Verb::Manage))
            .await
    {
        tracing::warn!(node = %node.uuid, error = %e, "inspection rule could not manage the node");
    }
    tracing::info!(node = %node.uuid, peer = %peer, discovered, "agent looked up");
    Ok(Json(LookupResponse {
        node_uuid: node.uuid,
        token,
        discovered,
        heartbeat_timeout_secs: u32::try_from(st.heartbeat_timeout.as_secs()).unwrap_or(u32::MAX),
    }))
}

/// Checks the token header against the node's current token.
async fn authorize(st: &AgentApiState, headers: &HeaderMap, node: Uuid) -> Result<(), AgentError> {
    let unauthorized = || {
        AgentError(
            StatusCode::UNAUTHORIZED,
            "missing or stale agent token".into(),
        )
    };
    let given = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let expected = match st.hub.token_hash(node) {
        Some(h) => h,
        None => {
            let stored = st
                .store
                .get_node_by_uuid(node)
                .await?
                .and_then(|n| {
                    n.driver_internal_info
                        .get(TOKEN_HASH_KEY)
                        .and_then(Value::as_str)
                        .and_then(from_hex)
                })
                .ok_or_else(unauthorized)?;
            st.hub.set_token_hash(node, stored);
            stored
        }
    };
    if hashes_equal(&hash_token(given), &expected) {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

async fn heartbeat(
    State(st): State<AgentApiState>,
    headers: HeaderMap,
    body: Result<Json<HeartbeatRequest>, JsonRejection>,
) -> Result<Json<HeartbeatResponse>, AgentError> {
    let Json(req) = body.map_err(bad_json)?;
    authorize(&st, &headers, req.node_uuid).await?;
    if let proto::protocol::AgentState::Busy { command_id } = req.state {
        // A keep-alive while a command runs: nothing new is handed out. Only work this
        // controller handed out keeps a wait alive: an agent still busy with a command from
        // before a restart must not hold the node's wait open forever.
        st.hub.touch(req.node_uuid);
        if st.hub.sent(req.node_uuid, command_id).is_some() {
            st.conductor.agent_alive(req.node_uuid);
        }
        return Ok(Json(HeartbeatResponse {
            command_id: Uuid::nil(),
            command: Command::Wait { seconds: 5 },
        }));
    }
    // An idle agent is a sign of life: a wait the node is in counts from now.
    st.conductor.agent_alive(req.node_uuid);
    // An idle agent runs nothing: what it was handed and never reported went to a dead
    // connection (a long-poll left behind by a reboot). Hand it out again.
    let lost = st.hub.requeue_sent(req.node_uuid);
    if lost > 0 {
        tracing::warn!(node = %req.node_uuid, lost, "agent is idle: handing lost commands out again");
    }
    let answer = match st.hub.next(req.node_uuid, st.heartbeat_timeout).await {
        Some((command_id, command)) => {
            tracing::info!(node = %req.node_uuid, command_id = %command_id, "command handed to the agent");
            HeartbeatResponse {
                command_id,
                command,
            }
        }
        None => HeartbeatResponse {
            command_id: Uuid::nil(),
            command: Command::Wait { seconds: 1 },
        },
    };
    Ok(Json(answer))
}

async fn events(
    State(st): State<AgentApiState>,
    headers: HeaderMap,
    body: Result<Json<EventReport>, JsonRejection>,
) -> Result<StatusCode, AgentError> {
    let Json(rep) = body.map_err(bad_json)?;
    let node = rep.node_uuid;
    authorize(&st, &headers, node).await?;
    st.hub.touch(node);
    let unknown = || {
        AgentError(
            StatusCode::NOT_FOUND,
            format!("command {} is not running on node {node}", rep.command_id),
        )
    };
    match rep.report {
        Report::Event { event } => {
            if st.hub.sent(node, rep.command_id).is_none() {
                return Err(unknown());
            }
            // Progress of work this controller handed out: the wait counts from now.
            st.conductor.agent_alive(node);
            if let AgentEvent::Progress(p) = event {
                let value = json!({
                    "command_id": rep.command_id,
                    "phase": p.phase,
                    "bytes_fetched": p.bytes_fetched,
                    "bytes_written": p.bytes_written,
                    "bytes_total": p.bytes_total,
                    "rate_bps": p.rate_bps,
                    "elapsed_ms": p.elapsed_ms,
                });
                edit_node(st.store.as_ref(), node, |n| {
                    n.driver_internal_info
                        .insert(PROGRESS_KEY.into(), value.clone());
                })
                .await?;
            }
            Ok(StatusCode::NO_CONTENT)
        }
        Report::Succeeded { inventory, detail } => {
            let command = st.hub.take_sent(node, rep.command_id).ok_or_else(unknown)?;
            if let Some(detail) = &detail {
                edit_node(st.store.as_ref(), node, |n| {
                    n.driver_internal_info
                        .insert("agent_last_result".into(), detail.clone());
                })
                .await?;
            }
            let wait_state = match &command {
                Command::Inspect => {
                    let Some(inv) = inventory else {
                        finish(
                            &st,
                            node,
                            "inspect wait",
                            Err("the agent reported no inventory".into()),
                        )
                        .await;
                        return Ok(StatusCode::NO_CONTENT);
                    };
                    st.discovery.refresh(st.store.as_ref(), node, &inv).await?;
                    "inspect wait"
                }
                Command::Wipe { devices, .. } => {
                    // A whole-machine wipe must prove it covered every inventoried disk.
                    if devices.is_empty()
                        && let Err(reason) = wipe_proof::check(
                            st.store.as_ref(),
                            st.conductor.name(),
                            node,
                            detail.as_ref(),
                        )
                        .await?
                    {
                        tracing::warn!(node = %node, error = %reason, "cleaning refused");
                        finish(&st, node, "clean wait", Err(reason)).await;
                        return Ok(StatusCode::NO_CONTENT);
                    }
                    "clean wait"
                }
                Command::Deploy(_) => {
                    // The conductor now reboots the machine into its instance.
                    st.hub.gone(node);
                    "wait call-back"
                }
                Command::Reboot | Command::PowerOff => {
                    st.hub.gone(node);
                    return Ok(StatusCode::NO_CONTENT);
                }
                _ => return Ok(StatusCode::NO_CONTENT),
            };
            finish(&st, node, wait_state, Ok(())).await;
            Ok(StatusCode::NO_CONTENT)
        }
        Report::Failed { error } => {
            let command = st.hub.take_sent(node, rep.command_id).ok_or_else(unknown)?;
            let mut text = error.message.clone();
            for cause in &error.causes {
                text.push_str(": ");
                text.push_str(cause);
            }
            let wait_state = match command {
                Command::Inspect => "inspect wait",
                Command::Wipe { .. } => "clean wait",
                Command::Deploy(_) => "wait call-back",
                _ => {
                    tracing::warn!(node = %node, error = %text, "agent command failed");
                    return Ok(StatusCode::NO_CONTENT);
                }
            };
            finish(&st, node, wait_state, Err(text)).await;
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

/// The state a node is in between the conductor handing a command to the hub and saving
/// `wait_state`: a fast agent can report in that gap, so its result must wait, not be
/// dropped.
fn entering_state(wait_state: &str) -> Option<&'static str> {
    match wait_state {
        "inspect wait" => Some("inspecting"),
        "clean wait" => Some("cleaning"),
        "wait call-back" => Some("deploying"),
        _ => None,
    }
}

/// Completes the node's wait when it is in `wait_state`; retries while the conductor task
/// that hands out the command has not saved the wait state yet, or still holds the lock.
async fn finish(st: &AgentApiState, node: Uuid, wait_state: &str, result: Result<(), String>) {
    for _ in 0..500 {
        match st.store.get_node_by_uuid(node).await {
            Ok(Some(n)) if n.provision_state == wait_state => {}
            // The task that sent the command has not saved the wait state yet (a fast agent
            // answers before the conductor's transaction commits): wait for it.
            Ok(Some(n))
                if n.reservation.is_some()
                    || entering_state(wait_state) == Some(n.provision_state.as_str()) =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Ok(Some(n)) => {
                tracing::info!(node = %node, state = %n.provision_state, "agent result outside a wait state");
                return;
            }
            Ok(None) => return,
            Err(e) => {
                tracing::error!(node = %node, error = %e, "reading node for agent result");
                return;
            }
        }
        match st.conductor.agent_finished(node, result.clone()).await {
            Ok(()) => return,
            Err(ConductorError::Locked { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "agent result not accepted");
                return;
            }
        }
    }
    tracing::error!(node = %node, "node stayed locked; agent result dropped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_wait_for_the_state_before_each_wait() {
        assert_eq!(entering_state("inspect wait"), Some("inspecting"));
        assert_eq!(entering_state("clean wait"), Some("cleaning"));
        assert_eq!(entering_state("wait call-back"), Some("deploying"));
        assert_eq!(entering_state("manageable"), None);
    }

    #[test]
    fn hex_round_trip() {
        let h = hash_token("x");
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(new_token().len(), 64);
    }
}
