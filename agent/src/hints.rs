//! Choosing the target disk by root device hints (never by name alone).

use std::path::PathBuf;

use anyhow::Context;
use proto::{Disk, RootDeviceHints};

fn eq(hint: &Option<String>, value: &Option<String>) -> bool {
    match hint {
        None => true,
        Some(h) => value.as_deref().is_some_and(|v| v.trim() == h.trim()),
    }
}

/// Whether `disk` satisfies every hint that is set.
pub fn matches(h: &RootDeviceHints, disk: &Disk) -> bool {
    let name_ok = h.name.as_deref().is_none_or(|n| {
        let n = n.trim();
        disk.name == n || disk.name.strip_prefix("/dev/") == Some(n)
    });
    let by_path_ok = h.by_path.as_deref().is_none_or(|p| {
        let p = p.trim();
        disk.by_path
            .as_deref()
            .is_some_and(|b| b == p || b.strip_prefix("/dev/disk/by-path/") == Some(p))
    });
    name_ok
        && by_path_ok
        && eq(&h.serial, &disk.serial)
        && eq(&h.wwn, &disk.wwn)
        && eq(&h.model, &disk.model)
        && eq(&h.vendor, &disk.vendor)
        && eq(&h.hctl, &disk.hctl)
        && h.rotational.is_none_or(|r| r == disk.rotational)
        && h.size.is_none_or(|s| s.matches(disk.size))
}

/// The first disk (in inventory order) that matches the hints.
pub fn choose<'a>(h: &RootDeviceHints, disks: &'a [Disk]) -> Option<&'a Disk> {
    disks.iter().find(|d| matches(h, d))
}

/// Parse hints JSON and choose among this machine's disks.
pub fn choose_device(hints_json: &str) -> anyhow::Result<PathBuf> {
    let hints: RootDeviceHints =
        serde_json::from_str(hints_json).context("parsing root device hints")?;
    let disks =
        crate::inventory::block::disks(std::path::Path::new("/")).context("listing disks")?;
    let d = choose(&hints, &disks)
        .with_context(|| format!("no disk matches {hints_json} among {} disks", disks.len()))?;
    Ok(PathBuf::from(&d.name))
}

#[cfg(test)]
mod tests {
    use proto::SizeHint;

    use super::*;

    fn disk(name: &str, size_gib: u64, serial: &str, rotational: bool) -> Disk {
        Disk {
            name: format!("/dev/{name}"),
            size: size_gib << 30,
            serial: Some(serial.into()),
            rotational,
            by_path: Some(format!("/dev/disk/by-path/pci-0000:00:1f.2-ata-{name}")),
            hctl: Some("0:0:0:0".into()),
            model: Some("Model X".into()),
            logical_sector_size: 512,
            physical_sector_size: 512,
            ..Default::default()
        }
    }

    #[test]
    fn chooses_by_each_hint() {
        let disks = vec![
            disk("sda", 50, "A", true),
            disk("sdb", 200, "B", false),
            disk("sdc", 500, "C", true),
        ];
        let pick = |h: RootDeviceHints| choose(&h, &disks).map(|d| d.name.clone());
        assert_eq!(
            pick(RootDeviceHints {
                serial: Some("C".into()),
                ..Default::default()
            })
            .as_deref(),
            Some("/dev/sdc")
        );
        assert_eq!(
            pick(RootDeviceHints {
                size: Some(SizeHint::parse(">= 100").expect("valid")),
                ..Default::default()
            })
            .as_deref(),
            Some("/dev/sdb")
        );
        assert_eq!(
            pick(RootDeviceHints {
                size: Some(SizeHint::parse(">= 100").expect("valid")),
                rotational: Some(true),
                ..Default::default()
            })
            .as_deref(),
            Some("/dev/sdc")
        );
        assert_eq!(
            pick(RootDeviceHints {
                name: Some("sdb".into()),
                ..Default::default()
            })
            .as_deref(),
            Some("/dev/sdb")
        );
        assert_eq!(
            pick(RootDeviceHints {
                by_path: Some("pci-0000:00:1f.2-ata-sda".into()),
                ..Default::default()
            })
            .as_deref(),
            Some("/dev/sda")
        );
        assert_eq!(
            pick(RootDeviceHints {
                wwn: Some("0x1".into()),
                ..Default::default()
            }),
            None
        );
        assert_eq!(
            pick(RootDeviceHints {
                serial: Some("Z".into()),
                ..Default::default()
            }),
            None
        );
    }
}
