//! Record builders for the store tests.

use chrono::{DateTime, Duration, TimeZone, Utc};
use controller::model::{Allocation, HistoryEvent, JsonMap, Node, Port};
use serde_json::json;
use uuid::Uuid;

/// A fixed base time so that timestamps are predictable.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .expect("valid time")
}

/// A node with realistic content (JSON maps filled in), named `node-<i>`.
pub fn node(i: u32) -> Node {
    let mut node = Node::new(
        Uuid::new_v4(),
        "ipmi",
        t0() + Duration::seconds(i64::from(i)),
    );
    node.name = Some(format!("node-{i:04}"));
    node.description = Some(format!("Rack A{} server {i}", i % 4));
    node.resource_class = Some("baremetal".to_owned());
    node.power_state = Some("power off".to_owned());
    node.driver_info = json_map(json!({
        "ipmi_address": format!("10.0.{}.{}", i / 250, i % 250),
        "ipmi_username": "admin",
        "ipmi_password": "secret",
        "ipmi_port": 623,
    }));
    node.properties = json_map(json!({
        "cpus": 32, "memory_mb": 131072, "local_gb": 960, "cpu_arch": "x86_64",
        "capabilities": "boot_mode:uefi",
    }));
    node.extra = json_map(json!({ "rack": format!("A{}", i % 4), "serial": format!("SN{i:08}") }));
    node.traits = vec!["CUSTOM_GPU".to_owned(), "CUSTOM_RAID".to_owned()];
    node.interfaces
        .insert("deploy_interface".to_owned(), "direct".to_owned());
    node
}

pub fn json_map(value: serde_json::Value) -> JsonMap {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

pub fn port(node: Uuid, i: u32) -> Port {
    let mut p = Port::new(
        Uuid::new_v4(),
        node,
        format!(
            "52:54:00:{:02x}:{:02x}:{:02x}",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        ),
        t0(),
    );
    p.local_link_connection =
        json_map(json!({ "switch_id": "aa:bb:cc:dd:ee:ff", "port_id": format!("Eth1/{i}") }));
    p.physical_network = Some("physnet1".to_owned());
    p
}

pub fn allocation(i: u32) -> Allocation {
    Allocation {
        uuid: Uuid::new_v4(),
        name: Some(format!("alloc-{i}")),
        resource_class: Some("baremetal".to_owned()),
        traits: vec!["CUSTOM_GPU".to_owned()],
        candidate_nodes: Vec::new(),
        extra: JsonMap::new(),
        owner: None,
        state: "allocating".to_owned(),
        node_uuid: None,
        last_error: None,
        created_at: t0(),
        updated_at: None,
        min_properties: Default::default(),
        server: None,
    }
}

pub fn event(node: Uuid, at: DateTime<Utc>, text: &str) -> HistoryEvent {
    HistoryEvent {
        uuid: Uuid::new_v4(),
        node_uuid: node,
        created_at: at,
        severity: "INFO".to_owned(),
        event_type: "provisioning".to_owned(),
        event: text.to_owned(),
        conductor: Some("c1".to_owned()),
        user: None,
    }
}
