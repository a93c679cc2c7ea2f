//! The whole lifecycle through BMCs with a real OS, through the real `baremetal` CLI: in
//! one rack, a SeaBIOS machine behind `ipmi_sim` and an OVMF machine behind sushy-tools
//! (Redfish over HTTPS) side by side go through enroll (`node create` with the BMC
//! credentials, `port create`) -> manage (power read through the BMC) -> inspect (the agent
//! PXE-boots: boot device pxe + power on at the BMC; properties come back) -> provide
//! (cleaning) -> deploy of the Debian 12 image from `cargo xtask image debian`, imported
//! with `ingot image import` and deployed as `ingot://debian-12` with a config drive from
//! the API (a test SSH key, user data that writes a marker, a static address) -> `active`
//! -> the machine boots Debian from its disk, cloud-init installs the key and the test
//! logs in over SSH inside the lab and reads the marker back -> undeploy -> cleaning ->
//! `available` -> power off; then, from the host, no partition table or filesystem
//! signature is left on the disk. Prints each machine's phase durations and the deploy
//! throughput (image bytes / the agent's write time).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use qemu_tests::disk_check::{check_wiped, partitions, read_config_drive};
use qemu_tests::power::{BootDevice, PowerEvent};
use qemu_tests::rack::bmc::{BmcMachine, StoredImage};
use qemu_tests::rack::steps::{self, WriteFigures, driver_info_args};
use qemu_tests::rack::{Rack, RackOptions, Timeline};
use qemu_tests::ssh::SshKey;
use qemu_tests::vm::{Firmware, VmSpec, tail};
use serde_json::json;

/// Power-on (after the deploy's reboot) to an SSH login that shows the marker: TCG, two
/// machines on two shared cores (300-330 s were measured at a load average of 17).
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// The user cloud-init creates in the Debian image.
const OS_USER: &str = "debian";
const MARKER_FILE: &str = "/var/lib/ingot-marker";

/// One machine's run: its BMC, static address and marker.
struct Case<'a> {
    bmc: &'a BmcMachine,
    ip: String,
    marker: String,
}

fn config_drive(case: &Case<'_>, node: &str, key: &SshKey) -> serde_json::Value {
    let spec = case.bmc.machine().spec();
    json!({
        "meta_data": {
            "uuid": node,
            "name": spec.name,
            "hostname": spec.name,
            "public_keys": {"ingot-test": key.public},
        },
        "user_data": format!(
            "#cloud-config\nwrite_files:\n  - path: {MARKER_FILE}\n    permissions: '0644'\n    content: |\n      {}\n",
            case.marker
        ),
        "network_data": {
            "links": [{"id": "nic0", "type": "phy", "ethernet_mac_address": spec.mac, "mtu": 1500}],
            "networks": [{
                "id": "net0", "type": "ipv4", "link": "nic0",
                "ip_address": case.ip, "netmask": "255.255.255.0",
            }],
            "services": [],
        },
    })
}

/// One machine through the lifecycle; returns its timeline and the agent's write figures.
fn lifecycle(
    rack: &Rack,
    case: &Case<'_>,
    image: &StoredImage,
    key: &SshKey,
) -> anyhow::Result<(Timeline, WriteFigures)> {
    let bmc = case.bmc;
    let m = bmc.machine();
    let spec = m.spec();
    let mut t = Timeline::new(&bmc.label());
    let info = driver_info_args(&bmc.driver_info());
    let caps = format!("capabilities=boot_mode:{}", m.boot_mode());
    let node = t.phase("enroll", || {
        rack.enroll(&spec.name, bmc.driver(), &info, &[caps], &spec.mac)
    })?;
    let node = node.as_str();
    let managed = t.phase("manage", || rack.manage(node))?;
    ensure!(managed["power_state"] == "power off", "{managed}");
    ensure!(
        managed["driver_info"][format!("{}_password", bmc.driver())] == "******",
        "the BMC password is shown: {}",
        managed["driver_info"]
    );
    t.phase("inspect", || rack.inspect(node))?;
    let events = m.events();
    ensure!(
        events.iter().any(|e| matches!(
            e,
            PowerEvent::On(BootDevice::Pxe) | PowerEvent::Reset(BootDevice::Pxe)
        )),
        "inspection did not network-boot the machine: {events:?}"
    );
    t.phase("provide (clean)", || rack.provide(node))?;
    let cd = config_drive(case, node, key);
    let source = [format!("image_source={}", image.source())];
    let (active, progress) = t.phase("deploy", || {
        let (active, progress) = rack.watching_progress(node, || rack.deploy(node, &source, &cd));
        Ok((active?, progress))
    })?;
    // The write was visible in the API while it ran.
    let writing: Vec<&serde_json::Value> = progress
        .iter()
        .filter(|p| {
            p["bytes_written"]
                .as_u64()
                .is_some_and(|b| b > 0 && b < image.size)
        })
        .collect();
    ensure!(
        !writing.is_empty(),
        "no partial write progress in the node while deploying: {progress:?}"
    );
    println!(
        "[{}] {} progress reports in the API during the deploy, e.g. {}",
        t.label,
        writing.len(),
        writing[writing.len() / 2]
    );
    let figures = WriteFigures::from_node(&active)?;
    ensure!(
        figures.bytes_written == image.size,
        "agent wrote {} bytes of a {}-byte image",
        figures.bytes_written,
        image.size
    );
    println!(
        "[{}] agent write phases (ms): {}",
        t.label, active["driver_internal_info"]["agent_last_result"]["timings"]
    );
    // The deploy's last act was boot device disk + reboot: Debian comes up from the disk.
    let booted = Instant::now();
    t.phase("boot Debian to SSH", || {
        key.wait_for(
            rack.lab_name(),
            OS_USER,
            &case.ip,
            &format!("cat {MARKER_FILE}"),
            &case.marker,
            BOOT_TIMEOUT,
            &|| m.is_on(),
        )
    })?;
    println!(
        "[{}] SSH login with the cloud-init marker {:.1} s after the deploy ended",
        t.label,
        booted.elapsed().as_secs_f64()
    );
    let (device, _) = m.boot_device();
    ensure!(
        device == BootDevice::Disk,
        "boot device after deploy: {device:?}"
    );
    ensure!(
        m.serial().contains("grub: loading linux"),
        "grub did not boot from the disk"
    );
    // While active: GPT with the image's partitions and the config drive the agent added.
    let disk = m.disk_path();
    let parts = partitions(&disk)?;
    ensure!(
        parts.len() == 4,
        "want bios-boot, ESP, root, config drive: {parts:?}"
    );
    let cd_part = parts[3];
    let (meta, user) = read_config_drive(&disk, cd_part.start, cd_part.len, &m.dir().join("cd"))?;
    ensure!(meta.contains(&key.public), "public key missing: {meta}");
    ensure!(user.contains(&case.marker), "user_data: {user}");
    t.phase("undeploy (clean)", || rack.undeploy(node))?;
    t.phase("power off", || rack.power_off(node))?;
    ensure!(!m.is_on(), "{}: QEMU still runs after power off", spec.name);
    let offsets: Vec<u64> = parts.iter().map(|p| p.start).collect();
    check_wiped(&disk, &offsets)?;
    rack.ensure_no_error(node)?;
    Ok((t, figures))
}

#[test]
fn ipmi_and_redfish_machines_deploy_debian_and_cloud_init_lets_ssh_in() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let debian = qemu_tests::build::debian_image()?;
    let mut rack = Rack::start(RackOptions::default())?;
    let t0 = Instant::now();
    let image = rack.import_image(&debian, "debian-12")?;
    print!("{}", image.import_output);
    println!("image import: {:.1} s", t0.elapsed().as_secs_f64());
    let key = SshKey::generate(rack.dir(), "ingot-bmc-lifecycle-test")?;
    let mut specs = [
        VmSpec::numbered(1, Firmware::Bios),
        VmSpec::numbered(2, Firmware::Uefi),
    ];
    for s in &mut specs {
        // Debian with cloud-init (python) wants more than the agent's 512 MiB.
        s.mem_mib = 768;
    }
    let [bios, uefi] = specs;
    let ipmi = rack.add_ipmi_machine(bios)?;
    let redfish = rack.add_redfish_machine(uefi)?;
    let cases: Vec<Case<'_>> = [&ipmi, &redfish]
        .into_iter()
        .enumerate()
        .map(|(i, bmc)| Case {
            bmc,
            // Outside the rack's DHCP pool (.100-.199).
            ip: format!("172.31.250.{}", 21 + i),
            marker: format!("INGOT-MARKER-{}", uuid::Uuid::new_v4().simple()),
        })
        .collect();

    let (rack, image, key) = (&rack, &image, &key);
    let results = steps::side_by_side(&cases, |c| lifecycle(rack, c, image, key));
    let mut timelines = Vec::new();
    let mut failures = Vec::new();
    for (r, c) in results.into_iter().zip(&cases) {
        match r {
            Ok((t, figures)) => {
                println!("{}", figures.summary(&t.label));
                timelines.push(t);
            }
            Err(e) => failures.push(format!(
                "{e:#}\n--- {} serial ---\n{}\n--- BMC ---\n{}",
                c.bmc.label(),
                tail(&c.bmc.machine().serial(), 40),
                tail(&c.bmc.log(), 10)
            )),
        }
    }
    println!(
        "image {} MiB raw, {} MiB stored; load average {}",
        image.size >> 20,
        image.stored_size >> 20,
        std::fs::read_to_string("/proc/loadavg")
            .context("reading the load average")?
            .trim()
    );
    rack.conclude(&timelines, &failures)
}
