//! `json_patch`: one PATCH body into the API's JSON Patch code (`api::patch::parse`, then
//! `apply` to the patchable document of a node with a BMC password, nested `extra` and
//! `properties`, the masked rendering of the body and Ironic's apply error).
//!
//! Invariants: at most `MAX_OPS` operations are accepted; applying is deterministic (twice on
//! two copies gives the same result); the error text of a failed patch never holds the
//! document's secret (unless the patch itself carries that string); a successful patch
//! leaves an object that serializes.

use chrono::{TimeZone as _, Utc};
use controller::api::node_fields::{self, PATCHABLE};
use controller::api::patch::{self, MAX_OPS};
use controller::model::Node;
use serde_json::{Map, Value, json};
use uuid::Uuid;

const SECRET: &str = "fuzz-S3CRET-bmc-password";

fn document() -> Map<String, Value> {
    let when = Utc
        .timestamp_opt(1_800_000_000, 0)
        .single()
        .unwrap_or_default();
    let mut node = Node::new(Uuid::from_u128(42), "ipmi", when);
    let info = json!({
        "ipmi_address": "10.0.0.9",
        "ipmi_username": "admin",
        "ipmi_password": SECRET,
        "nested": {"list": [1, 2, {"redfish_password": SECRET}]},
    });
    if let Value::Object(m) = info {
        node.driver_info = m;
    }
    node.extra.insert("tags".to_owned(), json!(["a", "b", "c"]));
    node.extra
        .insert("deep".to_owned(), json!({"x": {"y": [0, {"z": null}]}}));
    node.properties.insert("cpus".to_owned(), json!(8));
    PATCHABLE
        .iter()
        .map(|f| ((*f).to_owned(), node_fields::get(&node, f)))
        .collect()
}

/// Entry point.
pub fn run(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = patch::masked_patch(&body);
    let ops = match patch::parse(&body) {
        Ok(ops) => ops,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(ops.len() <= MAX_OPS, "{} operations accepted", ops.len());
    for op in &ops {
        assert!(!op.tokens.is_empty() && !op.field().is_empty());
    }
    let mut first = document();
    let mut second = first.clone();
    let r1 = patch::apply(&mut first, &ops);
    let r2 = patch::apply(&mut second, &ops);
    assert_eq!(r1, r2, "apply is not deterministic");
    assert_eq!(first, second, "apply is not deterministic");
    match r1 {
        Ok(()) => {
            serde_json::to_vec(&Value::Object(first)).expect("a patched document serializes");
        }
        Err(reason) => {
            let text = patch::apply_error(&body, &reason).to_string();
            let carried = body.to_string().contains(SECRET);
            assert!(
                carried || !text.contains(SECRET),
                "the BMC password leaked into a patch error: {text}"
            );
        }
    }
}
