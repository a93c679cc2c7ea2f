//! `/v1/deploy_templates` (microversion 1.55): the operator's deploy templates, in Ironic's
//! shape. `crate::deploy_templates` is the one home of what a valid name and valid steps
//! are; this module only parses requests, asks it, and renders. Templates are found by UUID
//! or by name. Reading needs a user of every project; creating, changing and deleting an
//! administrator of every project (Ironic's `baremetal:deploy_template:*` are system
//! rules): a template's steps run on every deploy that asks for its trait. Secret-looking
//! keys in a step's `args` are masked when shown, as Ironic does.

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
use crate::deploy_templates::{DeployTemplate, TemplateStep, check_name, parse_steps};
use crate::model::JsonMap;
use crate::store::{SortDir, StoreError};

/// First microversion with deploy templates.
const MIN_VERSION: u32 = 55;

/// Every field, in Ironic's order.
const FIELDS: [&str; 7] = [
    "uuid",
    "name",
    "steps",
    "extra",
    "created_at",
    "updated_at",
    "links",
];

/// Fields of a list without `detail` or `fields`.
const LIST_FIELDS: [&str; 3] = ["uuid", "name", "links"];

/// Sort keys besides `id` (creation order, Ironic's default); `steps` and `extra` are not
/// sortable, as in Ironic.
const SORT_KEYS: [&str; 4] = ["uuid", "name", "created_at", "updated_at"];

/// The fields a POST body may carry.
const BODY_FIELDS: [&str; 4] = ["uuid", "name", "steps", "extra"];

/// The fields a PATCH may touch (in the order Ironic's refusal names them).
const PATCHABLE: [&str; 3] = ["extra", "name", "steps"];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/deploy_templates", get(list).post(create))
        .route(
            "/v1/deploy_templates/{ident}",
            get(show).patch(update).delete(remove),
        )
}

/// The version floor and the policy (`policy::check_system_resource`).
fn check(ctx: &ReqCtx, method: &Method) -> ApiResult<()> {
    super::policy::check_system_resource(
        ctx,
        method,
        MIN_VERSION,
        "/v1/deploy_templates",
        "deploy templates",
    )
}

fn not_found(ident: &str) -> ApiError {
    ApiError::NotFound(format!("Deploy template {ident} could not be found."))
}

/// Ironic's texts for the two unique columns.
fn duplicate(err: StoreError) -> ApiError {
    match err {
        StoreError::Duplicate {
            field: "name",
            value,
            ..
        } => ApiError::Conflict(format!(
            "A deploy template with name {value} already exists."
        )),
        StoreError::Duplicate { value, .. } => ApiError::Conflict(format!(
            "A deploy template with UUID {value} already exists."
        )),
        other => other.into(),
    }
}

fn step_doc(s: &TemplateStep) -> Value {
    json!({
        "interface": s.interface,
        "step": s.step,
        "args": render::masked(&Value::Object(s.args.clone())),
        "priority": s.priority,
    })
}

/// The fields to render: those asked for plus `links` (as Ironic), else `default`.
fn shown<'a>(fields: Option<&'a [String]>, default: &[&'a str]) -> Vec<&'a str> {
    match fields {
        Some(f) => f
            .iter()
            .map(String::as_str)
            .chain(std::iter::once("links"))
            .collect(),
        None => default.to_vec(),
    }
}

fn doc(ctx: &ReqCtx, t: &DeployTemplate, fields: &[&str]) -> Value {
    let mut out = Map::new();
    for f in fields {
        let v = match *f {
            "uuid" => json!(t.uuid),
            "name" => json!(t.name),
            "steps" => Value::Array(t.steps.iter().map(step_doc).collect()),
            "extra" => Value::Object(t.extra.clone()),
            "created_at" => json!(Ts(&t.created_at).to_string()),
            "updated_at" => match &t.updated_at {
                Some(at) => json!(Ts(at).to_string()),
                None => Value::Null,
            },
            "links" => json!(render::Links {
                base: &ctx.base,
                coll: "deploy_templates",
                id: &t.uuid,
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
    let sort_key = params.sort_key(&SORT_KEYS)?;
    let sort_dir = params.sort_dir()?;
    // The store lists in creation order (`id`); the sort is stable, so ties keep it, and a
    // descending list reverses both, as Ironic's `ORDER BY key DESC, id DESC`.
    let mut rows = state.store.list_deploy_templates().await?;
    match sort_key.as_str() {
        "uuid" => rows.sort_by_key(|t| t.uuid),
        "name" => rows.sort_by(|a, b| a.name.cmp(&b.name)),
        "created_at" => rows.sort_by_key(|t| t.created_at),
        "updated_at" => rows.sort_by_key(|t| t.updated_at),
        _ => {}
    }
    if sort_dir == SortDir::Desc {
        rows.reverse();
    }
    let marker = params.get("marker");
    let more = page_in_memory(&mut rows, marker, |t| t.uuid.to_string(), limit)
        .ok_or_else(|| not_found(marker.unwrap_or_default()))?;
    let default: &[&str] = if detail { &FIELDS } else { &LIST_FIELDS };
    let shown = shown(fields.as_deref(), default);
    let docs: Vec<Value> = rows.iter().map(|t| doc(&ctx, t, &shown)).collect();
    let mut body = json!({ "deploy_templates": docs });
    if more && let Some(last) = rows.last() {
        let args = list_args(sort_key, sort_dir, Vec::new(), detail, fields.as_deref());
        body["next"] = json!(next_link(
            &ctx.base,
            "deploy_templates",
            &args,
            limit,
            last.uuid
        ));
    }
    render::json(StatusCode::OK, &body)
}

/// A template by UUID or, when `ident` is not one, by name.
async fn find(state: &ApiState, ident: &str) -> ApiResult<DeployTemplate> {
    let found = match Uuid::parse_str(ident) {
        Ok(uuid) => state.store.get_deploy_template(uuid).await?,
        Err(_) => state.store.get_deploy_template_by_name(ident).await?,
    };
    found.ok_or_else(|| not_found(ident))
}

async fn show(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    uri: Uri,
) -> ApiResult<Response> {
    check(&ctx, &Method::GET)?;
    let fields = Params::parse(uri.query()).fields(&FIELDS)?;
    let template = find(&state, &ident).await?;
    let shown = shown(fields.as_deref(), &FIELDS);
    render::json(StatusCode::OK, &doc(&ctx, &template, &shown))
}

/// The JSON type name Ironic's schema errors use.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A template's name, steps and extra from a document (`what`: a POST body, `template`, or
/// a template with a patch applied, `patch`), checked by `crate::deploy_templates`.
fn fields_of(
    what: &str,
    o: &Map<String, Value>,
) -> ApiResult<(String, Vec<TemplateStep>, JsonMap)> {
    let required = |f: &str| ApiError::schema(what, format!("'{f}' is a required property"));
    let name = match o.get("name") {
        None | Some(Value::Null) => return Err(required("name")),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::schema(
                what,
                format!("name: {} is not of type 'string'", type_name(other)),
            ));
        }
    };
    check_name(&name).map_err(ApiError::bad_request)?;
    let steps = match o.get("steps") {
        None | Some(Value::Null) => return Err(required("steps")),
        Some(v) => parse_steps(v).map_err(ApiError::bad_request)?,
    };
    let extra = match o.get("extra") {
        None | Some(Value::Null) => JsonMap::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(ApiError::schema(
                what,
                format!(
                    "extra: {} is not of type 'object', 'null'",
                    type_name(other)
                ),
            ));
        }
    };
    Ok((name, steps, extra))
}

async fn create(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    check(&ctx, &Method::POST)?;
    let Some(o) = body.as_object() else {
        return Err(ApiError::schema(
            "template",
            format!("{} is not of type 'object'", type_name(&body)),
        ));
    };
    if let Some(k) = o.keys().find(|k| !BODY_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::schema(
            "template",
            format!(
                "Additional properties are not allowed ({} was unexpected)",
                super::schema::py_str(k)
            ),
        ));
    }
    let uuid = match o.get("uuid") {
        None | Some(Value::Null) => Uuid::new_v4(),
        Some(Value::String(s)) => Uuid::parse_str(s)
            .map_err(|_| ApiError::bad_request(format!("Expected UUID for uuid: {s}")))?,
        Some(other) => {
            return Err(ApiError::schema(
                "template",
                format!("uuid: {} is not of type 'string', 'null'", type_name(other)),
            ));
        }
    };
    let (name, steps, extra) = fields_of("template", o)?;
    let template = DeployTemplate {
        uuid,
        name,
        steps,
        extra,
        created_at: Utc::now(),
        updated_at: None,
    };
    state
        .store
        .create_deploy_template(&template)
        .await
        .map_err(duplicate)?;
    tracing::info!(template = %template.uuid, name = %template.name, "deploy template created");
    let resp = render::json(StatusCode::CREATED, &doc(&ctx, &template, &FIELDS))?;
    Ok(render::with_location(
        resp,
        render::self_href(&ctx.base, "deploy_templates", &template.uuid),
    ))
}

async fn update(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    check(&ctx, &Method::PATCH)?;
    let ops = patch::parse(&body)?;
    if let Some(op) = ops.iter().find(|op| !PATCHABLE.contains(&op.field())) {
        return Err(ApiError::bad_request(format!(
            "Cannot patch {}. Only the following can be updated: {}",
            op.path,
            PATCHABLE.join(", ")
        )));
    }
    let mut template = find(&state, &ident).await?;
    let mut current = Map::new();
    current.insert("name".into(), json!(template.name));
    current.insert(
        "steps".into(),
        serde_json::to_value(&template.steps).map_err(ApiError::internal)?,
    );
    current.insert("extra".into(), Value::Object(template.extra.clone()));
    patch::apply(&mut current, &ops).map_err(|reason| patch::apply_error(&body, &reason))?;
    let (name, steps, extra) = fields_of("patch", &current)?;
    if (&name, &steps, &extra) == (&template.name, &template.steps, &template.extra) {
        // Nothing changed: nothing to write, and `updated_at` stays (as Ironic's save).
        return render::json(StatusCode::OK, &doc(&ctx, &template, &FIELDS));
    }
    template.name = name;
    template.steps = steps;
    template.extra = extra;
    template.updated_at = Some(Utc::now());
    state
        .store
        .update_deploy_template(&template)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => not_found(&ident),
            other => duplicate(other),
        })?;
    tracing::info!(template = %template.uuid, name = %template.name, "deploy template updated");
    render::json(StatusCode::OK, &doc(&ctx, &template, &FIELDS))
}

async fn remove(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    check(&ctx, &Method::DELETE)?;
    let template = find(&state, &ident).await?;
    state
        .store
        .delete_deploy_template(template.uuid)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => not_found(&ident),
            other => other.into(),
        })?;
    tracing::info!(template = %template.uuid, name = %template.name, "deploy template deleted");
    Ok(render::empty(StatusCode::NO_CONTENT, None))
}
