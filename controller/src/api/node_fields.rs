//! Writable node fields: their JSON types, how a value is checked and stored on a `Node`,
//! and how a node looks as the JSON document a PATCH is applied to. Shared by node create
//! (`POST`) and update (`PATCH`). Pure: no IO.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::render::INTERFACES;
use super::schema::{Ty, check_type, is_valid_name, py_repr};
use crate::model::Node;

/// Fields a `PATCH` may touch (Ironic 1.115's list plus `instance_name`), sorted as Ironic
/// prints them in its refusal message.
pub const PATCHABLE: [&str; 37] = [
    "automated_clean",
    "bios_interface",
    "boot_interface",
    "chassis_uuid",
    "conductor_group",
    "console_interface",
    "deploy_interface",
    "description",
    "disable_power_off",
    "driver",
    "driver_info",
    "extra",
    "firmware_interface",
    "inspect_interface",
    "instance_info",
    "instance_name",
    "instance_uuid",
    "lessee",
    "maintenance",
    "management_interface",
    "name",
    "network_data",
    "network_interface",
    "owner",
    "parent_node",
    "power_interface",
    "properties",
    "protected",
    "protected_reason",
    "raid_interface",
    "rescue_interface",
    "resource_class",
    "retired",
    "retired_reason",
    "shard",
    "storage_interface",
    "vendor_interface",
];

/// Keys `POST /v1/nodes` accepts (anything else is "Additional properties are not allowed").
pub const CREATABLE: [&str; 37] = [
    "automated_clean",
    "bios_interface",
    "boot_interface",
    "chassis_uuid",
    "conductor_group",
    "console_interface",
    "deploy_interface",
    "description",
    "disable_power_off",
    "driver",
    "driver_info",
    "extra",
    "firmware_interface",
    "inspect_interface",
    "instance_info",
    "instance_name",
    "instance_uuid",
    "lessee",
    "management_interface",
    "name",
    "network_data",
    "network_interface",
    "owner",
    "parent_node",
    "power_interface",
    "properties",
    "protected",
    "protected_reason",
    "raid_interface",
    "rescue_interface",
    "resource_class",
    "retired",
    "retired_reason",
    "shard",
    "storage_interface",
    "uuid",
    "vendor_interface",
];

/// The JSON type of a writable field and whether it may be null.
pub fn field_type(name: &str) -> (Ty, bool) {
    match name {
        "automated_clean" => (Ty::Bool, true),
        "disable_power_off" | "maintenance" | "protected" | "retired" => (Ty::Bool, false),
        "driver_info" | "extra" | "instance_info" | "network_data" | "properties" => {
            (Ty::Obj, false)
        }
        "driver" | "conductor_group" => (Ty::Str, false),
        _ => (Ty::Str, true),
    }
}

/// Whether messages speak of creating a node or changing an existing one.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Create,
    Update(Uuid),
}

/// The current value of a writable field as JSON (unmasked: this is the PATCH document).
pub fn get(node: &Node, name: &str) -> Value {
    let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
    match name {
        "automated_clean" => node.automated_clean.map_or(Value::Null, Value::Bool),
        "chassis_uuid" => node
            .chassis_uuid
            .map_or(Value::Null, |u| Value::String(u.to_string())),
        "conductor_group" => Value::String(node.conductor_group.clone()),
        "description" => opt(&node.description),
        "disable_power_off" => Value::Bool(node.disable_power_off),
        "driver" => Value::String(node.driver.clone()),
        "driver_info" => Value::Object(node.driver_info.clone()),
        "extra" => Value::Object(node.extra.clone()),
        "instance_info" => Value::Object(node.instance_info.clone()),
        "instance_name" => opt(&node.instance_name),
        "instance_uuid" => node
            .instance_uuid
            .map_or(Value::Null, |u| Value::String(u.to_string())),
        "lessee" => opt(&node.lessee),
        "maintenance" => Value::Bool(node.maintenance),
        "name" => opt(&node.name),
        "network_data" => Value::Object(node.network_data.clone()),
        "owner" => opt(&node.owner),
        "parent_node" => opt(&node.parent_node),
        "properties" => Value::Object(node.properties.clone()),
        "protected" => Value::Bool(node.protected),
        "protected_reason" => opt(&node.protected_reason),
        "resource_class" => opt(&node.resource_class),
        "retired" => Value::Bool(node.retired),
        "retired_reason" => opt(&node.retired_reason),
        "shard" => opt(&node.shard),
        iface if iface.ends_with("_interface") => node
            .interfaces
            .get(iface)
            .map_or(Value::Null, |v| Value::String(v.clone())),
        _ => Value::Null,
    }
}

/// The value a field takes when a PATCH removes it at the top level.
pub fn default_value(name: &str) -> Value {
    match field_type(name) {
        (Ty::Obj, _) => Value::Object(Map::new()),
        (Ty::Bool, false) => Value::Bool(false),
        (Ty::Str, false) if name == "conductor_group" => Value::String(String::new()),
        _ => Value::Null,
    }
}

fn opt_string(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn parse_uuid(field: &str, v: &Value) -> ApiResult<Option<Uuid>> {
    match v {
        Value::String(s) => super::schema::expect_uuid(field, s).map(Some),
        _ => Ok(None),
    }
}

/// Type-checks and stores one field. `parent_node` must already be resolved to a UUID
/// string by the caller (it needs the store).
pub fn set(node: &mut Node, name: &str, value: Value, mode: Mode) -> ApiResult<()> {
    let (ty, nullable) = field_type(name);
    check_type("node", &value, ty, nullable)?;
    match name {
        "automated_clean" => node.automated_clean = value.as_bool(),
        "chassis_uuid" => {
            if let Some(chassis) = parse_uuid(name, &value)? {
                return Err(ApiError::bad_request(format!(
                    "Chassis {chassis} could not be found."
                )));
            }
            node.chassis_uuid = None;
        }
        "conductor_group" => {
            let group = opt_string(value).unwrap_or_default().to_ascii_lowercase();
            if group.len() > 255
                || !group
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
            {
                return Err(ApiError::bad_request(format!(
                    "Invalid conductor group {group}: only letters, digits, '_', '-', '.' and ':' are allowed"
                )));
            }
            node.conductor_group = group;
        }
        "description" => node.description = opt_string(value),
        "disable_power_off" => node.disable_power_off = value.as_bool().unwrap_or(false),
        "driver" => {
            let driver = opt_string(value).unwrap_or_default();
            if driver.is_empty() {
                return Err(ApiError::schema("node", "'' is too short"));
            }
            node.driver = driver;
        }
        "driver_info" => node.driver_info = into_map(value),
        "extra" => node.extra = into_map(value),
        "instance_info" => node.instance_info = into_map(value),
        "network_data" => node.network_data = into_map(value),
        "properties" => node.properties = into_map(value),
        "instance_name" => node.instance_name = opt_string(value),
        "instance_uuid" => node.instance_uuid = parse_uuid(name, &value)?,
        "lessee" => node.lessee = opt_string(value),
        "owner" => node.owner = opt_string(value),
        "maintenance" => {
            node.maintenance = value.as_bool().unwrap_or(false);
            if !node.maintenance {
                node.maintenance_reason = None;
                node.fault = None;
            }
        }
        "name" => {
            let name_value = opt_string(value);
            if let Some(n) = &name_value
                && !is_valid_name(n)
            {
                return Err(ApiError::bad_request(match mode {
                    Mode::Create => format!("Cannot create node with invalid name '{n}'"),
                    Mode::Update(uuid) => {
                        format!("Node {uuid}: Cannot change name to invalid name '{n}'")
                    }
                }));
            }
            node.name = name_value;
        }
        "parent_node" => node.parent_node = opt_string(value),
        "protected" => {
            node.protected = value.as_bool().unwrap_or(false);
            if !node.protected {
                node.protected_reason = None;
            }
        }
        "protected_reason" => node.protected_reason = opt_string(value),
        "resource_class" => {
            let rc = opt_string(value);
            if rc.as_ref().is_some_and(|r| r.len() > 80) {
                return Err(ApiError::schema(
                    "node",
                    format!(
                        "{} is too long",
                        py_repr(&Value::String(rc.unwrap_or_default()))
                    ),
                ));
            }
            node.resource_class = rc;
        }
        "retired" => {
            node.retired = value.as_bool().unwrap_or(false);
            if !node.retired {
                node.retired_reason = None;
            }
        }
        "retired_reason" => node.retired_reason = opt_string(value),
        "shard" => node.shard = opt_string(value),
        iface
            if iface.ends_with("_interface")
                && INTERFACES.contains(&iface.trim_end_matches("_interface")) =>
        {
            match opt_string(value) {
                Some(v) => {
                    node.interfaces.insert(iface.to_owned(), v);
                }
                None => {
                    node.interfaces.remove(iface);
                }
            }
        }
        other => {
            return Err(ApiError::bad_request(format!("Unknown node field {other}")));
        }
    }
    Ok(())
}

/// Rules that span fields, checked after all of them are set.
pub fn check_consistency(node: &Node) -> ApiResult<()> {
    if node.protected_reason.is_some() && !node.protected {
        return Err(ApiError::bad_request(
            "The protected_reason field can only be set when protected is True",
        ));
    }
    if node.retired_reason.is_some() && !node.retired {
        return Err(ApiError::bad_request(
            "The retired_reason field can only be set when retired is True",
        ));
    }
    Ok(())
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `Cannot patch /x. Only the following can be updated: a, b, ...`
pub fn not_patchable(path: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Cannot patch {path}. Only the following can be updated: {}",
        PATCHABLE.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    #[test]
    fn every_patchable_field_round_trips_through_get_and_set() {
        let mut node = Node::new(Uuid::new_v4(), "fake-hardware", Utc::now());
        let id = node.uuid;
        for field in PATCHABLE {
            let v = get(&node, field);
            set(&mut node, field, v, Mode::Update(id)).unwrap_or_else(|e| panic!("{field}: {e}"));
        }
    }

    #[test]
    fn type_errors_use_schema_words() {
        let mut node = Node::new(Uuid::new_v4(), "fake-hardware", Utc::now());
        let e = set(&mut node, "extra", json!([1]), Mode::Create).expect_err("bad");
        assert_eq!(
            e.to_string(),
            "Schema error for node: [1] is not of type 'object'"
        );
        let e = set(&mut node, "name", json!("bad name!"), Mode::Create).expect_err("bad");
        assert_eq!(
            e.to_string(),
            "Cannot create node with invalid name 'bad name!'"
        );
        let e = set(&mut node, "maintenance", json!(null), Mode::Create).expect_err("bad");
        assert_eq!(
            e.to_string(),
            "Schema error for node: None is not of type 'boolean'"
        );
    }

    #[test]
    fn unsetting_maintenance_clears_reason() {
        let mut node = Node::new(Uuid::new_v4(), "fake-hardware", Utc::now());
        node.maintenance = true;
        node.maintenance_reason = Some("fan".into());
        let id = node.uuid;
        set(&mut node, "maintenance", json!(false), Mode::Update(id)).expect("ok");
        assert_eq!(node.maintenance_reason, None);
    }
}
