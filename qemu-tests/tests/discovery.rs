//! Zero-touch discovery on the lab network: `ingot serve` runs inside the lab namespace with
//! full DHCP, TFTP and the boot/agent listener on the bridge; an unknown SeaBIOS machine is
//! powered on, its iPXE ROM gets the script URL, boots our kernel and initramfs, the agent
//! looks the machine up, and it appears in the API with its MAC, disk, memory, CPUs and
//! SMBIOS identity.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use qemu_tests::netns::{BRIDGE_ADDR, Lab};
use qemu_tests::vm::{Firmware, Vm, VmSpec};
use serde_json::Value;

const API: &str = "http://127.0.0.1:6385";

/// GETs an API path from inside the lab namespace (the API listens on its loopback).
fn api_get(lab: &Lab, path: &str) -> anyhow::Result<Option<Value>> {
    let out = lab
        .command("curl")
        .args(["-s", "-f", "-H", "X-OpenStack-Ironic-API-Version: 1.115"])
        .arg(format!("{API}{path}"))
        .stdin(Stdio::null())
        .output()
        .context("running curl in the lab")?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(
        serde_json::from_slice(&out.stdout).context("API answer is not JSON")?,
    ))
}

#[test]
fn unknown_bios_machine_registers_itself() -> anyhow::Result<()> {
    qemu_tests::require_lab()?;
    let (kernel, initrd) = qemu_tests::build::agent_initramfs()?;
    let ingot = qemu_tests::build::ingot_binary()?;
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::new()?;

    let config = dir.path().join("ingot.toml");
    std::fs::write(
        &config,
        format!(
            "api_listen = \"127.0.0.1:6385\"\n\
             database = \"sqlite://{db}\"\n\
             state_dir = \"{state}\"\n\
             [netboot]\n\
             mode = \"full\"\n\
             interfaces = [\"br0\"]\n\
             server_ip = \"{BRIDGE_ADDR}\"\n\
             http_listen = \"{BRIDGE_ADDR}:8080\"\n\
             pool_start = \"172.31.250.100\"\n\
             pool_end = \"172.31.250.199\"\n\
             netmask = \"255.255.255.0\"\n\
             agent_kernel = \"{kernel}\"\n\
             agent_initramfs = \"{initrd}\"\n\
             [discovery]\n\
             enabled = true\n\
             allowed_subnets = [\"172.31.250.0/24\"]\n",
            db = dir.path().join("ingot.db").display(),
            state = dir.path().display(),
            kernel = kernel.display(),
            initrd = initrd.display(),
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
        || api_get(&lab, "/v1"),
    )?;

    let spec = VmSpec::numbered(1, Firmware::Bios);
    let (mac, serial, uuid, disk_serial) = (
        spec.mac.clone(),
        spec.smbios_serial.clone(),
        spec.smbios_uuid.clone(),
        spec.disk_serial.clone(),
    );
    let started = Instant::now();
    let mut vm = Vm::start(&mut lab, spec, dir.path())?;
    let found = qemu_tests::wait::until(
        Duration::from_secs(240),
        Duration::from_millis(250),
        "the machine to register",
        || {
            if !vm.running() {
                anyhow::bail!(
                    "the VM stopped:\n{}",
                    qemu_tests::vm::tail(&vm.serial(), 40)
                );
            }
            let ports = api_get(&lab, &format!("/v1/ports/detail?address={mac}"))?;
            Ok(ports
                .and_then(|p| p["ports"].get(0).cloned())
                .and_then(|p| p["node_uuid"].as_str().map(str::to_owned)))
        },
    )
    .map_err(|e| {
        let log = std::fs::read_to_string(dir.path().join("ingot.log")).unwrap_or_default();
        anyhow::anyhow!(
            "{e:#}\n--- serial ---\n{}\n--- ingot ---\n{}",
            qemu_tests::vm::tail(&vm.serial(), 30),
            qemu_tests::vm::tail(&log, 30)
        )
    })?;
    let registered = started.elapsed();
    println!(
        "SeaBIOS machine registered {:.1} s after power-on",
        registered.as_secs_f64()
    );

    let node = api_get(&lab, &format!("/v1/nodes/{found}"))?.context("node")?;
    assert_eq!(node["provision_state"], "enroll", "{node}");
    assert_eq!(node["properties"]["cpus"], 1, "{node}");
    let mem = node["properties"]["memory_mb"].as_u64().unwrap_or(0);
    assert!((400..=512).contains(&mem), "memory_mb {mem}");
    let inventory = api_get(&lab, &format!("/v1/nodes/{found}/inventory"))?.context("inventory")?;
    let inv = &inventory["inventory"];
    let text = inv.to_string();
    assert!(text.contains(&disk_serial), "disk serial missing: {text}");
    assert!(text.contains(&serial), "SMBIOS serial missing: {text}");
    assert!(
        text.to_lowercase().contains(&uuid),
        "SMBIOS uuid missing: {text}"
    );
    let disk_sizes: Vec<u64> = inv["disks"]
        .as_array()
        .map(|d| d.iter().filter_map(|d| d["size"].as_u64()).collect())
        .unwrap_or_default();
    assert!(disk_sizes.contains(&(2 << 30)), "disk sizes {disk_sizes:?}");
    Ok(())
}
