//! `/v1/ports` (create, list, show, patch, delete) and `/v1/nodes/{ident}/ports`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::ApiState;
use super::context::{JsonBody, ReqCtx};
use super::edit::find_node;
use super::error::{ApiError, ApiResult};
use super::patch;
use super::query::{Params, list_args, next_link};
use super::render::{self, Collection, PORT_DEFAULT_FIELDS, PORT_FIELDS, PortView};
use super::schema::{
    Ty, as_object, check_known_keys, check_type, expect_uuid, normalize_mac, require_key,
    uuid_or_new,
};
use crate::model::Port;
use crate::store::PortQuery;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/ports", get(list).post(create))
        .route("/v1/ports/detail", get(list_detail))
        .route("/v1/ports/{id}", get(show).patch(update).delete(delete))
}

/// `GET /v1/nodes/{ident}/ports[/detail]`.
pub fn node_routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/nodes/{ident}/ports", get(node_ports))
        .route("/v1/nodes/{ident}/ports/detail", get(node_ports_detail))
}

const CREATABLE: [&str; 13] = [
    "address",
    "node_uuid",
    "extra",
    "local_link_connection",
    "pxe_enabled",
    "physical_network",
    "portgroup_uuid",
    "uuid",
    "is_smartnic",
    "name",
    "description",
    "vendor",
    "category",
];

const PATCHABLE: [&str; 12] = [
    "address",
    "category",
    "description",
    "extra",
    "is_smartnic",
    "local_link_connection",
    "name",
    "node_uuid",
    "physical_network",
    "portgroup_uuid",
    "pxe_enabled",
    "vendor",
];

fn field_type(name: &str) -> (Ty, bool) {
    match name {
        "extra" | "local_link_connection" => (Ty::Obj, false),
        "pxe_enabled" | "is_smartnic" => (Ty::Bool, false),
        "address" | "node_uuid" => (Ty::Str, false),
        _ => (Ty::Str, true),
    }
}

fn get_field(port: &Port, name: &str) -> Value {
    let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
    match name {
        "address" => Value::String(port.address.clone()),
        "category" => opt(&port.category),
        "description" => opt(&port.description),
        "extra" => Value::Object(port.extra.clone()),
        "is_smartnic" => Value::Bool(port.is_smartnic),
        "local_link_connection" => Value::Object(port.local_link_connection.clone()),
        "name" => opt(&port.name),
        "node_uuid" => Value::String(port.node_uuid.to_string()),
        "physical_network" => opt(&port.physical_network),
        "portgroup_uuid" => port
            .portgroup_uuid
            .map_or(Value::Null, |u| Value::String(u.to_string())),
        "pxe_enabled" => Value::Bool(port.pxe_enabled),
        "vendor" => opt(&port.vendor),
        _ => Value::Null,
    }
}

fn default_value(name: &str) -> Value {
    match field_type(name) {
        (Ty::Obj, _) => Value::Object(Map::new()),
        (Ty::Bool, _) if name == "pxe_enabled" => Value::Bool(true),
        (Ty::Bool, _) => Value::Bool(false),
        _ => Value::Null,
    }
}

/// Checks and stores one field. `node_uuid` is only parsed here; the caller checks that the
/// node exists.
fn set_field(port: &mut Port, name: &str, value: Value) -> ApiResult<()> {
    let (ty, nullable) = field_type(name);
    check_type("port", &value, ty, nullable)?;
    let text = |v: Value| match v {
        Value::String(s) => Some(s),
        _ => None,
    };
    match name {
        "address" => port.address = normalize_mac("address", value.as_str().unwrap_or_default())?,
        "node_uuid" => {
            let raw = value.as_str().unwrap_or_default();
            port.node_uuid = expect_uuid("node_uuid", raw)?;
        }
        "portgroup_uuid" => {
            if let Some(pg) = text(value) {
                return Err(ApiError::bad_request(format!(
                    "Portgroup {pg} could not be found."
                )));
            }
            port.portgroup_uuid = None;
        }
        "extra" | "local_link_connection" => {
            let map = match value {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            if name == "extra" {
                port.extra = map;
            } else {
                port.local_link_connection = map;
            }
        }
        "pxe_enabled" => port.pxe_enabled = value.as_bool().unwrap_or(true),
        "is_smartnic" => port.is_smartnic = value.as_bool().unwrap_or(false),
        "physical_network" => port.physical_network = text(value),
        "name" => port.name = text(value),
        "description" => port.description = text(value),
        "vendor" => port.vendor = text(value),
        "category" => port.category = text(value),
        other => return Err(ApiError::bad_request(format!("Unknown port field {other}"))),
    }
    Ok(())
}

async fn require_node(state: &ApiState, ctx: &ReqCtx, uuid: Uuid) -> ApiResult<()> {
    match state.store.get_node_by_uuid(uuid).await? {
        Some(n) if ctx.grant.sees(&n) => Ok(()),
        _ => Err(ApiError::bad_request(format!(
            "Node {uuid} could not be found."
        ))),
    }
}

/// Whether the caller sees the port's node (always, without a project).
async fn sees_node(state: &ApiState, ctx: &ReqCtx, node: Uuid) -> ApiResult<bool> {
    if ctx.grant.project.is_none() {
        return Ok(true);
    }
    Ok(state
        .store
        .get_node_by_uuid(node)
        .await?
        .is_some_and(|n| ctx.grant.sees(&n)))
}

async fn create(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = as_object("port", &body)?;
    check_known_keys("port", obj, &CREATABLE)?;
    let address = require_key("port", obj, "address")?;
    check_type("port", address, Ty::Str, false)?;
    let address = normalize_mac("address", address.as_str().unwrap_or_default())?;
    let node_uuid = require_key("port", obj, "node_uuid")?;
    check_type("port", node_uuid, Ty::Str, false)?;
    let raw = node_uuid.as_str().unwrap_or_default();
    let node_uuid = expect_uuid("node_uuid", raw)?;
    let uuid = uuid_or_new("port", obj.get("uuid"))?;
    let mut port = Port::new(uuid, node_uuid, address, Utc::now());
    for (key, value) in obj {
        if !matches!(key.as_str(), "uuid" | "address" | "node_uuid") {
            set_field(&mut port, key, value.clone())?;
        }
    }
    require_node(&state, &ctx, node_uuid).await?;
    state.store.create_port(&port).await?;
    let resp = render::json(
        StatusCode::CREATED,
        &PortView {
            port: &port,
            base: &ctx.base,
            fields: None,
        },
    )?;
    Ok(render::with_location(
        resp,
        render::self_href(&ctx.base, "ports", &port.uuid),
    ))
}

async fn list(State(state): State<ApiState>, ctx: ReqCtx, uri: Uri) -> ApiResult<Response> {
    list_ports(&state, &ctx, &uri, None, false).await
}

async fn list_detail(State(state): State<ApiState>, ctx: ReqCtx, uri: Uri) -> ApiResult<Response> {
    list_ports(&state, &ctx, &uri, None, true).await
}

async fn node_ports(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    uri: Uri,
) -> ApiResult<Response> {
    let node = find_node(&state, &ctx, &ident).await?;
    list_ports(&state, &ctx, &uri, Some(node.uuid), false).await
}

async fn node_ports_detail(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    uri: Uri,
) -> ApiResult<Response> {
    let node = find_node(&state, &ctx, &ident).await?;
    list_ports(&state, &ctx, &uri, Some(node.uuid), true).await
}

async fn list_ports(
    state: &ApiState,
    ctx: &ReqCtx,
    uri: &Uri,
    node: Option<Uuid>,
    detail_path: bool,
) -> ApiResult<Response> {
    let params = Params::parse(uri.query());
    let detail_param = ctx.version.at_least(43) && params.bool("detail")?.unwrap_or(false);
    let detail = detail_path || detail_param;
    let requested = params.fields(&PORT_FIELDS)?;
    if requested.is_some() {
        ctx.require_feature(8)?;
        if detail {
            return Err(ApiError::bad_request(
                "Can not specify ?detail=True and fields in the same request.",
            ));
        }
    }
    let limit = params.limit(state.settings.max_limit)?;
    let sort_key = params.sort_key(&["created_at"])?;
    let sort_dir = params.sort_dir()?;
    let marker = params.uuid("marker")?;
    let mut echo: Vec<(&str, String)> = Vec::new();
    let mut query = PortQuery {
        node_uuid: node,
        sort_dir,
        marker,
        limit: Some(limit),
        ..Default::default()
    };
    if let Some(n) = params.uuid("node_uuid")? {
        echo.push(("node_uuid", n.to_string()));
        if !state
            .store
            .get_node_by_uuid(n)
            .await?
            .is_some_and(|node| ctx.grant.sees(&node))
        {
            return Err(ApiError::node_not_found(n));
        }
        query.node_uuid = Some(n);
    }
    if let Some(ident) = params.get("node") {
        echo.push(("node", ident.to_owned()));
        query.node_uuid = Some(find_node(state, ctx, ident).await?.uuid);
    }
    if let Some(address) = params.get("address") {
        echo.push(("address", address.to_owned()));
        query.address = Some(normalize_mac("address", address)?);
    }
    let ports = state
        .store
        .list_ports(&query)
        .await
        .map_err(|e| super::nodes::marker_error(e, marker))?;
    let fields: Option<Vec<String>> = if detail {
        None
    } else {
        Some(requested.unwrap_or_else(|| {
            PORT_DEFAULT_FIELDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        }))
    };
    let next = match ports.last() {
        Some(last) if ports.len() == limit as usize => {
            let args = list_args(sort_key, sort_dir, echo, detail_param, fields.as_deref());
            let path = match (node, detail_path) {
                (Some(n), true) => format!("nodes/{n}/ports/detail"),
                (Some(n), false) => format!("nodes/{n}/ports"),
                (None, true) => "ports/detail".to_owned(),
                (None, false) => "ports".to_owned(),
            };
            Some(next_link(&ctx.base, &path, &args, limit, last.uuid))
        }
        _ => None,
    };
    // A project caller sees the ports of its nodes only; paging follows the unfiltered
    // list, so a page may be short but the `next` link still walks every port.
    let mut visible = Vec::with_capacity(ports.len());
    let mut seen: std::collections::HashMap<Uuid, bool> = std::collections::HashMap::new();
    for port in &ports {
        let ok = match seen.get(&port.node_uuid) {
            Some(ok) => *ok,
            None => {
                let ok = sees_node(state, ctx, port.node_uuid).await?;
                seen.insert(port.node_uuid, ok);
                ok
            }
        };
        if ok {
            visible.push(port);
        }
    }
    let views: Vec<PortView<'_>> = visible
        .into_iter()
        .map(|port| PortView {
            port,
            base: &ctx.base,
            fields: fields.as_deref(),
        })
        .collect();
    render::json(
        StatusCode::OK,
        &Collection {
            key: "ports",
            items: &views,
            next,
        },
    )
}

fn parse_port_id(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound(format!("Port {id} could not be found.")))
}

/// A port by UUID; a port whose node the caller does not see does not exist for it.
async fn find_port(state: &ApiState, ctx: &ReqCtx, id: &str) -> ApiResult<Port> {
    let uuid = parse_port_id(id)?;
    let not_found = || ApiError::NotFound(format!("Port {id} could not be found."));
    let port = state.store.get_port(uuid).await?.ok_or_else(not_found)?;
    if !sees_node(state, ctx, port.node_uuid).await? {
        return Err(not_found());
    }
    Ok(port)
}

async fn show(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(id): Path<String>,
    uri: Uri,
) -> ApiResult<Response> {
    let params = Params::parse(uri.query());
    let fields = params.fields(&PORT_FIELDS)?;
    if fields.is_some() {
        ctx.require_feature(8)?;
    }
    let port = find_port(&state, &ctx, &id).await?;
    render::json(
        StatusCode::OK,
        &PortView {
            port: &port,
            base: &ctx.base,
            fields: fields.as_deref(),
        },
    )
}

async fn update(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let ops = patch::parse(&body)?;
    for op in &ops {
        if !PATCHABLE.contains(&op.field()) {
            return Err(ApiError::bad_request(format!(
                "Cannot patch /{}. Only the following can be updated: {}",
                op.field(),
                PATCHABLE.join(", ")
            )));
        }
    }
    let mut port = find_port(&state, &ctx, &id).await?;
    let mut doc: Map<String, Value> = PATCHABLE
        .iter()
        .map(|f| ((*f).to_owned(), get_field(&port, f)))
        .collect();
    patch::apply(&mut doc, &ops).map_err(|reason| patch::apply_error(&body, &reason))?;
    let old_node = port.node_uuid;
    for field in PATCHABLE {
        let new = doc.remove(field).unwrap_or_else(|| default_value(field));
        if new != get_field(&port, field) {
            set_field(&mut port, field, new)?;
        }
    }
    if port.node_uuid != old_node {
        require_node(&state, &ctx, port.node_uuid).await?;
    }
    port.updated_at = Some(Utc::now());
    state.store.update_port(&port).await?;
    render::json(
        StatusCode::OK,
        &PortView {
            port: &port,
            base: &ctx.base,
            fields: None,
        },
    )
}

async fn delete(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let port = find_port(&state, &ctx, &id).await?;
    state.store.delete_port(port.uuid).await?;
    Ok(render::empty(StatusCode::NO_CONTENT, None))
}
