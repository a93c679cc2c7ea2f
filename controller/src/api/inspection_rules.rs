//! `/v1/inspection_rules` (microversion 1.96): the operator's inspection rules, in Ironic's
//! shape (`inspection_rules` validates and runs them; the store keeps them). Reading needs
//! a user of every project; creating, changing and deleting an administrator of every
//! project (Ironic's `baremetal:inspection_rule:*` are system rules): a rule can rewrite any
//! node's BMC settings. A `sensitive` rule's conditions and actions are never shown, and a
//! rule stays sensitive once it is. Links point at `/v1/inspection_rules/{uuid}` (Ironic's
//! point at `/v1/inspection/{uuid}`, which it does not serve).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::ApiState;
use super::context::{JsonBody, ReqCtx};
use super::error::{ApiError, ApiResult};
use super::patch;
use super::query::{Params, list_args, next_link, page_in_memory};
use super::render::{self, Ts};
use crate::inspection_rules::{self as rules, InspectionRule};
use crate::store::SortDir;

/// First microversion with inspection rules.
const MIN_VERSION: u32 = 96;

/// Every field, in Ironic's order.
const FIELDS: [&str; 10] = [
    "uuid",
    "description",
    "priority",
    "sensitive",
    "phase",
    "conditions",
    "actions",
    "created_at",
    "updated_at",
    "links",
];

/// Fields of a list without `detail`.
const LIST_FIELDS: [&str; 5] = ["uuid", "priority", "phase", "description", "links"];

/// Sort keys (`id` is creation order, Ironic's default).
const SORT_KEYS: [&str; 8] = [
    "id",
    "uuid",
    "description",
    "priority",
    "sensitive",
    "phase",
    "created_at",
    "updated_at",
];

/// The fields a PATCH may touch.
const PATCHABLE: [&str; 6] = [
    "description",
    "priority",
    "sensitive",
    "phase",
    "conditions",
    "actions",
];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/inspection_rules", get(list).post(create))
        .route(
            "/v1/inspection_rules/{uuid}",
            get(show).patch(update).delete(remove),
        )
}

/// The version floor and the policy (`policy::check_system_resource`).
fn check(ctx: &ReqCtx, method: &Method) -> ApiResult<()> {
    super::policy::check_system_resource(
        ctx,
        method,
        MIN_VERSION,
        "/v1/inspection_rules",
        "inspection rules",
    )
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Inspection rule {id} could not be found."))
}

fn parse_uuid(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| not_found(id))
}

fn doc(ctx: &ReqCtx, r: &InspectionRule, fields: &[&str]) -> Value {
    let mut out = Map::new();
    for f in fields {
        let v = match *f {
            "uuid" => json!(r.uuid),
            "description" => json!(r.description),
            "priority" => json!(r.priority),
            "sensitive" => json!(r.sensitive),
            "phase" => json!(r.phase),
            "conditions" if r.sensitive => Value::Null,
            "actions" if r.sensitive => Value::Null,
            "conditions" => json!(r.conditions),
            "actions" => json!(r.actions),
            "created_at" => json!(Ts(&r.created_at).to_string()),
            "updated_at" => match &r.updated_at {
                Some(t) => json!(Ts(t).to_string()),
                None => Value::Null,
            },
            "links" => json!(render::Links {
                base: &ctx.base,
                coll: "inspection_rules",
                id: &r.uuid,
                suffix: "",
            }),
            _ => continue,
        };
        out.insert((*f).to_owned(), v);
    }
    Value::Object(out)
}

async fn list(State(state): State<ApiState>, ctx: ReqCtx, uri: Uri) -> ApiResult<Response> {
    check(&ctx, &Method::GET)?;
    let params = Params::parse(uri.query());
    let detail = params.bool("detail")?.unwrap_or(false);
    let fields = params.fields(&FIELDS)?;
    if detail && fields.is_some() {
        return Err(ApiError::bad_request(
            "Can not specify ?detail=True and fields in the same request.",
        ));
    }
    let limit = params.limit(state.settings.max_limit)?;
    if let Some(k) = params.get("sort_key")
        && matches!(k, "actions" | "conditions")
    {
        return Err(ApiError::bad_request(format!(
            "The sort_key value {k} is an invalid field for sorting"
        )));
    }
    let sort_key = params.sort_key(&SORT_KEYS)?;
    let sort_dir = params.sort_dir()?;
    let mut rows = state.store.list_inspection_rules().await?;
    if let Some(phase) = params.get("phase") {
        rows.retain(|r| r.phase == phase);
    }
    rows.sort_by(|a, b| {
        let order = match sort_key.as_str() {
            "uuid" => a.uuid.cmp(&b.uuid),
            "description" => a.description.cmp(&b.description),
            "priority" => a.priority.cmp(&b.priority),
            "sensitive" => a.sensitive.cmp(&b.sensitive),
            "phase" => a.phase.cmp(&b.phase),
            "updated_at" => a.updated_at.cmp(&b.updated_at),
            _ => a.created_at.cmp(&b.created_at),
        }
        .then_with(|| a.uuid.cmp(&b.uuid));
        if sort_dir == SortDir::Desc {
            order.reverse()
        } else {
            order
        }
    });
    let marker = params.get("marker");
    let more = page_in_memory(&mut rows, marker, |r| r.uuid.to_string(), limit)
        .ok_or_else(|| not_found(marker.unwrap_or_default()))?;
    let shown: Vec<&str> = match (&fields, detail) {
        (Some(f), _) => f.iter().map(String::as_str).collect(),
        (None, true) => FIELDS.to_vec(),
        (None, false) => LIST_FIELDS.to_vec(),
    };
    let docs: Vec<Value> = rows.iter().map(|r| doc(&ctx, r, &shown)).collect();
    let mut body = json!({ "inspection_rules": docs });
    if more && let Some(last) = rows.last() {
        let echo = params
            .get("phase")
            .map(|p| vec![("phase", p.to_owned())])
            .unwrap_or_default();
        let args = list_args(sort_key, sort_dir, echo, detail, fields.as_deref());
        body["next"] = json!(next_link(
            &ctx.base,
            "inspection_rules",
            &args,
            limit,
            last.uuid
        ));
    }
    render::json(StatusCode::OK, &body)
}

async fn find(state: &ApiState, id: &str) -> ApiResult<InspectionRule> {
    state
        .store
        .get_inspection_rule(parse_uuid(id)?)
        .await?
        .ok_or_else(|| not_found(id))
}

async fn show(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(id): Path<String>,
    uri: Uri,
) -> ApiResult<Response> {
    check(&ctx, &Method::GET)?;
    let fields = Params::parse(uri.query()).fields(&FIELDS)?;
    let rule = find(&state, &id).await?;
    let shown: Vec<&str> = match &fields {
        Some(f) => f.iter().map(String::as_str).collect(),
        None => FIELDS.to_vec(),
    };
    render::json(StatusCode::OK, &doc(&ctx, &rule, &shown))
}

fn invalid(e: String) -> ApiError {
    ApiError::bad_request(e)
}

async fn create(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    check(&ctx, &Method::POST)?;
    let b = rules::validate(&body, false).map_err(invalid)?;
    if state.store.list_inspection_rules().await?.len() >= rules::MAX_RULES {
        return Err(ApiError::Conflict(format!(
            "There are already {} inspection rules, the most Ingot keeps (each inspection \
             evaluates them all); delete some first.",
            rules::MAX_RULES
        )));
    }
    let rule = InspectionRule {
        uuid: b.uuid.unwrap_or_else(Uuid::new_v4),
        description: b.description,
        priority: b.priority,
        sensitive: b.sensitive,
        phase: b.phase,
        conditions: b.conditions,
        actions: b.actions,
        created_at: Utc::now(),
        updated_at: None,
    };
    state
        .store
        .create_inspection_rule(&rule)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Duplicate { .. } => ApiError::Conflict(format!(
                "An inspection rule with UUID {} already exists.",
                rule.uuid
            )),
            other => other.into(),
        })?;
    tracing::info!(rule = %rule.uuid, priority = rule.priority, "inspection rule created");
    let resp = render::json(StatusCode::CREATED, &doc(&ctx, &rule, &FIELDS))?;
    Ok(render::with_location(
        resp,
        render::self_href(&ctx.base, "inspection_rules", &rule.uuid),
    ))
}

async fn update(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    check(&ctx, &Method::PATCH)?;
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
    let mut rule = find(&state, &id).await?;
    let Value::Object(mut doc_in) = rule.body() else {
        return Err(ApiError::ServerError("inspection rule document".into()));
    };
    patch::apply(&mut doc_in, &ops).map_err(|reason| patch::apply_error(&body, &reason))?;
    let b = rules::validate(&Value::Object(doc_in), false).map_err(invalid)?;
    if rule.sensitive && !b.sensitive {
        return Err(ApiError::bad_request(
            "Inspection rules cannot have the sensitive flag unset.",
        ));
    }
    rule.description = b.description;
    rule.priority = b.priority;
    rule.sensitive = b.sensitive;
    rule.phase = b.phase;
    rule.conditions = b.conditions;
    rule.actions = b.actions;
    rule.updated_at = Some(Utc::now());
    state.store.update_inspection_rule(&rule).await?;
    tracing::info!(rule = %rule.uuid, "inspection rule updated");
    render::json(StatusCode::OK, &doc(&ctx, &rule, &FIELDS))
}

async fn remove(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    check(&ctx, &Method::DELETE)?;
    let uuid = parse_uuid(&id)?;
    state
        .store
        .delete_inspection_rule(uuid)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound { .. } => not_found(&id),
            other => other.into(),
        })?;
    tracing::info!(rule = %uuid, "inspection rule deleted");
    Ok(render::empty(StatusCode::NO_CONTENT, None))
}
