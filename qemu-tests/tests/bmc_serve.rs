//! `ingot serve` inside the lab manages lab machines through their BMCs, given only the
//! `driver_info` an operator would: an IPMI SeaBIOS machine and a Redfish OVMF machine are
//! enrolled over the API, `manage` reads their power state through the BMC, the boot device
//! is set to PXE and they are powered on (the firmware tries the NIC first), then off (QEMU
//! gone, the API says `power off`).

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use qemu_tests::bmc::{IpmiBmc, RedfishBmc};
use qemu_tests::netns::Lab;
use qemu_tests::power::{BootDevice, Machine};
use qemu_tests::vm::{Firmware, VmSpec};
use serde_json::{Value, json};

const API: &str = "http://127.0.0.1:6385";

/// One API call from inside the lab (the API listens on its loopback).
fn api(lab: &Lab, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    let mut cmd = lab.command("curl");
    cmd.args([
        "-sS",
        "-X",
        method,
        "-H",
        "X-OpenStack-Ironic-API-Version: 1.115",
    ])
    .args(["-w", "\n%{http_code}"]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", &b.to_string()]);
    }
    let out = cmd
        .arg(format!("{API}{path}"))
        .stdin(Stdio::null())
        .output()
        .context("running curl in the lab")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').context("curl output")?;
    let code: u16 = code.trim().parse().unwrap_or(0);
    anyhow::ensure!(
        (200..300).contains(&code),
        "{method} {path}: HTTP {code} {body}"
    );
    Ok(serde_json::from_str(body).unwrap_or(Value::Null))
}

fn wait_node(lab: &Lab, uuid: &str, key: &str, want: &str) -> anyhow::Result<Value> {
    qemu_tests::wait::until(
        Duration::from_secs(60),
        Duration::from_millis(300),
        &format!("{key} = {want}"),
        || {
            let n = api(lab, "GET", &format!("/v1/nodes/{uuid}"), None)?;
            if n["last_error"].is_string() && n["provision_state"] == "enroll" {
                anyhow::bail!("node failed: {}", n["last_error"]);
            }
            Ok((n[key] == want).then_some(n))
        },
    )
}

fn enroll(lab: &Lab, name: &str, driver: &str, info: Value, m: &Machine) -> anyhow::Result<String> {
    let node = api(
        lab,
        "POST",
        "/v1/nodes",
        Some(&json!({
            "name": name, "driver": driver, "driver_info": info,
            "properties": {"capabilities": format!("boot_mode:{}", m.boot_mode())},
        })),
    )?;
    let uuid = node["uuid"].as_str().context("node uuid")?.to_owned();
    api(
        lab,
        "PUT",
        &format!("/v1/nodes/{uuid}/states/provision"),
        Some(&json!({"target": "manage"})),
    )?;
    let n = wait_node(lab, &uuid, "provision_state", "manageable")?;
    assert_eq!(n["power_state"], "power off", "{n}");
    assert_eq!(n["driver_info"][format!("{driver}_password")], "******");
    api(
        lab,
        "PUT",
        &format!("/v1/nodes/{uuid}/management/boot_device"),
        Some(&json!({"boot_device": "pxe", "persistent": true})),
    )?;
    assert_eq!(m.boot_device().0, BootDevice::Pxe);
    Ok(uuid)
}

#[test]
fn ingot_serve_manages_lab_machines_through_ipmi_and_redfish() -> anyhow::Result<()> {
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
            "api_listen = \"127.0.0.1:6385\"\ndatabase = \"sqlite://{}\"\nstate_dir = \"{}\"\n",
            dir.path().join("ingot.db").display(),
            dir.path().display(),
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("ingot.log"))?;
    let server = lab
        .command(ingot.to_str().context("ingot path")?)
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting ingot serve in the lab")?;
    lab.adopt(server);
    qemu_tests::wait::until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        "the API",
        || Ok(api(&lab, "GET", "/v1", None).ok()),
    )?;

    let result = (|| -> anyhow::Result<()> {
        let machines = [
            (
                enroll(&lab, "ipmi-1", "ipmi", ipmi.driver_info(), ipmi.machine())?,
                ipmi.machine(),
            ),
            (
                enroll(
                    &lab,
                    "redfish-2",
                    "redfish",
                    redfish.driver_info(),
                    redfish.machine(),
                )?,
                redfish.machine(),
            ),
        ];
        let marks: Vec<usize> = machines.iter().map(|(_, m)| m.serial_mark()).collect();
        for (uuid, _) in &machines {
            api(
                &lab,
                "PUT",
                &format!("/v1/nodes/{uuid}/states/power"),
                Some(&json!({"target": "power on"})),
            )?;
        }
        for ((uuid, m), mark) in machines.iter().zip(marks) {
            wait_node(&lab, uuid, "power_state", "power on")?;
            let (first, t) = m.wait_first_boot(mark, Duration::from_secs(90))?;
            assert_eq!(first, BootDevice::Pxe, "{}", m.spec().name);
            println!(
                "{}: network boot tried {:.1} s after QEMU started",
                m.spec().name,
                t.as_secs_f64()
            );
        }
        for (uuid, m) in &machines {
            let pid = m.pid().context("pid")?;
            api(
                &lab,
                "PUT",
                &format!("/v1/nodes/{uuid}/states/power"),
                Some(&json!({"target": "power off"})),
            )?;
            wait_node(&lab, uuid, "power_state", "power off")?;
            assert!(!m.is_on());
            assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        }
        Ok(())
    })();
    result.map_err(|e| {
        let log = std::fs::read_to_string(dir.path().join("ingot.log")).unwrap_or_default();
        e.context(format!(
            "--- ingot ---\n{}\n--- sushy ---\n{}",
            qemu_tests::vm::tail(&log, 30),
            qemu_tests::vm::tail(&redfish.log(), 20)
        ))
    })
}
