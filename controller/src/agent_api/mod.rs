//! The agent protocol endpoints (`/agent/v1/lookup`, `/heartbeat`, `/events`), served on
//! the provisioning-side listener next to the boot endpoints.
//!
//! Lookup ([`lookup`]) finds or enrolls the node, answers only where an agent is expected
//! ([`crate::machine::ProvisionState::allows_agent_lookup`]) and hands out a token only at
//! the start of a session ([`hub`]: one token per ramdisk boot; only its SHA-256 is kept, in
//! the `agent_sessions` table every replica reads). Heartbeats long-poll the hub
//! for the next command of their session; result reports ([`events`]) are stored through
//! [`Conductor::agent_finished`] before they are answered 2xx, and a repeated report of a
//! stored result is answered without being applied again. A lookup, an idle heartbeat, and a
//! busy heartbeat or event about a command the hub handed out are signs of life
//! ([`Conductor::agent_alive`]): a wait the node is in counts its timeout from then. Every
//! call after lookup needs the token in [`TOKEN_HEADER`]; a missing or stale one gets 401.
//! Request bodies are capped at [`AGENT_BODY_LIMIT`]; lookups are limited per source
//! address ([`limits`]).

mod events;
pub mod limits;
mod lookup;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use proto::protocol::{PATH_EVENTS, PATH_HEARTBEAT, PATH_LOOKUP, TOKEN_HEADER};
use serde_json::json;
use uuid::Uuid;

use crate::conductor::Conductor;
use crate::discovery::Discovery;
use crate::hub::{AgentHub, TokenHash, hash_token, to_hex};
use crate::model::Node;
use crate::store::{Store, StoreError};
use limits::SourceLimiter;

pub use crate::hub::PROGRESS_KEY;

/// Largest request body of the agent API. The largest honest body is a lookup (or an
/// inspection result) with a full inventory: 32 NICs and 1024 fully described disks come to
/// about 0.5 MiB (`limits::tests::largest_honest_lookup_fits`).
pub const AGENT_BODY_LIMIT: usize = 1024 * 1024;

/// What the agent endpoints share.
#[derive(Debug, Clone)]
pub struct AgentApiState {
    pub store: Arc<dyn Store>,
    pub conductor: Arc<Conductor>,
    pub hub: Arc<AgentHub>,
    pub discovery: Arc<Discovery>,
    /// Longest a heartbeat is held before it is answered `wait`.
    pub heartbeat_timeout: Duration,
    /// Lookups per source address.
    pub lookup_limit: Arc<SourceLimiter>,
    /// Agent bytes written and write rates for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The agent routes (serve with `into_make_service_with_connect_info::<SocketAddr>()`).
pub fn router(state: AgentApiState) -> Router {
    Router::new()
        .route(PATH_LOOKUP, post(lookup::lookup))
        .route(PATH_HEARTBEAT, post(events::heartbeat))
        .route(PATH_EVENTS, post(events::events))
        .layer(DefaultBodyLimit::max(AGENT_BODY_LIMIT))
        .with_state(state)
}

/// An error answer: status plus `{"error": message}`; 429 and 503 say when to retry.
#[derive(Debug)]
struct AgentError {
    status: StatusCode,
    message: String,
    retry_after_secs: u64,
}

impl AgentError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after_secs: 5,
        }
    }

    /// The result or request could not be stored: the agent sends it again.
    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller cannot store this now, retry",
        )
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(json!({ "error": self.message }))).into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) && let Ok(v) = HeaderValue::from_str(&self.retry_after_secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<StoreError> for AgentError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "agent API store access failed");
        Self::unavailable()
    }
}

fn bad_json(e: JsonRejection) -> AgentError {
    let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    AgentError::new(status, e.body_text())
}

fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    to_hex(&bytes)
}

/// The hash of the token in the request's header, if any.
fn presented(headers: &HeaderMap) -> Option<TokenHash> {
    headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(hash_token)
}

/// Checks the token header against the node's live session; returns the session's hash.
async fn authorize(
    st: &AgentApiState,
    headers: &HeaderMap,
    node: Uuid,
) -> Result<TokenHash, AgentError> {
    let unauthorized = || AgentError::new(StatusCode::UNAUTHORIZED, "missing or stale agent token");
    let given = presented(headers).ok_or_else(unauthorized)?;
    if st.hub.is_live(node, &given).await? {
        Ok(given)
    } else {
        Err(unauthorized())
    }
}

/// A write of the agent API (progress, session fields): `store::update_node_with`, without
/// the node's reservation.
async fn write_agent_fields(
    store: &dyn Store,
    uuid: Uuid,
    edit: impl Fn(&mut Node),
) -> Result<(), StoreError> {
    crate::store::update_node_with(store, uuid, None, |n| {
        edit(n);
        Ok::<(), StoreError>(())
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_digits() {
        let t = new_token();
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
