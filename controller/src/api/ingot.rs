//! Ingot's own routes under `/v1/ingot/` (not Ironic's): what a dashboard user needs to
//! request a machine.
//!
//! - `GET /v1/ingot/flavors`: the operator's `[[flavors]]`.
//! - `GET /v1/ingot/images`: the image store, as `ingot image list --json` shows it.
//! - `POST /v1/ingot/servers`: a machine by flavor, image and SSH keys (an allocation with
//!   the flavor's criteria; the conductor deploys the node it claims), `GET` (list, one),
//!   `DELETE` (undeploy, then the allocation goes).
//!
//! Same authentication, roles (readers only read) and projects as the rest of the API: a
//! project user's servers belong to its project and are the only ones it sees (the
//! allocation rules, `policy::Grant::{allocation_owner, sees_allocation}`). JSON only.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::ApiState;
use super::context::{JsonBody, ReqCtx};
use super::error::{ApiError, ApiResult};
use super::render;
use crate::model::{Allocation, DhcpLeaseState, Node, ServerSpec};
use crate::servers::{ServerView, parse_request};
use crate::store::{AllocationQuery, PortQuery, StoreError};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/ingot/flavors", get(flavors))
        .route("/v1/ingot/images", get(images))
        .route("/v1/ingot/servers", get(list).post(create))
        .route("/v1/ingot/servers/{ident}", get(show).delete(delete))
}

async fn flavors(State(state): State<ApiState>) -> ApiResult<Response> {
    render::json(
        StatusCode::OK,
        &json!({ "flavors": state.settings.flavors }),
    )
}

async fn images(State(state): State<ApiState>) -> ApiResult<Response> {
    let Some(store) = state.settings.images.clone() else {
        return render::json(StatusCode::OK, &json!({ "images": [] }));
    };
    let list = tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    render::json(StatusCode::OK, &json!({ "images": list }))
}

async fn create(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let req = parse_request(&body).map_err(ApiError::BadRequest)?;
    let flavor = state
        .settings
        .flavors
        .iter()
        .find(|f| f.name == req.flavor)
        .ok_or_else(|| {
            let known: Vec<&str> = state
                .settings
                .flavors
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            ApiError::bad_request(format!(
                "No flavor named {:?} (flavors: {}).",
                req.flavor,
                if known.is_empty() {
                    "none configured".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })?;
    if let Some(store) = state.settings.images.clone() {
        let name = req.image.clone();
        let found = tokio::task::spawn_blocking(move || store.get(&name))
            .await
            .map_err(ApiError::internal)?;
        match found {
            Ok(_) => {}
            Err(crate::images::ImageError::NotFound(_)) => {
                return Err(ApiError::bad_request(format!(
                    "No image named {:?} in the image store.",
                    req.image
                )));
            }
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    let owner = ctx
        .grant
        .allocation_owner(None)
        .map_err(ApiError::Forbidden)?;
    let allocation = Allocation {
        uuid: Uuid::new_v4(),
        name: req.name,
        resource_class: flavor.resource_class.clone(),
        traits: flavor.traits.clone(),
        candidate_nodes: Vec::new(),
        extra: Default::default(),
        owner,
        state: "allocating".to_owned(),
        node_uuid: None,
        last_error: None,
        created_at: Utc::now(),
        updated_at: None,
        min_properties: flavor.minimums(),
        server: Some(ServerSpec {
            flavor: flavor.name.clone(),
            image: req.image,
            ssh_keys: req.ssh_keys,
            user_data: req.user_data,
            deploy_started: false,
            error: None,
        }),
    };
    match state.store.create_allocation(&allocation).await {
        Ok(()) => {}
        Err(StoreError::Duplicate { field: "name", .. }) => {
            return Err(ApiError::Conflict(format!(
                "A server (or allocation) named {:?} already exists.",
                allocation.name.as_deref().unwrap_or_default()
            )));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(server = %allocation.uuid, flavor = %flavor.name, "server requested");
    state.start_allocation(allocation.uuid);
    let view = view_of(&state, &allocation).await?;
    let resp = render::json(StatusCode::CREATED, &view)?;
    Ok(render::with_location(
        resp,
        format!("{}/v1/ingot/servers/{}", ctx.base, allocation.uuid),
    ))
}

async fn list(State(state): State<ApiState>, ctx: ReqCtx) -> ApiResult<Response> {
    let owner = ctx
        .grant
        .allocation_owner(None)
        .map_err(ApiError::Forbidden)?;
    let allocations = state
        .store
        .list_allocations(&AllocationQuery {
            owner,
            ..AllocationQuery::default()
        })
        .await?;
    let mut servers = Vec::new();
    for a in allocations
        .iter()
        .filter(|a| a.server.is_some() && ctx.grant.sees_allocation(a))
    {
        servers.push(view_of(&state, a).await?);
    }
    render::json(StatusCode::OK, &json!({ "servers": servers }))
}

/// The server `ident` (UUID or name) names, if the caller may see it (another project's is
/// 404, as if it did not exist; so is a plain Ironic allocation).
async fn find_server(state: &ApiState, ctx: &ReqCtx, ident: &str) -> ApiResult<Allocation> {
    state
        .store
        .get_allocation(ident)
        .await?
        .filter(|a| a.server.is_some() && ctx.grant.sees_allocation(a))
        .ok_or_else(|| ApiError::NotFound(format!("Server {ident} could not be found.")))
}

async fn show(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    let allocation = find_server(&state, &ctx, &ident).await?;
    render::json(StatusCode::OK, &view_of(&state, &allocation).await?)
}

async fn delete(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    let allocation = find_server(&state, &ctx, &ident).await?;
    state.conductor.delete_server(&allocation).await?;
    tracing::info!(server = %allocation.uuid, "server delete accepted");
    Ok(render::empty(StatusCode::ACCEPTED, None))
}

/// The server as shown: its allocation, node and the node's addresses.
async fn view_of(state: &ApiState, allocation: &Allocation) -> ApiResult<ServerView> {
    let node = match allocation.node_uuid {
        Some(uuid) => state.store.get_node_by_uuid(uuid).await?,
        None => None,
    };
    let addresses = match &node {
        Some(n) => addresses(state, n).await?,
        None => Vec::new(),
    };
    ServerView::of(allocation, node.as_ref(), addresses)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("allocation is no server")))
}

/// IPv4 addresses the controller's DHCP holds for the node's ports: live bound leases and
/// reservations (ports' `extra.dhcp_address`), in port order.
async fn addresses(state: &ApiState, node: &Node) -> ApiResult<Vec<String>> {
    let ports = state
        .store
        .list_ports(&PortQuery {
            node_uuid: Some(node.uuid),
            ..PortQuery::default()
        })
        .await?;
    let now = Utc::now();
    let mut out = Vec::new();
    for port in ports {
        if let Some(lease) = state.store.dhcp_lease_by_mac(&port.address).await?
            && (lease.state == DhcpLeaseState::Reserved
                || (lease.state == DhcpLeaseState::Bound && lease.expires_at > now))
        {
            let ip = lease.ip.to_string();
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    Ok(out)
}
