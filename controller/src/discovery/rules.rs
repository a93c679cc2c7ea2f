//! Inspection rules: PURE evaluation of conditions over the inventory and the node changes
//! they cause. Rules come from the `[[discovery.rules]]` configuration list and run after
//! discovery and after every inspection.
//!
//! A condition reads a dotted JSON path in the inventory document (`cpu.architecture`,
//! `disks.0.size`, `interfaces.mac_address`); a non-numeric segment that meets an array
//! looks into every element, and the condition holds when any value found satisfies it.
//! `matches` is a glob (`*` any run, `?` one character).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Node;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Contains,
    Matches,
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Dotted path in the inventory.
    pub field: String,
    pub op: Op,
    pub value: Value,
}

/// What a matching rule does to the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Sets a top-level node field: `name`, `description`, `driver`, `resource_class`,
    /// `owner`, `lessee`, `conductor_group`.
    SetField {
        name: String,
        value: Value,
    },
    SetProperty {
        name: String,
        value: Value,
    },
    SetExtra {
        name: String,
        value: Value,
    },
    SetDriverInfo {
        name: String,
        value: Value,
    },
    AddTrait {
        value: String,
    },
    SetResourceClass {
        value: String,
    },
    /// Moves a node still in `enroll` on to `manageable`.
    Manage,
}

/// A rule: every condition must hold (no conditions: always).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub actions: Vec<Action>,
}

/// What running the rules decided beyond the node edits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Descriptions (or indexes) of the rules that matched.
    pub matched: Vec<String>,
    /// A `manage` action ran.
    pub manage: bool,
}

fn lookup<'a>(v: &'a Value, path: &[&str], out: &mut Vec<&'a Value>) {
    let Some((first, rest)) = path.split_first() else {
        out.push(v);
        return;
    };
    match v {
        Value::Object(o) => {
            if let Some(child) = o.get(*first) {
                lookup(child, rest, out);
            }
        }
        Value::Array(a) => match first.parse::<usize>() {
            Ok(i) => {
                if let Some(child) = a.get(i) {
                    lookup(child, rest, out);
                }
            }
            Err(_) => {
                for child in a {
                    lookup(child, path, out);
                }
            }
        },
        _ => {}
    }
}

/// Glob match with `*` and `?`.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn compare(op: Op, found: &Value, want: &Value) -> bool {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match op {
        Op::Eq => found == want || (num(found).is_some() && num(found) == num(want)),
        Op::Ne => !(found == want || (num(found).is_some() && num(found) == num(want))),
        Op::Gt | Op::Ge | Op::Lt | Op::Le => match (num(found), num(want)) {
            (Some(a), Some(b)) => match op {
                Op::Gt => a > b,
                Op::Ge => a >= b,
                Op::Lt => a < b,
                _ => a <= b,
            },
            _ => false,
        },
        Op::Contains => match found {
            Value::Array(items) => items.contains(want),
            other => text(other).contains(&text(want)),
        },
        Op::Matches => glob(&text(want), &text(found)),
    }
}

/// True when the condition holds for the inventory.
pub fn holds(cond: &Condition, inventory: &Value) -> bool {
    let path: Vec<&str> = cond.field.split('.').filter(|s| !s.is_empty()).collect();
    let mut found = Vec::new();
    lookup(inventory, &path, &mut found);
    if cond.op == Op::Ne {
        return found.iter().all(|v| compare(Op::Ne, v, &cond.value));
    }
    found.iter().any(|v| compare(cond.op, v, &cond.value))
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Runs every rule in order against the inventory, editing `node`.
pub fn apply(rules: &[Rule], inventory: &Value, node: &mut Node) -> Outcome {
    let mut outcome = Outcome::default();
    for (i, rule) in rules.iter().enumerate() {
        if !rule.conditions.iter().all(|c| holds(c, inventory)) {
            continue;
        }
        outcome.matched.push(
            rule.description
                .clone()
                .unwrap_or_else(|| format!("rule {i}")),
        );
        for action in &rule.actions {
            match action {
                Action::SetField { name, value } => {
                    let text = as_text(value);
                    match name.as_str() {
                        "name" => node.name = text,
                        "description" => node.description = text,
                        "driver" => {
                            if let Some(t) = text {
                                node.driver = t;
                            }
                        }
                        "resource_class" => node.resource_class = text,
                        "owner" => node.owner = text,
                        "lessee" => node.lessee = text,
                        "conductor_group" => node.conductor_group = text.unwrap_or_default(),
                        other => {
                            tracing::warn!(
                                field = other,
                                "inspection rule sets an unknown node field"
                            );
                        }
                    }
                }
                Action::SetProperty { name, value } => {
                    node.properties.insert(name.clone(), value.clone());
                }
                Action::SetExtra { name, value } => {
                    node.extra.insert(name.clone(), value.clone());
                }
                Action::SetDriverInfo { name, value } => {
                    node.driver_info.insert(name.clone(), value.clone());
                }
                Action::AddTrait { value } => {
                    if !node.traits.contains(value) {
                        node.traits.push(value.clone());
                    }
                }
                Action::SetResourceClass { value } => node.resource_class = Some(value.clone()),
                Action::Manage => outcome.manage = true,
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn inv() -> Value {
        json!({
            "cpu": {"architecture": "x86_64", "count": 8, "model_name": "QEMU Virtual CPU"},
            "memory": {"total": 8_589_934_592u64},
            "disks": [{"name": "/dev/vda", "size": 21_474_836_480u64}, {"name": "/dev/vdb", "size": 1024}],
            "interfaces": [{"mac_address": "52:54:00:00:00:01"}],
            "system_vendor": {"manufacturer": "QEMU", "serial_number": "S-1"},
            "flags": ["vmx", "sse4_2"]
        })
    }

    #[test]
    fn conditions_table() {
        let cases = [
            ("cpu.architecture", Op::Eq, json!("x86_64"), true),
            ("cpu.architecture", Op::Ne, json!("x86_64"), false),
            ("cpu.architecture", Op::Ne, json!("aarch64"), true),
            ("cpu.count", Op::Ge, json!(8), true),
            ("cpu.count", Op::Gt, json!(8), false),
            ("cpu.count", Op::Lt, json!("9"), true),
            ("cpu.count", Op::Le, json!(7), false),
            ("cpu.count", Op::Eq, json!("8"), true),
            ("disks.0.size", Op::Gt, json!(1_000_000), true),
            ("disks.1.size", Op::Gt, json!(1_000_000), false),
            ("disks.size", Op::Gt, json!(1_000_000), true),
            ("disks.name", Op::Eq, json!("/dev/vdb"), true),
            ("cpu.model_name", Op::Contains, json!("QEMU"), true),
            ("flags", Op::Contains, json!("vmx"), true),
            ("flags", Op::Contains, json!("svm"), false),
            (
                "system_vendor.manufacturer",
                Op::Matches,
                json!("Q*U"),
                true,
            ),
            (
                "system_vendor.serial_number",
                Op::Matches,
                json!("S-?"),
                true,
            ),
            (
                "system_vendor.serial_number",
                Op::Matches,
                json!("X*"),
                false,
            ),
            (
                "interfaces.mac_address",
                Op::Matches,
                json!("52:54:00:*"),
                true,
            ),
            ("missing.field", Op::Eq, json!(1), false),
            ("cpu.architecture", Op::Gt, json!(1), false),
        ];
        for (field, op, value, want) in cases {
            let c = Condition {
                field: field.into(),
                op,
                value: value.clone(),
            };
            assert_eq!(holds(&c, &inv()), want, "{field} {op:?} {value}");
        }
    }

    #[test]
    fn actions_apply_in_order_and_only_when_all_conditions_hold() {
        let rules: Vec<Rule> = serde_json::from_value(json!([
            {"description": "qemu", "conditions": [
                {"field": "system_vendor.manufacturer", "op": "eq", "value": "QEMU"},
                {"field": "cpu.count", "op": "ge", "value": 4}],
             "actions": [
                {"action": "add_trait", "value": "CUSTOM_VM"},
                {"action": "add_trait", "value": "CUSTOM_VM"},
                {"action": "set_resource_class", "value": "vm"},
                {"action": "set_property", "name": "vendor", "value": "qemu"},
                {"action": "set_extra", "name": "rack", "value": "r1"},
                {"action": "set_driver_info", "name": "deploy_kernel", "value": "k"},
                {"action": "set_field", "name": "driver", "value": "fake-hardware"},
                {"action": "set_field", "name": "description", "value": "a VM"},
                {"action": "manage"}]},
            {"conditions": [{"field": "cpu.count", "op": "gt", "value": 100}],
             "actions": [{"action": "add_trait", "value": "CUSTOM_BIG"}]},
            {"actions": [{"action": "set_extra", "name": "seen", "value": true}]}
        ]))
        .expect("rules");
        let mut node = Node::new(Uuid::new_v4(), "manual", Utc::now());
        let out = apply(&rules, &inv(), &mut node);
        assert_eq!(out.matched, vec!["qemu".to_owned(), "rule 2".to_owned()]);
        assert!(out.manage);
        assert_eq!(node.traits, vec!["CUSTOM_VM".to_owned()]);
        assert_eq!(node.resource_class.as_deref(), Some("vm"));
        assert_eq!(node.properties["vendor"], "qemu");
        assert_eq!(node.extra["rack"], "r1");
        assert_eq!(node.extra["seen"], true);
        assert_eq!(node.driver_info["deploy_kernel"], "k");
        assert_eq!(node.driver, "fake-hardware");
        assert_eq!(node.description.as_deref(), Some("a VM"));
    }

    #[test]
    fn rules_parse_from_toml() {
        let text = r#"
            [[rules]]
            conditions = [{ field = "cpu.architecture", op = "eq", value = "x86_64" }]
            actions = [{ action = "manage" }]
        "#;
        #[derive(Deserialize)]
        struct F {
            rules: Vec<Rule>,
        }
        let parse = |t: &str| {
            use figment::providers::Format as _;
            figment::Figment::from(figment::providers::Toml::string(t))
                .extract::<F>()
                .map_err(Box::new)
        };
        let f: F = parse(text).expect("toml");
        assert_eq!(f.rules[0].actions, vec![Action::Manage]);
        let bad = "[[rules]]\nactions = [{ action = \"explode\" }]\n";
        assert!(parse(bad).is_err());
    }

    #[test]
    fn glob_cases() {
        for (p, t, want) in [
            ("*", "", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbb", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*b*", "abc", true),
        ] {
            assert_eq!(glob(p, t), want, "{p} {t}");
        }
    }
}
