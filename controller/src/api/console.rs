//! Ingot's own endpoints for the web console (`/ui`, [`crate::ui`]), under `/v1/ingot/`,
//! behind the API's authentication like every other data call:
//!
//! - `GET /v1/ingot/whoami`: the caller's user, role and project, so the page shows a
//!   reader no action buttons (the API still refuses its writes with 403).
//! - `GET /v1/ingot/events`: server-sent events of node changes ([`crate::live`]): `hello`
//!   first (the page then loads what it shows, so nothing between is missed), then `node`
//!   (a row's summary) and `deleted`; `reset` when the stream fell too far behind and
//!   `reconnect` at the end of its lifetime, after which the server closes it. A project
//!   user gets only its project's nodes. Over the cap of open streams: 503.

use std::convert::Infallible;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::ApiState;
use super::auth::{AuthStrategy, Caller};
use super::context::ReqCtx;
use super::error::ApiError;
use super::render;
use crate::live::{KEEP_ALIVE, LiveEvent, STREAM_LIFETIME};

/// Where the console's event stream is.
pub const EVENTS_PATH: &str = "/v1/ingot/events";

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/ingot/whoami", get(whoami))
        .route(EVENTS_PATH, get(events))
}

async fn whoami(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    caller: Option<Extension<Caller>>,
) -> Result<Response, ApiError> {
    let strategy = match state.settings.auth {
        AuthStrategy::NoAuth => "noauth",
        AuthStrategy::HttpBasic(_) => "http_basic",
    };
    let body = json!({
        "user": caller.and_then(|Extension(c)| c.user),
        "role": ctx.grant.role,
        "project": ctx.grant.project,
        "auth_strategy": strategy,
    });
    render::json(StatusCode::OK, &body)
}

async fn events(State(state): State<ApiState>, ctx: ReqCtx) -> Result<Response, ApiError> {
    let Some((rx, permit)) = state.settings.live.subscribe() else {
        return Err(ApiError::ServiceUnavailable(
            "The console's event streams are all taken, or the server is stopping; retry later."
                .into(),
        ));
    };
    let project = ctx.grant.project.clone();
    let closing = state.settings.live.closing();
    let deadline = tokio::time::Instant::now() + STREAM_LIFETIME;
    let hello = Event::default()
        .event("hello")
        .data(json!({ "lifetime_secs": STREAM_LIFETIME.as_secs() }).to_string());
    let changes =
        futures_util::stream::unfold((rx, permit, false), move |(mut rx, permit, ended)| {
            let project = project.clone();
            let closing = closing.clone();
            async move {
                if ended {
                    return None;
                }
                loop {
                    let next = tokio::select! {
                        r = rx.recv() => r,
                        () = closing.cancelled() => return None,
                        () = tokio::time::sleep_until(deadline) => {
                            let bye = Event::default().event("reconnect").data("{}");
                            return Some((bye, (rx, permit, true)));
                        }
                    };
                    match next {
                        Ok(event) if event.visible_to(project.as_deref()) => {
                            return Some((sse_event(&event), (rx, permit, false)));
                        }
                        Ok(_) => continue,
                        // Too slow: drop it rather than buffer for it; the page reloads.
                        Err(RecvError::Lagged(missed)) => {
                            let reset = Event::default()
                                .event("reset")
                                .data(json!({ "missed": missed }).to_string());
                            return Some((reset, (rx, permit, true)));
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        });
    let stream = futures_util::stream::once(async move { hello })
        .chain(changes)
        .map(Ok::<_, Infallible>);
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // No proxy buffering and no caching of a live stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

fn sse_event(event: &LiveEvent) -> Event {
    let (name, data) = event.wire();
    Event::default().event(name).data(data)
}
