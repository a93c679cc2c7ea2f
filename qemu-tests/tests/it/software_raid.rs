//! Software RAID on real VMs through the real `baremetal` CLI: a SeaBIOS machine (two
//! virtio disks) and an OVMF machine (two NVMe disks) side by side get `--raid-interface
//! agent` and a `target_raid_config`: on SeaBIOS a 2 GiB RAID-1 root volume and a RAID-0
//! data volume over the two disks named by serial, on OVMF one RAID-1 root volume over every
//! disk. The SeaBIOS machine first runs the manual clean step `raid.create_configuration`
//! (both disks then carry md superblocks and `raid_config` names both arrays), then
//! `raid.delete_configuration` (no superblock left, `raid_config` empty). Both are
//! provided and deployed with the Debian 12 image; the agent writes the image to both disks
//! and builds the arrays around the image's root partition. Debian boots to its login prompt
//! with its root file system on the RAID-1 array with both members (and starts the RAID-0
//! array). Then the first disk is taken out of the machine, so that the firmware must boot
//! the second disk's own copy of the boot partitions (SeaBIOS its MBR and BIOS boot
//! partition, OVMF its ESP), and Debian boots again from the degraded array (the kernel's
//! console lines show the array and the root file system mounted from it). The disk goes
//! back, the node is undeployed (cleaning) and, from the host, neither disk holds an md
//! superblock or a partition table any more.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use qemu_tests::disk_check::check_wiped;
use qemu_tests::disk_check::partitions;
use qemu_tests::rack::bmc::StoredImage;
use qemu_tests::rack::steps;
use qemu_tests::rack::{Machine, Rack, RackOptions, Timeline};
use qemu_tests::vm::{Firmware, VmSpec, tail};
use serde_json::{Value, json};

/// Deploy reboot or power-on to the md lines on the console: Debian under TCG, two machines
/// on two shared cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

struct Case {
    m: Machine,
    second: PathBuf,
    ip: String,
}

/// A machine with a second disk of the same size (virtio on SeaBIOS, NVMe on OVMF).
fn raid_machine(rack: &mut Rack, n: u8, firmware: Firmware) -> anyhow::Result<Case> {
    let mut spec = VmSpec::numbered(n, firmware);
    // Debian with cloud-init (python) wants more than the agent's 512 MiB.
    spec.mem_mib = 768;
    if firmware == Firmware::Bios {
        // Room for a RAID-0 data volume beside the 2 GiB root volume (sparse files).
        spec.disk_bytes = 4 << 30;
    }
    let dir = rack.machines_dir().join(&spec.name);
    std::fs::create_dir_all(&dir)?;
    let second = dir.join("disk2.img");
    std::fs::File::create(&second)?.set_len(spec.disk_bytes)?;
    let serial = format!("INGOT-DISK-{n:02}B");
    let device = match firmware {
        Firmware::Bios => format!("virtio-blk-pci,drive=d1,id=disk1,bootindex=3,serial={serial}"),
        _ => format!("nvme,drive=d1,id=disk1,bootindex=3,serial={serial}"),
    };
    spec.extra_args = vec![
        "-drive".into(),
        format!("file={},format=raw,if=none,id=d1", second.display()),
        "-device".into(),
        device,
    ];
    let m = rack.add_machine(spec)?;
    Ok(Case {
        m,
        second,
        ip: format!("172.31.250.{}", 30 + n),
    })
}

/// The machine's argv without the drive backed by `file` and the device using it.
fn without_disk(m: &Machine, file: &Path) -> anyhow::Result<Value> {
    let saved: Value = serde_json::from_slice(&std::fs::read(&m.command_file)?)?;
    let argv: Vec<String> = serde_json::from_value(saved["argv"].clone())?;
    let needle = format!("file={},", file.display());
    let id = argv
        .iter()
        .find(|a| a.starts_with(&needle))
        .and_then(|a| a.split(',').find_map(|kv| kv.strip_prefix("id=")))
        .context("no drive for that file")?
        .to_owned();
    let drive_ref = format!("drive={id},");
    let mut out = Vec::new();
    let mut skip = false;
    let mut removed_boot_disk = false;
    for (i, a) in argv.iter().enumerate() {
        if skip {
            skip = false;
            continue;
        }
        let next = argv.get(i + 1).map(String::as_str).unwrap_or("");
        if (a == "-drive" && next.starts_with(&needle))
            || (a == "-device" && next.contains(&drive_ref))
        {
            removed_boot_disk |= next.contains("id=disk0,");
            skip = true;
            continue;
        }
        out.push(a.clone());
    }
    // The qemu driver selects the boot disk by the device id `disk0`: the disk left takes it.
    if removed_boot_disk {
        for a in &mut out {
            if a.contains("id=disk1,") {
                *a = a.replace("id=disk1,", "id=disk0,");
            }
        }
    }
    ensure!(
        out.len() + 4 == argv.len(),
        "removed {} args",
        argv.len() - out.len()
    );
    std::fs::write(
        &m.command_file,
        serde_json::to_vec_pretty(&json!({ "argv": out }))?,
    )?;
    Ok(saved)
}

/// Offsets of md superblocks (magic 0xa92b4efc, any version) on 4 KiB boundaries.
fn md_superblocks(disk: &Path) -> anyhow::Result<Vec<u64>> {
    let mut f = std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut found = Vec::new();
    let mut base = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for off in (0..n.saturating_sub(3)).step_by(4096) {
            if buf[off..off + 4] == 0xa92b_4efc_u32.to_le_bytes() {
                found.push(base + off as u64);
            }
        }
        base += n as u64;
    }
    Ok(found)
}

fn config_drive(case: &Case, node: &str) -> Value {
    let spec = &case.m.spec;
    json!({
        "meta_data": {"uuid": node, "name": spec.name, "hostname": spec.name},
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

/// Waits for Debian's login prompt on the console after `mark`, then checks what the kernel
/// said on the way: the root file system mounted from an md device (the initramfs mounts
/// only the root), and a RAID-1 array running with `mirrors` (`2 out of 2`, `1 out of 2`).
/// The kernel's own lines: nothing in the instance (cloud-init) has to work for them.
fn booted_from_md(m: &Machine, mark: usize, mirrors: &str) -> anyhow::Result<()> {
    m.wait_serial_after(mark, " login:", BOOT_TIMEOUT)?;
    let text = m.serial();
    let console = text.get(mark..).unwrap_or("");
    let root = console
        .lines()
        .find(|l| l.contains("EXT4-fs (") && l.contains("mounted filesystem"))
        .context("no file system mounted")?;
    ensure!(
        root.contains("EXT4-fs (md"),
        "the root file system is not on md: {root}"
    );
    let array = format!("active with {mirrors} mirrors");
    ensure!(
        console
            .lines()
            .any(|l| l.contains("md/raid1:md") && l.contains(&array)),
        "no RAID-1 array {array} on the console"
    );
    Ok(())
}

/// SeaBIOS: a 2 GiB RAID-1 root volume and a RAID-0 data volume on the rest, over the two
/// disks named by serial. OVMF: one RAID-1 root volume over every disk, as large as it gets.
fn target(m: &Machine) -> Value {
    if m.spec.firmware == Firmware::Bios {
        let disks = json!([{"serial": m.spec.disk_serial},
                           {"serial": format!("{}B", m.spec.disk_serial)}]);
        json!({"logical_disks": [
            {"size_gb": 2, "raid_level": "1", "controller": "software",
             "physical_disks": disks},
            {"size_gb": "MAX", "raid_level": "0", "controller": "software",
             "physical_disks": disks, "volume_name": "scratch"},
        ]})
    } else {
        json!({"logical_disks": [
            {"size_gb": "MAX", "raid_level": "1", "controller": "software"}
        ]})
    }
}

fn run(rack: &Rack, case: &Case, image: &StoredImage) -> anyhow::Result<Timeline> {
    let m = &case.m;
    let bios = m.spec.firmware == Firmware::Bios;
    let mut t = Timeline::new(&m.spec.name);
    let node = t.phase("enroll + manage", || {
        let node = rack.enroll_machine(m)?;
        // Two calls: the CLI sends the target before the interface change, so the node must
        // have the `agent` RAID interface first (as with Ironic).
        rack.baremetal(&["node", "set", &node, "--raid-interface", "agent"])?;
        rack.baremetal(&[
            "node",
            "set",
            &node,
            "--target-raid-config",
            &target(m).to_string(),
        ])?;
        rack.manage(&node)?;
        Ok(node)
    })?;
    let node = node.as_str();
    if bios {
        t.phase("clean: raid.create_configuration", || {
            rack.clean(
                node,
                &json!([{"interface": "raid", "step": "create_configuration"}]),
            )
        })?;
        let n = rack.node(node)?;
        let disks = &n["raid_config"]["logical_disks"];
        ensure!(
            disks.as_array().is_some_and(|d| d.len() == 2)
                && disks[0]["raid_level"] == "1"
                && disks[1]["raid_level"] == "0"
                && disks[0]["controller"] == "software"
                && disks[0]["physical_disks"]
                    .as_array()
                    .is_some_and(|p| p.len() == 2),
            "raid_config after create_configuration: {}",
            n["raid_config"]
        );
        for d in [&m.disk, &case.second] {
            ensure!(
                !md_superblocks(d)?.is_empty(),
                "create_configuration left no md superblock on {}",
                d.display()
            );
        }
        t.phase("clean: raid.delete_configuration", || {
            rack.clean(
                node,
                &json!([{"interface": "raid", "step": "delete_configuration"}]),
            )
        })?;
        let n = rack.node(node)?;
        ensure!(
            n["raid_config"] == json!({}),
            "raid_config after delete_configuration: {}",
            n["raid_config"]
        );
        for d in [&m.disk, &case.second] {
            let left = md_superblocks(d)?;
            ensure!(
                left.is_empty(),
                "delete_configuration left md superblocks on {} at {left:?}",
                d.display()
            );
        }
    }
    t.phase("provide (clean)", || rack.provide(node))?;
    let active = t.phase("deploy onto RAID-1", || {
        rack.deploy(
            node,
            &[format!("image_source={}", image.source())],
            &config_drive(case, node),
        )
    })?;
    let arrays = &active["raid_config"]["logical_disks"];
    let volumes = if bios { 2 } else { 1 };
    ensure!(
        arrays.as_array().is_some_and(|a| a.len() == volumes)
            && arrays[0]["is_root_volume"] == true
            && arrays[0]["raid_level"] == "1",
        "raid_config after the deploy: {}",
        active["raid_config"]
    );
    if bios {
        // RAID-0 over 2 members of about 1.9 GiB each.
        ensure!(
            arrays[1]["raid_level"] == "0"
                && arrays[1]["volume_name"] == "scratch"
                && arrays[1]["size_gb"].as_u64().is_some_and(|g| g >= 3),
            "the data volume: {}",
            arrays[1]
        );
    }
    // The deploy's last act was the reboot: the ramdisk's own md lines came before `active`.
    let mark = m.serial_mark();
    t.phase("boot Debian from the array", || {
        booted_from_md(m, mark, "2 out of 2")
    })?;
    if bios {
        // The instance assembled the data array too.
        let text = m.serial();
        let started: std::collections::BTreeSet<&str> = text
            .get(mark..)
            .unwrap_or("")
            .lines()
            .filter(|l| l.contains("detected capacity change from 0 to"))
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("md")))
            .collect();
        ensure!(
            started.len() == 2,
            "md arrays the instance started: {started:?}"
        );
    }
    // Both disks: the image's boot partitions, the root member, the config drive.
    // Both disks: the image's boot partitions, the root member, (the data member,) the
    // config drive.
    for d in [&m.disk, &case.second] {
        let parts = partitions(d)?;
        ensure!(parts.len() == 3 + volumes, "{}: {parts:?}", d.display());
    }

    // The first disk dies: the firmware must boot the second disk's own copy of the boot
    // partitions (SeaBIOS its MBR and BIOS boot partition, OVMF its ESP).
    rack.power_off(node)?;
    let saved = without_disk(m, &m.disk)?;
    let mark = m.serial_mark();
    t.phase("boot with one disk gone", || {
        rack.baremetal(&["node", "power", "on", node])?;
        booted_from_md(m, mark, "1 out of 2")
    })?;
    rack.power_off(node)?;
    std::fs::write(&m.command_file, serde_json::to_vec_pretty(&saved)?)?;

    t.phase("undeploy (clean)", || rack.undeploy(node))?;
    rack.power_off(node)?;
    for d in [&m.disk, &case.second] {
        let left = md_superblocks(d)?;
        ensure!(
            left.is_empty(),
            "md superblocks left on {} at {left:?}",
            d.display()
        );
        check_wiped(d, &[])?;
    }
    rack.ensure_no_error(node)?;
    Ok(t)
}

#[test]
fn software_raid1_boots_on_seabios_and_ovmf_and_survives_a_lost_disk() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let debian = qemu_tests::build::debian_image()?;
    let mut rack = Rack::start(RackOptions::default())?;
    let image = rack.import_image(&debian, "debian-12")?;
    let cases = [
        raid_machine(&mut rack, 1, Firmware::Bios)?,
        raid_machine(&mut rack, 2, Firmware::Uefi)?,
    ];
    let t0 = Instant::now();
    let (r, im) = (&rack, &image);
    let results = steps::side_by_side(&cases, |c| run(r, c, im));
    let mut timelines = Vec::new();
    let mut failures = Vec::new();
    for (res, c) in results.into_iter().zip(&cases) {
        match res {
            Ok(t) => timelines.push(t),
            Err(e) => failures.push(format!(
                "{e:#}\n--- {} serial ---\n{}",
                c.m.spec.name,
                tail(&c.m.serial(), 60)
            )),
        }
    }
    println!(
        "software RAID: both machines in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    if failures.is_empty() && timelines.len() != 2 {
        bail!("lost a machine's result");
    }
    rack.conclude(&timelines, &failures)
}
