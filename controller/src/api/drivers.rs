//! `/v1/drivers`: the conductor's hardware types, their interfaces and properties.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::ApiState;
use super::context::ReqCtx;
use super::error::{ApiError, ApiResult};
use super::query::Params;
use super::render;
use crate::drivers::HardwareType;
use crate::drivers::registry::INTERFACE_KINDS;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/drivers", get(list))
        .route("/v1/drivers/{name}", get(show))
        .route("/v1/drivers/{name}/properties", get(properties))
}

fn links(base: &str, name: &str, suffix: &str) -> Value {
    json!([
        {"href": format!("{base}/v1/drivers/{name}{suffix}"), "rel": "self"},
        {"href": format!("{base}/drivers/{name}{suffix}"), "rel": "bookmark"},
    ])
}

/// The live conductors and the hardware types each runs (`/v1/conductors`'s rows).
async fn live_hosts(state: &ApiState) -> ApiResult<Vec<(String, Vec<String>)>> {
    let timeout = state.conductor.config().heartbeat_timeout;
    let now = chrono::Utc::now();
    Ok(state
        .store
        .list_conductors()
        .await?
        .into_iter()
        .filter(|c| c.alive(now, timeout))
        .map(|c| (c.hostname, c.drivers))
        .collect())
}

/// The hosts running `name`: the live conductors that registered it, else (before this
/// conductor registered) this conductor.
fn hosts_of(state: &ApiState, live: &[(String, Vec<String>)], name: &str) -> Vec<String> {
    let hosts: Vec<String> = live
        .iter()
        .filter(|(_, drivers)| drivers.iter().any(|d| d == name))
        .map(|(h, _)| h.clone())
        .collect();
    if hosts.is_empty() {
        vec![state.conductor_name().to_owned()]
    } else {
        hosts
    }
}

fn driver_doc(
    state: &ApiState,
    ctx: &ReqCtx,
    hw: &HardwareType,
    detail: bool,
    live: &[(String, Vec<String>)],
) -> Value {
    let mut doc = Map::new();
    doc.insert("name".into(), json!(hw.name));
    doc.insert("hosts".into(), json!(hosts_of(state, live, &hw.name)));
    doc.insert("type".into(), json!("dynamic"));
    doc.insert("links".into(), links(&ctx.base, &hw.name, ""));
    doc.insert(
        "properties".into(),
        links(&ctx.base, &hw.name, "/properties"),
    );
    if detail {
        for kind in INTERFACE_KINDS {
            let choice = hw.interfaces.get(kind);
            doc.insert(
                format!("default_{kind}_interface"),
                choice.map_or(Value::Null, |c| json!(c.default)),
            );
            doc.insert(
                format!("enabled_{kind}_interfaces"),
                choice.map_or(Value::Null, |c| json!(c.enabled)),
            );
        }
    }
    Value::Object(doc)
}

async fn list(State(state): State<ApiState>, ctx: ReqCtx, uri: Uri) -> ApiResult<Response> {
    let params = Params::parse(uri.query());
    let detail = params.bool("detail")?.unwrap_or(false);
    let live = live_hosts(&state).await?;
    let drivers: Vec<Value> = match params.get("type") {
        None | Some("dynamic") => state
            .conductor
            .registry()
            .list()
            .map(|hw| driver_doc(&state, &ctx, hw, detail, &live))
            .collect(),
        Some("classic") => Vec::new(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid driver type \"{other}\". Supported types are \"classic\" and \"dynamic\"."
            )));
        }
    };
    render::json(StatusCode::OK, &json!({ "drivers": drivers }))
}

fn find<'a>(state: &'a ApiState, name: &str) -> ApiResult<&'a HardwareType> {
    state
        .conductor
        .registry()
        .get(name)
        .ok_or_else(|| ApiError::NotFound(format!("Could not find the requested driver {name}.")))
}

async fn show(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let hw = find(&state, &name)?;
    let live = live_hosts(&state).await?;
    render::json(StatusCode::OK, &driver_doc(&state, &ctx, hw, true, &live))
}

async fn properties(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let hw = find(&state, &name)?;
    render::json(StatusCode::OK, &hw.properties)
}
