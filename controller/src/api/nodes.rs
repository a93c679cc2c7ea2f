//! `/v1/nodes`: create, list (filters, paging, `fields`), show, patch and delete.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use super::ApiState;
use super::context::{JsonBody, ReqCtx};
use super::edit::{edit_node, find_node, with_reservation};
use super::error::{ApiError, ApiResult};
use super::node_fields::{self, CREATABLE, Mode, PATCHABLE};
use super::patch;
use super::query::{Params, list_args, next_link};
use super::render::{self, Collection, NODE_DEFAULT_FIELDS, NODE_FIELDS, NodeView};
use super::schema::{Ty, as_object, check_known_keys, check_type, require_key, uuid_or_new};
use crate::machine::ProvisionState;
use crate::model::Node;
use crate::store::{NodeQuery, StoreError};

pub fn routes(provision_body_limit: usize) -> Router<ApiState> {
    Router::new()
        .route("/v1/nodes", get(list).post(create))
        .route("/v1/nodes/detail", get(list_detail))
        .route("/v1/nodes/{ident}", get(show).patch(update).delete(delete))
        .merge(super::node_misc::routes())
        .merge(super::ports::node_routes())
        .merge(super::node_states::routes(provision_body_limit))
}

/// The node rendered for one response.
pub fn node_response(
    state: &ApiState,
    ctx: &ReqCtx,
    node: &Node,
    status: StatusCode,
    fields: Option<&[String]>,
) -> ApiResult<Response> {
    let view = NodeView {
        node,
        base: &ctx.base,
        fields,
        conductor: state.conductor.owner_of(node),
        defaults: state.interface_defaults(&node.driver),
    };
    render::json(status, &view)
}

async fn create(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = as_object("node", &body)?;
    check_known_keys("node", obj, &CREATABLE)?;
    let driver = require_key("node", obj, "driver")?;
    check_type("node", driver, Ty::Str, false)?;
    let uuid = uuid_or_new("node", obj.get("uuid"))?;
    let mut node = Node::new(uuid, driver.as_str().unwrap_or_default(), Utc::now());
    for (key, value) in obj {
        if key == "uuid" {
            continue;
        }
        if key == "parent_node" {
            let resolved = resolve_parent(&state, &ctx, value).await?;
            node_fields::set(&mut node, key, resolved, Mode::Create)?;
            continue;
        }
        node_fields::set(&mut node, key, value.clone(), Mode::Create)?;
    }
    node_fields::check_consistency(&node)?;
    state.check_node_driver(&node)?;
    state.store.create_node(&node).await?;
    tracing::info!(node = %node.uuid, driver = %node.driver, "node enrolled");
    let resp = node_response(&state, &ctx, &node, StatusCode::CREATED, None)?;
    Ok(render::with_location(
        resp,
        render::self_href(&ctx.base, "nodes", &node.uuid),
    ))
}

/// `parent_node` may be given as a name or UUID; Ironic stores the parent's UUID.
async fn resolve_parent(state: &ApiState, ctx: &ReqCtx, value: &Value) -> ApiResult<Value> {
    match value {
        Value::String(ident) => {
            let parent = find_node(state, ctx, ident).await.map_err(|e| match e {
                ApiError::NotFound(m) => ApiError::BadRequest(m),
                other => other,
            })?;
            Ok(Value::String(parent.uuid.to_string()))
        }
        other => Ok(other.clone()),
    }
}

async fn list(State(state): State<ApiState>, ctx: ReqCtx, uri: Uri) -> ApiResult<Response> {
    list_nodes(&state, &ctx, &uri, false).await
}

async fn list_detail(State(state): State<ApiState>, ctx: ReqCtx, uri: Uri) -> ApiResult<Response> {
    list_nodes(&state, &ctx, &uri, true).await
}

/// Filters the store does not know; applied to each fetched page.
#[derive(Default)]
struct PostFilter {
    conductor: Option<String>,
    sharded: Option<bool>,
    shards: Option<Vec<String>>,
    hide_children: bool,
}

impl PostFilter {
    fn active(&self) -> bool {
        self.conductor.is_some()
            || self.sharded.is_some()
            || self.shards.is_some()
            || self.hide_children
    }

    fn keep(&self, node: &Node) -> bool {
        self.sharded.is_none_or(|s| node.shard.is_some() == s)
            && self
                .shards
                .as_ref()
                .is_none_or(|list| node.shard.as_ref().is_some_and(|s| list.contains(s)))
            && !(self.hide_children && node.parent_node.is_some())
    }
}

async fn list_nodes(
    state: &ApiState,
    ctx: &ReqCtx,
    uri: &Uri,
    detail_path: bool,
) -> ApiResult<Response> {
    let params = Params::parse(uri.query());
    let detail_param = if ctx.version.at_least(43) {
        params.bool("detail")?.unwrap_or(false)
    } else {
        false
    };
    let detail = detail_path || detail_param;
    let requested = params.fields(&NODE_FIELDS)?;
    if requested.is_some() {
        ctx.require_feature(8)?;
        if detail {
            return Err(ApiError::bad_request(
                "Can not specify ?detail=True and fields in the same request.",
            ));
        }
    }
    let limit = params.limit(state.settings.max_limit)?;
    let sort_key = params.sort_key(crate::store::NODE_SORT_KEYS)?;
    let sort_dir = params.sort_dir()?;
    let marker = params.uuid("marker")?;

    // Filters, echoed into `next` in the order they were parsed.
    let mut echo: Vec<(&str, String)> = Vec::new();
    let text = |name: &'static str, echo: &mut Vec<(&str, String)>| {
        let v = params.string(name);
        if let Some(v) = &v {
            echo.push((name, v.clone()));
        }
        v
    };
    let mut query = NodeQuery {
        provision_state: text("provision_state", &mut echo),
        ..NodeQuery::default()
    };
    if let Some(ps) = &query.provision_state
        && !ProvisionState::is_filter_name(ps)
    {
        return Err(ApiError::bad_request(format!(
            "Provision state \"{ps}\" is not valid"
        )));
    }
    query.resource_class = text("resource_class", &mut echo);
    query.driver = text("driver", &mut echo);
    query.owner = text("owner", &mut echo);
    query.lessee = text("lessee", &mut echo);
    query.project = ctx.grant.project.clone();
    query.fault = text("fault", &mut echo);
    query.conductor_group = text("conductor_group", &mut echo).map(|g| g.to_ascii_lowercase());
    query.description_contains = text("description_contains", &mut echo);
    query.instance_name = text("instance_name", &mut echo);
    // Not Ironic's: the web console's search box (name, UUID, MAC or serial).
    query.search = text("ingot_search", &mut echo);
    let mut post = PostFilter::default();
    if let Some(shard) = text("shard", &mut echo) {
        if shard.contains(',') {
            post.shards = Some(
                shard
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
            );
        } else {
            query.shard = Some(shard);
        }
    }
    post.conductor = text("conductor", &mut echo);
    for (name, slot) in [
        ("maintenance", &mut query.maintenance),
        ("associated", &mut query.associated),
        ("retired", &mut query.retired),
    ] {
        *slot = params.bool(name)?;
        if let Some(b) = slot {
            echo.push((name, if *b { "True".into() } else { "False".into() }));
        }
    }
    post.sharded = params.bool("sharded")?;
    if let Some(b) = post.sharded {
        echo.push(("sharded", if b { "True".into() } else { "False".into() }));
    }
    query.chassis_uuid = params.uuid("chassis_uuid")?;
    query.instance_uuid = params.uuid("instance_uuid")?;
    if let Some(parent) = text("parent_node", &mut echo) {
        match find_node(state, ctx, &parent).await {
            Ok(p) => query.parent_node = Some(p.uuid.to_string()),
            Err(ApiError::NotFound(_)) => return render_list(state, ctx, &[], None, None),
            Err(e) => return Err(e),
        }
    }
    let include_children = params.bool("include_children")?.unwrap_or(false);
    post.hide_children =
        ctx.version.at_least(83) && !include_children && query.parent_node.is_none();
    query.sort_key = (sort_key != "id").then(|| sort_key.clone());
    query.sort_dir = sort_dir;
    query.marker = marker;
    query.limit = Some(limit);

    let mut nodes = fetch_filtered(state, query.clone(), &post, limit).await?;
    // `?conductor=`: the nodes that conductor owns now (ownership is computed, not stored).
    if let Some(c) = post.conductor.as_deref() {
        nodes.retain(|n| state.conductor.owner_of(n).as_deref() == Some(c));
    }

    let fields: Option<Vec<String>> = if detail {
        None
    } else {
        Some(requested.unwrap_or_else(|| {
            NODE_DEFAULT_FIELDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        }))
    };
    let next = match nodes.last() {
        Some(last) if nodes.len() == limit as usize && query.instance_uuid.is_none() => {
            let args = list_args(sort_key, sort_dir, echo, detail_param, fields.as_deref());
            let path = if detail_path { "nodes/detail" } else { "nodes" };
            Some(next_link(&ctx.base, path, &args, limit, last.uuid))
        }
        _ => None,
    };
    render_list(state, ctx, &nodes, fields.as_deref(), next)
}

/// Pages through the store until `limit` nodes pass the post-filter (or the store runs dry).
async fn fetch_filtered(
    state: &ApiState,
    mut query: NodeQuery,
    post: &PostFilter,
    limit: u32,
) -> ApiResult<Vec<Node>> {
    let marker = query.marker;
    if !post.active() {
        return state
            .store
            .list_nodes(&query)
            .await
            .map_err(|e| marker_error(e, marker));
    }
    let mut out = Vec::new();
    loop {
        let batch = state
            .store
            .list_nodes(&query)
            .await
            .map_err(|e| marker_error(e, marker))?;
        let full = batch.len() == limit as usize;
        query.marker = batch.last().map(|n| n.uuid);
        out.extend(batch.into_iter().filter(|n| post.keep(n)));
        if out.len() >= limit as usize || !full {
            break;
        }
    }
    out.truncate(limit as usize);
    Ok(out)
}

/// The store reports an unknown marker as a missing record; Ironic calls that a bad request.
pub fn marker_error(err: StoreError, marker: Option<Uuid>) -> ApiError {
    match (err, marker) {
        (StoreError::NotFound { .. }, Some(m)) => {
            ApiError::bad_request(format!("Marker {m} could not be found."))
        }
        (err, _) => err.into(),
    }
}

fn render_list(
    state: &ApiState,
    ctx: &ReqCtx,
    nodes: &[Node],
    fields: Option<&[String]>,
    next: Option<String>,
) -> ApiResult<Response> {
    let views: Vec<NodeView<'_>> = nodes
        .iter()
        .map(|node| NodeView {
            node,
            base: &ctx.base,
            fields,
            conductor: state.conductor.owner_of(node),
            defaults: state.interface_defaults(&node.driver),
        })
        .collect();
    let per_node = if fields.is_none() { 2560 } else { 320 };
    render::json_with_capacity(
        StatusCode::OK,
        &Collection {
            key: "nodes",
            items: &views,
            next,
        },
        64 + views.len() * per_node,
    )
}

async fn show(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    uri: Uri,
) -> ApiResult<Response> {
    let params = Params::parse(uri.query());
    let fields = params.fields(&NODE_FIELDS)?;
    if fields.is_some() {
        ctx.require_feature(8)?;
    }
    let node = find_node(&state, &ctx, &ident).await?;
    node_response(&state, &ctx, &node, StatusCode::OK, fields.as_deref())
}

async fn update(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let ops = patch::parse(&body)?;
    for op in &ops {
        if !PATCHABLE.contains(&op.field()) {
            return Err(node_fields::not_patchable(&format!("/{}", op.field())));
        }
    }
    let node = find_node(&state, &ctx, &ident).await?;
    for op in &ops {
        ctx.grant
            .may_patch(op.field())
            .map_err(ApiError::Forbidden)?;
    }
    // A parent given by name is resolved before the node is locked (it needs the store).
    let mut parent: Option<Value> = None;
    if ops.iter().any(|op| op.field() == "parent_node") {
        let mut doc = patch_document(&node);
        patch::apply(&mut doc, &ops).map_err(|reason| patch::apply_error(&body, &reason))?;
        if let Some(v) = doc.get("parent_node")
            && *v != node_fields::get(&node, "parent_node")
        {
            parent = Some(resolve_parent(&state, &ctx, v).await?);
        }
    }
    let uuid = node.uuid;
    let updated = edit_node(&state, uuid, |node| {
        let was_protected = node.protected;
        let mut doc = patch_document(node);
        patch::apply(&mut doc, &ops).map_err(|reason| patch::apply_error(&body, &reason))?;
        for field in PATCHABLE {
            let new = match doc.remove(field) {
                Some(v) => v,
                None => node_fields::default_value(field),
            };
            if new == node_fields::get(node, field) {
                continue;
            }
            let new = if field == "parent_node" { parent.clone().unwrap_or(new) } else { new };
            node_fields::set(node, field, new, Mode::Update(uuid))?;
        }
        node_fields::check_consistency(node)?;
        if node.protected
            && !was_protected
            && !node.provision_state.parse::<ProvisionState>().is_ok_and(ProvisionState::allows_protect)
        {
            return Err(ApiError::Conflict(format!(
                "Node {uuid} can only be made protected in provision states \"active\" and \"rescue\", the current state is \"{}\"",
                node.provision_state
            )));
        }
        state.check_node_driver(node)
    })
    .await?;
    node_response(&state, &ctx, &updated, StatusCode::OK, None)
}

/// The writable part of a node as the JSON object a patch applies to.
fn patch_document(node: &Node) -> serde_json::Map<String, Value> {
    PATCHABLE
        .iter()
        .map(|f| ((*f).to_owned(), node_fields::get(node, f)))
        .collect()
}

async fn delete(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    let node = find_node(&state, &ctx, &ident).await?;
    let store = state.store.clone();
    with_reservation(&state, node.uuid, |node| async move {
        let deletable = node
            .provision_state
            .parse::<crate::machine::ProvisionState>()
            .is_ok_and(|s| s.allows_delete());
        if !node.maintenance && !deletable {
            return Err(ApiError::Conflict(format!(
                "Can not delete node \"{}\" while it is in provision state \"{}\". Valid provision states to perform deletion are: \"('manageable', 'enroll', 'adopt failed', 'available')\", or set the node into maintenance mode",
                node.uuid, node.provision_state
            )));
        }
        if node.protected {
            return Err(ApiError::bad_request(format!(
                "Node {} is protected and cannot be undeployed, rebuilt or deleted",
                node.uuid
            )));
        }
        if let Some(allocation) = node.allocation_uuid {
            match store.delete_allocation(allocation).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        store.delete_node(node.uuid).await?;
        tracing::info!(node = %node.uuid, "node deleted");
        Ok(())
    })
    .await?;
    Ok(render::empty(StatusCode::NO_CONTENT, None))
}
