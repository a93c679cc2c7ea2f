//! BMC faults through the real `baremetal` CLI against `ingot serve` in a rack, next to a
//! real `ipmi_sim` and a real sushy-tools BMC: `manage` with a wrong password or with a BMC
//! that does not answer leaves the node in `enroll` with a clear `last_error` that never
//! contains the password, within a bounded time; the right credentials (before, and after
//! the operator fixes `driver_info`) make the same node `manageable`.

use std::time::{Duration, Instant};

use anyhow::Context;
use qemu_tests::bmc::PASSWORD;
use qemu_tests::rack::steps::{driver_info_args, uuid_of};
use qemu_tests::rack::{Rack, RackOptions};
use qemu_tests::vm::{Firmware, VmSpec};
use serde_json::{Value, json};

/// The password the faulty nodes are enrolled with.
const WRONG: &str = "Wr0ng-bmc-Secret";
/// An address on the lab bridge's subnet that no host answers (ARP fails): a dead BMC.
const DEAD_ADDRESS: &str = "172.31.250.254";
/// The longest a failing `manage` may take: ipmi 3 attempts x 2 s per request, Redfish
/// 30 s connect timeout, plus margin for a loaded CI machine.
const MANAGE_BUDGET: Duration = Duration::from_secs(75);

/// `baremetal node manage`, then waits until the node is stable again; returns it and the
/// time taken.
fn manage(rack: &Rack, uuid: &str) -> anyhow::Result<(Value, Duration)> {
    let t0 = Instant::now();
    rack.baremetal(&["node", "manage", uuid])?;
    let node = qemu_tests::wait::until(
        MANAGE_BUDGET,
        Duration::from_millis(100),
        "manage to end",
        || {
            let n = rack.node(uuid)?;
            let busy = !n["target_provision_state"].is_null()
                || n["provision_state"] == "verifying"
                || !n["reservation"].is_null();
            Ok((!busy).then_some(n))
        },
    )?;
    Ok((node, t0.elapsed()))
}

/// Asserts a failed `manage`: back in `enroll`, an error naming `expect`, no secret.
fn assert_enroll_failed(node: &Value, expect: &[&str], log: &str) {
    assert_eq!(node["provision_state"], "enroll", "{node}");
    let err = node["last_error"].as_str().unwrap_or_default();
    assert!(!err.is_empty(), "no last_error: {node}");
    assert!(
        expect.iter().any(|e| err.to_lowercase().contains(e)),
        "last_error does not say {expect:?}: {err}"
    );
    let text = node.to_string();
    assert!(
        !text.contains(WRONG) && !text.contains(PASSWORD),
        "a password in the node: {text}"
    );
    assert!(
        !log.contains(WRONG) && !log.contains(PASSWORD),
        "a password in the controller's log"
    );
}

#[test]
fn wrong_password_and_dead_bmc_leave_nodes_in_enroll() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let mut rack = Rack::start(RackOptions {
        log_filter: "debug".to_owned(),
        ..RackOptions::default()
    })?;
    let ipmi = rack.add_ipmi_machine(VmSpec::numbered(1, Firmware::Bios))?;
    let redfish = rack.add_redfish_machine(VmSpec::numbered(2, Firmware::Uefi))?;
    let log = || rack.ingot_log();

    let with = |info: &Value, key: &str, value: &str| {
        let mut i = info.clone();
        i[key] = json!(value);
        i
    };
    let good_ipmi = ipmi.driver_info();
    let good_redfish = redfish.driver_info();
    let cases = [
        ("ipmi-good", "ipmi", good_ipmi.clone(), None),
        (
            "ipmi-wrong-password",
            "ipmi",
            with(&good_ipmi, "ipmi_password", WRONG),
            Some(&["wrong username or password"][..]),
        ),
        (
            "ipmi-dead",
            "ipmi",
            with(
                &with(&good_ipmi, "ipmi_address", DEAD_ADDRESS),
                "ipmi_password",
                WRONG,
            ),
            Some(&["no answer", "unreachable", "timed out", "timeout"][..]),
        ),
        ("redfish-good", "redfish", good_redfish.clone(), None),
        (
            "redfish-wrong-password",
            "redfish",
            with(&good_redfish, "redfish_password", WRONG),
            Some(&["wrong username or password"][..]),
        ),
        (
            "redfish-dead",
            "redfish",
            with(
                &with(
                    &good_redfish,
                    "redfish_address",
                    &format!("https://{DEAD_ADDRESS}"),
                ),
                "redfish_password",
                WRONG,
            ),
            Some(&["unreachable", "timed out", "timeout", "connect"][..]),
        ),
    ];

    // Every node is managed at once: one slow BMC must not hold up the others.
    let mut uuids = Vec::new();
    for (name, driver, info, _) in &cases {
        let mut args = vec!["node", "create", "--driver", driver, "--name", name];
        let info = driver_info_args(info);
        for i in &info {
            args.extend(["--driver-info", i]);
        }
        uuids.push(uuid_of(&rack.baremetal_json(&args)?)?);
    }
    let results: Vec<anyhow::Result<(Value, Duration)>> = std::thread::scope(|s| {
        let handles: Vec<_> = uuids.iter().map(|u| s.spawn(|| manage(&rack, u))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
            })
            .collect()
    });
    for ((name, _, _, expect), result) in cases.iter().zip(results) {
        let (node, took) =
            result.with_context(|| format!("{name}:\n{}", qemu_tests::vm::tail(&log(), 30)))?;
        println!(
            "{name}: manage -> {} in {:.1} s; last_error: {}",
            node["provision_state"],
            took.as_secs_f64(),
            node["last_error"]
        );
        match expect {
            None => {
                assert_eq!(node["provision_state"], "manageable", "{name}: {node}");
                assert_eq!(node["power_state"], "power off", "{name}: {node}");
                assert!(node["last_error"].is_null(), "{name}: {node}");
            }
            Some(expect) => assert_enroll_failed(&node, expect, &log()),
        }
    }

    // The operator fixes the password: the same node manages.
    let fixed = &uuids[1];
    let fix = format!("ipmi_password={PASSWORD}");
    rack.baremetal(&["node", "set", fixed, "--driver-info", &fix])?;
    let (node, took) = manage(&rack, fixed)?;
    println!(
        "ipmi-wrong-password fixed: manage -> {} in {:.1} s",
        node["provision_state"],
        took.as_secs_f64()
    );
    assert_eq!(node["provision_state"], "manageable", "{node}");
    assert!(node["last_error"].is_null(), "{node}");
    assert!(!log().contains(WRONG) && !log().contains(PASSWORD));
    Ok(())
}
