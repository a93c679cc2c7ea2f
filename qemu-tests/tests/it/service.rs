//! Deploy templates and `service` on a real VM through the real `baremetal` CLI: a SeaBIOS
//! machine with a second (data) disk gets stale metadata on that disk after cleaning; a
//! deploy template (`baremetal deploy template create`, the node's and the instance's trait)
//! erases every disk's metadata before the image is written onto the first disk (root
//! device hint by serial), which then boots; the data disk's stale metadata reads as
//! zeroes. Markers are then written on the data disk from the host. A
//! service that names the instance's disk is refused with a 400 and the node stays
//! `active`; a service that erases the data disk boots the ramdisk, erases `/dev/vdb`
//! securely, runs the agent's own `scan_disks` on it (a step the agent offers at lookup,
//! run by name), boots the instance again (`active`, the disk's boot marker on the
//! console), and every marker on the data disk reads as zeroes from the host while the
//! instance's disk still holds the image.

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::{Context, ensure};
use qemu_tests::disk_check::ensure_zero_at;
use qemu_tests::marker_disk::{self, BIOS_MARKER};
use qemu_tests::rack::{Rack, RackOptions, Timeline};
use qemu_tests::vm::{Firmware, VmSpec};
use serde_json::json;

const IMAGE_MIB: u64 = 64;
const DATA_BYTES: u64 = 256 << 20;
const MARKER: &[u8] = b"INGOT-DATA-DISK-MARKER";
const LONG: Duration = Duration::from_secs(300);

#[test]
fn a_deploy_template_clears_stale_metadata_and_service_erases_a_data_disk() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let mut rack = Rack::start(RackOptions::default())?;
    let image = marker_disk::build(&rack.dir().join("image"), IMAGE_MIB)?;
    let url = rack.publish(&image.zst, "marker-disk.img.zst")?;
    // The data disk, with markers the service must erase.
    let dir = rack.machines_dir().join("vm1");
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("data.img");
    let offsets = [0, 1 << 20, 100 << 20, DATA_BYTES - 4096];
    std::fs::File::create(&data)?.set_len(DATA_BYTES)?;
    // Written while the instance runs (it halts after its boot message and never reads
    // the data disk), after cleaning, so only the service can erase them.
    let write_markers = || -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).open(&data)?;
        for &o in &offsets {
            f.seek(SeekFrom::Start(o))?;
            f.write_all(MARKER)?;
        }
        f.sync_all()?;
        Ok(())
    };
    let m = rack.add_machine(VmSpec {
        extra_args: vec![
            "-drive".into(),
            format!("file={},if=none,id=data,format=raw", data.display()),
            "-device".into(),
            "virtio-blk-pci,drive=data,serial=INGOT-DATA-01".into(),
        ],
        ..VmSpec::numbered(1, Firmware::Bios)
    })?;
    let mut t = Timeline::new("service");
    let result = (|| -> anyhow::Result<()> {
        let node = t.phase("enroll + manage + provide", || {
            let node = rack.enroll_machine(&m)?;
            rack.baremetal(&[
                "node",
                "set",
                &node,
                "--property",
                &format!("root_device={}", json!({"serial": m.spec.disk_serial})),
            ])?;
            rack.manage(&node)?;
            rack.provide(&node)?;
            Ok(node)
        })?;
        // Stale metadata on the data disk (as a previous tenant's RAID or LVM would leave):
        // the deploy template's erase_devices_metadata clears it before the image.
        let stale = [0, 4 << 20, DATA_BYTES - 4096];
        {
            let mut f = std::fs::OpenOptions::new().write(true).open(&data)?;
            for &o in &stale {
                f.seek(SeekFrom::Start(o))?;
                f.write_all(MARKER)?;
            }
            f.sync_all()?;
        }
        rack.baremetal(&[
            "deploy",
            "template",
            "create",
            "CUSTOM_WIPE_FIRST",
            "--steps",
            &json!([{"interface": "deploy", "step": "erase_devices_metadata",
                     "args": {}, "priority": 150}])
            .to_string(),
        ])?;
        rack.baremetal(&["node", "add", "trait", &node, "CUSTOM_WIPE_FIRST"])?;
        let mark = m.serial_mark();
        t.phase("deploy with a template", || {
            rack.deploy(
                &node,
                &[
                    format!("image_source={url}"),
                    format!("image_checksum=sha256:{}", image.zst_sha256),
                    r#"traits=["CUSTOM_WIPE_FIRST"]"#.to_owned(),
                ],
                &json!({"meta_data": {"uuid": node, "hostname": "svc"}}),
            )
        })?;
        ensure_zero_at(&data, &stale, MARKER.len())
            .context("the deploy template's metadata erase left the data disk's metadata")?;
        t.phase("boot from disk", || {
            m.wait_serial_after(mark, BIOS_MARKER, LONG)
        })?;
        write_markers()?;
        let n = rack.node(&node)?;
        ensure!(
            n["driver_internal_info"]["instance_device"] == "/dev/vda",
            "the deploy wrote {}",
            n["driver_internal_info"]["instance_device"]
        );
        // The instance's own disk: refused before anything boots.
        let refused = rack.baremetal(&[
            "node",
            "service",
            &node,
            "--service-steps",
            &json!([{"interface": "deploy", "step": "erase_devices",
                     "args": {"devices": ["/dev/vda"]}}])
            .to_string(),
        ]);
        let err = format!(
            "{:#}",
            refused
                .err()
                .context("erasing the instance disk was accepted")?
        );
        ensure!(err.contains("/dev/vda holds the instance"), "{err}");
        ensure!(rack.node(&node)?["provision_state"] == "active");

        let mark = m.serial_mark();
        let before = rack.history(&node)?.len();
        t.phase("service erase_devices + scan_disks /dev/vdb", || {
            rack.baremetal(&[
                "node",
                "service",
                &node,
                "--service-steps",
                &json!([{"interface": "deploy", "step": "erase_devices",
                         "args": {"devices": ["/dev/vdb"]}},
                        {"interface": "deploy", "step": "scan_disks",
                         "args": {"devices": ["/dev/vdb"]}}])
                .to_string(),
            ])?;
            rack.wait_provision_state(&node, "active", LONG)
        })?;
        t.phase("instance boots again", || {
            m.wait_serial_after(mark, BIOS_MARKER, LONG)
        })?;
        let events = rack.history(&node)?.split_off(before);
        ensure!(
            events.iter().any(|e| e.contains("service requested")),
            "{events:?}"
        );
        ensure_zero_at(&data, &offsets, MARKER.len())?;
        // The agent's own step (offered at lookup, run by name): every byte of the disk read.
        let scan = &rack.node(&node)?["driver_internal_info"]["agent_last_result"]["disks"][0];
        ensure!(
            scan["device"] == "/dev/vdb" && scan["bytes_read"] == DATA_BYTES,
            "scan_disks reported {scan}"
        );
        println!(
            "[service] scan_disks read /dev/vdb at {} MiB/s",
            scan["mib_per_s"]
        );
        let want = std::fs::read(&image.raw)?;
        let mut got = vec![0u8; 446];
        std::io::Read::read_exact(&mut std::fs::File::open(&m.disk)?, &mut got)?;
        ensure!(got[..] == want[..446], "the instance's boot code changed");
        rack.ensure_no_error(&node)?;
        println!(
            "[service] {} markers on /dev/vdb erased; the instance still boots",
            offsets.len()
        );
        Ok(())
    })();
    let failures = match result {
        Ok(()) => Vec::new(),
        Err(e) => vec![format!(
            "{e:#}\n--- vm serial ---\n{}",
            qemu_tests::vm::tail(&m.serial(), 30)
        )],
    };
    rack.conclude(&[t], &failures)
}
