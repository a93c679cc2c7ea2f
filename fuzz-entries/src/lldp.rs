//! `lldp`: an Ethernet frame from whoever is on a NIC's cable, as the agent reads it during
//! inspection (`agent::inventory::lldp::parse_frame`), then the controller's use of what it
//! says (`controller::discovery::local_link::apply` on a port's `local_link_connection`).
//!
//! Invariants: what parses is bounded (text at most `MAX_TEXT` characters without control
//! characters, VLAN names at most `MAX_VLAN_NAME`, at most `MAX_ADDRESSES` addresses and
//! `MAX_VLANS` VLANs), survives the JSON round trip the agent's report makes, and fills at
//! most the three keys Ironic's hook fills, a `switch_id` only from a MAC; applying it twice
//! changes nothing the second time.

use agent::inventory::lldp::{
    MAX_ADDRESSES, MAX_TEXT, MAX_VLAN_NAME, MAX_VLANS, parse_frame, parse_lldpdu,
};
use controller::discovery::local_link::apply;
use proto::LldpNeighbor;

pub fn run(data: &[u8]) {
    if let Ok(n) = parse_frame(data) {
        check(&n);
    }
    // The payload alone too, so the fuzzer need not find the Ethernet header first.
    if let Ok(n) = parse_lldpdu(data) {
        check(&n);
    }
}

fn check(n: &LldpNeighbor) {
    let texts = [
        Some(&n.chassis_id),
        Some(&n.port_id),
        n.port_description.as_ref(),
        n.system_name.as_ref(),
        n.system_description.as_ref(),
    ];
    for t in texts.into_iter().flatten() {
        assert!(t.chars().count() <= MAX_TEXT, "{t:?}");
        assert!(!t.chars().any(char::is_control), "{t:?}");
    }
    assert!(!n.chassis_id.is_empty() && !n.port_id.is_empty());
    assert!(n.management_addresses.len() <= MAX_ADDRESSES);
    assert!(n.vlans.len() <= MAX_VLANS);
    for v in &n.vlans {
        assert!(v.name.chars().count() <= MAX_VLAN_NAME && v.id <= 0x0fff);
    }
    let json = serde_json::to_string(n).expect("serialises");
    let back: LldpNeighbor = serde_json::from_str(&json).expect("reads back");
    assert_eq!(&back, n);

    let mut link = serde_json::Map::new();
    apply(&mut link, n);
    assert!(link.len() <= 3, "{link:?}");
    if let Some(id) = link.get("switch_id").and_then(|v| v.as_str()) {
        assert_eq!(n.chassis_id_subtype, 4);
        assert_eq!(id.len(), 17, "{id}");
    }
    assert!(!apply(&mut link, n), "a second apply changed {link:?}");
}
