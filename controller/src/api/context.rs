//! Per-request context (effective version, public base URL, request id) and the JSON body
//! extractor that turns oversize and malformed bodies into Ironic-shaped 413/400 errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::Value;

use super::error::ApiError;
use super::version::Version;

/// What the API middleware learned about the request; handlers extract it directly.
#[derive(Debug, Clone)]
pub struct ReqCtx {
    pub version: Version,
    /// `http://HOST` (no trailing slash), from the request's `Host` header: every absolute
    /// URL Ironic emits is built from it.
    pub base: String,
}

impl ReqCtx {
    /// Fails with the generic 404 when the resource does not exist at this version.
    pub fn require(&self, minor: u32) -> Result<(), ApiError> {
        if self.version.at_least(minor) {
            Ok(())
        } else {
            Err(ApiError::resource_not_found())
        }
    }

    /// Fails with a 406 when a feature needs a newer version than requested.
    pub fn require_feature(&self, minor: u32) -> Result<(), ApiError> {
        if self.version.at_least(minor) {
            Ok(())
        } else {
            Err(ApiError::NotAcceptable(
                "Request not acceptable.".to_owned(),
            ))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ReqCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ReqCtx>()
            .cloned()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("api middleware did not run")))
    }
}

/// A request body parsed as JSON (any value; handlers validate the shape themselves so that
/// they can word errors as Ironic does).
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "The request body is empty; a JSON document was expected.",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON in request body: {e}")))
    }
}

/// A request body that may be absent (`PUT .../traits/X`, `DELETE` with an octet-stream
/// content type): `None` when empty.
#[derive(Debug)]
pub struct OptionalJsonBody(pub Option<Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| OptionalJsonBody(Some(v)))
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON in request body: {e}")))
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("The request body is too large.".to_owned())
        } else {
            ApiError::bad_request(format!(
                "Could not read the request body: {}",
                rej.body_text()
            ))
        }
    })
}
