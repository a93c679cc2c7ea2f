//! The real OS proof: the Debian 12 image from `cargo xtask image debian` boots under SeaBIOS
//! (`-machine pc`, virtio-blk) and under OVMF (`-machine q35`, NVMe), cloud-init configures
//! it from a `config-2` config drive (the agent's own writer builds the ISO: SSH key in
//! `meta_data.json`, a static address in `network_data.json`, `user_data` that writes a
//! marker file), and the test logs in over SSH inside the lab namespace and reads the
//! marker back. Both machines boot at once; each one's power-on-to-SSH time is printed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agent::configdrive::ConfigDrive;
use anyhow::{Context, bail};
use qemu_tests::netns::{BRIDGE_ADDR, Lab};
use qemu_tests::vm::{Firmware, Vm, VmSpec, tail};
use serde_json::json;

/// Longest wait from power-on to a working SSH login (TCG, two VMs on two cores).
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

struct Machine {
    vm: Vm,
    ip: String,
    marker: String,
}

/// Generates the test's SSH key pair; returns (private key path, public key line).
fn ssh_key(dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let key = dir.join("id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "ingot-os-image-test",
            "-f",
        ])
        .arg(&key)
        .stdin(Stdio::null())
        .status()
        .context("running ssh-keygen (openssh-client)")?;
    if !st.success() {
        bail!("ssh-keygen failed");
    }
    let public = std::fs::read_to_string(dir.join("id_ed25519.pub"))?;
    Ok((key, public.trim().to_owned()))
}

/// The config drive of machine `n`: key, static address, marker.
fn config_drive(
    n: u8,
    mac: &str,
    ip: &str,
    public_key: &str,
    marker: &str,
) -> anyhow::Result<Vec<u8>> {
    let user_data = format!(
        "#cloud-config\nwrite_files:\n  - path: /var/lib/ingot-marker\n    permissions: '0644'\n    content: |\n      {marker}\n"
    );
    ConfigDrive {
        meta_data: json!({
            "uuid": format!("1ab0c0de-0000-4000-8000-{n:012x}"),
            "name": format!("os-image-{n}"),
            "hostname": format!("os-image-{n}"),
            "public_keys": {"ingot-test": public_key},
        }),
        user_data: Some(user_data.into_bytes()),
        network_data: Some(json!({
            "links": [{"id": "nic0", "type": "phy", "ethernet_mac_address": mac, "mtu": 1500}],
            "networks": [{
                "id": "net0", "type": "ipv4", "link": "nic0",
                "ip_address": ip, "netmask": "255.255.255.0",
            }],
            "services": [],
        })),
    }
    .build()
}

/// Starts machine `n` from a copy of the image with its config drive as a second disk.
fn start(
    lab: &mut Lab,
    dir: &Path,
    image: &Path,
    n: u8,
    firmware: Firmware,
    public_key: &str,
) -> anyhow::Result<Machine> {
    let mut spec = VmSpec::numbered(n, firmware);
    spec.mem_mib = 768;
    spec.disk_image = Some(image.to_path_buf());
    let ip = format!("172.31.250.{}", 20 + n);
    let marker = format!("INGOT-MARKER-{n}-{}", uuid::Uuid::new_v4().simple());
    let iso = dir.join(format!("configdrive-{n}.iso"));
    std::fs::write(&iso, config_drive(n, &spec.mac, &ip, public_key, &marker)?)?;
    let drive = format!(
        "file={},format=raw,if=none,id=cd0,readonly=on",
        iso.display()
    );
    let device = match firmware {
        Firmware::Bios => "virtio-blk-pci,drive=cd0,id=cdisk".to_owned(),
        _ => "nvme,drive=cd0,id=cdisk,serial=CONFIG-DRIVE".to_owned(),
    };
    // Start paused: the disk must boot first (nothing answers PXE here).
    spec.extra_args = vec![
        "-drive".into(),
        drive,
        "-device".into(),
        device,
        "-S".into(),
    ];
    let mut vm = Vm::start(lab, spec, dir)?;
    disk_first(&vm)?;
    vm.started = Instant::now();
    Ok(Machine { vm, ip, marker })
}

/// Moves the disk before the NIC in the boot order of a paused VM, then runs it.
fn disk_first(vm: &Vm) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while vm.qmp("query-status", None).is_err() {
        if Instant::now() > deadline {
            bail!("{}: QMP did not come up", vm.spec.name);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (dev, index) in [("nic0", 9), ("disk0", 1)] {
        vm.qmp(
            "qom-set",
            Some(json!({"path": format!("/machine/peripheral/{dev}"), "property": "bootindex", "value": index})),
        )?;
    }
    vm.qmp("system_reset", None)?;
    vm.qmp("cont", None)?;
    Ok(())
}

/// Runs `cat` of the marker over SSH inside the lab; the output, if the login worked.
fn ssh_marker(lab: &Lab, key: &Path, ip: &str) -> anyhow::Result<String> {
    let out = lab
        .command("ssh")
        .args([
            "-i",
            &key.display().to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
            &format!("debian@{ip}"),
            "cat /var/lib/ingot-marker",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running ssh")?;
    if !out.status.success() {
        bail!("ssh: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls SSH until the marker comes back; returns the seconds since power-on.
fn wait_for_login(lab: &Lab, key: &Path, m: &mut Machine) -> anyhow::Result<f64> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        if !m.vm.running() {
            bail!(
                "{} stopped\n--- serial ---\n{}",
                m.vm.spec.name,
                tail(&m.vm.serial(), 60)
            );
        }
        let last = match ssh_marker(lab, key, &m.ip) {
            Ok(out) if out.contains(&m.marker) => {
                return Ok(m.vm.started.elapsed().as_secs_f64());
            }
            Ok(out) => format!("logged in, no marker yet: {out}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "{} ({:?}): no SSH login with the marker after {BOOT_TIMEOUT:?}; last: {last}\n--- serial ---\n{}",
                m.vm.spec.name,
                m.vm.spec.firmware,
                tail(&m.vm.serial(), 60)
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[test]
fn debian_image_boots_on_seabios_and_ovmf_and_cloud_init_lets_ssh_in() -> anyhow::Result<()> {
    qemu_tests::require_lab()?;
    let image = qemu_tests::build::debian_image()?;
    let dir = tempfile::tempdir()?;
    let (key, public_key) = ssh_key(dir.path())?;
    let mut lab = Lab::new()?;
    let bios = start(&mut lab, dir.path(), &image, 1, Firmware::Bios, &public_key)?;
    let uefi = start(&mut lab, dir.path(), &image, 2, Firmware::Uefi, &public_key)?;
    let lab = &lab;
    let key = key.as_path();
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = [bios, uefi]
            .into_iter()
            .map(|mut m| s.spawn(move || (wait_for_login(lab, key, &mut m), m)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("waiter panicked")))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut failures = Vec::new();
    for (result, m) in &results {
        match result {
            Ok(secs) => {
                let serial = m.vm.serial();
                assert!(
                    serial.contains("grub: loading linux"),
                    "{}: grub did not print on the serial console",
                    m.vm.spec.name
                );
                println!(
                    "os_image: {:?} ({}): power-on to SSH login with the cloud-init marker: {secs:.1} s",
                    m.vm.spec.firmware, m.vm.spec.name
                );
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n\n"));
    }
    assert_eq!(
        BRIDGE_ADDR, "172.31.250.1",
        "the static addresses assume the lab subnet"
    );
    Ok(())
}
