//! `api_body`: one request body to the operator API (the Ironic v1 adapter: JSON extraction
//! with its content-type and depth rules, schema checks, node fields, JSON patch,
//! provision/power/boot-device/trait/maintenance verbs into the lifecycle machine and the
//! conductor) through the real router over an in-memory store ([`crate::ctl`]). The first
//! byte picks the endpoint and the node, the rest is the body.
//!
//! Invariants: no answer is a 500 (a body the API does not understand is the client's
//! error); every error answer is JSON; the node's BMC password never appears in an answer.
//! A node, port or allocation a POST created is deleted again, so the store stays small.

use axum::http::{Method, StatusCode};
use serde_json::Value;

use crate::ctl::{self, NODE, NODE2, PORT};

/// (method, path) by the first input byte: the low 7 bits pick the endpoint, the high bit
/// the node (the agent's node in `clean wait`, or the second one, from `enroll` on).
fn endpoint(selector: u8) -> (Method, String) {
    let node = if selector & 0x80 == 0 { NODE } else { NODE2 };
    let node = format!("/v1/nodes/{node}");
    let selector = selector & 0x7f;
    match selector % 11 {
        0 => (Method::POST, "/v1/nodes".to_owned()),
        1 => (Method::PATCH, node),
        2 => (Method::POST, "/v1/ports".to_owned()),
        3 => (Method::PATCH, format!("/v1/ports/{PORT}")),
        4 => (Method::POST, "/v1/allocations".to_owned()),
        5 => (Method::PUT, format!("{node}/states/provision")),
        6 => (Method::PUT, format!("{node}/states/power")),
        7 => (Method::PUT, format!("{node}/management/boot_device")),
        8 => (Method::PUT, format!("{node}/traits")),
        9 => (Method::PUT, format!("{node}/maintenance")),
        _ => (Method::PUT, format!("{node}/states/boot_mode")),
    }
}

/// Entry point.
pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (method, path) = endpoint(selector);
    ctl::with(async |c| {
        let answer = ctl::send(&c.api, method.clone(), &path, &[], body.to_vec()).await;
        assert_ne!(
            answer.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {path}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let text = String::from_utf8_lossy(&answer.body);
        assert!(
            !text.contains("fuzz-S3CRET") || String::from_utf8_lossy(body).contains("fuzz-S3CRET"),
            "the BMC password leaked: {text}"
        );
        if answer.status.is_client_error() && answer.status != StatusCode::METHOD_NOT_ALLOWED {
            assert!(answer.json().is_some(), "a non-JSON error: {text}");
        }
        if method == Method::POST && answer.status == StatusCode::CREATED {
            let uuid = answer
                .json()
                .and_then(|v| v.get("uuid").and_then(Value::as_str).map(str::to_owned));
            if let Some(uuid) = uuid {
                let _ = ctl::send(
                    &c.api,
                    Method::DELETE,
                    &format!("{path}/{uuid}"),
                    &[],
                    vec![],
                )
                .await;
            }
        }
    });
}
