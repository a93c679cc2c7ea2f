//! Inspection rules in Ironic's shape (API microversion 1.96): conditions checked on the
//! inventory after discovery and after every inspection, and actions run on the node when
//! they all hold. The operator manages them at `/v1/inspection_rules` (`api/inspection_rules.rs`,
//! stored by the store); the configuration file's `[[discovery.rules]]` are the built-in ones
//! (`discovery/rules.rs`, their own simpler form) and run first.
//!
//! This module is the one home of the rule language: the operators and actions with their
//! arguments ([`ops`]), validation of a rule as the API receives it ([`validate`]), the
//! `{inventory[...]}` references ([`interp`]) and the evaluation ([`engine`]). All of it is
//! pure.

pub mod engine;
pub mod interp;
pub mod ops;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The only phase Ironic has (`main`).
pub const PHASE_MAIN: &str = "main";
/// The highest priority a user-defined rule may have.
pub const MAX_PRIORITY: i64 = 9999;
/// The most rules the API keeps: every inspection evaluates them all.
pub const MAX_RULES: usize = 1000;
/// The most conditions or actions one rule may have.
pub const MAX_OPERATIONS: usize = 100;
/// The most items a `loop` may have.
pub const MAX_LOOP: usize = 1000;

/// One condition or action: `op`, its `args` (a list, positional, or an object, by name),
/// and an optional `loop` (and for conditions how the loop's results combine, `multiple`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub op: String,
    pub args: Value,
    #[serde(rename = "loop", default, skip_serializing_if = "Option::is_none")]
    pub loop_items: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple: Option<String>,
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectionRule {
    pub uuid: Uuid,
    pub description: Option<String>,
    pub priority: i64,
    pub sensitive: bool,
    pub phase: String,
    pub conditions: Vec<Operation>,
    pub actions: Vec<Operation>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl InspectionRule {
    /// The rule as the API takes it back (for PATCH): every writable field.
    pub fn body(&self) -> Value {
        serde_json::json!({
            "uuid": self.uuid.to_string(),
            "description": self.description,
            "priority": self.priority,
            "sensitive": self.sensitive,
            "phase": self.phase,
            "conditions": self.conditions,
            "actions": self.actions,
        })
    }
}

/// The fields of a rule as validated from a request body.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleBody {
    pub uuid: Option<Uuid>,
    pub description: Option<String>,
    pub priority: i64,
    pub sensitive: bool,
    pub phase: String,
    pub conditions: Vec<Operation>,
    pub actions: Vec<Operation>,
}

const FIELDS: [&str; 7] = [
    "actions",
    "conditions",
    "description",
    "phase",
    "priority",
    "sensitive",
    "uuid",
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn operations(
    what: &str,
    v: Option<&Value>,
    min: usize,
    is_condition: bool,
    errors: &mut Vec<String>,
) -> Vec<Operation> {
    let items = match v {
        None | Some(Value::Null) if !is_condition => {
            errors.push("'actions' is a required property".to_owned());
            return Vec::new();
        }
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(a)) => a,
        Some(other) => {
            errors.push(format!(
                "{what}: {} is not of type 'array'",
                type_name(other)
            ));
            return Vec::new();
        }
    };
    if items.len() < min {
        errors.push(format!("{what}: [] should be non-empty"));
    }
    if items.len() > MAX_OPERATIONS {
        errors.push(format!("{what}: more than {MAX_OPERATIONS} items"));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(o) = item.as_object() else {
            errors.push(format!(
                "{what}[{i}]: {} is not of type 'object'",
                type_name(item)
            ));
            continue;
        };
        let Some(op) = o.get("op").and_then(Value::as_str) else {
            errors.push(format!("{what}[{i}]: 'op' is a required string"));
            continue;
        };
        let Some(args) = o.get("args") else {
            errors.push(format!("{what}[{i}]: 'args' is a required property"));
            continue;
        };
        if !(args.is_array() || args.is_object()) {
            errors.push(format!(
                "{what}[{i}]: args must be either a list or dictionary"
            ));
            continue;
        }
        let loop_items = match o.get("loop") {
            None | Some(Value::Null) => None,
            Some(l @ Value::Array(a)) if a.len() <= MAX_LOOP => Some(l.clone()),
            Some(l @ Value::Object(_)) => Some(l.clone()),
            // Beyond Ironic: one reference to a list of the inventory (`{inventory[interfaces]}`).
            Some(l @ Value::String(s)) if s.starts_with('{') && s.ends_with('}') => Some(l.clone()),
            Some(other) => {
                errors.push(format!(
                    "{what}[{i}]: loop must be a list (at most {MAX_LOOP} items), a dictionary or one reference, not {}",
                    type_name(other)
                ));
                continue;
            }
        };
        let multiple = match (is_condition, o.get("multiple")) {
            (_, None | Some(Value::Null)) => None,
            (true, Some(Value::String(m))) if ops::MULTIPLE.contains(&m.as_str()) => {
                Some(m.clone())
            }
            (_, Some(other)) => {
                errors.push(format!(
                    "{what}[{i}]: multiple {other} is not one of {:?}",
                    ops::MULTIPLE
                ));
                continue;
            }
        };
        let checked = if is_condition {
            ops::check_condition(op, args)
        } else {
            ops::check_action(op, args)
        };
        if let Err(e) = checked {
            errors.push(e);
            continue;
        }
        out.push(Operation {
            op: op.to_owned(),
            args: args.clone(),
            loop_items,
            multiple,
        });
    }
    out
}

/// Validates a rule as the API receives it (`POST`, or a `PATCH`ed document), with Ironic's
/// rules: known fields only, at least one action, known operators (a condition's may start
/// with `!`) with the arguments they take, phase `main`, priority 0..=9999 (`built_in`
/// rules may go below), description up to 255 characters. Every problem is reported.
pub fn validate(body: &Value, built_in: bool) -> Result<RuleBody, String> {
    let Some(o) = body.as_object() else {
        return Err(format!(
            "Validation failed for inspection rule: {} is not of type 'object'",
            type_name(body)
        ));
    };
    let mut errors = Vec::new();
    for k in o.keys() {
        if !FIELDS.contains(&k.as_str()) {
            errors.push(format!(
                "Additional properties are not allowed ('{k}' was unexpected)"
            ));
        }
    }
    let uuid = match o.get("uuid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match Uuid::parse_str(s) {
            Ok(u) => Some(u),
            Err(_) => {
                errors.push(format!("Expected UUID for uuid: {s}"));
                None
            }
        },
        Some(other) => {
            errors.push(format!(
                "uuid: {} is not of type 'string', 'null'",
                type_name(other)
            ));
            None
        }
    };
    let description = match o.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 255 => Some(s.clone()),
        Some(Value::String(_)) => {
            errors.push("description: is too long (at most 255 characters)".to_owned());
            None
        }
        Some(other) => {
            errors.push(format!(
                "description: {} is not of type 'string', 'null'",
                type_name(other)
            ));
            None
        }
    };
    let phase = match o.get("phase") {
        None | Some(Value::Null) => PHASE_MAIN.to_owned(),
        Some(Value::String(s)) if s == PHASE_MAIN => s.clone(),
        Some(Value::String(s)) => {
            let shown: String = s.chars().take(16).collect();
            errors.push(format!(
                "Invalid phase: {shown}. Valid phases are: {PHASE_MAIN}"
            ));
            PHASE_MAIN.to_owned()
        }
        Some(other) => {
            errors.push(format!(
                "phase: {} is not of type 'string', 'null'",
                type_name(other)
            ));
            PHASE_MAIN.to_owned()
        }
    };
    // The `baremetal` CLI sends `--priority 50` and `--sensitive true` as strings.
    let priority_number = match o.get("priority") {
        Some(Value::String(t)) => t.trim().parse::<i64>().ok().map(Value::from),
        other => other.cloned(),
    };
    let priority = match priority_number.as_ref().or(o.get("priority")) {
        None => 0,
        Some(Value::Number(n)) if n.is_i64() => {
            let p = n.as_i64().unwrap_or(0);
            if !built_in && p < 0 {
                errors.push("Priority cannot be negative for user-defined rules.".to_owned());
            } else if !built_in && p > MAX_PRIORITY {
                errors
                    .push("Priority must be between 0 and 9999 for user-defined rules.".to_owned());
            }
            p
        }
        Some(other) => {
            errors.push(format!("priority: {other} is not of type 'integer'"));
            0
        }
    };
    let sensitive = match o.get("sensitive") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(t)) if matches!(t.to_ascii_lowercase().as_str(), "true" | "false") => {
            t.eq_ignore_ascii_case("true")
        }
        Some(other) => {
            errors.push(format!(
                "sensitive: {} is not of type 'boolean', 'null'",
                type_name(other)
            ));
            false
        }
    };
    let conditions = operations("conditions", o.get("conditions"), 0, true, &mut errors);
    let actions = operations("actions", o.get("actions"), 1, false, &mut errors);
    match errors.len() {
        0 => Ok(RuleBody {
            uuid,
            description,
            priority,
            sensitive,
            phase,
            conditions,
            actions,
        }),
        1 => Err(errors.remove(0)),
        _ => Err(format!(
            "Multiple validation errors occurred: {}",
            errors.join("; ")
        )),
    }
}

/// What a rule evaluation sees: the inventory, the plugin data of this run (set by
/// `set-plugin-data`; Ingot keeps no plugin data between runs), the node.
pub fn context(inventory: &Value, plugin_data: &Value, node: &Value) -> Map<String, Value> {
    let mut ctx = Map::new();
    ctx.insert("inventory".into(), inventory.clone());
    ctx.insert("plugin_data".into(), plugin_data.clone());
    ctx.insert("node".into(), node.clone());
    ctx
}

#[cfg(test)]
mod tests;
