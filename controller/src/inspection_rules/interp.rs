//! PURE: the `{inventory[cpu][count]}` references of inspection rule arguments, as Ironic
//! writes them (Python format fields: a name, then `[key]` items and `.attr` lookups), over
//! JSON documents (`inventory`, `plugin_data`, `node`, and in a loop `item`).
//!
//! A string that is exactly one reference becomes the value referenced, with its JSON type
//! (so `{inventory[memory][physical_mb]}` compares as a number); a reference inside other
//! text is replaced by the value's text. `{{` and `}}` are literal braces. A reference to
//! something absent leaves the string as it was (Ironic's behaviour), or becomes `null`
//! when the whole string is that reference and the caller asks (`is-empty`, `is-none`).
//! Bounded: at most [`MAX_REFS`] references and [`MAX_DEPTH`] steps each.

use serde_json::{Map, Value};

/// The most references one string may hold.
pub const MAX_REFS: usize = 32;
/// The most `[key]`/`.attr` steps one reference may take.
pub const MAX_DEPTH: usize = 16;

/// One parsed reference: the root name and its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub root: String,
    pub steps: Vec<String>,
}

/// A piece of a parsed string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Ref(Ref),
}

fn parse_ref(field: &str) -> Option<Ref> {
    let end = field.find(['[', '.']).unwrap_or(field.len());
    let root = &field[..end];
    if root.is_empty() || !root.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let mut steps = Vec::new();
    let mut rest = &field[end..];
    while !rest.is_empty() {
        if steps.len() == MAX_DEPTH {
            return None;
        }
        if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']')?;
            steps.push(r[..close].to_owned());
            rest = &r[close + 1..];
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['[', '.']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            steps.push(r[..end].to_owned());
            rest = &r[end..];
        } else {
            return None;
        }
    }
    Some(Ref {
        root: root.to_owned(),
        steps,
    })
}

/// Splits `s` into text and references; `None` when it is not a valid format string (an
/// unmatched brace, a bad field, too many references).
fn parse(s: &str) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = s.char_indices().peekable();
    let mut refs = 0;
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().is_some_and(|(_, n)| *n == '{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek().is_some_and(|(_, n)| *n == '}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let close = s[i + 1..].find('}')? + i + 1;
                let field = &s[i + 1..close];
                // A conversion or format spec (`!r`, `:>5`) is not supported: plain text.
                let r = parse_ref(field)?;
                refs += 1;
                if refs > MAX_REFS {
                    return None;
                }
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(Piece::Ref(r));
                while chars.peek().is_some_and(|(j, _)| *j <= close) {
                    chars.next();
                }
            }
            '}' => return None,
            other => text.push(other),
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Some(out)
}

/// The value a reference names in `ctx` (an object of roots), if any.
pub fn resolve<'a>(ctx: &'a Map<String, Value>, r: &Ref) -> Option<&'a Value> {
    let mut v = ctx.get(&r.root)?;
    for step in &r.steps {
        v = match v {
            Value::Object(o) => o.get(step)?,
            Value::Array(a) => a.get(step.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// How a value reads inside text: strings without quotes, `None`/`True`/`False` as Python
/// prints them (rules written for Ironic compare against those), the rest as JSON.
pub fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        other => other.to_string(),
    }
}

/// Interpolates one string; see the module doc. `missing_is_null`: a string that is one
/// reference to something absent becomes `null`.
pub fn string(s: &str, ctx: &Map<String, Value>, missing_is_null: bool) -> Value {
    let Some(pieces) = parse(s) else {
        return Value::String(s.to_owned());
    };
    if let [Piece::Ref(r)] = pieces.as_slice() {
        return match resolve(ctx, r) {
            Some(v) => v.clone(),
            None if missing_is_null => Value::Null,
            None => Value::String(s.to_owned()),
        };
    }
    let mut out = String::new();
    for p in &pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Ref(r) => match resolve(ctx, r) {
                Some(v) => out.push_str(&as_text(v)),
                None => return Value::String(s.to_owned()),
            },
        }
    }
    Value::String(out)
}

/// Interpolates every string in `v` (keys too), recursively.
pub fn value(v: &Value, ctx: &Map<String, Value>, missing_is_null: bool) -> Value {
    match v {
        Value::String(s) => string(s, ctx, missing_is_null),
        Value::Array(a) => Value::Array(a.iter().map(|x| value(x, ctx, missing_is_null)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    let key = match string(k, ctx, false) {
                        Value::String(s) => s,
                        other => as_text(&other),
                    };
                    (key, value(x, ctx, missing_is_null))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> Map<String, Value> {
        json!({
            "inventory": {
                "cpu": {"count": 8, "architecture": "x86_64"},
                "interfaces": [{"name": "eth0", "mac_address": "52:54:00:12:34:56"}],
                "bmc_address": "192.0.2.10"
            },
            "node": {"driver_info": {"ipmi_address": "10.0.0.1"}, "name": "n1"},
            "item": "eth0"
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    #[test]
    fn references_keep_their_type_alone_and_become_text_in_text() {
        let c = ctx();
        let cases: Vec<(&str, Value)> = vec![
            ("{inventory[cpu][count]}", json!(8)),
            (
                "{inventory[cpu]}",
                json!({"count": 8, "architecture": "x86_64"}),
            ),
            ("cpus: {inventory[cpu][count]}", json!("cpus: 8")),
            (
                "{inventory[interfaces][0][mac_address]}",
                json!("52:54:00:12:34:56"),
            ),
            ("{node.driver_info[ipmi_address]}", json!("10.0.0.1")),
            ("{node.name}-{item}", json!("n1-eth0")),
            (
                "https://{inventory[bmc_address]}/redfish",
                json!("https://192.0.2.10/redfish"),
            ),
            ("{{literal}}", json!("{literal}")),
            ("plain", json!("plain")),
            // Absent, malformed or unsupported: left as written.
            ("{inventory[nope]}", json!("{inventory[nope]}")),
            ("x {inventory[nope]}", json!("x {inventory[nope]}")),
            (
                "{inventory[cpu][count]:>4}",
                json!("{inventory[cpu][count]:>4}"),
            ),
            ("{unclosed", json!("{unclosed")),
            ("}", json!("}")),
            ("{}", json!("{}")),
            (
                "{inventory[interfaces][x]}",
                json!("{inventory[interfaces][x]}"),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(string(s, &c, false), want, "{s}");
        }
        assert_eq!(string("{inventory[nope]}", &c, true), Value::Null);
    }

    #[test]
    fn nested_values_and_keys_are_interpolated() {
        let v = json!({"{item}": ["{inventory[cpu][count]}", 1, {"k": "{node.name}"}]});
        assert_eq!(
            value(&v, &ctx(), false),
            json!({"eth0": [8, 1, {"k": "n1"}]})
        );
    }

    #[test]
    fn bounded() {
        let many = "{item}".repeat(MAX_REFS + 1);
        assert_eq!(string(&many, &ctx(), false), json!(many));
        let deep = format!("{{inventory{}}}", "[a]".repeat(MAX_DEPTH + 1));
        assert_eq!(string(&deep, &ctx(), false), json!(deep));
        assert_eq!(as_text(&json!(null)), "None");
        assert_eq!(as_text(&json!(true)), "True");
    }
}
