//! `POST /agent/v1/lookup`: which node a machine is, and whether its agent session starts.
//!
//! Bounded before any store work (per-source rate limit, at most
//! [`limits::MAX_LOOKUP_MACS`] MACs, the body cap of the router). A known node answers only
//! in a state where an agent is expected (404 elsewhere, as Ironic); a token is handed out
//! only when a session starts ([`session::decide`](super::session::decide)); the live
//! session's own agent gets `token: null`; anyone else is refused with 409 and logged.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use proto::PROTOCOL_VERSION;
use proto::protocol::{Command, LookupRequest, LookupResponse};
use serde_json::Value;

use super::{
    AgentApiState, AgentError, bad_json, hash_token, limits, new_token, presented,
    write_agent_fields,
};
use crate::conductor::ProvisionRequest;
use crate::discovery::EnrollError;
use crate::discovery::bmc_enrol::MANAGE_AFTER_KEY;
use crate::hub::session::Decision;
use crate::machine::{ProvisionState, Verb};
use crate::model::Node;

/// The answer to a known machine in a state where no agent belongs (Ironic answers 404).
fn not_expected() -> AgentError {
    AgentError::new(
        StatusCode::NOT_FOUND,
        "no node is waiting for an agent on this machine",
    )
}

pub(super) async fn lookup(
    State(st): State<AgentApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<LookupRequest>, JsonRejection>,
) -> Result<Json<LookupResponse>, AgentError> {
    if let Err(wait) = st.lookup_limit.check(peer.ip()) {
        tracing::debug!(peer = %peer, "lookup over the per-source limit");
        return Err(AgentError {
            retry_after_secs: wait.as_secs().max(1),
            ..AgentError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many lookups from this address, retry later",
            )
        });
    }
    let Json(req) = body.map_err(bad_json)?;
    if req.protocol_version != PROTOCOL_VERSION {
        return Err(AgentError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "protocol version {} is not supported (controller speaks {PROTOCOL_VERSION})",
                req.protocol_version
            ),
        ));
    }
    limits::check_macs(&req).map_err(|e| AgentError::new(StatusCode::BAD_REQUEST, e))?;
    proto::protocol::check_agent_steps(&req.steps)
        .map_err(|e| AgentError::new(StatusCode::BAD_REQUEST, e))?;
    match st.discovery.find(st.store.as_ref(), &req).await? {
        Some(node) => known_machine(&st, peer, &headers, &req, node).await,
        None => unknown_machine(&st, peer, &req).await,
    }
}

/// A machine the store knows: answered only where an agent is expected.
async fn known_machine(
    st: &AgentApiState,
    peer: SocketAddr,
    headers: &HeaderMap,
    req: &LookupRequest,
    node: Node,
) -> Result<Json<LookupResponse>, AgentError> {
    let id = node.uuid;
    let state: ProvisionState = node.provision_state.parse().map_err(|_| not_expected())?;
    if !state.allows_agent_lookup(st.hub.fast_track_enabled()) {
        tracing::info!(node = %id, peer = %peer, state = %state, "lookup refused: no agent is expected in this state");
        return Err(not_expected());
    }
    let token = new_token();
    let fresh = hash_token(&token);
    let token = match st
        .hub
        .lookup(id, presented(headers).as_ref(), fresh)
        .await?
    {
        Decision::Issue => {
            if let Err(e) = persist_session(st, id, req).await {
                st.hub.undo_issue(id, &fresh).await?;
                return Err(e.into());
            }
            Some(token)
        }
        Decision::Continue => None,
        Decision::Conflict => {
            tracing::warn!(node = %id, peer = %peer, state = %state, "second agent session refused: another one is live");
            return Err(AgentError::new(
                StatusCode::CONFLICT,
                "an agent session is already live for this machine",
            ));
        }
        Decision::NoBoot => {
            tracing::info!(node = %id, peer = %peer, state = %state, "lookup refused: the controller booted no agent on this machine");
            return Err(AgentError::new(
                StatusCode::CONFLICT,
                "the controller has not booted an agent on this machine",
            ));
        }
    };
    st.conductor.agent_alive(id);
    tracing::info!(node = %id, peer = %peer, new_session = token.is_some(), "agent looked up");
    Ok(Json(response(st, id, token, false)))
}

/// An unknown machine: enrolled through discovery (subnets, rate limit); its session
/// starts now.
async fn unknown_machine(
    st: &AgentApiState,
    peer: SocketAddr,
    req: &LookupRequest,
) -> Result<Json<LookupResponse>, AgentError> {
    let (node, manage_after) = match st.discovery.enroll(st.store.as_ref(), peer.ip(), req).await {
        Ok(found) => found,
        Err(EnrollError::Disabled) => {
            return Err(AgentError::new(
                StatusCode::NOT_FOUND,
                EnrollError::Disabled.to_string(),
            ));
        }
        Err(e @ EnrollError::SubnetRefused(_)) => {
            tracing::warn!(peer = %peer, "discovery refused outside the allowed subnets");
            return Err(AgentError::new(StatusCode::FORBIDDEN, e.to_string()));
        }
        Err(e @ EnrollError::RateLimited) => {
            return Err(AgentError::new(
                StatusCode::TOO_MANY_REQUESTS,
                e.to_string(),
            ));
        }
        Err(EnrollError::Store(e)) => return Err(e.into()),
    };
    let token = new_token();
    let fresh = hash_token(&token);
    st.hub.discovered(node.uuid, fresh).await?;
    if let Err(e) = persist_session(st, node.uuid, req).await {
        // Nobody got this token: the agent's retry may start the session.
        st.hub.undo_issue(node.uuid, &fresh).await?;
        return Err(e.into());
    }
    st.conductor.agent_alive(node.uuid);
    // A machine with no BMC settings from the rules sets up its BMC in-band first; the
    // node is managed once the credentials are stored (`events::bmc_enrolled`).
    let enroll_bmc = st
        .discovery
        .config
        .enroll_bmc
        .clone()
        .filter(|_| !node.driver_info.keys().any(|k| k.ends_with("_address")));
    if let Some(user) = enroll_bmc {
        if manage_after {
            // A failed enrolment still manages it, with the driver the rules gave.
            write_agent_fields(st.store.as_ref(), node.uuid, |n| {
                n.driver_internal_info
                    .insert(MANAGE_AFTER_KEY.into(), Value::Bool(true));
            })
            .await?;
        }
        st.hub
            .enqueue(node.uuid, Command::EnrollBmc { user })
            .await?;
        tracing::info!(node = %node.uuid, "asked the agent to enroll its BMC in-band");
    } else if manage_after
        // After the token is stored: the manage task's node writes must not drop it.
        && let Err(e) = st
            .conductor
            .provision(node.uuid, ProvisionRequest::new(Verb::Manage))
            .await
    {
        tracing::warn!(node = %node.uuid, error = %e, "inspection rule could not manage the node");
    }
    tracing::info!(node = %node.uuid, peer = %peer, "agent of a discovered machine looked up");
    Ok(Json(response(st, node.uuid, Some(token), true)))
}

/// Stores the agent's version, the steps it offers (checked at the door) and when it
/// looked up (the session itself is the hub's).
async fn persist_session(
    st: &AgentApiState,
    node: uuid::Uuid,
    req: &LookupRequest,
) -> Result<(), crate::store::StoreError> {
    let steps = serde_json::to_value(&req.steps).unwrap_or_default();
    write_agent_fields(st.store.as_ref(), node, |n| {
        n.driver_internal_info.insert(
            "agent_version".into(),
            Value::String(req.agent_version.clone()),
        );
        n.driver_internal_info.insert(
            crate::drivers::agent_steps::AGENT_STEPS_KEY.into(),
            steps.clone(),
        );
        n.driver_internal_info.insert(
            "agent_last_lookup".into(),
            Value::String(chrono::Utc::now().to_rfc3339()),
        );
    })
    .await
}

fn response(
    st: &AgentApiState,
    node: uuid::Uuid,
    token: Option<String>,
    discovered: bool,
) -> LookupResponse {
    LookupResponse {
        node_uuid: node,
        token,
        discovered,
        heartbeat_timeout_secs: u32::try_from(st.heartbeat_timeout.as_secs()).unwrap_or(u32::MAX),
    }
}
