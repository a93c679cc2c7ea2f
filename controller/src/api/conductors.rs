//! `/v1/conductors` (microversion 1.49): the `ingot serve` replicas registered in the
//! database, with `alive` from their heartbeat. Visible to users of every project only
//! (a project-scoped user gets 403, as Ironic's `baremetal:conductor:get` is a system rule).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::ApiState;
use super::context::ReqCtx;
use super::error::{ApiError, ApiResult};
use super::query::{Params, encode, page_in_memory};
use super::render::{self, Ts};
use crate::model::ConductorRecord;
use crate::store::SortDir;

/// First microversion with `/v1/conductors`.
const MIN_VERSION: u32 = 49;

/// Every field, in Ironic's order.
const FIELDS: [&str; 7] = [
    "hostname",
    "conductor_group",
    "alive",
    "drivers",
    "created_at",
    "updated_at",
    "links",
];

/// Fields of a list without `detail`.
const LIST_FIELDS: [&str; 4] = ["hostname", "conductor_group", "alive", "links"];

const SORT_KEYS: [&str; 4] = ["hostname", "conductor_group", "created_at", "updated_at"];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/conductors", get(list))
        .route("/v1/conductors/{hostname}", get(show))
}

fn check(ctx: &ReqCtx) -> ApiResult<()> {
    ctx.require(MIN_VERSION)?;
    if ctx.grant.project.is_some() {
        return Err(ApiError::Forbidden(
            "Access was denied to /v1/conductors: conductors are shown only to users of every \
             project."
                .to_owned(),
        ));
    }
    Ok(())
}

fn doc(state: &ApiState, ctx: &ReqCtx, c: &ConductorRecord, fields: &[&str]) -> Value {
    let timeout = state.conductor.config().heartbeat_timeout;
    let mut out = Map::new();
    for f in fields {
        let v = match *f {
            "hostname" => json!(c.hostname),
            "conductor_group" => json!(c.conductor_group),
            "alive" => json!(c.alive(Utc::now(), timeout)),
            "drivers" => json!(c.drivers),
            "created_at" => json!(Ts(&c.created_at).to_string()),
            "updated_at" => json!(Ts(&c.updated_at).to_string()),
            "links" => json!([
                {"href": format!("{}/v1/conductors/{}", ctx.base, encode(&c.hostname)), "rel": "self"},
                {"href": format!("{}/conductors/{}", ctx.base, encode(&c.hostname)), "rel": "bookmark"},
            ]),
            _ => continue,
        };
        out.insert((*f).to_owned(), v);
    }
    Value::Object(out)
}

async fn conductors(state: &ApiState) -> ApiResult<Vec<ConductorRecord>> {
    Ok(state.store.list_conductors().await?)
}

async fn list(State(state): State<ApiState>, ctx: ReqCtx, uri: Uri) -> ApiResult<Response> {
    check(&ctx)?;
    let params = Params::parse(uri.query());
    let detail = params.bool("detail")?.unwrap_or(false);
    let fields = params.fields(&FIELDS)?;
    if detail && fields.is_some() {
        return Err(ApiError::bad_request(
            "Can not specify ?detail=True and fields in the same request.",
        ));
    }
    let limit = params.limit(state.settings.max_limit)?;
    let sort_key = params.sort_key(&SORT_KEYS)?;
    let sort_dir = params.sort_dir()?;
    let mut rows = conductors(&state).await?;
    rows.sort_by(|a, b| {
        let order = match sort_key.as_str() {
            "conductor_group" => a.conductor_group.cmp(&b.conductor_group),
            "created_at" => a.created_at.cmp(&b.created_at),
            "updated_at" => a.updated_at.cmp(&b.updated_at),
            _ => std::cmp::Ordering::Equal,
        }
        .then_with(|| a.hostname.cmp(&b.hostname));
        if sort_dir == SortDir::Desc {
            order.reverse()
        } else {
            order
        }
    });
    let marker = params.get("marker");
    let more =
        page_in_memory(&mut rows, marker, |c| c.hostname.clone(), limit).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Conductor {} could not be found.",
                marker.unwrap_or_default()
            ))
        })?;
    let shown: Vec<&str> = match (&fields, detail) {
        (Some(f), _) => f.iter().map(String::as_str).collect(),
        (None, true) => FIELDS.to_vec(),
        (None, false) => LIST_FIELDS.to_vec(),
    };
    let docs: Vec<Value> = rows.iter().map(|c| doc(&state, &ctx, c, &shown)).collect();
    let mut body = json!({ "conductors": docs });
    if more && let Some(last) = rows.last() {
        let mut next = format!("{}/v1/conductors?", ctx.base);
        if detail {
            next.push_str("detail=True&");
        }
        if let Some(f) = &fields {
            next.push_str(&format!("fields={}&", encode(&f.join(","))));
        }
        next.push_str(&format!("limit={limit}&marker={}", encode(&last.hostname)));
        body["next"] = json!(next);
    }
    render::json(StatusCode::OK, &body)
}

async fn show(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(hostname): Path<String>,
    uri: Uri,
) -> ApiResult<Response> {
    check(&ctx)?;
    let params = Params::parse(uri.query());
    let fields = params.fields(&FIELDS)?;
    let rows = conductors(&state).await?;
    let c = rows
        .iter()
        .find(|c| c.hostname == hostname)
        .ok_or_else(|| ApiError::NotFound(format!("Conductor {hostname} could not be found.")))?;
    let shown: Vec<&str> = match &fields {
        Some(f) => f.iter().map(String::as_str).collect(),
        None => FIELDS.to_vec(),
    };
    render::json(StatusCode::OK, &doc(&state, &ctx, c, &shown))
}
