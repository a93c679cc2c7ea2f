//! `secure` wipe: the drive's own erase where it has one, proven by markers, else `full`.
//!
//! Markers (4 KiB of a known pattern) are written at the start, a third, two thirds and the
//! end of the device and synced first. On an NVMe namespace the controller's Identify data
//! says which Format NVM secure erases it offers (`wipe::nvme::plan`): crypto erase, then
//! user-data erase, each sent by ioctl (no `nvme` tool in the ramdisk) and accepted only when
//! every marker reads back changed. When the device has no firmware erase, refuses it, or an
//! erase leaves a marker (a drive that lies), the disk falls back to `full` (discard with guaranteed zeroes,
//! write-zeroes, overwrite; read back). The report's `method` names what erased the disk.
//! On an ATA disk (behind libata) the same is done with ATA security erase through SG_IO
//! (`wipe::ata`: enhanced, then normal), never leaving the drive with a password.

use std::path::Path;
use std::time::Duration;

use super::nvme;
use super::{WipeError, WipeProgress, full};
use crate::host::aligned::AlignedBuf;
use crate::host::blockdev::Disk;
use crate::host::nvme as ioctl;

const MARKER_LEN: usize = 4096;
/// How long one Format NVM may take (a user-data erase of a large drive overwrites it all).
const FORMAT_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// The marker pattern (never all zeroes, never all ones).
fn marker() -> AlignedBuf {
    let mut b = AlignedBuf::new(MARKER_LEN);
    for (i, x) in b[..MARKER_LEN].iter_mut().enumerate() {
        *x = u8::try_from((i * 7 + 13) % 251).unwrap_or(0x5a);
    }
    b
}

/// PURE: where markers go on a device of `size` bytes: 4 KiB-aligned, distinct, inside.
pub fn marker_offsets(size: u64) -> Vec<u64> {
    let len = MARKER_LEN as u64;
    if size < len {
        return vec![];
    }
    let last = (size - len) / len * len;
    let mut v: Vec<u64> = [0, size / 3, size / 3 * 2, last]
        .into_iter()
        .map(|o| (o / len * len).min(last))
        .collect();
    v.dedup();
    v
}

/// The offsets whose marker still reads back.
fn surviving(disk: &Disk, offsets: &[u64], want: &[u8]) -> Result<Vec<u64>, WipeError> {
    let mut buf = AlignedBuf::new(MARKER_LEN);
    let mut left = Vec::new();
    for &o in offsets {
        disk.read_at(&mut buf[..MARKER_LEN], o)?;
        if buf[..MARKER_LEN] == want[..MARKER_LEN] {
            left.push(o);
        }
    }
    Ok(left)
}

/// Erases `disk` the strongest way it allows; returns the method that did and the markers
/// it proved gone (`marker@OFFSET`, for the report and the node's history).
pub fn secure(disk: &Disk, p: &WipeProgress) -> Result<(&'static str, Vec<String>), WipeError> {
    let offsets = marker_offsets(disk.size());
    let method = erase(disk, &offsets, p)?;
    Ok((
        method,
        offsets.iter().map(|o| format!("marker@{o}")).collect(),
    ))
}

fn erase(disk: &Disk, offsets: &[u64], p: &WipeProgress) -> Result<&'static str, WipeError> {
    let pattern = marker();
    for &o in offsets {
        disk.write_at(&pattern[..MARKER_LEN], o)?;
    }
    disk.sync()?;
    let dev = disk.path().display().to_string();
    if is_nvme(disk.path()) {
        match nvme_erase(disk, offsets, &pattern, p) {
            Ok(Some(method)) => return Ok(method),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(device = %dev, error = %crate::error_chain(&e), "NVMe secure erase failed, falling back")
            }
        }
    } else if is_ata(disk.path()) {
        match ata_erase(disk, offsets, &pattern, p) {
            Ok(Some(method)) => return Ok(method),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(device = %dev, error = %crate::error_chain(&e), "ATA security erase failed, falling back")
            }
        }
    } else {
        tracing::info!(device = %dev, "no firmware erase on this device: writing zeroes");
    }
    let method = full(disk, p)?;
    let left = surviving(disk, offsets, &pattern)?;
    if let Some(o) = left.first() {
        return Err(WipeError::MarkerSurvived(*o));
    }
    Ok(method)
}

/// Tries the controller's Format NVM erases in order; `Some(method)` for the first one after
/// which no marker survives, `None` when none was offered or none worked.
fn nvme_erase(
    disk: &Disk,
    offsets: &[u64],
    pattern: &[u8],
    p: &WipeProgress,
) -> Result<Option<&'static str>, WipeError> {
    let dev = disk.path().display().to_string();
    let fd = disk.fd();
    let err = |e: ioctl::NvmeError| WipeError::Command(anyhow::Error::new(e));
    let nsid = ioctl::namespace_id(fd).map_err(err)?;
    let caps = nvme::controller_caps(&ioctl::identify(fd, 0, 1).map_err(err)?[..]);
    let ns = nvme::namespace_format(&ioctl::identify(fd, nsid, 0).map_err(err)?[..]);
    let plan = nvme::plan(caps);
    tracing::info!(device = %dev, ?caps, plan = ?plan.iter().map(|s| s.method()).collect::<Vec<_>>(), "NVMe erase capabilities");
    for ses in plan {
        p.add_total(disk.size());
        let sent = ioctl::format(fd, nsid, nvme::format_cdw10(ns, ses), FORMAT_TIMEOUT);
        p.add_done(disk.size());
        if let Err(e) = sent {
            tracing::warn!(device = %dev, method = ses.method(), error = %e, "Format NVM refused");
            continue;
        }
        let left = surviving(disk, offsets, pattern)?;
        if left.is_empty() {
            tracing::info!(device = %dev, method = ses.method(), markers = offsets.len(), "erased; every marker is gone");
            let _ = disk.reread_partitions();
            return Ok(Some(ses.method()));
        }
        tracing::error!(device = %dev, method = ses.method(), surviving = ?left, "Format NVM completed but markers survived");
    }
    Ok(None)
}

/// ATA security erase (`wipe::ata`): `Some(method)` when an erase ran and every marker is
/// gone, `None` when the drive offers none or none worked (its password is then disabled,
/// so it is never left locked).
fn ata_erase(
    disk: &Disk,
    offsets: &[u64],
    pattern: &[u8],
    p: &WipeProgress,
) -> Result<Option<&'static str>, WipeError> {
    use super::ata::{self, Plan, Proto};
    use crate::host::sgio::{self, Data};
    let dev = disk.path().display().to_string();
    let fd = disk.fd();
    let short = Duration::from_secs(15);
    let err = |e: sgio::SgError| WipeError::Command(anyhow::Error::new(e));
    let send = |command: u8, block: &[u8; 512], timeout: Duration| {
        sgio::command(
            fd,
            &ata::cdb(command, Proto::PioOut),
            Data::Out(block),
            timeout,
        )
    };
    let mut id = [0u8; 512];
    sgio::command(
        fd,
        &ata::cdb(ata::IDENTIFY_DEVICE, Proto::PioIn),
        Data::In(&mut id),
        short,
    )
    .map_err(err)?;
    let security = ata::security(&id);
    let (unlock, tries) = match ata::plan(security) {
        Plan::Skip(why) => {
            tracing::info!(device = %dev, why, "no ATA security erase: writing zeroes");
            return Ok(None);
        }
        Plan::Erase { unlock, tries } => (unlock, tries),
    };
    let user = ata::password_block(false);
    if unlock {
        send(ata::SECURITY_UNLOCK, &user, short).map_err(err)?;
    }
    send(ata::SECURITY_SET_PASSWORD, &user, short).map_err(err)?;
    for (enhanced, timeout) in tries {
        let method = if enhanced {
            "ata_enhanced_secure_erase"
        } else {
            "ata_secure_erase"
        };
        p.add_total(disk.size());
        let done = sgio::command(
            fd,
            &ata::cdb(ata::SECURITY_ERASE_PREPARE, Proto::NonData),
            Data::None,
            short,
        )
        .and_then(|()| {
            send(
                ata::SECURITY_ERASE_UNIT,
                &ata::password_block(enhanced),
                timeout,
            )
        });
        p.add_done(disk.size());
        match done {
            Ok(()) if surviving(disk, offsets, pattern)?.is_empty() => {
                tracing::info!(device = %dev, method, "erased; every marker is gone");
                let _ = disk.reread_partitions();
                return Ok(Some(method));
            }
            Ok(()) => {
                tracing::error!(device = %dev, method, "the erase completed but markers survived")
            }
            Err(e) => tracing::warn!(device = %dev, method, error = %e, "the erase failed"),
        }
        // A failed erase may leave the password set: set it again for the next try.
        let _ = send(ata::SECURITY_SET_PASSWORD, &user, short);
    }
    // Never leave the drive with a password (locked at its next power-on).
    send(ata::SECURITY_DISABLE_PASSWORD, &user, short).map_err(err)?;
    Ok(None)
}

/// Whether `path` is a disk behind libata (its sysfs device path runs through `ata<N>`).
fn is_ata(path: &Path) -> bool {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Some(name) = real.file_name() else {
        return false;
    };
    std::fs::canonicalize(Path::new("/sys/class/block").join(name))
        .is_ok_and(|p| through_ata_port(&p))
}

/// PURE: whether a sysfs device path has an `ata<N>` component.
fn through_ata_port(sysfs: &Path) -> bool {
    sysfs.components().any(|c| {
        c.as_os_str()
            .to_str()
            .and_then(|s| s.strip_prefix("ata"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Whether `path` is an NVMe namespace (`nvme<c>n<n>`, after following links).
fn is_nvme(path: &Path) -> bool {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    real.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n.strip_prefix("nvme")
            .and_then(|r| r.split_once('n'))
            .is_some_and(|(c, ns)| {
                !c.is_empty()
                    && c.bytes().all(|b| b.is_ascii_digit())
                    && !ns.is_empty()
                    && ns.bytes().all(|b| b.is_ascii_digit())
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_spread_aligned_and_inside() {
        assert_eq!(marker_offsets(100), Vec::<u64>::new());
        assert_eq!(marker_offsets(4096), vec![0]);
        assert_eq!(marker_offsets(3 * 4096), vec![0, 4096, 8192]);
        let gib = 1u64 << 30;
        let v = marker_offsets(gib);
        assert_eq!(v.len(), 4);
        assert!(v.iter().all(|o| o % 4096 == 0 && o + 4096 <= gib));
        assert_eq!(v[3], gib - 4096);
        assert!(v.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn ata_ports() {
        for (p, want) in [
            (
                "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
                true,
            ),
            (
                "/sys/devices/pci0000:00/0000:00:1f.2/ata12/host3/target3:0:0/3:0:0:0/block/sdd",
                true,
            ),
            (
                "/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
                false,
            ),
            (
                "/sys/devices/pci0000:00/0000:00:05.0/usb1/1-1/host2/target2:0:0/2:0:0:0/block/sdb",
                false,
            ),
            ("/sys/devices/virtual/block/atafake", false),
        ] {
            assert_eq!(through_ata_port(Path::new(p)), want, "{p}");
        }
    }

    #[test]
    fn nvme_names() {
        for (name, want) in [
            ("/dev/nvme0n1", true),
            ("/dev/nvme12n3", true),
            ("/dev/nvme0n1p1", false),
            ("/dev/nvme0", false),
            ("/dev/sda", false),
            ("/dev/nvmexn1", false),
        ] {
            assert_eq!(is_nvme(Path::new(name)), want, "{name}");
        }
    }

    #[test]
    fn a_file_falls_back_to_zeroes_and_proves_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![0xabu8; 1 << 20]).expect("image");
        let disk = Disk::open_write(&path, false).expect("open");
        let p = WipeProgress::default();
        let (method, markers) = secure(&disk, &p).expect("secure falls back to full");
        assert_eq!(method, "overwrite");
        assert_eq!(
            markers,
            [
                "marker@0",
                "marker@348160",
                "marker@696320",
                "marker@1044480"
            ]
        );
        let data = std::fs::read(&path).expect("read");
        assert!(data.iter().all(|&b| b == 0));
    }
}
