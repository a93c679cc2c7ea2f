//! Node state endpoints served by the conductor: `states`, `states/provision`,
//! `states/power`, the boot device and `validate`. Handlers only parse and validate the
//! request; the conductor decides and acts.

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use serde_json::{Value, json};

use super::ApiState;
use super::context::{JsonBody, ReqCtx};
use super::edit::find_node;
use super::error::{ApiError, ApiResult};
use super::render::{self, Ts};
use super::schema::{Ty, as_object, check_known_keys, check_type, py_repr, require_key};
use crate::conductor::ProvisionRequest;
use crate::drivers::{BootDevice, PowerTarget};
use crate::machine::Verb;

pub fn routes(provision_body_limit: usize) -> Router<ApiState> {
    Router::new()
        .route("/v1/nodes/{ident}/states", get(states))
        .route(
            "/v1/nodes/{ident}/states/provision",
            put(provision).layer(DefaultBodyLimit::max(provision_body_limit)),
        )
        .route("/v1/nodes/{ident}/states/power", put(power))
        .route(
            "/v1/nodes/{ident}/states/raid",
            put(raid).layer(DefaultBodyLimit::max(RAID_BODY_LIMIT)),
        )
        .route(
            "/v1/nodes/{ident}/management/boot_device",
            get(get_boot_device).put(set_boot_device),
        )
        .route(
            "/v1/nodes/{ident}/management/boot_device/supported",
            get(supported_boot_devices),
        )
        .route("/v1/nodes/{ident}/validate", get(validate))
}

async fn states(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    let n = find_node(&state, &ctx, &ident).await?;
    render::json(
        StatusCode::OK,
        &json!({
            "console_enabled": false,
            "last_error": n.last_error,
            "power_state": n.power_state,
            "provision_state": n.provision_state,
            "target_power_state": n.target_power_state,
            "target_provision_state": n.target_provision_state,
            "provision_updated_at": n.provision_updated_at.as_ref().map(|t| Ts(t).to_string()),
            "raid_config": n.raid_config,
            "target_raid_config": n.target_raid_config,
            "boot_mode": n.boot_mode,
            "secure_boot": n.secure_boot,
        }),
    )
}

/// The largest target RAID document taken (Ironic's schema allows any number of logical
/// disks; Ingot builds two).
const RAID_BODY_LIMIT: usize = 64 * 1024;

/// `PUT /v1/nodes/{ident}/states/raid` (1.12): the node's target RAID configuration, the
/// body itself (`{}` clears it), checked by the node's RAID interface; 204.
/// Policy `baremetal:node:set_raid_state` (system member or owner member): a reader is
/// refused by the middleware, a project user only on nodes its project owns (a lessee
/// is refused).
async fn raid(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let node = find_node(&state, &ctx, &ident).await?;
    if let Some(project) = &ctx.grant.project
        && node.owner.as_deref() != Some(project.as_str())
    {
        return Err(ApiError::Forbidden(
            "Access was denied to the following resource: baremetal:node:set_raid_state".to_owned(),
        ));
    }
    ctx.require_feature(12)?;
    let target = as_object("target_raid_config", &body)?.clone();
    state
        .conductor
        .set_target_raid_config(node.uuid, target)
        .await?;
    Ok(render::empty(StatusCode::NO_CONTENT, None))
}

const PROVISION_KEYS: [&str; 8] = [
    "target",
    "configdrive",
    "clean_steps",
    "deploy_steps",
    "rescue_password",
    "disable_ramdisk",
    "runbook",
    "service_steps",
];

/// The API version that introduced each verb (below it, Ironic answers 406).
fn verb_min_minor(verb: Verb, raw: &str) -> u32 {
    match (verb, raw) {
        (_, "deploy" | "undeploy") => 73,
        (Verb::Manage | Verb::Provide, _) => 4,
        (Verb::Inspect, _) => 6,
        (Verb::Abort, _) => 13,
        (Verb::Clean, _) => 15,
        (Verb::Adopt, _) => 17,
        (Verb::Rescue | Verb::Unrescue, _) => 38,
        (Verb::Unhold, _) => 85,
        (Verb::Service, _) => 87,
        _ => 1,
    }
}

fn steps(obj: &serde_json::Map<String, Value>, key: &str) -> ApiResult<Option<Vec<Value>>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            check_type("provision", v, Ty::Arr, true)?;
            let items = v.as_array().cloned().unwrap_or_default();
            for item in &items {
                check_type("provision", item, Ty::Obj, false)?;
            }
            Ok(Some(items))
        }
    }
}

async fn provision(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = as_object("provision", &body)?;
    check_known_keys("provision", obj, &PROVISION_KEYS)?;
    let target = require_key("provision", obj, "target")?;
    check_type("provision", target, Ty::Str, false)?;
    let raw = target.as_str().unwrap_or_default();
    let node = find_node(&state, &ctx, &ident).await?;
    let verb: Verb = raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "The requested action \"{raw}\" can not be performed on node \"{}\" while it is in state \"{}\".",
            node.uuid, node.provision_state
        ))
    })?;
    ctx.require_feature(verb_min_minor(verb, raw))?;
    let configdrive = match obj.get("configdrive") {
        None | Some(Value::Null) => None,
        Some(v @ Value::String(_)) => Some(v.clone()),
        Some(v @ Value::Object(map)) => {
            ctx.require_feature(56)?;
            check_known_keys(
                "configdrive",
                map,
                &["meta_data", "network_data", "user_data", "vendor_data"],
            )?;
            for key in ["meta_data", "network_data", "vendor_data"] {
                if let Some(part) = map.get(key) {
                    check_type("configdrive", part, Ty::Obj, true)?;
                }
            }
            if let Some(user) = map.get("user_data")
                && !(user.is_string() || user.is_object() || user.is_array() || user.is_null())
            {
                return Err(ApiError::schema(
                    "configdrive",
                    format!(
                        "{} is not of type 'object', 'string', 'array', 'null'",
                        py_repr(user)
                    ),
                ));
            }
            Some(v.clone())
        }
        Some(other) => {
            return Err(ApiError::schema(
                "configdrive",
                format!("{} is not of type 'string', 'object'", py_repr(other)),
            ));
        }
    };
    if obj.get("runbook").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::bad_request(
            "Runbooks are not supported by this service.",
        ));
    }
    if obj.get("service_steps").is_some_and(|v| !v.is_null()) && verb != Verb::Service {
        return Err(ApiError::bad_request(
            "\"service_steps\" is only valid when setting target provision state to service",
        ));
    }
    let rescue_password = match obj.get("rescue_password") {
        None | Some(Value::Null) => None,
        Some(v) => {
            check_type("provision", v, Ty::Str, false)?;
            if verb != Verb::Rescue {
                return Err(ApiError::bad_request(
                    "\"rescue_password\" is only valid when setting target provision state to rescue",
                ));
            }
            v.as_str().map(str::to_owned)
        }
    };
    let disable_ramdisk = match obj.get("disable_ramdisk") {
        None | Some(Value::Null) => None,
        Some(v) => {
            check_type("provision", v, Ty::Bool, false)?;
            v.as_bool()
        }
    };
    let deploy_steps = steps(obj, "deploy_steps")?;
    if deploy_steps.is_some() && !matches!(verb, Verb::Deploy | Verb::Rebuild) {
        return Err(ApiError::bad_request(
            "\"deploy_steps\" is only valid when setting target provision state to active or rebuild",
        ));
    }
    let request = ProvisionRequest {
        verb,
        configdrive,
        clean_steps: steps(obj, "clean_steps")?,
        deploy_steps,
        service_steps: steps(obj, "service_steps")?,
        disable_ramdisk,
        rescue_password,
    };
    state.conductor.provision(node.uuid, request).await?;
    tracing::info!(node = %node.uuid, target = raw, "provision request accepted");
    Ok(render::empty(
        StatusCode::ACCEPTED,
        Some(format!("{}/v1/nodes/{ident}/states", ctx.base)),
    ))
}

async fn power(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = as_object("power", &body)?;
    check_known_keys("power", obj, &["target", "timeout"])?;
    let target = require_key("power", obj, "target")?;
    check_type("power", target, Ty::Str, false)?;
    let raw = target.as_str().unwrap_or_default();
    let node = find_node(&state, &ctx, &ident).await?;
    let target: PowerTarget = raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "The requested action \"{raw}\" can not be performed on node \"{}\" while it is in state \"{}\".",
            node.uuid,
            node.power_state.as_deref().unwrap_or("None")
        ))
    })?;
    if matches!(target, PowerTarget::SoftOff | PowerTarget::SoftReboot) {
        ctx.require_feature(27)?;
    }
    let timeout = match obj.get("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => {
            ctx.require_feature(27)?;
            match v.as_u64() {
                Some(secs) if secs >= 1 => Some(Duration::from_secs(secs)),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid timeout value {}. The timeout value must be a positive integer.",
                        py_repr(v)
                    )));
                }
            }
        }
    };
    state
        .conductor
        .set_power(node.uuid, target, timeout)
        .await?;
    tracing::info!(node = %node.uuid, target = raw, "power request accepted");
    Ok(render::empty(
        StatusCode::ACCEPTED,
        Some(format!("{}/v1/nodes/{ident}/states", ctx.base)),
    ))
}

async fn get_boot_device(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    let node = find_node(&state, &ctx, &ident).await?;
    let (device, persistent) = state.conductor.get_boot_device(node.uuid).await?;
    render::json(
        StatusCode::OK,
        &json!({"boot_device": device.map(BootDevice::as_str), "persistent": persistent}),
    )
}

async fn set_boot_device(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = as_object("boot_device", &body)?;
    check_known_keys("boot_device", obj, &["boot_device", "persistent"])?;
    let device = require_key("boot_device", obj, "boot_device")?;
    check_type("boot_device", device, Ty::Str, false)?;
    let raw = device.as_str().unwrap_or_default();
    let device: BootDevice = raw
        .parse()
        .map_err(|_| ApiError::bad_request(format!("Invalid boot device {raw} specified.")))?;
    let persistent = match obj.get("persistent") {
        None | Some(Value::Null) => false,
        Some(v) => {
            check_type("boot_device", v, Ty::Bool, false)?;
            v.as_bool().unwrap_or(false)
        }
    };
    let node = find_node(&state, &ctx, &ident).await?;
    state
        .conductor
        .set_boot_device(node.uuid, device, persistent)
        .await?;
    Ok(render::empty(StatusCode::NO_CONTENT, None))
}

async fn supported_boot_devices(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    let node = find_node(&state, &ctx, &ident).await?;
    let devices = state.conductor.supported_boot_devices(node.uuid).await?;
    let names: Vec<&str> = devices.into_iter().map(BootDevice::as_str).collect();
    render::json(StatusCode::OK, &json!({ "supported_boot_devices": names }))
}

async fn validate(
    State(state): State<ApiState>,
    ctx: ReqCtx,
    Path(ident): Path<String>,
) -> ApiResult<Response> {
    let node = find_node(&state, &ctx, &ident).await?;
    let result = state.conductor.validate(node.uuid).await?;
    render::json(StatusCode::OK, &result)
}
