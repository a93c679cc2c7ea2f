//! The whole lifecycle on lab machines through the real `baremetal` CLI, a SeaBIOS and an
//! OVMF machine at once in one rack: enroll (driver + driver_info, port) -> manage ->
//! inspect (the agent boots over PXE and reports its inventory) -> provide (cleaning by the
//! agent: metadata wipe) -> deploy (a zstd image over HTTP with its sha256, and a config
//! drive) -> `active` -> the machine boots its disk (marker on the serial console) ->
//! undeploy -> cleaning -> `available` -> power off, and the disk is checked from the host:
//! while active it holds the image and the config drive, after release no partition table
//! or filesystem signature is left.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use qemu_tests::host_disk::{ensure_no_signatures, mbr_partitions, probe};
use qemu_tests::marker_disk::{self, BIOS_MARKER, MarkerDisk, UEFI_MARKER};
use qemu_tests::rack::{Machine, Rack, RackOptions, Timeline};
use qemu_tests::vm::{Firmware, VmSpec};
use serde_json::{Value, json};

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

fn uuid_of(v: &Value) -> anyhow::Result<String> {
    v["uuid"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no uuid in {v}"))
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
    let esp = probe(&m.disk, parts[0].1)?.unwrap_or_default();
    ensure!(esp.contains("TYPE=vfat"), "ESP not found: {esp}");
    let (_, cd_offset, cd_len) = parts[2];
    let cd = probe(&m.disk, cd_offset)?.unwrap_or_default();
    ensure!(
        cd.contains("TYPE=iso9660") && cd.contains("LABEL=config-2"),
        "config drive not found at {cd_offset}: {cd}"
    );
    // Read meta_data.json and user_data back with xorriso (no iso9660 mount here).
    let iso = m.dir.join("configdrive.iso");
    let mut part = vec![0u8; usize::try_from(cd_len.min(64 << 20))?];
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(cd_offset))?;
    std::io::Read::read_exact(&mut f, &mut part)?;
    std::fs::write(&iso, &part)?;
    let out_dir = m.dir.join("configdrive");
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&iso)
        .args(["-extract", "/openstack/latest"])
        .arg(&out_dir)
        .output()
        .context("running xorriso")?;
    ensure!(
        out.status.success(),
        "xorriso: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::read_to_string(out_dir.join("meta_data.json"))?;
    ensure!(meta.contains(SSH_KEY), "public key missing: {meta}");
    let user = std::fs::read_to_string(out_dir.join("user_data"))?;
    ensure!(user == USER_DATA, "user_data differs: {user:?}");
    Ok(cd_offset)
}

/// One machine through the lifecycle; returns its phase timings and the agent's write result.
fn lifecycle(
    rack: &Rack,
    m: &Machine,
    label: &str,
    marker: &str,
    image: &Published,
) -> anyhow::Result<(Timeline, Value)> {
    let mut t = Timeline::new(label);
    let long = Duration::from_secs(600);
    let mut args = vec!["node", "create", "--driver", "qemu", "--name", &m.spec.name];
    let info = m.qemu_driver_info();
    for i in &info {
        args.extend(["--driver-info", i]);
    }
    let node = t.phase("enroll", || {
        let node = rack.baremetal_json(&args)?;
        let uuid = uuid_of(&node)?;
        rack.baremetal(&["port", "create", &m.spec.mac, "--node", &uuid])?;
        Ok(uuid)
    })?;
    let node = node.as_str();
    t.phase("manage", || {
        rack.baremetal(&["node", "manage", node])?;
        rack.wait_provision_state(node, "manageable", Duration::from_secs(60))
    })?;
    let inspected = t.phase("inspect", || {
        rack.baremetal(&["node", "inspect", node])?;
        rack.wait_provision_state(node, "manageable", long)
    })?;
    let props = &inspected["properties"];
    ensure!(props["cpus"] == 1, "inspected properties: {props}");
    ensure!(
        props["local_gb"].as_u64().is_some_and(|g| g >= 1),
        "inspected properties: {props}"
    );
    t.phase("provide (clean)", || {
        rack.baremetal(&["node", "provide", node])?;
        rack.wait_provision_state(node, "available", long)
    })?;
    let checksum = format!("image_checksum=sha256:{}", image.disk.zst_sha256);
    let source = format!("image_source={}", image.url);
    rack.baremetal(&[
        "node",
        "set",
        node,
        "--instance-info",
        &source,
        "--instance-info",
        &checksum,
    ])?;
    let configdrive = json!({
        "meta_data": {
            "uuid": node,
            "hostname": m.spec.name,
            "public_keys": {"lab": SSH_KEY},
        },
        "user_data": USER_DATA,
    })
    .to_string();
    let mark = m.serial_mark();
    let active = t.phase("deploy", || {
        rack.baremetal(&["node", "deploy", node, "--config-drive", &configdrive])?;
        rack.wait_provision_state(node, "active", long)
    })?;
    let result = active["driver_internal_info"]["agent_last_result"].clone();
    t.phase("boot from disk", || {
        m.wait_serial_after(mark, marker, Duration::from_secs(300))
    })?;
    let cd_offset = check_deployed_disk(m, &image.disk)?;
    t.phase("undeploy (clean)", || {
        rack.baremetal(&["node", "undeploy", node])?;
        rack.wait_provision_state(node, "available", long)
    })?;
    t.phase("power off", || {
        rack.baremetal(&["node", "power", "off", node])?;
        rack.wait_power_state(node, "power off", Duration::from_secs(120))
    })?;
    ensure!(
        m.qemu_pid().is_none(),
        "{label}: QEMU still runs after power off"
    );
    ensure_no_signatures(&m.disk, &[1 << 20, cd_offset]).context("after cleaning")?;
    let node = rack.node(node)?;
    ensure!(
        node["last_error"].is_null(),
        "last_error: {}",
        node["last_error"]
    );
    Ok((t, result))
}

#[test]
fn bios_and_uefi_machines_go_through_the_whole_lifecycle() -> anyhow::Result<()> {
    qemu_tests::require_lab()?;
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
            Ok(Ok((t, result))) => {
                let written = result["bytes_written"].as_u64().unwrap_or(0);
                let ms = result["elapsed_ms"].as_u64().unwrap_or(0);
                println!(
                    "[{}] agent wrote {:.1} MiB ({:.1} MiB fetched) in {:.2} s: {:.1} MiB/s",
                    t.label,
                    written as f64 / 1048576.0,
                    result["bytes_fetched"].as_u64().unwrap_or(0) as f64 / 1048576.0,
                    ms as f64 / 1000.0,
                    if ms > 0 {
                        written as f64 / 1048576.0 / (ms as f64 / 1000.0)
                    } else {
                        0.0
                    }
                );
                ensure!(written == image.disk.raw_bytes, "agent result: {result}");
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
    println!("{}", Timeline::table(&timelines));
    println!("rack total: {:.1} s", rack.elapsed().as_secs_f64());
    if !failures.is_empty() {
        bail!(
            "{}\n--- ingot log ---\n{}",
            failures.join("\n\n"),
            qemu_tests::vm::tail(&rack.ingot_log(), 60)
        );
    }
    Ok(())
}
