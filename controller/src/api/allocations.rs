//! `/v1/allocations`: create (then processed in the background by the conductor), list,
//! show by UUID or name, and delete (which frees the node).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use serde_json::{Map, Value};

use super::ApiState;
use super::context::{JsonBody, ReqCtx};
use super::edit::{edit_node, find_node};
use super::error::{ApiError, ApiResult};
use super::query::{Params, next_link};
use super::render::{self, ALLOCATION_FIELDS, AllocationView, Collection};
use super::schema::{
    Ty, as_object, check_known_keys, check_trait, check_type, is_valid_name, py_repr, uuid_or_new,
};
use crate::model::Allocation;
use crate::store::{AllocationQuery, StoreError};

/// API version that introduced allocations.
const MIN_MINOR: u32 = 52;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/allocations", get(list).post(create))
        .route("/v1/allocations/{ident}", get(show).delete(delete))
}

const CREATABLE: [&str; 7] = [
    "resource_class",
    "traits",
    "name",
    "uuid",
    "candidate_nodes",
    "extra",
    "owner",
];

async fn create(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    ctx.require(MIN_MINOR)?;
    let obj = as_object("allocation", &body)?;
    check_known_keys("allocation", obj, &CREATABLE)?;
    let resource_class = match obj.get("resource_class") {
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request(
                "The resource_class field is mandatory when not backfilling",
            ));
        }
        Some(v) => {
            check_type("allocation", v, Ty::Str, false)?;
            let rc = v.as_str().unwrap_or_default();
            if rc.is_empty() || rc.len() > 80 {
                return Err(ApiError::schema(
                    "allocation",
                    format!("{} is not a valid resource class", py_repr(v)),
                ));
            }
            rc.to_owned()
        }
    };
    let mut traits = Vec::new();
    if let Some(v) = obj.get("traits") {
        check_type("allocation", v, Ty::Arr, false)?;
        for t in v.as_array().map(Vec::as_slice).unwrap_or_default() {
            check_type("trait", t, Ty::Str, false)?;
            let t = t.as_str().unwrap_or_default();
            check_trait(t)?;
            if !traits.iter().any(|x: &String| x == t) {
                traits.push(t.to_owned());
            }
        }
    }
    let name = match obj.get("name") {
        None | Some(Value::Null) => None,
        Some(v) => {
            check_type("allocation", v, Ty::Str, true)?;
            let n = v.as_str().unwrap_or_default();
            if !is_valid_name(n) {
                return Err(ApiError::bad_request(format!(
                    "Cannot create allocation with invalid name '{n}'"
                )));
            }
            Some(n.to_owned())
        }
    };
    let uuid = uuid_or_new("allocation", obj.get("uuid"))?;
    let extra = match obj.get("extra") {
        None => Map::new(),
        Some(v) => {
            check_type("allocation", v, Ty::Obj, false)?;
            v.as_object().cloned().unwrap_or_default()
        }
    };
    let owner = match obj.get("owner") {
        None => None,
        Some(v) => {
            check_type("allocation", v, Ty::Str, true)?;
            v.as_str().map(str::to_owned)
        }
    };
    let owner = ctx
        .grant
        .allocation_owner(owner)
        .map_err(ApiError::Forbidden)?;
    let mut candidate_nodes = Vec::new();
    if let Some(v) = obj.get("candidate_nodes") {
        check_type("allocation", v, Ty::Arr, true)?;
        for c in v.as_array().map(Vec::as_slice).unwrap_or_default() {
            check_type("allocation", c, Ty::Str, false)?;
            let ident = c.as_str().unwrap_or_default();
            let node = find_node(&state, &ctx, ident).await.map_err(|e| match e {
                ApiError::NotFound(m) => {
                    ApiError::bad_request(format!("Candidate node {ident}: {m}"))
                }
                other => other,
            })?;
            let id = node.uuid.to_string();
            if !candidate_nodes.contains(&id) {
                candidate_nodes.push(id);
            }
        }
    }
    let allocation = Allocation {
        uuid,
        name,
        resource_class: Some(resource_class),
        traits,
        candidate_nodes,
        extra,
        owner,
        state: "allocating".to_owned(),
        node_uuid: None,
        last_error: None,
        created_at: Utc::now(),
        updated_at: None,
        min_properties: Default::default(),
        server: None,
    };
    state.store.create_allocation(&allocation).await?;
    state.start_allocation(allocation.uuid);
    let resp = render::json(
        StatusCode::CREATED,
        &AllocationView {
            allocation: &allocation,
            base: &ctx.base,
            fields: None,
        },
    )?;
    Ok(render::with_location(
        resp,
        render::self_href(&ctx.base, "allocations", &allocation.uuid),
    ))
}

async fn list(State(state): State<ApiState>, ctx: ReqCtx, uri: Uri) -> ApiResult<Response> {
    ctx.require(MIN_MINOR)?;
    let params = Params::parse(uri.query());
    let fields = params.fields(&ALLOCATION_FIELDS)?;
    let limit = params.limit(state.settings.max_limit)?;
    let sort_key = params.sort_key(&["created_at"])?;
    let sort_dir = params.sort_dir()?;
    if sort_dir == crate::store::SortDir::Desc {
        return Err(ApiError::bad_request(
            "Only sort_dir=asc is supported for allocations",
        ));
    }
    let marker = params.uuid("marker")?;
    let mut echo: Vec<(&str, String)> = Vec::new();
    let mut query = AllocationQuery {
        marker,
        limit: Some(limit),
        ..Default::default()
    };
    if let Some(ident) = params.get("node") {
        echo.push(("node", ident.to_owned()));
        query.node_uuid = Some(find_node(&state, &ctx, ident).await?.uuid);
    }
    for (name, slot) in [
        ("state", &mut query.state),
        ("resource_class", &mut query.resource_class),
        ("owner", &mut query.owner),
    ] {
        *slot = params.string(name);
        if let Some(v) = slot {
            echo.push((name, v.clone()));
        }
    }
    query.owner = ctx
        .grant
        .allocation_owner(query.owner.take())
        .map_err(ApiError::Forbidden)?;
    let allocations = state
        .store
        .list_allocations(&query)
        .await
        .map_err(|e| super::nodes::marker_error(e, marker))?;
    let next = match allocations.last() {
        Some(last) if allocations.len() == limit as usize => {
            let mut args: Vec<(&str, String)> =
                vec![("sort_key", sort_key), ("sort_dir", "asc".into())];
            args.extend(echo);
            if let Some(f) = &fields {
                args.push(("fields", f.join(",")));
            }
            Some(next_link(&ctx.base, "allocations", &args, limit, last.uuid))
        }
        _ => None,
    };
    let views: Vec<AllocationView<'_>> = allocations
        .iter()
        .map(|allocation| AllocationView {
            allocation,
            base: &ctx.base,
            fields: fields.as_deref(),
        })
        .collect();
    render::json(
        StatusCode::OK,
        &Collection {
            key: "allocations",
            items: &views,
            next,
        },
    )
}

/// The allocation `ident` names, if the caller may see it (another project's is 404, as if
/// it did not exist).
async fn find_allocation(state: &ApiState, ctx: &ReqCtx, ident: &str) -> ApiResult<Allocation> {
    state
        .store
        .get_allocation(ident)
        .await?
        .filter(|a| ctx.grant.sees_allocation(a))
        .ok_or_else(|| ApiError::NotFound(format!("Allocation {ident} could not be found.")))
}

async fn show(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    uri: Uri,
) -> ApiResult<Response> {
    ctx.require(MIN_MINOR)?;
    let fields = Params::parse(uri.query()).fields(&ALLOCATION_FIELDS)?;
    let allocation = find_allocation(&state, &ctx, &ident).await?;
    render::json(
        StatusCode::OK,
        &AllocationView {
            allocation: &allocation,
            base: &ctx.base,
            fields: fields.as_deref(),
        },
    )
}

async fn delete(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    ctx.require(MIN_MINOR)?;
    let allocation = find_allocation(&state, &ctx, &ident).await?;
    // An allocation still being processed may go too: the conductor gives back a node it
    // claims for an allocation that no longer exists.
    if let Some(node_uuid) = allocation.node_uuid {
        let freed = edit_node(&state, node_uuid, |node| {
            let freeable = node
                .provision_state
                .parse::<crate::machine::ProvisionState>()
                .is_ok_and(|s| s.allows_deallocate());
            if !node.maintenance && !freeable {
                return Err(ApiError::Conflict(format!(
                    "Cannot remove allocation {} from node {} in provision state {}",
                    allocation.uuid, node.uuid, node.provision_state
                )));
            }
            if node.allocation_uuid == Some(allocation.uuid) {
                node.allocation_uuid = None;
                if node.instance_uuid == Some(allocation.uuid) {
                    node.instance_uuid = None;
                }
            }
            Ok(())
        })
        .await;
        match freed {
            Ok(_) => {}
            // The node is gone already; the allocation goes with it.
            Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    match state.store.delete_allocation(allocation.uuid).await {
        Ok(()) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(allocation = %allocation.uuid, "allocation deleted");
    Ok(render::empty(StatusCode::NO_CONTENT, None))
}
