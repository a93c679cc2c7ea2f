//! `agent_api`: one request body to the controller's agent API (`/agent/v1/lookup`,
//! `heartbeat`, `events`: JSON into the `proto` types, the lookup limits, the session rules,
//! discovery's enrolment of an unknown machine from its inventory, progress and results
//! into the node) through the real router over an in-memory store ([`crate::ctl`]). The
//! first byte picks the endpoint and whether the request carries the node's agent token;
//! the rest is the body, in which the command id of the seeds
//! ([`ctl::COMMAND_PLACEHOLDER`]) is replaced by that of the command the agent was handed.
//!
//! Invariants: no answer is a 500; every error answer is JSON with an `error` string (or
//! axum's plain-text refusal of an oversized body or a wrong content type); a token is only
//! ever in a lookup answer. The body is also read as an in-band BMC enrolment result.

use axum::http::{Method, StatusCode};
use proto::protocol::{PATH_EVENTS, PATH_HEARTBEAT, PATH_LOOKUP, TOKEN_HEADER};

use crate::ctl;

/// Entry point.
pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    enrolment_result(body);
    let path = match (selector & 0x7f) % 3 {
        0 => PATH_LOOKUP,
        1 => PATH_HEARTBEAT,
        _ => PATH_EVENTS,
    };
    let with_token = selector & 0x80 != 0;
    ctl::with(async |c| {
        let token = c.token.clone().unwrap_or_default();
        let headers: Vec<(&str, &str)> = if with_token {
            vec![(TOKEN_HEADER, token.as_str())]
        } else {
            vec![]
        };
        let body = match (&c.command_id, std::str::from_utf8(body)) {
            (Some(id), Ok(text)) => text.replace(ctl::COMMAND_PLACEHOLDER, id).into_bytes(),
            _ => body.to_vec(),
        };
        let answer = ctl::send(&c.agent, Method::POST, path, &headers, body).await;
        let text = String::from_utf8_lossy(&answer.body);
        assert_ne!(
            answer.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{path}: {text}"
        );
        if !answer.status.is_success() && answer.status != StatusCode::METHOD_NOT_ALLOWED {
            let ok = answer
                .json()
                .is_some_and(|v| v.get("error").is_some_and(|e| e.is_string()));
            // axum's own rejections (length limit, content type) are plain text.
            let axum_rejection = matches!(
                answer.status,
                StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE
            );
            assert!(ok || axum_rejection, "{} {path}: {text}", answer.status);
        }
        if path != PATH_LOOKUP {
            assert!(
                answer
                    .json()
                    .is_none_or(|v| v.get("token").is_none_or(|t| t.is_null())),
                "a token outside a lookup answer"
            );
        }
    });
}

/// The body read as an `enroll_bmc` result document (`discovery::bmc_enrol::parse`): never
/// a panic, and an error never quotes the password.
fn enrolment_result(body: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    if let Err(e) = controller::discovery::bmc_enrol::parse(Some(&value))
        && let Some(p) = value.get("password").and_then(|p| p.as_str())
        && p.len() >= 4
    {
        assert!(!e.contains(p), "the error quotes the password: {e}");
    }
}
