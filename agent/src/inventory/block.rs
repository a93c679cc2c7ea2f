//! Block devices from sysfs, pure over a root directory (`/` on a machine, a
//! fixture tree in tests). Serials and WWNs live in different places per
//! driver: virtio keeps `block/X/serial`, NVMe `device/serial` and `wwid`,
//! SCSI/SATA the VPD page 0x80 and `device/wwid`.

use std::fs;
use std::path::Path;

use proto::Disk;

fn read(p: &Path) -> Option<String> {
    let s = fs::read_to_string(p).ok()?;
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn read_u64(p: &Path) -> Option<u64> {
    read(p)?.parse().ok()
}

/// Serial from a SCSI VPD page 0x80 (4-byte header, then ASCII).
fn vpd80_serial(p: &Path) -> Option<String> {
    let b = fs::read(p).ok()?;
    if b.len() < 4 || b[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let s = String::from_utf8_lossy(b.get(4..4 + len.min(b.len() - 4))?)
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

fn is_pci_addr(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.'
}

/// Transport from the resolved sysfs device path.
fn transport(name: &str, devpath: &str) -> Option<String> {
    let t = if name.starts_with("nvme") || devpath.contains("/nvme/") {
        "nvme"
    } else if devpath.contains("/usb") {
        "usb"
    } else if devpath.contains("/ata") {
        "sata"
    } else if devpath.contains("/end_device-") || devpath.contains("/sas_") {
        "sas"
    } else if devpath.contains("/virtio") && !devpath.contains("/host") {
        "virtio"
    } else if devpath.contains("/target") {
        "scsi"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else {
        return None;
    };
    Some(t.to_string())
}

/// A `by-path` name in the style of udev's `path_id`, computed from sysfs.
fn compute_by_path(
    name: &str,
    devpath: &str,
    transport: Option<&str>,
    hctl: Option<&str>,
    nsid: Option<u64>,
) -> Option<String> {
    let pci = devpath.split('/').rfind(|c| is_pci_addr(c))?;
    let suffix = match transport {
        Some("nvme") => format!("-nvme-{}", nsid.unwrap_or(1)),
        Some("sata") => {
            let port = devpath
                .split('/')
                .find_map(|c| c.strip_prefix("ata").and_then(|n| n.parse::<u32>().ok()))?;
            format!("-ata-{port}")
        }
        Some("virtio") => String::new(),
        Some(_) => hctl.map(|h| format!("-scsi-{h}")).unwrap_or_default(),
        None => return None,
    };
    let _ = name;
    Some(format!("/dev/disk/by-path/pci-{pci}{suffix}"))
}

/// udev's `/dev/disk/by-path` links, when the root has them: target name -> link.
fn udev_by_path(root: &Path) -> Vec<(String, String)> {
    let dir = root.join("dev/disk/by-path");
    let Ok(rd) = fs::read_dir(&dir) else {
        return vec![];
    };
    let mut v: Vec<(String, String)> = rd
        .flatten()
        .filter_map(|e| {
            let target = fs::read_link(e.path()).ok()?;
            let t = target.file_name()?.to_string_lossy().into_owned();
            Some((
                t,
                format!("/dev/disk/by-path/{}", e.file_name().to_string_lossy()),
            ))
        })
        .collect();
    v.sort();
    v
}

/// The resolved sysfs path of `p`, relative to `root` (so a fixture's own
/// location never leaks into transport detection).
pub fn sys_path(root: &Path, p: &Path) -> String {
    let real = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let rel = real
        .strip_prefix(&root)
        .map(Path::to_path_buf)
        .unwrap_or(real);
    format!("/{}", rel.to_string_lossy().trim_start_matches('/'))
}

/// One disk from `root/sys/block/<name>`. Returns None for partitions and
/// devices without a backing `device` (loop, ram, zram, dm, md).
pub fn disk(root: &Path, name: &str) -> Option<Disk> {
    let sys = root.join("sys/block").join(name);
    let dev = sys.join("device");
    if !dev.exists() {
        return None;
    }
    let devpath = sys_path(root, &sys);
    let transport = transport(name, &devpath);
    let hctl = fs::canonicalize(&dev)
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .filter(|h| h.split(':').count() == 4 && h.split(':').all(|x| x.parse::<u32>().is_ok()));
    let serial = read(&sys.join("serial"))
        .or_else(|| read(&dev.join("serial")))
        .or_else(|| vpd80_serial(&dev.join("vpd_pg80")));
    let wwn = read(&sys.join("wwid"))
        .or_else(|| read(&dev.join("wwid")))
        .and_then(|w| {
            if let Some(naa) = w.strip_prefix("naa.") {
                Some(format!("0x{}", naa.to_ascii_lowercase()))
            } else if w.starts_with("eui.") || w.starts_with("nvme.") || w.starts_with("uuid.") {
                Some(w)
            } else {
                None
            }
        });
    let nsid = read_u64(&sys.join("nsid"));
    let q = sys.join("queue");
    let logical = read_u64(&q.join("logical_block_size")).unwrap_or(512);
    let physical = read_u64(&q.join("physical_block_size")).unwrap_or(logical);
    let by_path = udev_by_path(root)
        .into_iter()
        .find(|(t, _)| t == name)
        .map(|(_, l)| l)
        .or_else(|| compute_by_path(name, &devpath, transport.as_deref(), hctl.as_deref(), nsid));
    Some(Disk {
        name: format!("/dev/{name}"),
        model: read(&dev.join("model")),
        vendor: read(&dev.join("vendor")),
        size: read_u64(&sys.join("size")).unwrap_or(0) * 512,
        rotational: read_u64(&q.join("rotational")) == Some(1),
        serial,
        wwn,
        hctl,
        by_path,
        logical_sector_size: u32::try_from(logical).unwrap_or(512),
        physical_sector_size: u32::try_from(physical).unwrap_or(512),
        transport,
        read_only: read_u64(&sys.join("ro")) == Some(1),
        removable: read_u64(&sys.join("removable")) == Some(1),
    })
}

/// Every disk under `root/sys/block`, sorted by name.
pub fn disks(root: &Path) -> std::io::Result<Vec<Disk>> {
    let mut names: Vec<String> = fs::read_dir(root.join("sys/block"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names.iter().filter_map(|n| disk(root, n)).collect())
}
