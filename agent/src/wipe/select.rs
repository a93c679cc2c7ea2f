//! Which disks `wipe --all` touches: every disk except virtual media (BMC-emulated CD/USB)
//! and the medium we booted from. A read-only disk is not skipped: it may hold the last
//! tenant's data, so opening it for the wipe fails and cleaning fails closed. Finding no
//! disk to wipe is a failure too: a wipe that touched nothing proves nothing.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use proto::{Disk, DiskId, WipeDiskResult, WipeMode, WipeReport};

/// The disks `wipe --all` (and the controller's `wipe` with no device list) wipes, found
/// under `root`, and the ones it passes over with the reason. Fails when nothing is left to
/// wipe.
pub fn plan(root: &Path, mode: WipeMode) -> anyhow::Result<(Vec<PathBuf>, Vec<WipeDiskResult>)> {
    let boot = boot_disks(root);
    let disks = crate::inventory::block::disks(root).context("listing disks")?;
    let (go, skipped) = split(&disks, &boot, mode);
    if go.is_empty() {
        anyhow::bail!("{}", nothing_to_wipe(&skipped));
    }
    Ok((go, skipped))
}

/// PURE: the disks to wipe and the skipped ones (as failed-to-nothing results with the reason).
pub fn split(
    disks: &[Disk],
    boot_disks: &[String],
    mode: WipeMode,
) -> (Vec<PathBuf>, Vec<WipeDiskResult>) {
    let mut go = Vec::new();
    let mut skipped = Vec::new();
    for d in disks {
        match skip_reason(d, boot_disks) {
            Some(why) => skipped.push(WipeDiskResult {
                device: d.name.clone(),
                mode,
                ok: false,
                method: None,
                cleared: vec![],
                skipped: Some(why),
                error: None,
                elapsed_ms: 0,
                id: DiskId::of(d),
            }),
            None => go.push(PathBuf::from(&d.name)),
        }
    }
    (go, skipped)
}

/// PURE: fills in each result's disk identity (serial, WWN, by-path, size) from the
/// inventory's disks, matched by device name, so the controller can match the report with
/// the node's inventory without trusting names.
pub fn identify(report: &mut WipeReport, disks: &[Disk]) {
    for r in &mut report.disks {
        if let Some(d) = disks.iter().find(|d| d.name == r.device) {
            r.id = DiskId::of(d);
        }
    }
}

/// PURE: why a wipe with nothing to wipe fails, naming what was passed over.
pub fn nothing_to_wipe(skipped: &[WipeDiskResult]) -> String {
    if skipped.is_empty() {
        return "no disk found to wipe".into();
    }
    let list: Vec<String> = skipped
        .iter()
        .map(|d| {
            format!(
                "{} ({})",
                d.device,
                d.skipped.as_deref().unwrap_or("skipped")
            )
        })
        .collect();
    format!("no disk found to wipe (passed over: {})", list.join(", "))
}

/// Named `devices` may be wiped only when each is a whole disk that the whole-machine wipe
/// would take too: never a partition or an md or device-mapper device (told by `sys`, the
/// sysfs root), never virtual media or the boot medium.
pub fn check_named(
    devices: &[String],
    disks: &[Disk],
    boot_disks: &[String],
    sys: &Path,
) -> Result<(), String> {
    for d in devices {
        let name = d
            .strip_prefix("/dev/")
            .filter(|n| !n.is_empty() && !n.contains('/') && !n.starts_with('.'))
            .ok_or_else(|| format!("{d} is not a device path"))?;
        if sys
            .join("class/block")
            .join(name)
            .join("partition")
            .exists()
        {
            return Err(format!("{d} is a partition, not a disk"));
        }
        if sys.join("block").join(name).join("md").exists()
            || sys.join("block").join(name).join("dm").exists()
        {
            return Err(format!("{d} is an md or device-mapper device, not a disk"));
        }
        if boot_disks.contains(d) {
            return Err(format!("{d} is not wiped: boot medium"));
        }
        if let Some(why) = disks
            .iter()
            .find(|x| &x.name == d)
            .and_then(|x| skip_reason(x, boot_disks))
        {
            return Err(format!("{d} is not wiped: {why}"));
        }
    }
    Ok(())
}

/// Why a disk is skipped, or None to wipe it. Virtual media is told by driver and transport
/// ([`Disk::is_virtual_media`], shared with the controller's check), never by the model.
pub fn skip_reason(d: &Disk, boot_disks: &[String]) -> Option<String> {
    if d.is_virtual_media() {
        Some("virtual media".into())
    } else if boot_disks.contains(&d.name) {
        Some("boot medium".into())
    } else {
        None
    }
}

/// Disks holding the root filesystem or the live medium, from mountinfo
/// (`root/proc/self/mountinfo`) and sysfs (`root/sys/dev/block/M:m`).
pub fn boot_disks(root: &Path) -> Vec<String> {
    let Ok(info) = std::fs::read_to_string(root.join("proc/self/mountinfo")) else {
        return vec![];
    };
    let mut v = Vec::new();
    for line in info.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5
            || !(f[4] == "/"
                || f[4].starts_with("/run/initramfs")
                || f[4] == "/boot"
                || f[4] == "/boot/efi")
        {
            continue;
        }
        let Ok(p) = std::fs::canonicalize(root.join("sys/dev/block").join(f[2])) else {
            continue;
        };
        // A partition's parent directory is the disk.
        let disk = if p.join("partition").exists() {
            p.parent().map(Path::to_path_buf)
        } else {
            Some(p)
        };
        if let Some(name) =
            disk.and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        {
            v.push(format!("/dev/{name}"));
        }
    }
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str) -> Disk {
        Disk {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_wipe_with_nothing_to_wipe_fails() {
        let boot = vec!["/dev/sda".to_string()];
        let (go, skipped) = split(&[], &boot, WipeMode::Metadata);
        assert!(go.is_empty() && skipped.is_empty());
        assert_eq!(nothing_to_wipe(&skipped), "no disk found to wipe");
        let (go, skipped) = split(
            &[d("/dev/sda"), d("/dev/sr0")].map(|x| Disk {
                removable: x.name.starts_with("/dev/sr"),
                ..x
            }),
            &boot,
            WipeMode::Full,
        );
        assert!(go.is_empty());
        assert_eq!(
            nothing_to_wipe(&skipped),
            "no disk found to wipe (passed over: /dev/sda (boot medium), /dev/sr0 (virtual media))"
        );
        let (go, skipped) = split(&[d("/dev/sda"), d("/dev/vda")], &boot, WipeMode::Full);
        assert_eq!(go, vec![PathBuf::from("/dev/vda")]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].mode, WipeMode::Full);
    }

    #[test]
    fn named_devices_are_whole_eligible_disks() {
        let sys = tempfile::tempdir().expect("tempdir");
        for dir in [
            "class/block/vda3/partition",
            "block/md127/md",
            "block/dm-0/dm",
            "class/block/vda",
        ] {
            std::fs::create_dir_all(sys.path().join(dir)).expect("sysfs");
        }
        let disks = [
            d("/dev/vda"),
            d("/dev/vdb"),
            Disk {
                removable: true,
                ..d("/dev/sr0")
            },
        ];
        let boot = vec!["/dev/vdb".to_string()];
        let named = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let check = |v: &[&str]| check_named(&named(v), &disks, &boot, sys.path());
        assert_eq!(check(&["/dev/vda"]), Ok(()));
        assert_eq!(
            check(&["/dev/loop0"]),
            Ok(()),
            "not in the inventory, but a disk"
        );
        for (devices, want) in [
            (&["/dev/vda3"][..], "/dev/vda3 is a partition, not a disk"),
            (
                &["/dev/md127"][..],
                "/dev/md127 is an md or device-mapper device, not a disk",
            ),
            (
                &["/dev/dm-0"][..],
                "/dev/dm-0 is an md or device-mapper device, not a disk",
            ),
            (
                &["/dev/vda", "/dev/vdb"][..],
                "/dev/vdb is not wiped: boot medium",
            ),
            (&["/dev/sr0"][..], "/dev/sr0 is not wiped: virtual media"),
            (&["/dev/../etc"][..], "/dev/../etc is not a device path"),
            (&["vda"][..], "vda is not a device path"),
        ] {
            assert_eq!(check(devices), Err(want.to_owned()), "{devices:?}");
        }
    }

    #[test]
    fn results_carry_the_disk_identity() {
        let disks = [Disk {
            serial: Some("S1".into()),
            by_path: Some("pci-0000:00:04.0".into()),
            size: 1 << 30,
            ..d("/dev/vda")
        }];
        let mut report = WipeReport {
            ok: true,
            disks: vec![WipeDiskResult {
                device: "/dev/vda".into(),
                mode: WipeMode::Metadata,
                ok: true,
                method: None,
                cleared: vec![],
                skipped: None,
                error: None,
                elapsed_ms: 1,
                id: DiskId::default(),
            }],
        };
        identify(&mut report, &disks);
        assert_eq!(report.disks[0].id.serial.as_deref(), Some("S1"));
        assert_eq!(report.disks[0].id.size, Some(1 << 30));
    }

    #[test]
    fn skips_virtual_and_boot_media_but_not_read_only_disks() {
        let boot = vec!["/dev/sda".to_string()];
        assert_eq!(
            skip_reason(&d("/dev/sda"), &boot).as_deref(),
            Some("boot medium")
        );
        assert_eq!(
            skip_reason(
                &Disk {
                    read_only: true,
                    ..d("/dev/sdb")
                },
                &boot
            )
            .as_deref(),
            None,
            "a write-protected disk must fail the wipe, not be passed over"
        );
        let ro_cd = Disk {
            read_only: true,
            removable: true,
            ..d("/dev/sr0")
        };
        assert_eq!(skip_reason(&ro_cd, &boot).as_deref(), Some("virtual media"));
        let usb_vmedia = Disk {
            removable: true,
            transport: Some("usb".into()),
            ..d("/dev/sdc")
        };
        assert_eq!(
            skip_reason(&usb_vmedia, &boot).as_deref(),
            Some("virtual media")
        );
        let named_virtual = Disk {
            model: Some("Virtual Disk".into()),
            transport: Some("sata".into()),
            ..d("/dev/sdd")
        };
        assert_eq!(
            skip_reason(&named_virtual, &boot),
            None,
            "a disk that calls itself virtual is still wiped"
        );
        assert_eq!(skip_reason(&d("/dev/nvme0n1"), &boot), None);
    }
}
