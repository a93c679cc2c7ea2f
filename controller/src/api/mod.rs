//! The Ironic v1 compatible operator API as an axum [`Router`].
//!
//! HTTP is a thin adapter here: handlers parse and validate input, call the store or the
//! conductor once, and render the result in Ironic's shape. Lifecycle decisions belong to
//! the conductor. `../shared/ironic-api-contract.md` is the specification this follows.
//!
//! A middleware wraps every request: it trims a trailing slash, negotiates the microversion
//! (406 on a bad one), records the public base URL from `Host`, and stamps the version and
//! request-id headers on every response, including errors. It authenticates the caller
//! ([`auth`]: `noauth` or `http_basic`; `/` and `/v1` are public) and writes one access log
//! line per request (target `ingot::access`: request id, user, method, path, status,
//! duration).

pub mod allocations;
pub mod auth;
pub mod conductors;
pub mod console;
pub mod context;
pub mod deploy_templates;
pub mod drivers;
pub mod edit;
pub mod error;
pub mod ingot;
pub mod inspection_rules;
pub mod node_fields;
pub mod node_misc;
pub mod node_states;
pub mod nodes;
pub mod patch;
pub mod policy;
pub mod ports;
pub mod query;
pub mod render;
pub mod schema;
pub mod version;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use uuid::Uuid;

use crate::conductor::Conductor;
use crate::store::Store;
use context::ReqCtx;
use error::ApiError;
use version::{MAX_HEADER, MIN_HEADER, Version};

/// Tunables of the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Page size cap (`[api] max_limit` in Ironic).
    pub max_limit: u32,
    /// Request body cap for every endpoint but `states/provision`.
    pub body_limit: usize,
    /// Request body cap for `PUT .../states/provision`, which may carry a config drive.
    pub provision_body_limit: usize,
    /// Scheme of the absolute URLs the API emits.
    pub public_scheme: String,
    /// Host used for absolute URLs when a request carries no usable `Host`.
    pub default_host: String,
    /// How callers are authenticated.
    pub auth: auth::AuthStrategy,
    /// Roles and projects of the users that have one (`[auth.users]`).
    pub policies: policy::Policies,
    /// The `/metrics` families (API requests are counted by the middleware).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `/metrics` without authentication (`metrics_public`).
    pub metrics_public: bool,
    /// `[[flavors]]`, served at `/v1/ingot/flavors` and requested by servers.
    pub flavors: Vec<crate::flavors::Flavor>,
    /// The image store servers deploy from (`/v1/ingot/images`); `None`: no images.
    pub images: Option<crate::images::ImageStore>,
    /// Node changes for the console's event stream (`GET /v1/ingot/events`).
    pub live: Arc<crate::live::LiveEvents>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            max_limit: 1000,
            body_limit: 1024 * 1024,
            provision_body_limit: 16 * 1024 * 1024,
            public_scheme: "http".to_owned(),
            default_host: "localhost:6385".to_owned(),
            auth: auth::AuthStrategy::NoAuth,
            policies: policy::Policies::new(),
            metrics: Arc::default(),
            metrics_public: false,
            flavors: Vec::new(),
            images: None,
            live: Arc::default(),
        }
    }
}

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub conductor: Arc<Conductor>,
    pub settings: Arc<ApiSettings>,
    /// Default interface names per driver, computed once from the registry.
    defaults: Arc<HashMap<String, render::InterfaceDefaults>>,
}

impl ApiState {
    pub fn new(store: Arc<dyn Store>, conductor: Arc<Conductor>, settings: ApiSettings) -> Self {
        let defaults = conductor
            .registry()
            .list()
            .map(|hw| {
                let map = hw
                    .interfaces
                    .iter()
                    .map(|(kind, choice)| (format!("{kind}_interface"), choice.default.clone()))
                    .collect();
                (hw.name.clone(), map)
            })
            .collect();
        Self {
            store,
            conductor,
            settings: Arc::new(settings),
            defaults: Arc::new(defaults),
        }
    }

    /// The name shown in `conductor`, `reservation` and driver `hosts`.
    pub fn conductor_name(&self) -> &str {
        self.conductor.name()
    }

    /// Checks the node's driver and interface overrides against the driver registry.
    pub fn check_node_driver(&self, node: &crate::model::Node) -> Result<(), ApiError> {
        let Some(hw) = self.conductor.registry().get(&node.driver) else {
            return Err(ApiError::bad_request(format!(
                "No valid host was found. Reason: No conductor service registered which supports driver {} for conductor group \"{}\".",
                node.driver, node.conductor_group
            )));
        };
        for (field, wanted) in &node.interfaces {
            let kind = field.trim_end_matches("_interface");
            let enabled = hw
                .interfaces
                .get(kind)
                .map(|c| c.enabled.as_slice())
                .unwrap_or_default();
            if !enabled.iter().any(|e| e == wanted) {
                let valid: Vec<String> = enabled.iter().map(|e| schema::py_str(e)).collect();
                return Err(ApiError::bad_request(format!(
                    "Could not find the following interface in the 'ironic.hardware.interfaces.{kind}' entrypoint: {wanted}. Valid interfaces are [{}].",
                    valid.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Hands a new allocation to the conductor for background processing.
    pub fn start_allocation(&self, allocation: Uuid) {
        self.conductor.process_allocation(allocation);
    }

    /// Default interface names of a driver, for rendering nodes without overrides.
    pub fn interface_defaults(&self, driver: &str) -> Option<&render::InterfaceDefaults> {
        self.defaults.get(driver)
    }
}

/// Builds the whole operator API.
pub fn router(state: ApiState) -> Router {
    let settings = state.settings.clone();
    let api = Router::new()
        .route("/", get(root))
        .route("/v1", get(v1))
        .route("/metrics", get(metrics))
        .merge(nodes::routes(settings.provision_body_limit))
        .merge(ports::routes())
        .merge(allocations::routes())
        .merge(drivers::routes())
        .merge(ingot::routes())
        .merge(conductors::routes())
        .merge(inspection_rules::routes())
        .merge(deploy_templates::routes())
        .merge(console::routes())
        .merge(crate::ui::routes())
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .with_state(state);
    Router::new()
        .fallback_service(api)
        .layer(middleware::from_fn_with_state(settings, api_middleware))
}

async fn root(ctx: ReqCtx) -> Result<Response, ApiError> {
    render::json(StatusCode::OK, &version::root_document(&ctx.base))
}

async fn v1(ctx: ReqCtx) -> Result<Response, ApiError> {
    render::json(StatusCode::OK, &version::v1_document(&ctx.base))
}

async fn fallback() -> ApiError {
    ApiError::resource_not_found()
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// `scheme://host` for absolute URLs, from the URI authority (HTTP/2) or the `Host` header.
fn base_url(settings: &ApiSettings, uri: &Uri, headers: &HeaderMap) -> String {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        })
        .unwrap_or_else(|| settings.default_host.clone());
    format!("{}://{host}", settings.public_scheme)
}

/// Removes one trailing slash (`/v1/nodes/` -> `/v1/nodes`), keeping the query.
fn trim_trailing_slash(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    if path.len() <= 1 || !path.ends_with('/') {
        return None;
    }
    let trimmed = path.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    let pq = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    Uri::from_parts(parts).ok()
}

async fn api_middleware(
    axum::extract::State(settings): axum::extract::State<Arc<ApiSettings>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let request_id = format!("req-{}", Uuid::new_v4());
    if let Some(uri) = trim_trailing_slash(req.uri()) {
        *req.uri_mut() = uri;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let public = auth::is_public(&method, &path)
        || (settings.metrics_public && path == METRICS_PATH && method == axum::http::Method::GET);
    let caller = if public {
        Ok(auth::Caller { user: None })
    } else {
        auth::authenticate(&settings.auth, req.headers()).await
    };
    let mut resp = match caller {
        Ok(caller) => {
            let user = caller.user.clone();
            let grant = policy::Grant::of(user.as_deref(), &settings.policies);
            let resp = match grant.allows(&method, &path) {
                Ok(()) => {
                    req.extensions_mut().insert(grant);
                    req.extensions_mut().insert(caller);
                    versioned(&settings, req, next).await
                }
                Err(why) => error::json_response(
                    StatusCode::FORBIDDEN,
                    error::fault_body(StatusCode::FORBIDDEN, &why),
                ),
            };
            access_log(&request_id, user.as_deref(), &method, &path, &resp, started);
            settings.metrics.api_request(
                method.as_str(),
                &path,
                resp.status().as_u16(),
                started.elapsed(),
            );
            resp
        }
        Err(auth::Unauthorized(why)) => {
            let mut resp = error::json_response(
                StatusCode::UNAUTHORIZED,
                error::fault_body(StatusCode::UNAUTHORIZED, why),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Ingot\""),
            );
            access_log(&request_id, None, &method, &path, &resp, started);
            settings.metrics.api_request(
                method.as_str(),
                &path,
                resp.status().as_u16(),
                started.elapsed(),
            );
            resp
        }
    };
    let rid = header_value(&request_id);
    let headers = resp.headers_mut();
    headers.insert("x-openstack-request-id", rid.clone());
    headers.insert("openstack-request-id", rid);
    resp
}

/// Where Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// `GET /metrics`: the Prometheus text format.
async fn metrics(axum::extract::State(state): axum::extract::State<ApiState>) -> Response {
    match state.settings.metrics.render(state.store.as_ref()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// One line per request: who did what and how it ended (never a body or a credential).
fn access_log(
    request_id: &str,
    user: Option<&str>,
    method: &axum::http::Method,
    path: &str,
    resp: &Response,
    started: std::time::Instant,
) {
    tracing::info!(
        target: "ingot::access",
        request_id,
        user = user.unwrap_or("-"),
        %method,
        path,
        status = resp.status().as_u16(),
        ms = %format_args!("{:.2}", started.elapsed().as_secs_f64() * 1000.0),
        "api request"
    );
}

/// Negotiates the microversion and runs the handler; stamps the version headers.
async fn versioned(settings: &ApiSettings, mut req: Request, next: Next) -> Response {
    let is_root = req.uri().path() == "/";
    let negotiated = match version::negotiate(req.headers()) {
        Err(_) if is_root => Ok(Version::MIN),
        other => other,
    };
    let (mut resp, range_headers, version) = match negotiated {
        Ok(version) => {
            let base = base_url(settings, req.uri(), req.headers());
            let grant = req
                .extensions()
                .get::<policy::Grant>()
                .cloned()
                .unwrap_or_default();
            req.extensions_mut().insert(ReqCtx {
                version,
                base,
                grant,
            });
            let resp = ironic_shaped(next.run(req).await).await;
            (resp, true, Some(version))
        }
        Err(e) => {
            let resp = error::json_response(
                StatusCode::NOT_ACCEPTABLE,
                error::not_acceptable_body(&e.description()),
            );
            (resp, e.with_range_headers(), None)
        }
    };
    let headers = resp.headers_mut();
    if range_headers {
        headers.insert(MIN_HEADER, header_value(&Version::MIN.to_string()));
        headers.insert(MAX_HEADER, header_value(&Version::MAX.to_string()));
    }
    if let Some(v) = version {
        headers.insert(version::LEGACY_HEADER, header_value(&v.to_string()));
    }
    resp
}

/// Turns errors produced outside our handlers (axum's 405, extractor rejections) into
/// Ironic's error shape, so that clients always find `error_message`.
async fn ironic_shaped(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "The method is not allowed for this resource.".to_owned(),
        StatusCode::NOT_FOUND => "The resource could not be found.".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large.".to_owned(),
        _ => String::from_utf8_lossy(&text).into_owned(),
    };
    let mut out = error::json_response(status, error::fault_body(status, &message));
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slash_is_trimmed_with_query_kept() {
        let uri: Uri = "/v1/nodes/?a=b".parse().expect("uri");
        assert_eq!(
            trim_trailing_slash(&uri).expect("trimmed").to_string(),
            "/v1/nodes?a=b"
        );
        let root: Uri = "/".parse().expect("uri");
        assert!(trim_trailing_slash(&root).is_none());
        let v1: Uri = "/v1/".parse().expect("uri");
        assert_eq!(
            trim_trailing_slash(&v1).expect("trimmed").to_string(),
            "/v1"
        );
    }

    #[test]
    fn base_url_from_host_or_default() {
        let s = ApiSettings::default();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:6390"));
        let uri: Uri = "/v1".parse().expect("uri");
        assert_eq!(base_url(&s, &uri, &h), "http://127.0.0.1:6390");
        h.insert(header::HOST, HeaderValue::from_static("evil/host"));
        assert_eq!(base_url(&s, &uri, &h), "http://localhost:6385");
    }
}
