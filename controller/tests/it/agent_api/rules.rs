//! The operator's inspection rules (`/v1/inspection_rules`) at work: after discovery, on a
//! machine that enrolls itself, and after `inspect`, where a failing rule fails the
//! inspection with its message and changes nothing.

use proto::protocol::{Command, Report};
use reqwest::Method;
use serde_json::json;

use super::flows::manage_rules;
use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn rules_run_after_discovery_and_a_failing_rule_fails_the_inspection() {
    let env = start(manage_rules()).await;
    let (s, b) = env
        .api(
            Method::POST,
            "/v1/inspection_rules",
            Some(json!({
                "description": "BMC from the inventory, port label per NIC",
                "priority": 20,
                "conditions": [{"op": "gt", "args": {"values": ["{inventory[cpu][count]}", 1]}}],
                "actions": [
                    {"op": "set-attribute", "args": {"path": "/driver_info/ipmi_address", "value": "10.9.8.7"}},
                    {"op": "set-capability", "args": {"name": "boot_mode", "value": "{inventory[boot][current_boot_mode]}"}},
                    {"op": "add-trait", "args": {"name": "CUSTOM_RULED"}},
                    {"op": "set-port-attribute", "args": {"port_id": "{item[mac_address]}", "path": "/extra/nic", "value": "{item[name]}"},
                     "loop": "{inventory[interfaces]}"}
                ]
            })),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let lr = env
        .lookup(&lookup_req(&["52:54:00:ab:00:01"], "R1", "ur1"))
        .await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    // The built-in rules still manage it; the operator's rule ran too.
    let n = env.wait_state(id, "manageable").await;
    assert_eq!(n["driver_info"]["ipmi_address"], "10.9.8.7", "{n}");
    let (_, traits) = env
        .api(Method::GET, &format!("/v1/nodes/{id}/traits"), None)
        .await;
    assert_eq!(
        traits["traits"],
        json!(["CUSTOM_DISCOVERED", "CUSTOM_RULED"])
    );
    let (_, port) = env
        .api(
            Method::GET,
            "/v1/ports/detail?address=52:54:00:ab:00:01",
            None,
        )
        .await;
    assert_eq!(port["ports"][0]["extra"]["nic"], "eth0", "{port}");

    // A rule that fails machines with too few CPUs, then an inspection that finds one.
    let (s, b) = env
        .api(
            Method::POST,
            "/v1/inspection_rules",
            Some(json!({
                "priority": 90,
                "conditions": [{"op": "lt", "args": {"values": ["{inventory[cpu][count]}", 4]}}],
                "actions": [{"op": "fail", "args": {"msg": "only {inventory[cpu][count]} CPUs"}}]
            })),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/states/provision"),
            Some(json!({"target": "inspect"})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(cmd, Command::Inspect);
    env.wait_state(id, "inspect wait").await;
    let mut inv = inventory(&["52:54:00:ab:00:01"], "R1");
    inv.cpu.count = 2;
    let report = Report::Succeeded {
        inventory: Some(Box::new(inv)),
        detail: None,
    };
    assert_eq!(env.report(id, &token, cmd_id, report).await, 204);
    let n = env.wait_state(id, "inspect failed").await;
    assert_eq!(n["last_error"], "only 2 CPUs", "{n}");
}
