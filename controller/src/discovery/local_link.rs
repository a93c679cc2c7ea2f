//! A port's `local_link_connection` from the LLDP neighbour its NIC heard during inspection,
//! as Ironic's `local_link_connection` inspection hook fills it: `switch_id` from a chassis
//! ID of the MAC subtype (Ironic takes only a MAC or an OpenFlow datapath ID there, so any
//! other chassis ID leaves it alone), `port_id` from the port ID, `switch_info` from the
//! system name. Each inspection writes what LLDP says (so a re-cabled NIC is picked up, as
//! Ironic's default `overwrite_existing`); keys LLDP does not speak for (`network_type`,
//! `hostname`, ...) are kept. PURE.

use proto::LldpNeighbor;
use serde_json::Value;

use crate::model::JsonMap;

/// LLDP's chassis ID subtype for a MAC address.
const CHASSIS_MAC: u8 = 4;

/// Applies `lldp` to `link`; returns whether anything changed.
pub fn apply(link: &mut JsonMap, lldp: &LldpNeighbor) -> bool {
    let mut changed = false;
    let mut set = |key: &str, value: &str| {
        if value.is_empty() || link.get(key).and_then(Value::as_str) == Some(value) {
            return;
        }
        link.insert(key.to_owned(), Value::String(value.to_owned()));
        changed = true;
    };
    if lldp.chassis_id_subtype == CHASSIS_MAC {
        set("switch_id", &lldp.chassis_id);
    }
    set("port_id", &lldp.port_id);
    if let Some(name) = &lldp.system_name {
        set("switch_info", name);
    }
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn neighbour(
        chassis_subtype: u8,
        chassis: &str,
        port: &str,
        name: Option<&str>,
    ) -> LldpNeighbor {
        LldpNeighbor {
            chassis_id: chassis.into(),
            chassis_id_subtype: chassis_subtype,
            port_id: port.into(),
            port_id_subtype: 5,
            system_name: name.map(Into::into),
            ..Default::default()
        }
    }

    fn map(v: Value) -> JsonMap {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn table() {
        let sw = "00:1c:73:aa:bb:cc";
        let rows = [
            // Empty link, full neighbour: all three keys.
            (
                json!({}),
                neighbour(4, sw, "Ethernet12", Some("leaf-07")),
                json!({"switch_id": sw, "port_id": "Ethernet12", "switch_info": "leaf-07"}),
                true,
            ),
            // A chassis ID that is not a MAC is not a switch_id.
            (
                json!({}),
                neighbour(7, "chassis-7", "Ethernet12", None),
                json!({"port_id": "Ethernet12"}),
                true,
            ),
            // Re-cabled: LLDP wins for its keys, the operator's other keys stay.
            (
                json!({"switch_id": sw, "port_id": "Ethernet1", "network_type": "managed"}),
                neighbour(4, sw, "Ethernet12", None),
                json!({"switch_id": sw, "port_id": "Ethernet12", "network_type": "managed"}),
                true,
            ),
            // Nothing new: unchanged.
            (
                json!({"switch_id": sw, "port_id": "Ethernet12", "switch_info": "leaf-07"}),
                neighbour(4, sw, "Ethernet12", Some("leaf-07")),
                json!({"switch_id": sw, "port_id": "Ethernet12", "switch_info": "leaf-07"}),
                false,
            ),
            // An empty system name is not written.
            (
                json!({}),
                neighbour(4, sw, "xe-0/0/1", Some("")),
                json!({"switch_id": sw, "port_id": "xe-0/0/1"}),
                true,
            ),
        ];
        for (before, lldp, after, changed) in rows {
            let mut link = map(before.clone());
            assert_eq!(apply(&mut link, &lldp), changed, "{before} + {lldp:?}");
            assert_eq!(Value::Object(link), after, "{before} + {lldp:?}");
        }
    }
}
