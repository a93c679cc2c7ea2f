//! `inspection_rule`: a rule as an operator (or whoever holds admin credentials, or a
//! tampered client) POSTs it to `/v1/inspection_rules`, validated as the API does
//! (`controller::inspection_rules::validate`) and, when it passes, run on a node with ports
//! and an inventory (`engine::apply`), as inspection does with whatever the agent reported.
//!
//! Invariants: validation and evaluation never panic; a rule that validates round-trips
//! through the JSON the store keeps; running it leaves a node that still serializes, with
//! traits the API accepts; a rule that is not sensitive never writes a secret of the
//! inventory or the node into the node; no rule's error or log line quotes a secret.

use chrono::Utc;
use controller::inspection_rules::{InspectionRule, Operation, engine, validate};
use controller::model::{Node, Port, is_valid_trait};
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &str = "fuzz-secret-9f3a";

fn inventory() -> Value {
    json!({
        "cpu": {"count": 8, "architecture": "x86_64"},
        "memory": {"physical_mb": 16384, "total": 17179869184u64},
        "system_vendor": {"manufacturer": "Dell Inc.", "product_name": "R640"},
        "interfaces": [{"name": "eth0", "mac_address": "52:54:00:12:34:56"}],
        "bmc_address": "192.0.2.10",
        "bmc_password": SECRET
    })
}

fn port(node: Uuid) -> Port {
    Port::new(
        Uuid::from_u128(7),
        node,
        "52:54:00:12:34:56".into(),
        Utc::now(),
    )
}

pub fn run(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(b) = validate(&body, false) else {
        return;
    };
    for op in b.conditions.iter().chain(&b.actions) {
        let text = serde_json::to_string(op).expect("serializes");
        let back: Operation = serde_json::from_str(&text).expect("round-trips");
        assert_eq!(&back, op);
    }
    let rule = InspectionRule {
        uuid: b.uuid.unwrap_or_else(Uuid::nil),
        description: b.description,
        priority: b.priority,
        sensitive: b.sensitive,
        phase: b.phase,
        conditions: b.conditions,
        actions: b.actions,
        created_at: Utc::now(),
        updated_at: None,
    };
    let mut node = Node::new(Uuid::from_u128(1), "manual", Utc::now());
    node.driver_info
        .insert("ipmi_password".into(), json!(SECRET));
    let mut ports = vec![port(node.uuid)];
    let result = engine::apply(
        std::slice::from_ref(&rule),
        &inventory(),
        &mut node,
        &mut ports,
    );
    // What reaches logs and `last_error` never quotes a secret, sensitive rule or not
    // (unless the rule's own text holds it: libFuzzer finds strings it is compared with).
    let written_in_rule = String::from_utf8_lossy(data).contains(SECRET);
    match &result {
        _ if written_in_rule => {}
        Err(e) => assert!(
            !e.to_string().contains(SECRET),
            "a secret in the error: {e}"
        ),
        Ok(applied) => assert!(
            applied.log.iter().all(|l| !l.contains(SECRET)),
            "a secret in a log line"
        ),
    }
    if result.is_ok() {
        let doc = serde_json::to_string(&node).expect("node serializes");
        assert!(
            node.traits.iter().all(|t| is_valid_trait(t)),
            "{:?}",
            node.traits
        );
        if !rule.sensitive && !written_in_rule {
            // The one place the secret may stay is where it was.
            let mut without = node.clone();
            without.driver_info.remove("ipmi_password");
            let rest = serde_json::to_string(&without).expect("serializes");
            assert!(
                !rest.contains(SECRET),
                "a secret leaked into the node: {doc}"
            );
            let ports_doc = serde_json::to_string(&ports).expect("serializes");
            assert!(!ports_doc.contains(SECRET), "a secret leaked into a port");
        }
    }
}
