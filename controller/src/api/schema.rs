//! Input checks with Ironic's wording: JSON-schema-style type errors (values shown as Python
//! `repr`, as jsonschema prints them), logical names, MAC addresses and trait names.
//! Pure functions only.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::ApiError;

/// A JSON value written the way Python prints the decoded object (`{'a': [1, True, None]}`).
pub fn py_repr(v: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, v);
    out
}

fn write_repr(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&py_str(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&py_str(k));
                out.push_str(": ");
                write_repr(out, item);
            }
            out.push('}');
        }
    }
}

/// A Python string literal: single quotes unless the text holds a single quote and no double.
pub fn py_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// JSON-schema type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Bool,
    Int,
    Obj,
    Arr,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Str => "string",
            Ty::Bool => "boolean",
            Ty::Int => "integer",
            Ty::Obj => "object",
            Ty::Arr => "array",
        }
    }

    fn matches(self, v: &Value) -> bool {
        match self {
            Ty::Str => v.is_string(),
            Ty::Bool => v.is_boolean(),
            Ty::Int => v.is_i64() || v.is_u64(),
            Ty::Obj => v.is_object(),
            Ty::Arr => v.is_array(),
        }
    }
}

/// Checks `v` against a type (optionally nullable), wording failures as jsonschema does:
/// `Schema error for node: 5 is not of type 'string', 'null'`.
pub fn check_type(what: &str, v: &Value, ty: Ty, nullable: bool) -> Result<(), ApiError> {
    if ty.matches(v) || (nullable && v.is_null()) {
        return Ok(());
    }
    let types = if nullable {
        format!("'{}', 'null'", ty.name())
    } else {
        format!("'{}'", ty.name())
    };
    Err(ApiError::schema(
        what,
        format!("{} is not of type {types}", py_repr(v)),
    ))
}

/// `Additional properties are not allowed ('a', 'b' were unexpected)` for keys not in `known`.
pub fn check_known_keys(
    what: &str,
    obj: &Map<String, Value>,
    known: &[&str],
) -> Result<(), ApiError> {
    let extra: Vec<String> = obj
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| py_str(k))
        .collect();
    match extra.len() {
        0 => Ok(()),
        1 => Err(ApiError::schema(
            what,
            format!(
                "Additional properties are not allowed ({} was unexpected)",
                extra[0]
            ),
        )),
        _ => Err(ApiError::schema(
            what,
            format!(
                "Additional properties are not allowed ({} were unexpected)",
                extra.join(", ")
            ),
        )),
    }
}

/// The body must be a JSON object: `Schema error for node: [1, 2] is not of type 'object'`.
pub fn as_object<'a>(what: &str, v: &'a Value) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object()
        .ok_or_else(|| ApiError::schema(what, format!("{} is not of type 'object'", py_repr(v))))
}

/// `'driver' is a required property`.
pub fn require_key<'a>(
    what: &str,
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a Value, ApiError> {
    obj.get(key)
        .ok_or_else(|| ApiError::schema(what, format!("{} is a required property", py_str(key))))
}

/// Ironic's logical names: RFC 3986 unreserved characters, at most 255, and not a UUID.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        && Uuid::parse_str(name).is_err()
}

/// Validates a MAC address and returns it in lower-case colon form.
pub fn normalize_mac(field: &str, raw: &str) -> Result<String, ApiError> {
    let invalid =
        || ApiError::bad_request(format!("Expected valid MAC address for {field}: {raw}"));
    let bytes = raw.as_bytes();
    if bytes.len() != 17 {
        return Err(invalid());
    }
    let sep = bytes[2];
    if sep != b':' && sep != b'-' {
        return Err(invalid());
    }
    let mut out = String::with_capacity(17);
    for (i, &b) in bytes.iter().enumerate() {
        if i % 3 == 2 {
            if b != sep {
                return Err(invalid());
            }
            out.push(':');
        } else if b.is_ascii_hexdigit() {
            out.push(char::from(b.to_ascii_lowercase()));
        } else {
            return Err(invalid());
        }
    }
    Ok(out)
}

/// The optional `uuid` of a created resource (`what`: `node`, `port`, `allocation`): a new
/// random one when absent or null, else the given one, with Ironic's schema errors.
pub fn uuid_or_new(what: &str, v: Option<&Value>) -> Result<Uuid, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Uuid::new_v4()),
        Some(Value::String(s)) => Uuid::parse_str(s).map_err(|_| {
            ApiError::schema(
                what,
                format!("{} is not a 'uuid'", py_repr(&Value::String(s.clone()))),
            )
        }),
        Some(other) => Err(ApiError::schema(
            what,
            format!("{} is not of type 'string', 'null'", py_repr(other)),
        )),
    }
}

/// A UUID given as text for `field` (a query parameter or a field value), else
/// `Expected UUID for FIELD: TEXT`.
pub fn expect_uuid(field: &str, text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::bad_request(format!("Expected UUID for {field}: {text}")))
}

/// A trait name the API takes ([`crate::model::is_valid_trait`]), else Ironic's schema error.
pub fn check_trait(name: &str) -> Result<(), ApiError> {
    if crate::model::is_valid_trait(name) {
        Ok(())
    } else {
        Err(ApiError::schema(
            "trait",
            format!("{} does not match '^CUSTOM_[A-Z0-9_]+$'", py_str(name)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repr_like_python() {
        assert_eq!(py_repr(&json!([1, 2])), "[1, 2]");
        assert_eq!(
            py_repr(&json!({"a": [true, null, "x"]})),
            "{'a': [True, None, 'x']}"
        );
        assert_eq!(py_str("it's"), "\"it's\"");
    }

    #[test]
    fn types_and_keys() {
        let e = check_type("node", &json!([1, 2]), Ty::Obj, false).expect_err("bad");
        assert_eq!(
            e.to_string(),
            "Schema error for node: [1, 2] is not of type 'object'"
        );
        let obj = json!({"driver": "x", "bogus": 1});
        let e =
            check_known_keys("node", obj.as_object().expect("obj"), &["driver"]).expect_err("bad");
        assert_eq!(
            e.to_string(),
            "Schema error for node: Additional properties are not allowed ('bogus' was unexpected)"
        );
    }

    #[test]
    fn names_macs_traits() {
        assert!(is_valid_name("n1.rack-2_a~"));
        assert!(!is_valid_name("bad name!"));
        assert!(!is_valid_name("1be26c0b-03f2-4d2e-ae87-c02d7f33c123"));
        assert_eq!(
            normalize_mac("address", "52:54:00:AB:cd:01")
                .ok()
                .as_deref(),
            Some("52:54:00:ab:cd:01")
        );
        assert_eq!(
            normalize_mac("address", "52-54-00-AB-cd-01")
                .ok()
                .as_deref(),
            Some("52:54:00:ab:cd:01")
        );
        assert_eq!(
            normalize_mac("address", "not-a-mac")
                .expect_err("bad")
                .to_string(),
            "Expected valid MAC address for address: not-a-mac"
        );
        assert!(normalize_mac("address", "52:54:00:ab:cd-01").is_err());
        assert!(check_trait("CUSTOM_GPU").is_ok());
        assert!(check_trait("HW_CPU_X86_AVX2").is_ok());
        assert_eq!(
            check_trait("lower_case").expect_err("bad").to_string(),
            "Schema error for trait: 'lower_case' does not match '^CUSTOM_[A-Z0-9_]+$'"
        );
        assert!(check_trait("CUSTOM_").is_err());
    }

    #[test]
    fn uuids_given_as_text() {
        let id = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
        assert_eq!(
            uuid_or_new("port", Some(&json!(id)))
                .expect("given")
                .to_string(),
            id
        );
        assert!(uuid_or_new("port", None).is_ok());
        assert!(uuid_or_new("port", Some(&Value::Null)).is_ok());
        assert_eq!(
            uuid_or_new("port", Some(&json!("x")))
                .expect_err("bad")
                .to_string(),
            "Schema error for port: 'x' is not a 'uuid'"
        );
        assert_eq!(
            uuid_or_new("node", Some(&json!(1)))
                .expect_err("bad")
                .to_string(),
            "Schema error for node: 1 is not of type 'string', 'null'"
        );
        assert_eq!(expect_uuid("node_uuid", id).expect("valid").to_string(), id);
        assert_eq!(
            expect_uuid("node_uuid", "x").expect_err("bad").to_string(),
            "Expected UUID for node_uuid: x"
        );
    }
}
