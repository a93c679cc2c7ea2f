//! PURE: runs inspection rules on a node, its ports and the inventory. Rules run highest
//! priority first; a rule whose conditions all hold (or that has none) runs its actions in
//! order. `fail` stops everything with its message (the inspection fails). Values from the
//! inventory, the node and the plugin data reach a rule through `{...}` references; a
//! rule that is not `sensitive` sees every secret-named field (`model::is_secret_key`)
//! as `******`, as Ironic masks them.

use serde_json::{Map, Value};
use tracing::{info, warn};

use super::ops::{self, Signature};
use super::{InspectionRule, Operation, interp};
use crate::model::{Node, Port, is_secret_key};

/// Top-level node fields an action may set or change (Ironic lets a rule set any node
/// attribute; the state, ownership of work and identity fields are not among these).
pub const WRITABLE_NODE_FIELDS: [&str; 12] = [
    "name",
    "description",
    "driver",
    "driver_info",
    "properties",
    "extra",
    "instance_info",
    "resource_class",
    "owner",
    "lessee",
    "conductor_group",
    "network_data",
];

/// Port fields an action may set or change.
pub const WRITABLE_PORT_FIELDS: [&str; 5] = [
    "extra",
    "local_link_connection",
    "physical_network",
    "pxe_enabled",
    "description",
];

/// What the rules did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// The rules whose conditions held (uuid), in the order they ran.
    pub matched: Vec<String>,
    /// `log` actions' messages, for the node's history.
    pub log: Vec<String>,
    /// Ports an action changed (indexes into the ports given).
    pub ports_changed: Vec<usize>,
}

/// Why the rules stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A `fail` action ran.
    #[error("{0}")]
    Failed(String),
    /// A rule could not be evaluated or applied.
    #[error("inspection rule {rule}: {why}")]
    Broken { rule: String, why: String },
}

fn mask(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    let x = if is_secret_key(k) && !x.is_null() {
                        Value::String("******".into())
                    } else {
                        mask(x)
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(mask).collect()),
        other => other.clone(),
    }
}

/// The interpolated arguments of `op` by name: the signature's formatted arguments (every
/// argument inside a loop); a reference to something absent is `null` for the operators
/// that test for absence.
fn arguments(
    sig: &Signature,
    op: &Operation,
    ctx: &Map<String, Value>,
    in_loop: bool,
) -> Result<Map<String, Value>, String> {
    let mut args = ops::named(sig, &op.args)?;
    let absent_is_null = matches!(ops::inverted(&op.op).0, "is-empty" | "is-none");
    for (k, v) in args.iter_mut() {
        if in_loop || sig.formatted.contains(&k.as_str()) {
            *v = interp::value(v, ctx, absent_is_null);
        }
    }
    if in_loop && sig.optional.contains(&"force_strings") {
        args.insert("force_strings".into(), Value::Bool(true));
    }
    Ok(args)
}

/// The items of `op`'s loop, if it has one: a list, one dictionary, or a reference to a
/// list (or dictionary) in the context (at most [`super::MAX_LOOP`] items).
fn items(op: &Operation, ctx: &Map<String, Value>) -> Result<Option<Vec<Value>>, String> {
    let list = match &op.loop_items {
        None => return Ok(None),
        Some(Value::String(s)) => match interp::string(s, ctx, true) {
            Value::Array(a) => a,
            Value::Null => Vec::new(),
            o @ Value::Object(_) => vec![o],
            other => return Err(format!("loop {s} is not a list: {other}")),
        },
        Some(Value::Array(a)) => a.clone(),
        Some(other) => vec![other.clone()],
    };
    if list.len() > super::MAX_LOOP {
        return Err(format!(
            "loop of {} items (at most {})",
            list.len(),
            super::MAX_LOOP
        ));
    }
    Ok(Some(list))
}

fn condition(op: &Operation, ctx: &Map<String, Value>) -> Result<bool, String> {
    let sig = ops::operator(&op.op).ok_or_else(|| format!("unsupported operator {}", op.op))?;
    let (name, invert) = ops::inverted(&op.op);
    let check = |ctx: &Map<String, Value>, in_loop: bool| -> Result<bool, String> {
        let args = arguments(&sig, op, ctx, in_loop)?;
        Ok(ops::holds(name, &args)? != invert)
    };
    let Some(list) = items(op, ctx)? else {
        return check(ctx, false);
    };
    let multiple = op.multiple.as_deref().unwrap_or("any");
    let mut results = Vec::new();
    for item in list {
        let mut c = ctx.clone();
        c.insert("item".into(), item);
        let r = check(&c, true)?;
        match multiple {
            "first" if r => return Ok(true),
            "last" => results = vec![r],
            _ => results.push(r),
        }
    }
    Ok(match multiple {
        "any" => results.iter().any(|r| *r),
        "all" => results.iter().all(|r| *r),
        _ => results.first().copied().unwrap_or(false),
    })
}

/// `/properties/cpu_arch` or `properties.cpu_arch`... as path segments.
fn segments(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Where a path edit goes: set, append (optionally unique) or delete.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Edit<'a> {
    Set(&'a Value),
    Extend(&'a Value, bool),
    Delete,
}

fn edit_doc(doc: &mut Value, path: &[String], edit: Edit<'_>) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty path".to_owned());
    };
    let mut cur = doc;
    for p in parents {
        let obj = cur
            .as_object_mut()
            .ok_or_else(|| format!("{p}: not a dictionary"))?;
        cur = obj
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let obj = cur
        .as_object_mut()
        .ok_or_else(|| format!("{last}: not inside a dictionary"))?;
    match edit {
        Edit::Set(v) => {
            obj.insert(last.clone(), v.clone());
        }
        Edit::Extend(v, unique) => {
            let list = obj
                .entry(last.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(a) = list else {
                return Err(format!("cannot extend {last}: not a list"));
            };
            if !unique || !a.contains(v) {
                a.push(v.clone());
            }
        }
        Edit::Delete => {
            obj.remove(last)
                .ok_or_else(|| format!("{last} does not exist"))?;
        }
    }
    Ok(())
}

/// Edits a node (or port) through its JSON form, for the fields in `writable` only.
fn edit_record<T>(
    record: &mut T,
    writable: &[&str],
    path: &str,
    edit: Edit<'_>,
) -> Result<(), String>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let segs = segments(path);
    let field = segs.first().ok_or_else(|| format!("empty path {path:?}"))?;
    if !writable.contains(&field.as_str()) {
        return Err(format!(
            "{field} cannot be changed by a rule (writable: {})",
            writable.join(", ")
        ));
    }
    let mut doc = serde_json::to_value(&*record).map_err(|e| e.to_string())?;
    if segs.len() == 1 && edit == Edit::Delete {
        // Deleting a whole field resets it.
        edit_doc(&mut doc, &segs, Edit::Set(&Value::Null))?;
    } else {
        edit_doc(&mut doc, &segs, edit)?;
    }
    *record = serde_json::from_value(doc).map_err(|e| format!("{path}: {e}"))?;
    Ok(())
}

fn capabilities(node: &Node) -> Vec<(String, String)> {
    node.properties
        .get("capabilities")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split(',')
        .filter_map(|kv| kv.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn set_capabilities(node: &mut Node, caps: &[(String, String)]) {
    let text: Vec<String> = caps.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    node.properties
        .insert("capabilities".into(), Value::String(text.join(",")));
}

fn text(args: &Map<String, Value>, k: &str) -> String {
    args.get(k).map(interp::as_text).unwrap_or_default()
}

/// The state an action changes.
struct Target<'a> {
    node: &'a mut Node,
    ports: &'a mut [Port],
    plugin_data: &'a mut Value,
    applied: &'a mut Applied,
}

fn action(name: &str, args: &Map<String, Value>, t: &mut Target<'_>) -> Result<(), RuleError> {
    let broken = |why: String| RuleError::Broken {
        rule: String::new(),
        why,
    };
    let unique = args
        .get("unique")
        .is_some_and(|u| u.as_bool() == Some(true));
    let value = args.get("value").cloned().unwrap_or(Value::Null);
    match name {
        "fail" => return Err(RuleError::Failed(text(args, "msg"))),
        "log" => {
            let msg = text(args, "msg");
            match text(args, "level").to_ascii_lowercase().as_str() {
                "warning" | "error" | "critical" => {
                    warn!(node = %t.node.uuid, "inspection rule: {msg}");
                }
                _ => info!(node = %t.node.uuid, "inspection rule: {msg}"),
            }
            t.applied.log.push(msg);
        }
        "set-attribute" | "extend-attribute" | "del-attribute" => {
            let edit = match name {
                "set-attribute" => Edit::Set(&value),
                "extend-attribute" => Edit::Extend(&value, unique),
                _ => Edit::Delete,
            };
            edit_record(t.node, &WRITABLE_NODE_FIELDS, &text(args, "path"), edit)
                .map_err(broken)?;
        }
        "set-capability" | "unset-capability" => {
            let key = text(args, "name");
            let mut caps: Vec<_> = capabilities(t.node)
                .into_iter()
                .filter(|(k, _)| *k != key)
                .collect();
            if name == "set-capability" {
                caps.push((key, interp::as_text(&value)));
            }
            set_capabilities(t.node, &caps);
        }
        "add-trait" => {
            let trait_name = text(args, "name");
            if !crate::model::is_valid_trait(&trait_name) {
                return Err(broken(format!("{trait_name:?} is not a valid trait")));
            }
            if !t.node.traits.contains(&trait_name) {
                t.node.traits.push(trait_name);
            }
        }
        "remove-trait" => {
            let trait_name = text(args, "name");
            t.node.traits.retain(|x| *x != trait_name);
        }
        "set-plugin-data" | "extend-plugin-data" | "unset-plugin-data" => {
            let edit = match name {
                "set-plugin-data" => Edit::Set(&value),
                "extend-plugin-data" => Edit::Extend(&value, unique),
                _ => Edit::Delete,
            };
            edit_doc(t.plugin_data, &segments(&text(args, "path")), edit).map_err(broken)?;
        }
        "set-port-attribute" | "extend-port-attribute" | "del-port-attribute" => {
            let id = text(args, "port_id");
            let i = t
                .ports
                .iter()
                .position(|p| p.uuid.to_string() == id || p.address.eq_ignore_ascii_case(&id))
                .ok_or_else(|| broken(format!("the node has no port {id}")))?;
            let edit = match name {
                "set-port-attribute" => Edit::Set(&value),
                "extend-port-attribute" => Edit::Extend(&value, unique),
                _ => Edit::Delete,
            };
            edit_record(
                &mut t.ports[i],
                &WRITABLE_PORT_FIELDS,
                &text(args, "path"),
                edit,
            )
            .map_err(broken)?;
            if !t.applied.ports_changed.contains(&i) {
                t.applied.ports_changed.push(i);
            }
        }
        other => return Err(broken(format!("unsupported action {other}"))),
    }
    Ok(())
}

/// Runs one action. `ctx` is what the rule sees; `masked` the same with every secret
/// masked, which `log` and `fail` always use: their text goes to logs and `last_error`.
fn run_action(
    op: &Operation,
    ctx: &Map<String, Value>,
    masked: &Map<String, Value>,
    t: &mut Target<'_>,
) -> Result<(), RuleError> {
    let ctx = if matches!(op.op.as_str(), "log" | "fail") {
        masked
    } else {
        ctx
    };
    let broken = |why: String| RuleError::Broken {
        rule: String::new(),
        why,
    };
    let sig = ops::action(&op.op).ok_or_else(|| broken(format!("unsupported action {}", op.op)))?;
    match items(op, ctx).map_err(broken)? {
        None => {
            let args = arguments(&sig, op, ctx, false).map_err(broken)?;
            action(&op.op, &args, t)
        }
        Some(list) => {
            for item in list {
                let mut c = ctx.clone();
                c.insert("item".into(), item);
                let args = arguments(&sig, op, &c, true).map_err(broken)?;
                action(&op.op, &args, t)?;
            }
            Ok(())
        }
    }
}

/// Runs `rules` (any order: they run by priority, highest first, then as given) on
/// `node` and `ports` with `inventory`. On `Err` nothing the caller holds should be saved.
pub fn apply(
    rules: &[InspectionRule],
    inventory: &Value,
    node: &mut Node,
    ports: &mut [Port],
) -> Result<Applied, RuleError> {
    let mut order: Vec<&InspectionRule> = rules.iter().collect();
    order.sort_by_key(|r| std::cmp::Reverse(r.priority));
    let mut applied = Applied::default();
    let mut plugin_data = Value::Object(Map::new());
    for rule in order {
        let name = rule.uuid.to_string();
        let node_doc = serde_json::to_value(&*node).unwrap_or(Value::Null);
        let masked = super::context(&mask(inventory), &mask(&plugin_data), &mask(&node_doc));
        let ctx = if rule.sensitive {
            super::context(inventory, &plugin_data, &node_doc)
        } else {
            masked.clone()
        };
        // A sensitive rule sees secrets, so what went wrong in it may quote one: it is not
        // shown (the reason becomes `last_error`, visible in the API).
        let hide = |why: String| {
            if rule.sensitive {
                "the rule is sensitive, so the details are not shown".to_owned()
            } else {
                why
            }
        };
        let mut holds = true;
        for c in &rule.conditions {
            match condition(c, &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    holds = false;
                    break;
                }
                Err(why) => {
                    return Err(RuleError::Broken {
                        rule: name,
                        why: hide(why),
                    });
                }
            }
        }
        if !holds {
            continue;
        }
        applied.matched.push(name.clone());
        let mut target = Target {
            node,
            ports,
            plugin_data: &mut plugin_data,
            applied: &mut applied,
        };
        for a in &rule.actions {
            run_action(a, &ctx, &masked, &mut target).map_err(|e| match e {
                RuleError::Broken { why, .. } => RuleError::Broken {
                    rule: name.clone(),
                    why: hide(why),
                },
                failed => failed,
            })?;
        }
    }
    Ok(applied)
}
