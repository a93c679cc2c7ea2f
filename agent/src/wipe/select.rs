//! Which disks `wipe --all` touches: every disk except virtual media (BMC-emulated CD/USB)
//! and the medium we booted from. A read-only disk is not skipped: it may hold the last
//! tenant's data, so opening it for the wipe fails and cleaning fails closed.

use std::path::Path;

use proto::Disk;

/// Why a disk is skipped, or None to wipe it.
pub fn skip_reason(d: &Disk, boot_disks: &[String]) -> Option<String> {
    let text = format!(
        "{} {}",
        d.model.as_deref().unwrap_or(""),
        d.vendor.as_deref().unwrap_or("")
    )
    .to_ascii_lowercase();
    if text.contains("virtual") || (d.removable && d.name.starts_with("/dev/sr")) {
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
        let virt = Disk {
            model: Some("Virtual CDROM0".into()),
            ..d("/dev/sdc")
        };
        assert_eq!(skip_reason(&virt, &boot).as_deref(), Some("virtual media"));
        assert_eq!(skip_reason(&d("/dev/nvme0n1"), &boot), None);
    }
}
