//! The operators (conditions) and actions of inspection rules, with the arguments each
//! takes (Ironic's signatures: required then optional, so a positional `args` list maps
//! onto them in that order), and the operators' checks.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::interp;

/// How a looped condition's results combine.
pub const MULTIPLE: [&str; 4] = ["any", "all", "first", "last"];

/// One operator or action: its name, required and optional arguments, and which arguments
/// have their `{...}` references interpolated (in a loop, all of them are).
#[derive(Debug, Clone, Copy)]
pub struct Signature {
    pub name: &'static str,
    pub required: &'static [&'static str],
    pub optional: &'static [&'static str],
    pub formatted: &'static [&'static str],
}

const fn sig(
    name: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
    formatted: &'static [&'static str],
) -> Signature {
    Signature {
        name,
        required,
        optional,
        formatted,
    }
}

/// Conditions.
pub const OPERATORS: [Signature; 11] = [
    sig("eq", &["values"], &["force_strings"], &["values"]),
    sig("lt", &["values"], &["force_strings"], &["values"]),
    sig("gt", &["values"], &["force_strings"], &["values"]),
    sig("is-empty", &["value"], &[], &["value"]),
    sig(
        "in-net",
        &["address", "subnet"],
        &[],
        &["address", "subnet"],
    ),
    sig("matches", &["value", "regex"], &[], &["value"]),
    sig("contains", &["value", "regex"], &[], &["value"]),
    sig("one-of", &["value"], &["values"], &["value"]),
    sig("is-none", &["value"], &[], &["value"]),
    sig("is-true", &["value"], &[], &["value"]),
    sig("is-false", &["value"], &[], &["value"]),
];

/// Actions. `api-call` is not among them: the controller makes no calls to addresses a
/// rule names.
pub const ACTIONS: [Signature; 15] = [
    sig("fail", &["msg"], &[], &["msg"]),
    sig("log", &["msg"], &["level"], &["msg"]),
    sig("set-attribute", &["path", "value"], &[], &["value"]),
    sig(
        "extend-attribute",
        &["path", "value"],
        &["unique"],
        &["value"],
    ),
    sig("del-attribute", &["path"], &[], &[]),
    sig("set-capability", &["name", "value"], &[], &["value"]),
    sig("unset-capability", &["name"], &[], &[]),
    sig("add-trait", &["name"], &[], &[]),
    sig("remove-trait", &["name"], &[], &[]),
    sig("set-plugin-data", &["path", "value"], &[], &["value"]),
    sig(
        "extend-plugin-data",
        &["path", "value"],
        &["unique"],
        &["value"],
    ),
    sig("unset-plugin-data", &["path"], &[], &[]),
    sig(
        "set-port-attribute",
        &["port_id", "path", "value"],
        &[],
        &["value"],
    ),
    sig(
        "extend-port-attribute",
        &["port_id", "path", "value"],
        &["unique"],
        &["value"],
    ),
    sig("del-port-attribute", &["port_id", "path"], &[], &[]),
];

/// A condition's operator without its `!` (inversion), and whether it had one.
pub fn inverted(op: &str) -> (&str, bool) {
    match op.strip_prefix('!') {
        Some(rest) => (rest, true),
        None => (op, false),
    }
}

fn find(table: &[Signature], name: &str) -> Option<Signature> {
    table.iter().find(|s| s.name == name).copied()
}

/// The condition operator `op` names (with or without `!`).
pub fn operator(op: &str) -> Option<Signature> {
    find(&OPERATORS, inverted(op).0)
}

/// The action `op` names.
pub fn action(op: &str) -> Option<Signature> {
    find(&ACTIONS, op)
}

/// `args` by name: an object as it is, a list mapped onto required then optional names.
pub fn named(sig: &Signature, args: &Value) -> Result<Map<String, Value>, String> {
    match args {
        Value::Object(o) => Ok(o.clone()),
        Value::Array(a) => {
            if a.len() < sig.required.len() {
                return Err(format!(
                    "Not enough arguments provided. Missing: {}",
                    sig.required[a.len()..].join(", ")
                ));
            }
            let names = sig.required.iter().chain(sig.optional);
            if a.len() > sig.required.len() + sig.optional.len() {
                return Err(format!("too many arguments for {}", sig.name));
            }
            Ok(names
                .zip(a)
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect())
        }
        _ => Err("args must be either a list or dictionary".to_owned()),
    }
}

fn check(kind: &str, sig: Option<Signature>, op: &str, args: &Value) -> Result<(), String> {
    let Some(sig) = sig else {
        return Err(format!("Unsupported {kind} operator: {op}"));
    };
    let args = named(&sig, args)
        .map_err(|e| format!("Invalid parameters for {kind} operator {op}: {e}"))?;
    let missing: Vec<&str> = sig
        .required
        .iter()
        .copied()
        .filter(|r| !args.contains_key(*r))
        .collect();
    let unexpected: Vec<&str> = args
        .keys()
        .map(String::as_str)
        .filter(|k| !sig.required.contains(k) && !sig.optional.contains(k))
        .collect();
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!(
            "missing required argument(s): {}",
            missing.join(", ")
        ));
    }
    if !unexpected.is_empty() {
        why.push(format!("unexpected argument(s): {}", unexpected.join(", ")));
    }
    // A regex is compiled now, so a bad one is refused at once, not at inspection.
    if why.is_empty()
        && let Some(Value::String(re)) = args.get("regex")
        && let Err(e) = regex(re)
    {
        why.push(e);
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "Invalid parameters for {kind} operator {op}: {}",
            why.join("; ")
        ))
    }
}

/// Validates a condition's operator and arguments.
pub fn check_condition(op: &str, args: &Value) -> Result<(), String> {
    check("condition", operator(op), op, args)
}

/// Validates an action's operator and arguments.
pub fn check_action(op: &str, args: &Value) -> Result<(), String> {
    if op == "api-call" {
        return Err(
            "Unsupported action operator: api-call (Ingot makes no calls to addresses a rule names)"
                .to_owned(),
        );
    }
    check("action", action(op), op, args)
}

/// A regex, bounded in size (linear-time matching: the `regex` crate never backtracks).
pub fn regex(re: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regex {re:?}: {e}"))
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Compares two values: as numbers when both read as numbers, else as text.
fn compare(a: &Value, b: &Value, force_strings: bool) -> Option<std::cmp::Ordering> {
    if !force_strings && let (Some(x), Some(y)) = (number(a), number(b)) {
        return x.partial_cmp(&y);
    }
    Some(interp::as_text(a).cmp(&interp::as_text(b)))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Checks operator `name` on its (interpolated) arguments by name.
pub fn holds(name: &str, args: &Map<String, Value>) -> Result<bool, String> {
    let arg = |k: &str| args.get(k).cloned().unwrap_or(Value::Null);
    let force = truthy(&arg("force_strings"));
    Ok(match name {
        "eq" | "lt" | "gt" => {
            let Value::Array(values) = arg("values") else {
                return Err(format!("'{name}' expects a list for 'values'"));
            };
            values.windows(2).all(|w| {
                let ord = compare(&w[0], &w[1], force);
                match name {
                    "eq" => ord == Some(std::cmp::Ordering::Equal),
                    "lt" => ord == Some(std::cmp::Ordering::Less),
                    _ => ord == Some(std::cmp::Ordering::Greater),
                }
            })
        }
        "is-empty" => {
            matches!(
                interp::as_text(&arg("value")).as_str(),
                "" | "None" | "[]" | "{}"
            )
        }
        "in-net" => {
            let address: Option<IpAddr> = interp::as_text(&arg("address")).parse().ok();
            let subnet: Option<crate::model::Cidr> = interp::as_text(&arg("subnet")).parse().ok();
            match (address, subnet) {
                (Some(a), Some(s)) => s.contains(a),
                (_, None) => return Err(format!("'in-net': bad subnet {}", arg("subnet"))),
                (None, _) => false,
            }
        }
        "matches" | "contains" => {
            let re = interp::as_text(&arg("regex"));
            let re = regex(&re)?;
            let text = interp::as_text(&arg("value"));
            if name == "matches" {
                // Python's re.match: anchored at the start only.
                re.find(&text).is_some_and(|m| m.start() == 0)
            } else {
                re.is_match(&text)
            }
        }
        "one-of" => match arg("values") {
            Value::Array(values) => values
                .iter()
                .any(|v| compare(v, &arg("value"), false) == Some(std::cmp::Ordering::Equal)),
            _ => false,
        },
        "is-none" => arg("value").is_null(),
        "is-true" => match arg("value") {
            Value::Bool(b) => b,
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "yes" | "true"),
            _ => false,
        },
        "is-false" => match arg("value") {
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64().is_some_and(|f| f == 0.0),
            Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "no" | "false"),
            Value::Null => true,
            _ => false,
        },
        other => return Err(format!("Unsupported operator: '{other}'")),
    })
}
