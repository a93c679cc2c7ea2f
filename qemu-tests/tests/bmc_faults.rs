//! BMC faults through the API of an `ingot serve` running in the lab namespace, next to a
//! real `ipmi_sim` and a real sushy-tools BMC: `manage` with a wrong password or with a BMC
//! that does not answer leaves the node in `enroll` with a clear `last_error` that never
//! contains the password, within a bounded time; the right credentials (before, and after
//! the operator fixes `driver_info`) make the same node `manageable`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qemu_tests::bmc::{IpmiBmc, PASSWORD, RedfishBmc};
use qemu_tests::netns::Lab;
use qemu_tests::vm::{Firmware, VmSpec};
use serde_json::{Value, json};

const API: &str = "http://127.0.0.1:6385";
/// The password the faulty nodes are enrolled with.
const WRONG: &str = "Wr0ng-bmc-Secret";
/// An address on the lab bridge's subnet that no host answers (ARP fails): a dead BMC.
const DEAD_ADDRESS: &str = "172.31.250.254";
/// The longest a failing `manage` may take: ipmi 3 attempts x 2 s per request, Redfish
/// 30 s connect timeout, plus margin for a loaded CI machine.
const MANAGE_BUDGET: Duration = Duration::from_secs(75);

/// The operator API inside the lab, spoken with curl in the namespace.
struct Api<'a> {
    lab: &'a Lab,
}

impl Api<'_> {
    /// One request; returns the HTTP status and the JSON body (Null when empty).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let mut cmd = self.lab.command("curl");
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .args(["-H", "X-OpenStack-Ironic-API-Version: 1.115"])
            .args(["-H", "Content-Type: application/json"]);
        if let Some(b) = body {
            cmd.args(["-d", &b.to_string()]);
        }
        let out = cmd
            .arg(format!("{API}{path}"))
            .stdin(Stdio::null())
            .output()
            .context("running curl in the lab")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code: u16 = code.trim().parse().unwrap_or(0);
        let body = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).with_context(|| format!("not JSON: {body}"))?
        };
        Ok((code, body))
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (code, v) = self.call(method, path, body)?;
        if !(200..300).contains(&code) {
            bail!("{method} {path}: {code} {v}");
        }
        Ok(v)
    }

    fn create(&self, name: &str, driver: &str, info: &Value) -> anyhow::Result<String> {
        let node = self.ok(
            "POST",
            "/v1/nodes",
            Some(&json!({"name": name, "driver": driver, "driver_info": info})),
        )?;
        Ok(node["uuid"].as_str().context("node uuid")?.to_owned())
    }

    /// `manage`, then waits until the node is stable again; returns it and the time taken.
    fn manage(&self, uuid: &str) -> anyhow::Result<(Value, Duration)> {
        let t0 = Instant::now();
        self.ok(
            "PUT",
            &format!("/v1/nodes/{uuid}/states/provision"),
            Some(&json!({"target": "manage"})),
        )?;
        let node = qemu_tests::wait::until(
            MANAGE_BUDGET,
            Duration::from_millis(100),
            "manage to end",
            || {
                let n = self.ok("GET", &format!("/v1/nodes/{uuid}"), None)?;
                let busy = !n["target_provision_state"].is_null()
                    || n["provision_state"] == "verifying"
                    || !n["reservation"].is_null();
                Ok((!busy).then_some(n))
            },
        )?;
        Ok((node, t0.elapsed()))
    }
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
    qemu_tests::require_lab()?;
    let ingot = qemu_tests::build::ingot_binary()?;
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::new()?;
    let ipmi = IpmiBmc::start(&mut lab, VmSpec::numbered(1, Firmware::Bios), dir.path())?;
    let redfish = RedfishBmc::start(&mut lab, VmSpec::numbered(2, Firmware::Uefi), dir.path())?;

    let config = dir.path().join("ingot.toml");
    std::fs::write(
        &config,
        format!(
            "api_listen = \"127.0.0.1:6385\"\n\
             database = \"sqlite://{db}\"\n\
             state_dir = \"{state}\"\n",
            db = dir.path().join("ingot.db").display(),
            state = dir.path().display(),
        ),
    )?;
    let log_path = dir.path().join("ingot.log");
    let server = lab
        .command(ingot.to_str().context("ingot path")?)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .context("starting ingot serve in the lab")?;
    lab.adopt(server);
    let api = Api { lab: &lab };
    qemu_tests::wait::until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        "the API",
        || Ok(api.call("GET", "/v1", None).ok().filter(|(c, _)| *c == 200)),
    )?;
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

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
        uuids.push(api.create(name, driver, info)?);
    }
    let results: Vec<anyhow::Result<(Value, Duration)>> = std::thread::scope(|s| {
        let handles: Vec<_> = uuids.iter().map(|u| s.spawn(|| api.manage(u))).collect();
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
    api.ok(
        "PATCH",
        &format!("/v1/nodes/{fixed}"),
        Some(&json!([{"op": "replace", "path": "/driver_info/ipmi_password", "value": PASSWORD}])),
    )?;
    let (node, took) = api.manage(fixed)?;
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
