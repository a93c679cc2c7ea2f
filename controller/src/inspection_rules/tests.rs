//! Validation and evaluation tables of the inspection rule language.

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::engine::{RuleError, apply};
use super::*;
use crate::model::{Node, Port};

fn rule(body: Value) -> InspectionRule {
    let b = validate(&body, false).unwrap_or_else(|e| panic!("{body}: {e}"));
    InspectionRule {
        uuid: b.uuid.unwrap_or_else(Uuid::new_v4),
        description: b.description,
        priority: b.priority,
        sensitive: b.sensitive,
        phase: b.phase,
        conditions: b.conditions,
        actions: b.actions,
        created_at: Utc::now(),
        updated_at: None,
    }
}

fn inventory() -> Value {
    json!({
        "cpu": {"count": 8, "architecture": "x86_64"},
        "memory": {"physical_mb": 16384},
        "system_vendor": {"manufacturer": "Dell Inc.", "product_name": "PowerEdge R640"},
        "interfaces": [
            {"name": "eth0", "mac_address": "52:54:00:12:34:56", "ipv4_address": "10.1.2.3"},
            {"name": "eth1", "mac_address": "52:54:00:12:34:57", "ipv4_address": null}
        ],
        "bmc_address": "192.0.2.10",
        "bmc_password": "hunter2"
    })
}

fn node() -> Node {
    let mut n = Node::new(Uuid::new_v4(), "manual", Utc::now());
    n.driver_info
        .insert("ipmi_password".into(), json!("s3cret"));
    n
}

fn port(node: &Node, mac: &str) -> Port {
    Port::new(Uuid::new_v4(), node.uuid, mac.to_owned(), Utc::now())
}

#[test]
fn validation_table() {
    let ok_action = json!([{"op": "log", "args": {"msg": "hi"}}]);
    let cases: Vec<(Value, Result<(), &str>)> = vec![
        (json!({"actions": ok_action}), Ok(())),
        (
            json!({"actions": [{"op": "log", "args": ["positional", "info"]}], "priority": 9999,
                   "phase": "main", "sensitive": null, "description": null, "uuid": null}),
            Ok(()),
        ),
        (
            json!({"actions": ok_action, "conditions": [
                {"op": "!eq", "args": {"values": [1, 2]}},
                {"op": "contains", "args": ["{item}", "x"], "loop": ["a", "b"], "multiple": "all"}
            ]}),
            Ok(()),
        ),
        (json!({}), Err("'actions' is a required property")),
        (json!({"actions": []}), Err("should be non-empty")),
        (json!([]), Err("is not of type 'object'")),
        (
            json!({"actions": ok_action, "scope": "x"}),
            Err("'scope' was unexpected"),
        ),
        (
            json!({"actions": ok_action, "phase": "later"}),
            Err("Invalid phase: later"),
        ),
        (
            json!({"actions": ok_action, "priority": -1}),
            Err("cannot be negative"),
        ),
        (
            json!({"actions": ok_action, "priority": 10000}),
            Err("between 0 and 9999"),
        ),
        (
            json!({"actions": ok_action, "priority": "1", "sensitive": "True"}),
            Ok(()),
        ),
        (
            json!({"actions": ok_action, "priority": "high"}),
            Err("not of type 'integer'"),
        ),
        (
            json!({"actions": ok_action, "sensitive": "yes"}),
            Err("not of type 'boolean'"),
        ),
        (
            json!({"actions": ok_action, "description": "x".repeat(256)}),
            Err("too long"),
        ),
        (
            json!({"actions": ok_action, "uuid": "nope"}),
            Err("Expected UUID"),
        ),
        (
            json!({"actions": [{"op": "explode", "args": {}}]}),
            Err("Unsupported action operator: explode"),
        ),
        (
            json!({"actions": [{"op": "api-call", "args": {"url": "http://x"}}]}),
            Err("api-call"),
        ),
        (
            json!({"actions": [{"op": "log", "args": {}}]}),
            Err("missing required argument(s): msg"),
        ),
        (
            json!({"actions": [{"op": "log", "args": {"msg": 1, "x": 2}}]}),
            Err("unexpected argument(s): x"),
        ),
        (
            json!({"actions": [{"op": "log", "args": "msg"}]}),
            Err("list or dictionary"),
        ),
        (
            json!({"actions": [{"op": "set-attribute", "args": ["/a"]}]}),
            Err("Missing: value"),
        ),
        (
            json!({"actions": ok_action, "conditions": [{"op": "matches", "args": {"value": "x", "regex": "("}}]}),
            Err("invalid regex"),
        ),
        (
            json!({"actions": ok_action, "conditions": [{"op": "eq", "args": {"values": []}, "multiple": "most"}]}),
            Err("multiple"),
        ),
        (
            json!({"actions": [{"op": "nope", "args": {}}], "priority": -5}),
            Err("Multiple validation errors occurred"),
        ),
    ];
    for (body, want) in cases {
        let got = validate(&body, false).map(|_| ());
        match (got, want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(w)) => assert!(e.contains(w), "{body}: {e:?} lacks {w:?}"),
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }
    // Built-in rules may have any priority.
    assert!(validate(&json!({"actions": ok_action, "priority": -100}), true).is_ok());
}

#[test]
fn conditions_table() {
    let cases: Vec<(Value, bool)> = vec![
        (
            json!({"op": "eq", "args": {"values": ["{inventory[cpu][count]}", 8]}}),
            true,
        ),
        (
            json!({"op": "eq", "args": {"values": ["{inventory[cpu][count]}", "8"]}}),
            true,
        ),
        (
            json!({"op": "eq", "args": {"values": ["{inventory[cpu][architecture]}", "x86_64"]}}),
            true,
        ),
        (
            json!({"op": "!eq", "args": {"values": ["{inventory[cpu][architecture]}", "x86_64"]}}),
            false,
        ),
        (
            json!({"op": "gt", "args": {"values": ["{inventory[memory][physical_mb]}", 8192]}}),
            true,
        ),
        (
            json!({"op": "lt", "args": [["{inventory[memory][physical_mb]}", 8192]]}),
            false,
        ),
        (
            json!({"op": "eq", "args": {"values": ["08", 8], "force_strings": true}}),
            false,
        ),
        (
            json!({"op": "contains", "args": {"value": "{inventory[system_vendor][manufacturer]}", "regex": "(?i)dell"}}),
            true,
        ),
        (
            json!({"op": "matches", "args": {"value": "{inventory[system_vendor][product_name]}", "regex": "R640"}}),
            false,
        ),
        (
            json!({"op": "matches", "args": {"value": "{inventory[system_vendor][product_name]}", "regex": "PowerEdge"}}),
            true,
        ),
        (
            json!({"op": "in-net", "args": {"address": "{inventory[bmc_address]}", "subnet": "192.0.2.0/24"}}),
            true,
        ),
        (
            json!({"op": "in-net", "args": {"address": "{inventory[bmc_address]}", "subnet": "10.0.0.0/8"}}),
            false,
        ),
        (
            json!({"op": "one-of", "args": {"value": "{inventory[cpu][architecture]}", "values": ["aarch64", "x86_64"]}}),
            true,
        ),
        (
            json!({"op": "is-empty", "args": {"value": "{inventory[nothing]}"}}),
            true,
        ),
        (
            json!({"op": "is-empty", "args": {"value": "{inventory[cpu]}"}}),
            false,
        ),
        (
            json!({"op": "is-none", "args": {"value": "{inventory[interfaces][1][ipv4_address]}"}}),
            true,
        ),
        (json!({"op": "is-true", "args": {"value": "yes"}}), true),
        (
            json!({"op": "is-false", "args": {"value": "{inventory[nothing]}"}}),
            false,
        ),
        // Loops: `item` is each element; `any` by default, `all`, `first`, `last`.
        (
            json!({"op": "contains", "args": {"value": "{item[name]}", "regex": "eth1"}, "loop": "{inventory[interfaces]}"}),
            true,
        ),
        (
            json!({"op": "contains", "args": {"value": "{item[name]}", "regex": "eth2"}, "loop": "{inventory[interfaces]}"}),
            false,
        ),
        (
            json!({"op": "contains", "args": {"value": "{item}", "regex": "eth1"}, "loop": ["eth0", "eth1"]}),
            true,
        ),
        (
            json!({"op": "contains", "args": {"value": "{item}", "regex": "eth"}, "loop": ["eth0", "lo"], "multiple": "all"}),
            false,
        ),
        (
            json!({"op": "eq", "args": {"values": ["{item}", "lo"]}, "loop": ["eth0", "lo"], "multiple": "last"}),
            true,
        ),
        (
            json!({"op": "eq", "args": {"values": ["{item}", "lo"]}, "loop": ["eth0", "lo"], "multiple": "first"}),
            true,
        ),
    ];
    for (cond, want) in cases {
        let r = rule(
            json!({"conditions": [cond.clone()], "actions": [{"op": "add-trait", "args": {"name": "CUSTOM_HIT"}}]}),
        );
        let mut n = node();
        apply(&[r], &inventory(), &mut n, &mut []).unwrap_or_else(|e| panic!("{cond}: {e}"));
        assert_eq!(n.traits.contains(&"CUSTOM_HIT".to_owned()), want, "{cond}");
    }
}

#[test]
fn actions_change_the_node_ports_and_plugin_data() {
    let mut n = node();
    let mut ports = vec![port(&n, "52:54:00:12:34:56"), port(&n, "52:54:00:12:34:57")];
    let r = rule(json!({
        "description": "Dell BMC",
        "conditions": [{"op": "contains", "args": {"value": "{inventory[system_vendor][manufacturer]}", "regex": "Dell"}}],
        "actions": [
            {"op": "set-attribute", "args": {"path": "/driver", "value": "ipmi"}},
            {"op": "set-attribute", "args": {"path": "/driver_info/ipmi_address", "value": "{inventory[bmc_address]}"}},
            {"op": "set-attribute", "args": {"path": "properties/cpus", "value": "{inventory[cpu][count]}"}},
            {"op": "extend-attribute", "args": {"path": "/extra/tags", "value": "dell", "unique": true}},
            {"op": "extend-attribute", "args": {"path": "/extra/tags", "value": "dell", "unique": true}},
            {"op": "set-capability", "args": {"name": "boot_mode", "value": "uefi"}},
            {"op": "set-capability", "args": {"name": "x", "value": "1"}},
            {"op": "unset-capability", "args": {"name": "x"}},
            {"op": "add-trait", "args": {"name": "CUSTOM_DELL"}},
            {"op": "set-plugin-data", "args": {"path": "seen/vendor", "value": "dell"}},
            {"op": "set-port-attribute", "args": {"port_id": "{item[mac_address]}", "path": "/extra/nic", "value": "{item[name]}"},
             "loop": "{inventory[interfaces]}"},
            {"op": "set-port-attribute", "args": {"port_id": "52:54:00:12:34:57", "path": "/pxe_enabled", "value": false}},
            {"op": "log", "args": {"msg": "{inventory[system_vendor][product_name]} set up"}}
        ]
    }));
    // A lower-priority rule reads what the first put in the plugin data.
    let after = rule(json!({
        "priority": 0,
        "conditions": [{"op": "eq", "args": {"values": ["{plugin_data[seen][vendor]}", "dell"]}}],
        "actions": [{"op": "remove-trait", "args": {"name": "CUSTOM_DELL"}},
                    {"op": "del-attribute", "args": {"path": "/extra/tags"}}]
    }));
    let mut first = r;
    first.priority = 50;
    let applied = apply(
        &[after.clone(), first.clone()],
        &inventory(),
        &mut n,
        &mut ports,
    )
    .expect("applies");
    assert_eq!(
        applied.matched,
        vec![first.uuid.to_string(), after.uuid.to_string()]
    );
    assert_eq!(n.driver, "ipmi");
    assert_eq!(n.driver_info["ipmi_address"], json!("192.0.2.10"));
    assert_eq!(n.properties["cpus"], json!(8));
    assert_eq!(n.properties["capabilities"], json!("boot_mode:uefi"));
    assert!(n.traits.is_empty(), "{:?}", n.traits);
    assert_eq!(n.extra.get("tags"), None);
    assert_eq!(ports[0].extra["nic"], json!("eth0"));
    assert_eq!(ports[1].extra["nic"], json!("eth1"));
    assert!(!ports[1].pxe_enabled);
    assert_eq!(applied.ports_changed, vec![0, 1]);
    assert_eq!(applied.log, vec!["PowerEdge R640 set up".to_owned()]);
}

#[test]
fn secrets_are_masked_unless_the_rule_is_sensitive() {
    let body = |sensitive: bool| {
        json!({"sensitive": sensitive, "actions": [
            {"op": "set-attribute", "args": {"path": "/extra/seen", "value": "{inventory[bmc_password]}/{node.driver_info[ipmi_password]}"}}
        ]})
    };
    let mut n = node();
    apply(&[rule(body(false))], &inventory(), &mut n, &mut []).expect("applies");
    assert_eq!(n.extra["seen"], json!("******/******"));
    apply(&[rule(body(true))], &inventory(), &mut n, &mut []).expect("applies");
    assert_eq!(n.extra["seen"], json!("hunter2/s3cret"));

    // What goes to logs and `last_error` never quotes a secret, sensitive rule or not.
    let log = rule(json!({"sensitive": true, "actions": [
        {"op": "log", "args": {"msg": "pw {node.driver_info[ipmi_password]}"}}
    ]}));
    let applied = apply(&[log], &inventory(), &mut node(), &mut []).expect("applies");
    assert_eq!(applied.log, vec!["pw ******".to_owned()]);
    let fail = rule(json!({"sensitive": true, "actions": [
        {"op": "fail", "args": {"msg": "bmc {inventory[bmc_password]}"}}
    ]}));
    assert_eq!(
        apply(&[fail], &inventory(), &mut node(), &mut []),
        Err(RuleError::Failed("bmc ******".into()))
    );
    // A sensitive rule's error is not shown (a bad value there may be a secret).
    let broken = rule(json!({"sensitive": true, "actions": [
        {"op": "set-attribute", "args": {"path": "/driver_info", "value": "{inventory[bmc_password]}"}}
    ]}));
    match apply(&[broken], &inventory(), &mut node(), &mut []) {
        Err(e @ RuleError::Broken { .. }) => {
            let text = e.to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("sensitive"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fail_stops_and_bad_edits_are_errors() {
    let mut n = node();
    let fail = rule(json!({"actions": [
        {"op": "fail", "args": {"msg": "too little memory: {inventory[memory][physical_mb]}"}},
        {"op": "add-trait", "args": {"name": "CUSTOM_NEVER"}}
    ]}));
    assert_eq!(
        apply(&[fail], &inventory(), &mut n, &mut []),
        Err(RuleError::Failed("too little memory: 16384".into()))
    );
    assert!(n.traits.is_empty());
    for (action, why) in [
        (
            json!({"op": "set-attribute", "args": {"path": "/provision_state", "value": "active"}}),
            "cannot be changed",
        ),
        (
            json!({"op": "set-attribute", "args": {"path": "/driver_info", "value": "text"}}),
            "driver_info",
        ),
        (
            json!({"op": "add-trait", "args": {"name": "lower case"}}),
            "not a valid trait",
        ),
        (
            json!({"op": "set-port-attribute", "args": {"port_id": "00:00:00:00:00:01", "path": "/extra/x", "value": 1}}),
            "no port",
        ),
        (
            json!({"op": "set-port-attribute", "args": {"port_id": "x", "path": "/address", "value": 1}}),
            "no port",
        ),
        (
            json!({"op": "del-attribute", "args": {"path": "/extra/missing"}}),
            "does not exist",
        ),
    ] {
        let r = rule(json!({"actions": [action.clone()]}));
        match apply(&[r], &inventory(), &mut node(), &mut []) {
            Err(RuleError::Broken { why: w, .. }) => assert!(w.contains(why), "{action}: {w}"),
            other => panic!("{action}: {other:?}"),
        }
    }
}
