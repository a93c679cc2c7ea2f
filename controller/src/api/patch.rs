//! A small JSON Patch (RFC 6902) applier with the subset and wording Ironic uses:
//! only `add`, `replace` and `remove`; `add` on an existing key overwrites; `replace` and
//! `remove` of a missing key fail with python-jsonpatch's messages. Pure: no IO.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::render::{self, MASK};
use super::schema::{py_repr, py_str};

/// Most operations one PATCH may carry. Ironic sets no cap; a client changing a node sends a
/// handful, and the cap bounds the work a single request can ask for.
pub const MAX_OPS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Replace,
    Remove,
}

/// One validated patch operation.
#[derive(Debug, Clone)]
pub struct PatchOp {
    pub op: Op,
    pub path: String,
    /// The decoded JSON-pointer tokens of `path` (never empty).
    pub tokens: Vec<String>,
    pub value: Option<Value>,
}

impl PatchOp {
    /// The top-level field the operation touches.
    pub fn field(&self) -> &str {
        &self.tokens[0]
    }
}

/// Validates a patch document: a JSON array of `{op, path[, value]}` objects.
pub fn parse(body: &Value) -> Result<Vec<PatchOp>, ApiError> {
    let err = |reason: String| ApiError::schema("patch", reason);
    let items = body.as_array().ok_or_else(|| {
        err(format!(
            "{} is not of type 'array'",
            py_repr(&masked_patch(body))
        ))
    })?;
    if items.len() > MAX_OPS {
        return Err(err(format!(
            "a patch may have at most {MAX_OPS} operations, this one has {}",
            items.len()
        )));
    }
    let mut ops = Vec::with_capacity(items.len());
    for item in items {
        let obj = item.as_object().ok_or_else(|| {
            err(format!(
                "{} is not of type 'object'",
                py_repr(&masked_patch(item))
            ))
        })?;
        for key in obj.keys() {
            if !matches!(key.as_str(), "op" | "path" | "value") {
                return Err(err(format!(
                    "Additional properties are not allowed ({} was unexpected)",
                    py_str(key)
                )));
            }
        }
        let op_value = obj
            .get("op")
            .ok_or_else(|| err("'op' is a required property".to_owned()))?;
        let op = match op_value.as_str() {
            Some("add") => Op::Add,
            Some("replace") => Op::Replace,
            Some("remove") => Op::Remove,
            _ => {
                return Err(err(format!(
                    "{} is not one of ['add', 'replace', 'remove']",
                    py_repr(op_value)
                )));
            }
        };
        let path_value = obj
            .get("path")
            .ok_or_else(|| err("'path' is a required property".to_owned()))?;
        let path = path_value
            .as_str()
            .ok_or_else(|| err(format!("{} is not of type 'string'", py_repr(path_value))))?;
        let tokens = parse_pointer(path)
            .ok_or_else(|| err(format!("{} does not match '^(/[\\\\w-]+)+$'", py_str(path))))?;
        let value = obj.get("value").cloned();
        if op != Op::Remove && value.is_none() {
            return Err(err("'value' is a required property".to_owned()));
        }
        ops.push(PatchOp {
            op,
            path: path.to_owned(),
            tokens,
            value,
        });
    }
    Ok(ops)
}

/// Splits a JSON pointer into decoded tokens; `None` when it is not `/a[/b...]`.
fn parse_pointer(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('/')?;
    let tokens: Vec<String> = rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    if tokens.iter().any(String::is_empty) {
        return None;
    }
    Some(tokens)
}

/// Applies `ops` in order to `doc` (an object). On failure returns python-jsonpatch's reason;
/// `doc` may then be partly changed, so callers apply to a copy.
pub fn apply(doc: &mut Map<String, Value>, ops: &[PatchOp]) -> Result<(), String> {
    for op in ops {
        apply_one(doc, op)?;
    }
    Ok(())
}

fn apply_one(doc: &mut Map<String, Value>, op: &PatchOp) -> Result<(), String> {
    let (last, parents) = op
        .tokens
        .split_last()
        .ok_or_else(|| "empty path".to_owned())?;
    let mut target: &mut Value = match parents.first() {
        None => return apply_to_object(doc, last, op),
        Some(first) => doc
            .get_mut(first.as_str())
            .ok_or_else(|| format!("member {} not found in the document", py_str(first)))?,
    };
    for (i, token) in parents.iter().enumerate().skip(1) {
        target = step(target, token, || pointer(&parents[..i]))?;
    }
    match target {
        Value::Object(map) => apply_to_object(map, last, op),
        Value::Array(items) => apply_to_array(items, last, op),
        other => Err(not_indexable(other, &pointer(parents))),
    }
}

/// `/a/b` from decoded tokens (for error texts; built only when an error is returned).
fn pointer(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The error for indexing into a scalar: names where and what type it is, never its value
/// (which may be a password).
fn not_indexable(v: &Value, at: &str) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a dictionary",
    };
    format!(
        "{at} is {kind}, which does not support indexing, only dictionaries and lists are supported."
    )
}

/// One step down the document. `at` names the parent, for the error only: nothing about the
/// document's content goes into a message, and no work is done unless one is returned.
fn step<'a>(
    v: &'a mut Value,
    token: &str,
    at: impl Fn() -> String,
) -> Result<&'a mut Value, String> {
    match v {
        Value::Object(map) => map
            .get_mut(token)
            .ok_or_else(|| format!("member {} not found in {}", py_str(token), at())),
        Value::Array(items) => {
            let len = items.len();
            let idx = index(token)?;
            items
                .get_mut(idx)
                .ok_or_else(|| format!("index '{idx}' is out of bounds (list of length {len})"))
        }
        other => Err(not_indexable(other, &at())),
    }
}

fn index(token: &str) -> Result<usize, String> {
    if token.bytes().all(|b| b.is_ascii_digit()) && !(token.len() > 1 && token.starts_with('0')) {
        token
            .parse()
            .map_err(|_| format!("'{token}' is not a valid sequence index"))
    } else {
        Err(format!("'{token}' is not a valid sequence index"))
    }
}

fn apply_to_object(map: &mut Map<String, Value>, key: &str, op: &PatchOp) -> Result<(), String> {
    match op.op {
        Op::Add => {
            map.insert(key.to_owned(), op.value.clone().unwrap_or(Value::Null));
            Ok(())
        }
        Op::Replace => match map.get_mut(key) {
            Some(slot) => {
                *slot = op.value.clone().unwrap_or(Value::Null);
                Ok(())
            }
            None => Err(format!(
                "can't replace a non-existent object {}",
                py_str(key)
            )),
        },
        Op::Remove => map
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| format!("can't remove a non-existent object {}", py_str(key))),
    }
}

fn apply_to_array(items: &mut Vec<Value>, token: &str, op: &PatchOp) -> Result<(), String> {
    let value = || op.value.clone().unwrap_or(Value::Null);
    if op.op == Op::Add && token == "-" {
        items.push(value());
        return Ok(());
    }
    let idx = index(token)?;
    match op.op {
        Op::Add if idx <= items.len() => {
            items.insert(idx, value());
            Ok(())
        }
        Op::Add => Err("can't insert outside of list".to_owned()),
        Op::Replace if idx < items.len() => {
            items[idx] = value();
            Ok(())
        }
        Op::Replace => Err("can't replace outside of list".to_owned()),
        Op::Remove if idx < items.len() => {
            items.remove(idx);
            Ok(())
        }
        Op::Remove => Err(format!("can't remove a non-existent object '{idx}'")),
    }
}

/// Ironic's `Couldn't apply patch '<patch>'. Reason: <reason>` (the patch as Python prints
/// it), with every value that is, or is inside, a secret masked: an operation whose path
/// names a secret key (`/driver_info/ipmi_password`) shows `'value': '******'`, and secret
/// keys inside any value are masked too.
pub fn apply_error(body: &Value, reason: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Couldn't apply patch '{}'. Reason: {reason}",
        py_repr(&masked_patch(body))
    ))
}

/// PURE: a patch document safe to print (see [`apply_error`]).
pub fn masked_patch(body: &Value) -> Value {
    let Value::Array(ops) = body else {
        return render::masked(body);
    };
    Value::Array(
        ops.iter()
            .map(|op| {
                let secret_path = op
                    .get("path")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.split('/').any(render::is_secret_key));
                let mut op = render::masked(op);
                if secret_path && let Some(v) = op.as_object_mut().and_then(|o| o.get_mut("value"))
                {
                    *v = Value::String(MASK.to_owned());
                }
                op
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(doc: Value, patch: Value) -> Result<Value, String> {
        let ops = parse(&patch).map_err(|e| e.to_string())?;
        let mut map = doc.as_object().cloned().expect("object");
        apply(&mut map, &ops)?;
        Ok(Value::Object(map))
    }

    #[test]
    fn add_replace_remove_nested() {
        let doc = json!({"extra": {"a": {"b": 1}}, "name": "n1"});
        let out = run(
            doc,
            json!([
                {"op": "add", "path": "/extra/a/c", "value": 2},
                {"op": "add", "path": "/extra/a/b", "value": "4096"},
                {"op": "replace", "path": "/name", "value": "n2"},
                {"op": "remove", "path": "/extra/a/c"}
            ]),
        )
        .expect("applies");
        assert_eq!(out, json!({"extra": {"a": {"b": "4096"}}, "name": "n2"}));
    }

    #[test]
    fn add_whole_dict_replaces_it() {
        let out = run(
            json!({"extra": {"a": 1}}),
            json!([{"op": "add", "path": "/extra", "value": {"b": 2}}]),
        )
        .expect("applies");
        assert_eq!(out, json!({"extra": {"b": 2}}));
    }

    #[test]
    fn missing_keys_fail_with_jsonpatch_words() {
        let doc = json!({"extra": {}});
        assert_eq!(
            run(
                doc.clone(),
                json!([{"op": "remove", "path": "/extra/nonexist"}])
            ),
            Err("can't remove a non-existent object 'nonexist'".to_owned())
        );
        assert_eq!(
            run(
                doc.clone(),
                json!([{"op": "replace", "path": "/extra/x", "value": 1}])
            ),
            Err("can't replace a non-existent object 'x'".to_owned())
        );
        assert_eq!(
            run(
                doc,
                json!([{"op": "add", "path": "/extra/a/b", "value": 1}])
            ),
            Err("member 'a' not found in /extra".to_owned())
        );
    }

    /// The errors of patches that walk into secrets name paths and types, never values.
    #[test]
    fn errors_never_show_values() {
        let doc = json!({
            "driver_info": {"ipmi_password": "S3cretPW", "ipmi_address": "10.0.0.9"},
            "instance_info": {"configdrive": "#cloud-config password: U5erData"},
        });
        let cases = [
            (
                "/driver_info/ipmi_password/x",
                "/driver_info/ipmi_password is a string, which does not support indexing, only dictionaries and lists are supported.",
            ),
            (
                "/driver_info/nope/x",
                "member 'nope' not found in /driver_info",
            ),
            (
                "/instance_info/configdrive/nope/x",
                "/instance_info/configdrive is a string, which does not support indexing, only dictionaries and lists are supported.",
            ),
        ];
        for (path, want) in cases {
            let patch = json!([{"op": "add", "path": path, "value": 1}]);
            let got = run(doc.clone(), patch.clone()).expect_err("fails");
            assert_eq!(got, want, "{path}");
            let full = apply_error(&patch, &got).to_string();
            for secret in ["S3cretPW", "U5erData", "10.0.0.9"] {
                assert!(!full.contains(secret), "{secret} in {full}");
            }
        }
        // A value sent for a secret path, or with secret keys inside, is masked when the
        // patch is printed back.
        let patch = json!([
            {"op": "add", "path": "/driver_info/ipmi_password", "value": "N3wPW"},
            {"op": "add", "path": "/extra/bmc", "value": {"redfish_password": "Rf", "user": "u"}},
            {"op": "remove", "path": "/extra/nonexist"}
        ]);
        let text = apply_error(&patch, "can't remove a non-existent object 'nonexist'").to_string();
        assert!(!text.contains("N3wPW") && !text.contains("'Rf'"), "{text}");
        assert!(
            text.contains("'value': '******'") && text.contains("'user': 'u'"),
            "{text}"
        );
    }

    #[test]
    fn a_patch_has_a_bounded_number_of_operations() {
        let op = json!({"op": "add", "path": "/extra/a", "value": 1});
        let ok = Value::Array(vec![op.clone(); MAX_OPS]);
        assert_eq!(parse(&ok).expect("at the cap").len(), MAX_OPS);
        let over = Value::Array(vec![op; MAX_OPS + 1]);
        let err = parse(&over).expect_err("over the cap").to_string();
        assert!(err.contains("at most 64 operations"), "{err}");
    }

    #[test]
    fn arrays() {
        let out = run(
            json!({"p": {"l": [1, 2]}}),
            json!([
                {"op": "add", "path": "/p/l/-", "value": 3},
                {"op": "add", "path": "/p/l/0", "value": 0},
                {"op": "remove", "path": "/p/l/1"},
                {"op": "replace", "path": "/p/l/0", "value": 9}
            ]),
        )
        .expect("applies");
        assert_eq!(out, json!({"p": {"l": [9, 2, 3]}}));
        assert!(run(json!({"p": [1]}), json!([{"op": "remove", "path": "/p/5"}])).is_err());
    }

    #[test]
    fn schema_errors() {
        let msg = |p: Value| parse(&p).expect_err("invalid").to_string();
        assert_eq!(
            msg(json!([{"op": "test", "path": "/a", "value": 1}])),
            "Schema error for patch: 'test' is not one of ['add', 'replace', 'remove']"
        );
        assert_eq!(
            msg(json!({"op": "add"})),
            "Schema error for patch: {'op': 'add'} is not of type 'array'"
        );
        assert_eq!(
            msg(json!([{"op": "add", "path": "/a"}])),
            "Schema error for patch: 'value' is a required property"
        );
        assert!(
            msg(json!([{"op": "move", "path": "/a", "from": "/b"}]))
                .starts_with("Schema error for patch:")
        );
        assert!(
            msg(json!([{"op": "add", "path": "a", "value": 1}]))
                .starts_with("Schema error for patch:")
        );
    }
}
