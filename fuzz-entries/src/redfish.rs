//! `redfish`: one response body from a Redfish BMC into the controller's `redfish` driver:
//! the error message the client reports (`client::redfish_message`), then, as the JSON the
//! client parses, what the driver reads from it (`only_system` of `/redfish/v1/Systems`,
//! `power_of`, `boot_override`, the boot mode, the reset request for every power target).
//! A JSON object is also tried as a node's `driver_info` (`RedfishInfo::parse`,
//! `IpmiInfo::parse`), which comes from the operator API.
//!
//! Invariants: an error message is at most 300 characters; a chosen ResetType is the one
//! asked for or one of its fallbacks.

use chrono::{TimeZone as _, Utc};
use controller::drivers::PowerTarget;
use controller::drivers::ipmi::IpmiInfo;
use controller::drivers::redfish::info::{
    RedfishInfo, boot_mode_from_redfish, reset_fallbacks, reset_type,
};
use controller::drivers::redfish::{boot_override, client, only_system, power_of, reset_request};
use controller::model::Node;
use serde_json::Value;
use uuid::Uuid;

/// Entry point.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(m) = client::redfish_message(&text) {
        assert!(m.chars().count() <= 300, "overlong error message");
    }
    let Ok(doc) = serde_json::from_str::<Value>(&text) else {
        return;
    };
    let bmc = "https://10.0.0.9";
    let _ = only_system(&doc, bmc);
    let power = power_of(&doc);
    let _ = boot_override(&doc);
    let _ = doc
        .pointer("/Boot/BootSourceOverrideMode")
        .and_then(Value::as_str)
        .and_then(boot_mode_from_redfish);
    for target in PowerTarget::ALL {
        let Some(reset) = reset_type(target, power) else {
            continue;
        };
        if let Ok((_url, chosen)) = reset_request(&doc, "/redfish/v1/Systems/1", bmc, reset) {
            assert!(
                chosen == reset || reset_fallbacks(reset).contains(&chosen),
                "{chosen} chosen for {reset}"
            );
        }
    }
    if let Value::Object(map) = doc {
        let when = Utc
            .timestamp_opt(1_800_000_000, 0)
            .single()
            .unwrap_or_default();
        let mut node = Node::new(Uuid::from_u128(7), "redfish", when);
        node.driver_info = map;
        if let Ok(info) = RedfishInfo::parse(&node) {
            let _ = info.system_path();
        }
        let _ = IpmiInfo::parse(&node);
    }
}
