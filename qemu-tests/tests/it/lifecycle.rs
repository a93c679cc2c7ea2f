//! The whole lifecycle on lab machines through the real `baremetal` CLI, a SeaBIOS and an
//! OVMF machine at once in one rack: enroll (driver + driver_info, port) -> manage ->
//! inspect (the agent boots over PXE and reports its inventory) -> provide (cleaning by the
//! agent: metadata wipe) -> deploy (a zstd image over HTTP with its sha256, and a config
//! drive) -> `active` -> the machine boots its disk (marker on the serial console) ->
//! undeploy -> cleaning -> `available` -> power off, and the disk is checked from the host:
//! while active it holds the image and the config drive, after release no partition table
//! or filesystem signature is left.
//!
//! The lab runs with fast track on (`[deploy] fast_track`, in the rack's config): the agent
//! that inspected the machine also cleans and deploys it. The second test runs one machine
//! with fast track off: every step boots the agent through the controller's power driver,
//! and each boot's agent gets a token of its own.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use qemu_tests::disk_check::{
    check_wiped, ensure_zero_at, mbr_partitions, probe, read_config_drive,
};
use qemu_tests::marker_disk::{self, BIOS_MARKER, MarkerDisk, UEFI_MARKER};
use qemu_tests::rack::steps::WriteFigures;
use qemu_tests::rack::{Machine, Rack, RackOptions, Timeline};
use qemu_tests::vm::{Firmware, VmSpec};
use serde_json::json;

/// Size of the deploy image (raw).
const IMAGE_MIB: u64 = 64;
const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIngotLifecycleTestKeyOnlyForTheLab lab@ingot";
const USER_DATA: &str = "#cloud-config\nruncmd:\n  - echo INGOT-USER-DATA-RAN\n";

/// The image as the machines download it.
struct Published {
    disk: MarkerDisk,
    url: String,
}

/// Checks the deployed disk from the host: the image bytes (the MBR's partition table
/// excepted, the agent adds the config drive there), the ESP, and the config drive with
/// the key and user data. Returns the config drive's offset.
fn check_deployed_disk(m: &Machine, image: &MarkerDisk) -> anyhow::Result<u64> {
    let want = std::fs::read(&image.raw)?;
    let mut f = std::fs::File::open(&m.disk)?;
    let mut got = vec![0u8; want.len()];
    std::io::Read::read_exact(&mut f, &mut got)?;
    ensure!(
        got[..446] == want[..446],
        "boot code differs from the image"
    );
    let first_diff = (512..want.len()).find(|&i| got[i] != want[i]);
    ensure!(
        first_diff.is_none(),
        "disk differs from the image at byte {first_diff:?}"
    );
    let parts = mbr_partitions(&got);
    ensure!(
        parts.len() == 3,
        "want ESP, filler and config drive: {parts:?}"
    );
    let esp = probe(&m.disk, parts[0].start)?.unwrap_or_default();
    ensure!(esp.contains("TYPE=vfat"), "ESP not found: {esp}");
    let cd = parts[2];
    let (meta, user) = read_config_drive(&m.disk, cd.start, cd.len, &m.dir.join("configdrive"))?;
    ensure!(meta.contains(SSH_KEY), "public key missing: {meta}");
    ensure!(user == USER_DATA, "user_data differs: {user:?}");
    Ok(cd.start)
}

/// Manual cleaning with `erase_devices` through the real CLI: the agent writes markers and
/// erases the disk the strongest way it has. On the OVMF machine the disk is QEMU's NVMe,
/// whose controller offers Format NVM with user-data erase but no crypto erase; on the
/// SeaBIOS machine it is virtio-blk, with no firmware erase, so the fallback writes zeroes.
/// Either way every marker is proven gone, the history names the method per disk, and the
/// disk file reads as zeroes at every marker from the host.
fn secure_erase(rack: &Rack, m: &Machine, node: &str, t: &mut Timeline) -> anyhow::Result<()> {
    let (prefix, method) = match m.spec.firmware {
        Firmware::Bios => ("wipe /dev/vd", "method write_zeroes"),
        _ => ("wipe /dev/nvme", "method nvme_user_data_erase"),
    };
    let steps = json!([{"interface": "deploy", "step": "erase_devices"}]);
    let events = t.phase("clean erase_devices", || rack.clean(node, &steps))?;
    let wipe = events
        .iter()
        .find(|e| e.starts_with(prefix))
        .with_context(|| format!("no {prefix} in the history: {events:?}"))?;
    ensure!(
        wipe.contains("wiped and verified") && wipe.contains(method),
        "{wipe}"
    );
    let offsets: Vec<u64> = wipe
        .split_whitespace()
        .filter_map(|w| {
            w.trim_end_matches(',')
                .strip_prefix("marker@")?
                .parse()
                .ok()
        })
        .collect();
    ensure!(offsets.len() >= 3, "markers not listed: {wipe}");
    println!("{}: {wipe}", m.spec.name);
    ensure_zero_at(&m.disk, &offsets, 4096)
}

/// One machine through the lifecycle; returns its phase timings and the agent's write figures.
fn lifecycle(
    rack: &Rack,
    m: &Machine,
    label: &str,
    marker: &str,
    image: &Published,
) -> anyhow::Result<(Timeline, WriteFigures)> {
    let mut t = Timeline::new(label);
    let node = t.phase("enroll", || rack.enroll_machine(m))?;
    let node = node.as_str();
    t.phase("manage", || rack.manage(node))?;
    let inspected = t.phase("inspect", || rack.inspect(node))?;
    let props = &inspected["properties"];
    ensure!(props["cpus"] == 1, "inspected properties: {props}");
    secure_erase(rack, m, node, &mut t)?;
    t.phase("provide (clean)", || rack.provide(node))?;
    let instance_info = [
        format!("image_source={}", image.url),
        format!("image_checksum=sha256:{}", image.disk.zst_sha256),
    ];
    let configdrive = json!({
        "meta_data": {
            "uuid": node,
            "hostname": m.spec.name,
            "public_keys": {"lab": SSH_KEY},
        },
        "user_data": USER_DATA,
    });
    let mark = m.serial_mark();
    let active = t.phase("deploy", || rack.deploy(node, &instance_info, &configdrive))?;
    let figures = WriteFigures::from_node(&active)?;
    t.phase("boot from disk", || {
        m.wait_serial_after(mark, marker, Duration::from_secs(300))
    })?;
    let cd_offset = check_deployed_disk(m, &image.disk)?;
    t.phase("undeploy (clean)", || rack.undeploy(node))?;
    t.phase("power off", || rack.power_off(node))?;
    ensure!(
        m.qemu_pid().is_none(),
        "{label}: QEMU still runs after power off"
    );
    check_wiped(&m.disk, &[1 << 20, cd_offset])?;
    rack.ensure_no_error(node)?;
    Ok((t, figures))
}

#[test]
fn bios_and_uefi_machines_go_through_the_whole_lifecycle() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let mut rack = Rack::start(RackOptions::default())?;
    let disk = marker_disk::build(&rack.dir().join("image"), IMAGE_MIB)?;
    let url = rack.publish(&disk.zst, "marker-disk.img.zst")?;
    let image = Published { disk, url };
    let bios = rack.add_machine(VmSpec::numbered(1, Firmware::Bios))?;
    let uefi = rack.add_machine(VmSpec::numbered(2, Firmware::Uefi))?;

    let rack = &rack;
    let image = &image;
    let (b, u) = std::thread::scope(|s| {
        let b = s.spawn(|| lifecycle(rack, &bios, "SeaBIOS/qemu", BIOS_MARKER, image));
        let u = s.spawn(|| lifecycle(rack, &uefi, "OVMF/qemu", UEFI_MARKER, image));
        (b.join(), u.join())
    });
    let mut timelines = Vec::new();
    let mut failures = Vec::new();
    for (r, m) in [(b, &bios), (u, &uefi)] {
        match r {
            Ok(Ok((t, figures))) => {
                println!("{}", figures.summary(&t.label));
                ensure!(
                    figures.bytes_written == image.disk.raw_bytes,
                    "agent wrote {figures:?}"
                );
                timelines.push(t);
            }
            Ok(Err(e)) => failures.push(format!(
                "{:#}\n--- {} serial ---\n{}",
                e,
                m.spec.name,
                qemu_tests::vm::tail(&m.serial(), 40)
            )),
            Err(_) => failures.push(format!("{}: the scenario panicked", m.spec.name)),
        }
    }
    rack.conclude(&timelines, &failures)
}

#[test]
fn without_fast_track_every_step_boots_the_agent() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let mut rack = Rack::start(RackOptions {
        fast_track: false,
        ..RackOptions::default()
    })?;
    let disk = marker_disk::build(&rack.dir().join("image"), IMAGE_MIB)?;
    let url = rack.publish(&disk.zst, "marker-disk.img.zst")?;
    let image = Published { disk, url };
    let bios = rack.add_machine(VmSpec::numbered(1, Firmware::Bios))?;
    let mut timelines = Vec::new();
    let mut failures = Vec::new();
    match lifecycle(
        &rack,
        &bios,
        "SeaBIOS/qemu, fast track off",
        BIOS_MARKER,
        &image,
    ) {
        Ok((t, figures)) => {
            println!("{}", figures.summary(&t.label));
            timelines.push(t);
        }
        Err(e) => failures.push(format!(
            "{:#}\n--- {} serial ---\n{}",
            e,
            bios.spec.name,
            qemu_tests::vm::tail(&bios.serial(), 40)
        )),
    }
    rack.conclude(&timelines, &failures)
}
