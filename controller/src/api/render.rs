//! Renders model records in Ironic's JSON shape, straight from the model (no intermediate
//! `serde_json::Value`), so that a 500-node detail list costs well under a millisecond.
//! Adds links, fills the fields the model does not keep, masks secrets, and honours
//! `fields=`. Pure: no IO.

use std::collections::HashMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

use super::error::ApiError;
use crate::model::{Allocation, HistoryEvent, JsonMap, Node, Port};

/// The 13 hardware interfaces, in the order their `<name>_interface` fields are listed.
pub const INTERFACES: [&str; 13] = [
    "bios",
    "boot",
    "console",
    "deploy",
    "firmware",
    "inspect",
    "management",
    "network",
    "power",
    "raid",
    "rescue",
    "storage",
    "vendor",
];

/// Every key of a node at API 1.115 (69), in the order they are emitted.
pub const NODE_FIELDS: [&str; 69] = [
    "uuid",
    "created_at",
    "updated_at",
    "automated_clean",
    "bios_interface",
    "boot_interface",
    "boot_mode",
    "clean_step",
    "conductor_group",
    "console_enabled",
    "console_interface",
    "disable_power_off",
    "deploy_interface",
    "deploy_step",
    "description",
    "driver",
    "driver_info",
    "driver_internal_info",
    "extra",
    "fault",
    "firmware_interface",
    "health",
    "inspection_finished_at",
    "inspection_started_at",
    "inspect_interface",
    "instance_info",
    "instance_name",
    "instance_uuid",
    "last_error",
    "lessee",
    "maintenance",
    "maintenance_reason",
    "management_interface",
    "name",
    "network_data",
    "network_interface",
    "owner",
    "parent_node",
    "power_interface",
    "power_state",
    "properties",
    "protected",
    "protected_reason",
    "provision_state",
    "provision_updated_at",
    "raid_config",
    "raid_interface",
    "rescue_interface",
    "reservation",
    "resource_class",
    "retired",
    "retired_reason",
    "secure_boot",
    "service_step",
    "shard",
    "storage_interface",
    "target_power_state",
    "target_provision_state",
    "target_raid_config",
    "traits",
    "vendor_interface",
    "links",
    "conductor",
    "allocation_uuid",
    "chassis_uuid",
    "ports",
    "states",
    "portgroups",
    "volume",
];

/// The columns of a plain `GET /v1/nodes`, in the order Ironic lists them in `next` links.
pub const NODE_DEFAULT_FIELDS: [&str; 6] = [
    "instance_uuid",
    "maintenance",
    "power_state",
    "provision_state",
    "uuid",
    "name",
];

/// Every key of a port.
pub const PORT_FIELDS: [&str; 18] = [
    "uuid",
    "created_at",
    "updated_at",
    "address",
    "extra",
    "internal_info",
    "is_smartnic",
    "local_link_connection",
    "physical_network",
    "pxe_enabled",
    "node_uuid",
    "name",
    "description",
    "vendor",
    "category",
    "available_for_dynamic_portgroup",
    "links",
    "portgroup_uuid",
];

pub const PORT_DEFAULT_FIELDS: [&str; 2] = ["uuid", "address"];

/// Every key of an allocation.
pub const ALLOCATION_FIELDS: [&str; 13] = [
    "uuid",
    "created_at",
    "updated_at",
    "candidate_nodes",
    "extra",
    "last_error",
    "name",
    "owner",
    "resource_class",
    "state",
    "traits",
    "links",
    "node_uuid",
];

/// What a secret shows as.
pub const MASK: &str = "******";

pub use crate::model::is_secret_key;

/// A JSON object serialized with secret keys masked, recursively (inside nested objects
/// and arrays alike).
pub struct Masked<'a>(pub &'a JsonMap);

impl Serialize for Masked<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            if is_secret_key(k) {
                map.serialize_entry(k, MASK)?;
            } else {
                map.serialize_entry(k, &MaskedValue(v))?;
            }
        }
        map.end()
    }
}

/// Any JSON value serialized with the secret keys of every object in it masked.
pub struct MaskedValue<'a>(pub &'a Value);

impl Serialize for MaskedValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => Masked(map).serialize(s),
            Value::Array(items) => s.collect_seq(items.iter().map(MaskedValue)),
            other => other.serialize(s),
        }
    }
}

/// A copy of `v` with the secret keys of every object in it masked (for error texts).
pub fn masked(v: &Value) -> Value {
    serde_json::to_value(MaskedValue(v)).unwrap_or(Value::Null)
}

/// Ironic's timestamp form: `2026-11-24T16:13:50.866090+00:00`.
pub struct Ts<'a>(pub &'a DateTime<Utc>);

impl std::fmt::Display for Ts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond() % 1_000_000_000 / 1000
        )
    }
}

impl Serialize for Ts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

struct OptTs<'a>(&'a Option<DateTime<Utc>>);

impl Serialize for OptTs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(t) => Ts(t).serialize(s),
            None => s.serialize_none(),
        }
    }
}

/// `[{"href": "<base>/v1/<coll>/<id><suffix>", "rel": "self"}, {"href": "<base>/<coll>/<id><suffix>", "rel": "bookmark"}]`.
pub struct Links<'a> {
    pub base: &'a str,
    pub coll: &'a str,
    pub id: &'a dyn std::fmt::Display,
    pub suffix: &'a str,
}

struct Href<'a>(&'a Links<'a>, bool);

impl std::fmt::Display for Href<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = self.0;
        let v1 = if self.1 { "/v1" } else { "" };
        write!(f, "{}{v1}/{}/{}{}", l.base, l.coll, l.id, l.suffix)
    }
}

impl Serialize for Href<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

struct Link<'a>(&'a Links<'a>, bool);

impl Serialize for Link<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("href", &Href(self.0, self.1))?;
        map.serialize_entry("rel", if self.1 { "self" } else { "bookmark" })?;
        map.end()
    }
}

impl Serialize for Links<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(2))?;
        seq.serialize_element(&Link(self, true))?;
        seq.serialize_element(&Link(self, false))?;
        seq.end()
    }
}

fn wanted(fields: Option<&[String]>, name: &str) -> bool {
    name == "links" || fields.is_none_or(|f| f.iter().any(|x| x == name))
}

/// An optional JSON object shown as `{}` when absent (`clean_step`, `deploy_step`).
struct ObjOrEmpty<'a>(&'a Option<JsonMap>);

impl Serialize for ObjOrEmpty<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(m) => m.serialize(s),
            None => s.serialize_map(Some(0))?.end(),
        }
    }
}

/// Per-driver default interface names (`"boot_interface" -> "fake"`), used when the node has
/// no override.
pub type InterfaceDefaults = HashMap<String, String>;

/// A node as the API shows it.
pub struct NodeView<'a> {
    pub node: &'a Node,
    pub base: &'a str,
    pub fields: Option<&'a [String]>,
    /// The live conductor that owns the node (`None`: no live conductor of its group).
    pub conductor: Option<String>,
    pub defaults: Option<&'a InterfaceDefaults>,
}

impl NodeView<'_> {
    fn interface(&self, field: &str) -> Option<&str> {
        self.node
            .interfaces
            .get(field)
            .or_else(|| self.defaults.and_then(|d| d.get(field)))
            .map(String::as_str)
    }
}

impl Serialize for NodeView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.node;
        let f = self.fields;
        let mut map = s.serialize_map(None)?;
        macro_rules! put {
            ($name:literal, $value:expr) => {
                if wanted(f, $name) {
                    map.serialize_entry($name, &$value)?;
                }
            };
        }
        macro_rules! iface {
            ($name:literal) => {
                put!($name, self.interface($name));
            };
        }
        let id = n.uuid;
        let link = |coll: &'static str, suffix: &'static str| Links {
            base: self.base,
            coll,
            id: &id,
            suffix,
        };
        put!("uuid", n.uuid);
        put!("created_at", Ts(&n.created_at));
        put!("updated_at", OptTs(&n.updated_at));
        put!("automated_clean", n.automated_clean);
        iface!("bios_interface");
        iface!("boot_interface");
        put!("boot_mode", n.boot_mode);
        put!("clean_step", ObjOrEmpty(&n.clean_step));
        put!("conductor_group", n.conductor_group);
        put!("console_enabled", false);
        iface!("console_interface");
        put!("disable_power_off", n.disable_power_off);
        iface!("deploy_interface");
        put!("deploy_step", ObjOrEmpty(&n.deploy_step));
        put!("description", n.description);
        put!("driver", n.driver);
        put!("driver_info", Masked(&n.driver_info));
        put!("driver_internal_info", Masked(&n.driver_internal_info));
        put!("extra", n.extra);
        put!("fault", n.fault);
        iface!("firmware_interface");
        put!("health", Option::<&str>::None);
        put!("inspection_finished_at", OptTs(&n.inspection_finished_at));
        put!("inspection_started_at", OptTs(&n.inspection_started_at));
        iface!("inspect_interface");
        put!("instance_info", Masked(&n.instance_info));
        put!("instance_name", n.instance_name);
        put!("instance_uuid", n.instance_uuid);
        put!("last_error", n.last_error);
        put!("lessee", n.lessee);
        put!("maintenance", n.maintenance);
        put!("maintenance_reason", n.maintenance_reason);
        iface!("management_interface");
        put!("name", n.name);
        put!("network_data", n.network_data);
        iface!("network_interface");
        put!("owner", n.owner);
        put!("parent_node", n.parent_node);
        iface!("power_interface");
        put!("power_state", n.power_state);
        put!("properties", n.properties);
        put!("protected", n.protected);
        put!("protected_reason", n.protected_reason);
        put!("provision_state", n.provision_state);
        put!("provision_updated_at", OptTs(&n.provision_updated_at));
        put!("raid_config", n.raid_config);
        iface!("raid_interface");
        iface!("rescue_interface");
        put!("reservation", n.reservation);
        put!("resource_class", n.resource_class);
        put!("retired", n.retired);
        put!("retired_reason", n.retired_reason);
        put!("secure_boot", n.secure_boot);
        put!("service_step", ObjOrEmpty(&n.service_step));
        put!("shard", n.shard);
        iface!("storage_interface");
        put!("target_power_state", n.target_power_state);
        put!("target_provision_state", n.target_provision_state);
        put!("target_raid_config", n.target_raid_config);
        put!("traits", n.traits);
        iface!("vendor_interface");
        put!("links", link("nodes", ""));
        put!("conductor", self.conductor);
        put!("allocation_uuid", n.allocation_uuid);
        put!("chassis_uuid", n.chassis_uuid);
        put!("ports", link("nodes", "/ports"));
        put!("states", link("nodes", "/states"));
        put!("portgroups", link("nodes", "/portgroups"));
        put!("volume", link("nodes", "/volume"));
        map.end()
    }
}

/// A port as the API shows it.
pub struct PortView<'a> {
    pub port: &'a Port,
    pub base: &'a str,
    pub fields: Option<&'a [String]>,
}

impl Serialize for PortView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.port;
        let f = self.fields;
        let mut map = s.serialize_map(None)?;
        macro_rules! put {
            ($name:literal, $value:expr) => {
                if wanted(f, $name) {
                    map.serialize_entry($name, &$value)?;
                }
            };
        }
        put!("uuid", p.uuid);
        put!("created_at", Ts(&p.created_at));
        put!("updated_at", OptTs(&p.updated_at));
        put!("address", p.address);
        put!("extra", p.extra);
        put!("internal_info", Masked(&p.internal_info));
        put!("is_smartnic", p.is_smartnic);
        put!("local_link_connection", p.local_link_connection);
        put!("physical_network", p.physical_network);
        put!("pxe_enabled", p.pxe_enabled);
        put!("node_uuid", p.node_uuid);
        put!("name", p.name);
        put!("description", p.description);
        put!("vendor", p.vendor);
        put!("category", p.category);
        put!("available_for_dynamic_portgroup", false);
        put!(
            "links",
            Links {
                base: self.base,
                coll: "ports",
                id: &p.uuid,
                suffix: ""
            }
        );
        put!("portgroup_uuid", p.portgroup_uuid);
        map.end()
    }
}

/// An allocation as the API shows it.
pub struct AllocationView<'a> {
    pub allocation: &'a Allocation,
    pub base: &'a str,
    pub fields: Option<&'a [String]>,
}

impl Serialize for AllocationView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.allocation;
        let f = self.fields;
        let mut map = s.serialize_map(None)?;
        macro_rules! put {
            ($name:literal, $value:expr) => {
                if wanted(f, $name) {
                    map.serialize_entry($name, &$value)?;
                }
            };
        }
        put!("uuid", a.uuid);
        put!("created_at", Ts(&a.created_at));
        put!("updated_at", OptTs(&a.updated_at));
        put!("candidate_nodes", a.candidate_nodes);
        put!("extra", a.extra);
        put!("last_error", a.last_error);
        put!("name", a.name);
        put!("owner", a.owner);
        put!("resource_class", a.resource_class);
        put!("state", a.state);
        put!("traits", a.traits);
        put!(
            "links",
            Links {
                base: self.base,
                coll: "allocations",
                id: &a.uuid,
                suffix: ""
            }
        );
        put!("node_uuid", a.node_uuid);
        map.end()
    }
}

/// A node history event (`uuid, created_at, severity, event_type, event, conductor, user`).
pub struct HistoryView<'a>(pub &'a HistoryEvent);

impl Serialize for HistoryView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut map = s.serialize_map(Some(7))?;
        map.serialize_entry("uuid", &e.uuid)?;
        map.serialize_entry("created_at", &Ts(&e.created_at))?;
        map.serialize_entry("severity", &e.severity)?;
        map.serialize_entry("event_type", &e.event_type)?;
        map.serialize_entry("event", &e.event)?;
        map.serialize_entry("conductor", &e.conductor)?;
        map.serialize_entry("user", &e.user)?;
        map.end()
    }
}

/// `{"<key>": [items], "next": "..."}` (no `next` unless given).
pub struct Collection<'a, T> {
    pub key: &'a str,
    pub items: &'a [T],
    pub next: Option<String>,
}

impl<T: Serialize> Serialize for Collection<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry(self.key, self.items)?;
        if let Some(next) = &self.next {
            map.serialize_entry("next", next)?;
        }
        map.end()
    }
}

/// Serializes `value` into a JSON response with `status`.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Response, ApiError> {
    json_with_capacity(status, value, 1024)
}

/// Like [`json`], with a size hint for the body (lists of full nodes run to ~2 KiB each).
pub fn json_with_capacity<T: Serialize>(
    status: StatusCode,
    value: &T,
    capacity: usize,
) -> Result<Response, ApiError> {
    let mut body = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut body, value).map_err(ApiError::internal)?;
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// An empty response (202/204) with an optional `Location`.
pub fn empty(status: StatusCode, location: Option<String>) -> Response {
    let mut resp = status.into_response();
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

/// Adds `Location` to a response.
pub fn with_location(mut resp: Response, location: String) -> Response {
    if let Ok(loc) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

/// Convenience for building links to a uuid.
pub fn self_href(base: &str, coll: &str, id: &Uuid) -> String {
    format!("{base}/v1/{coll}/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn timestamps_have_microseconds_and_offset() {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 24, 16, 13, 50)
            .single()
            .expect("valid")
            + chrono::Duration::microseconds(866_090);
        assert_eq!(Ts(&t).to_string(), "2026-11-24T16:13:50.866090+00:00");
    }

    #[test]
    fn full_node_has_69_keys_and_masks_secrets() {
        let mut node = Node::new(Uuid::new_v4(), "fake-hardware", Utc::now());
        node.driver_info
            .insert("ipmi_password".into(), json!("s3cret"));
        node.driver_info
            .insert("ipmi_address".into(), json!("10.0.0.1"));
        node.driver_internal_info
            .insert("agent_secret_token".into(), json!("tok"));
        node.instance_info
            .insert("configdrive".into(), json!({"user_data": "x"}));
        node.instance_info
            .insert("image_source".into(), json!("http://x/img"));
        let view = NodeView {
            node: &node,
            base: "http://h:1",
            fields: None,
            conductor: Some("c1".to_owned()),
            defaults: None,
        };
        let v = serde_json::to_value(&view).expect("serializes");
        let obj = v.as_object().expect("object");
        assert_eq!(obj.len(), 69);
        for k in NODE_FIELDS {
            assert!(obj.contains_key(k), "{k}");
        }
        assert_eq!(v["driver_info"]["ipmi_password"], "******");
        assert!(is_secret_key("IPMI_Password") && is_secret_key("redfish_auth_token"));
        assert!(is_secret_key("ipmi_hex_kg_key") && is_secret_key("IPMI_KG_KEY"));
        assert!(is_secret_key("ssh_private_key") && is_secret_key("my_api_key"));
        assert!(!is_secret_key("ipmi_address") && !is_secret_key("ipmi_port"));
        assert!(!is_secret_key("keyboard") && !is_secret_key("key_layout"));
        assert_eq!(v["driver_info"]["ipmi_address"], "10.0.0.1");
        assert_eq!(v["driver_internal_info"]["agent_secret_token"], "******");
        assert_eq!(v["instance_info"]["configdrive"], "******");
        assert_eq!(v["instance_info"]["image_source"], "http://x/img");
        assert_eq!(v["clean_step"], json!({}));
        assert_eq!(
            v["links"][0]["href"],
            format!("http://h:1/v1/nodes/{}", node.uuid)
        );
        assert_eq!(
            v["links"][1]["href"],
            format!("http://h:1/nodes/{}", node.uuid)
        );
        assert_eq!(
            v["ports"][0]["href"],
            format!("http://h:1/v1/nodes/{}/ports", node.uuid)
        );
    }

    #[test]
    fn secrets_are_masked_at_any_depth_and_inside_arrays() {
        let v = json!({
            "ipmi_hex_kg_key": "00112233",
            "nested": {"deeper": {"redfish_password": "p1"}},
            "bmcs": [{"ipmi_password": "p2", "address": "10.0.0.2"}, [{"auth_token": "t"}], "plain"],
        });
        let m = masked(&v);
        assert_eq!(m["ipmi_hex_kg_key"], MASK);
        assert_eq!(m["nested"]["deeper"]["redfish_password"], MASK);
        assert_eq!(m["bmcs"][0]["ipmi_password"], MASK);
        assert_eq!(m["bmcs"][0]["address"], "10.0.0.2");
        assert_eq!(m["bmcs"][1][0]["auth_token"], MASK);
        assert_eq!(m["bmcs"][2], "plain");
        let text = m.to_string();
        for secret in ["00112233", "p1", "p2", "\"t\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn fields_limit_keys_but_keep_links() {
        let node = Node::new(Uuid::new_v4(), "fake-hardware", Utc::now());
        let fields = vec!["uuid".to_owned(), "name".to_owned()];
        let view = NodeView {
            node: &node,
            base: "http://h",
            fields: Some(&fields),
            conductor: Some("c".to_owned()),
            defaults: None,
        };
        let v = serde_json::to_value(&view).expect("serializes");
        let mut keys: Vec<&String> = v.as_object().expect("object").keys().collect();
        keys.sort();
        assert_eq!(keys, ["links", "name", "uuid"]);
    }
}
