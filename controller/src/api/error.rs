//! The one error type of the operator API and its Ironic-shaped HTTP rendering.
//!
//! Every 4xx/5xx body is `{"error_message": "<JSON document as a string>"}` where the inner
//! document is `{"faultcode", "faultstring", "debuginfo"}` (406 uses `{"code", "title",
//! "description"}`), exactly what python-ironicclient and openstacksdk parse.
//! This module must not decide *whether* something is an error; it only renders.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::conductor::ConductorError;
use crate::drivers::DriverError;
use crate::store::StoreError;

/// An API failure: the status it maps to and the faultstring shown to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A microversion floor not met (406 with the fault shape, as Ironic's `NotAcceptable`).
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A body that is not declared as JSON (a browser form, `text/plain`: the CSRF shape).
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    /// A failure the client cannot fix but should see (a BMC that did not answer).
    #[error("{0}")]
    ServerError(String),
    /// Anything the client cannot fix. The detail is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// `Node <ident> could not be found.`
    pub fn node_not_found(ident: impl std::fmt::Display) -> Self {
        Self::NotFound(format!("Node {ident} could not be found."))
    }

    /// The generic 404 of an unknown path (or a resource hidden at the requested version).
    pub fn resource_not_found() -> Self {
        Self::NotFound("The resource could not be found.".to_owned())
    }

    /// `Schema error for <what>: <reason>` (Ironic's JSON-schema rejection).
    pub fn schema(what: &str, reason: impl std::fmt::Display) -> Self {
        Self::BadRequest(format!("Schema error for {what}: {reason}"))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::ServerError(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { kind, ident } => Self::NotFound(not_found_message(kind, &ident)),
            StoreError::Duplicate { kind, field, value } => {
                Self::Conflict(duplicate_message(kind, field, &value))
            }
            StoreError::Locked { uuid, holder } => Self::Conflict(locked_message(uuid, &holder)),
            StoreError::Stale { uuid } => Self::Conflict(format!(
                "Node {uuid} was changed concurrently, please retry the request."
            )),
            err @ StoreError::Database(_) => Self::Internal(err.into()),
        }
    }
}

impl From<ConductorError> for ApiError {
    fn from(err: ConductorError) -> Self {
        match err {
            ConductorError::NotFound(m) => Self::NotFound(m),
            ConductorError::InvalidTransition(m) | ConductorError::BadRequest(m) => {
                Self::BadRequest(m)
            }
            err @ ConductorError::Locked { .. } => Self::Conflict(err.to_string()),
            ConductorError::Forbidden(m) => Self::Forbidden(m),
            err @ ConductorError::ShuttingDown(_) => Self::ServiceUnavailable(err.to_string()),
            ConductorError::Store(e) => e.into(),
            ConductorError::Driver(e) => match e {
                DriverError::Unsupported(m) | DriverError::InvalidParameter(m) => {
                    Self::BadRequest(m)
                }
                other => Self::ServerError(other.to_string()),
            },
        }
    }
}

/// Ironic's `NodeLocked` text.
pub fn locked_message(uuid: impl std::fmt::Display, holder: &str) -> String {
    format!(
        "Node {uuid} is locked by host {holder}, please retry after the current operation is completed."
    )
}

fn not_found_message(kind: &str, ident: &str) -> String {
    let kind = match kind.to_ascii_lowercase().as_str() {
        "node" => "Node",
        "port" => "Port",
        "allocation" => "Allocation",
        _ => return format!("{kind} {ident} could not be found."),
    };
    format!("{kind} {ident} could not be found.")
}

fn duplicate_message(kind: &str, field: &str, value: &str) -> String {
    let field = field.to_ascii_lowercase();
    match (kind.to_ascii_lowercase().as_str(), field.as_str()) {
        ("port", f) if f.contains("address") || f.contains("mac") => {
            format!("A port with MAC address {value} already exists.")
        }
        ("port", "name") => format!("A port with name {value} already exists."),
        ("port", _) => format!("A port with UUID {value} already exists."),
        ("node", "instance_uuid") => format!(
            "Instance {value} is already associated with a node, it cannot be associated with this other node"
        ),
        ("node", "name") => format!("A node with name {value} already exists."),
        ("node", _) => format!("A node with UUID {value} already exists."),
        ("allocation", "name") => format!("An allocation with name {value} already exists."),
        ("allocation", _) => format!("An allocation with UUID {value} already exists."),
        (kind, field) => format!("A {kind} with {field} {value} already exists."),
    }
}

/// Serializes a string as a JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The body Ironic sends for every fault: the inner document uses Python's `json.dumps`
/// spacing, since that is what the real server emits.
pub fn fault_body(status: StatusCode, faultstring: &str) -> String {
    let code = if status.is_server_error() {
        "Server"
    } else {
        "Client"
    };
    let inner = format!(
        "{{\"faultcode\": \"{code}\", \"faultstring\": {}, \"debuginfo\": null}}",
        json_str(faultstring)
    );
    format!("{{\"error_message\": {}}}", json_str(&inner))
}

/// The body of a version-negotiation 406 (`{"code", "title", "description"}` inner shape).
pub fn not_acceptable_body(description: &str) -> String {
    let inner = format!(
        "{{\"code\": 406, \"title\": \"Not Acceptable\", \"description\": {}}}",
        json_str(description)
    );
    format!("{{\"error_message\": {}}}", json_str(&inner))
}

/// A JSON response with a pre-serialized body.
pub fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let faultstring = match &self {
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error in api request");
                "An internal error occurred; see the controller log.".to_owned()
            }
            other => other.to_string(),
        };
        json_response(status, fault_body(status, &faultstring))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_body_nests_a_json_string() {
        let body = fault_body(StatusCode::NOT_FOUND, "Node n1 could not be found.");
        let outer: serde_json::Value = serde_json::from_str(&body).expect("outer json");
        let inner: serde_json::Value =
            serde_json::from_str(outer["error_message"].as_str().expect("string"))
                .expect("inner json");
        assert_eq!(inner["faultcode"], "Client");
        assert_eq!(inner["faultstring"], "Node n1 could not be found.");
        assert!(inner["debuginfo"].is_null());
    }

    #[test]
    fn store_duplicates_map_to_ironic_texts() {
        let e: ApiError = StoreError::Duplicate {
            kind: "port",
            field: "address",
            value: "52:54:00:00:00:01".into(),
        }
        .into();
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(
            e.to_string(),
            "A port with MAC address 52:54:00:00:00:01 already exists."
        );
        let e: ApiError = StoreError::Duplicate {
            kind: "node",
            field: "name",
            value: "n2".into(),
        }
        .into();
        assert_eq!(e.to_string(), "A node with name n2 already exists.");
    }
}
