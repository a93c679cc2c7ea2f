//! Per-request context (effective version, public base URL, request id) and the JSON body
//! extractor that turns oversize and malformed bodies into Ironic-shaped 413/400 errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::Value;

use super::error::ApiError;
use super::policy::Grant;
use super::version::Version;

/// What the API middleware learned about the request; handlers extract it directly.
#[derive(Debug, Clone)]
pub struct ReqCtx {
    pub version: Version,
    /// `http://HOST` (no trailing slash), from the request's `Host` header: every absolute
    /// URL Ironic emits is built from it.
    pub base: String,
    /// The caller's role and project.
    pub grant: Grant,
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
        let json_type = declares_json(&req);
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "The request body is empty; a JSON document was expected.",
            ));
        }
        json_type?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A request body that may be absent (`PUT .../traits/X`, `DELETE` with an octet-stream
/// content type): `None` when empty.
#[derive(Debug)]
pub struct OptionalJsonBody(pub Option<Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = declares_json(&req);
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        json_type?;
        parse_json(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// Deepest nesting of arrays and objects a request body may have. Ironic's documents are a
/// few levels deep (a config drive's `meta_data` is the deepest); the cap keeps a hostile
/// body from costing recursion in every walk over it.
pub const MAX_JSON_DEPTH: usize = 32;

/// Parses a body, refusing documents nested deeper than [`MAX_JSON_DEPTH`].
fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON in request body: {e}")))?;
    if depth(&v) > MAX_JSON_DEPTH {
        return Err(ApiError::bad_request(format!(
            "The request body is nested deeper than {MAX_JSON_DEPTH} levels."
        )));
    }
    Ok(v)
}

/// PURE: nesting depth of a JSON value (a scalar is 0, `[]` and `{}` are 1).
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A body-carrying request must say it is JSON: `application/json` or a `+json` type
/// (`application/json-patch+json`), parameters allowed. Anything else, or none, is 415:
/// a web page can send `text/plain` or a form to the API without a CORS preflight, but not
/// JSON.
fn declares_json(req: &Request) -> Result<(), ApiError> {
    let ct = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if ct.is_some_and(is_json_media_type) {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "The request body must be JSON (Content-Type: application/json), not {}.",
        ct.map_or_else(
            || "a body without a Content-Type".to_owned(),
            |c| format!("{c:?}")
        )
    )))
}

/// PURE: whether a Content-Type value is JSON (`application/json`, `application/x+json`).
pub fn is_json_media_type(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some(sub) = essence.strip_prefix("application/") else {
        return false;
    };
    sub == "json" || (sub.ends_with("+json") && sub.len() > "+json".len())
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_media_types() {
        let cases = [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/json-patch+json", true),
            ("application/merge-patch+json", true),
            ("application/+json", false),
            ("text/plain", false),
            ("text/plain; charset=utf-8", false),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
            ("application/jsonx", false),
            ("", false),
        ];
        for (ct, want) in cases {
            assert_eq!(is_json_media_type(ct), want, "{ct:?}");
        }
    }

    #[test]
    fn depth_is_capped() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
        let mut deep = json!(0);
        for _ in 0..MAX_JSON_DEPTH {
            deep = json!([deep]);
        }
        assert!(parse_json(deep.to_string().as_bytes()).is_ok());
        let deeper = json!([deep]);
        let err = parse_json(deeper.to_string().as_bytes()).expect_err("too deep");
        assert!(err.to_string().contains("nested deeper than 32"), "{err}");
    }
}
