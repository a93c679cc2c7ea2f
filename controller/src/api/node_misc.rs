//! Node sub-resources that only need the store: maintenance, traits, history, inventory.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use serde_json::{Value, json};
use uuid::Uuid;

use super::ApiState;
use super::context::{JsonBody, OptionalJsonBody, ReqCtx};
use super::edit::{edit_node, find_node};
use super::error::{ApiError, ApiResult};
use super::render::{self, Collection, HistoryView};
use super::schema::{Ty, as_object, check_known_keys, check_trait, check_type, require_key};

/// Ironic's per-node trait limit.
const MAX_TRAITS: usize = 50;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/nodes/{ident}/maintenance",
            put(set_maintenance).delete(unset_maintenance),
        )
        .route(
            "/v1/nodes/{ident}/traits",
            get(list_traits)
                .put(replace_traits)
                .delete(remove_all_traits),
        )
        .route(
            "/v1/nodes/{ident}/traits/{trait_name}",
            put(add_trait).delete(remove_trait),
        )
        .route("/v1/nodes/{ident}/history", get(history))
        .route("/v1/nodes/{ident}/history/{event}", get(history_event))
        .route("/v1/nodes/{ident}/inventory", get(inventory))
}

async fn set_maintenance(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody,
) -> ApiResult<Response> {
    let reason = match &body {
        None => None,
        Some(body) => {
            let obj = as_object("maintenance", body)?;
            check_known_keys("maintenance", obj, &["reason"])?;
            match obj.get("reason") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    check_type("maintenance", other, Ty::Str, true)?;
                    None
                }
            }
        }
    };
    let node = find_node(&state, &ctx, &ident).await?;
    edit_node(&state, node.uuid, |n| {
        n.maintenance = true;
        n.maintenance_reason = reason.clone();
        Ok(())
    })
    .await?;
    tracing::info!(node = %node.uuid, "maintenance set");
    Ok(render::empty(StatusCode::ACCEPTED, None))
}

async fn unset_maintenance(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    let node = find_node(&state, &ctx, &ident).await?;
    edit_node(&state, node.uuid, |n| {
        n.maintenance = false;
        n.maintenance_reason = None;
        n.fault = None;
        Ok(())
    })
    .await?;
    tracing::info!(node = %node.uuid, "maintenance unset");
    Ok(render::empty(StatusCode::ACCEPTED, None))
}

async fn list_traits(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    ctx.require(37)?;
    let node = find_node(&state, &ctx, &ident).await?;
    render::json(StatusCode::OK, &json!({ "traits": node.traits }))
}

fn too_many(uuid: Uuid, traits: &[String]) -> ApiError {
    ApiError::bad_request(format!(
        "Could not add trait(s) {} to node {uuid} because the node would have more than {MAX_TRAITS} traits",
        traits.join(", ")
    ))
}

async fn replace_traits(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    ctx.require(37)?;
    let obj = as_object("traits", &body)?;
    check_known_keys("traits", obj, &["traits"])?;
    let list = require_key("traits", obj, "traits")?;
    check_type("traits", list, Ty::Arr, false)?;
    let mut traits: Vec<String> = Vec::new();
    for t in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        check_type("trait", t, Ty::Str, false)?;
        let t = t.as_str().unwrap_or_default();
        check_trait(t)?;
        if !traits.iter().any(|x| x == t) {
            traits.push(t.to_owned());
        }
    }
    let node = find_node(&state, &ctx, &ident).await?;
    if traits.len() > MAX_TRAITS {
        return Err(too_many(node.uuid, &traits));
    }
    edit_node(&state, node.uuid, |n| {
        n.traits = traits.clone();
        Ok(())
    })
    .await?;
    Ok(render::empty(StatusCode::NO_CONTENT, None))
}

async fn add_trait(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path((ident, trait_name)): Path<(String, String)>,
) -> ApiResult<Response> {
    ctx.require(37)?;
    check_trait(&trait_name)?;
    let node = find_node(&state, &ctx, &ident).await?;
    edit_node(&state, node.uuid, |n| {
        if !n.traits.contains(&trait_name) {
            if n.traits.len() >= MAX_TRAITS {
                return Err(too_many(n.uuid, std::slice::from_ref(&trait_name)));
            }
            n.traits.push(trait_name.clone());
        }
        Ok(())
    })
    .await?;
    let location = format!("{}/v1/nodes/{ident}/traits/{trait_name}", ctx.base);
    Ok(render::empty(StatusCode::NO_CONTENT, Some(location)))
}

async fn remove_trait(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path((ident, trait_name)): Path<(String, String)>,
) -> ApiResult<Response> {
    ctx.require(37)?;
    let node = find_node(&state, &ctx, &ident).await?;
    if !node.traits.contains(&trait_name) {
        return Err(ApiError::NotFound(format!(
            "Node {} doesn't have a trait {trait_name}",
            node.uuid
        )));
    }
    edit_node(&state, node.uuid, |n| {
        n.traits.retain(|t| *t != trait_name);
        Ok(())
    })
    .await?;
    Ok(render::empty(StatusCode::NO_CONTENT, None))
}

async fn remove_all_traits(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    ctx.require(37)?;
    let node = find_node(&state, &ctx, &ident).await?;
    edit_node(&state, node.uuid, |n| {
        n.traits.clear();
        Ok(())
    })
    .await?;
    Ok(render::empty(StatusCode::NO_CONTENT, None))
}

async fn history(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    ctx.require(78)?;
    let node = find_node(&state, &ctx, &ident).await?;
    let events = state.store.list_history(node.uuid).await?;
    let views: Vec<HistoryView<'_>> = events.iter().map(HistoryView).collect();
    render::json(
        StatusCode::OK,
        &Collection {
            key: "history",
            items: &views,
            next: None,
        },
    )
}

async fn history_event(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path((ident, event)): Path<(String, String)>,
) -> ApiResult<Response> {
    ctx.require(78)?;
    let node = find_node(&state, &ctx, &ident).await?;
    let not_found =
        || ApiError::NotFound(format!("Node history record {event} could not be found."));
    let wanted = Uuid::parse_str(&event).map_err(|_| not_found())?;
    let events = state.store.list_history(node.uuid).await?;
    let found = events
        .iter()
        .find(|e| e.uuid == wanted)
        .ok_or_else(not_found)?;
    render::json(StatusCode::OK, &HistoryView(found))
}

async fn inventory(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    ctx.require(81)?;
    let node = find_node(&state, &ctx, &ident).await?;
    let stored = state.store.get_inventory(node.uuid).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "Node inventory for node {} could not be found.",
            node.uuid
        ))
    })?;
    let doc = match stored {
        Value::Object(mut obj) if obj.contains_key("inventory") => {
            obj.entry("plugin_data").or_insert_with(|| json!({}));
            Value::Object(obj)
        }
        other => json!({ "inventory": other, "plugin_data": {} }),
    };
    render::json(StatusCode::OK, &doc)
}
