//! Disk wiping: `metadata` (every known signature, on the disk and on each
//! partition, plus both ends), `full` (zero everything, verified by reading
//! back) and `secure` (firmware erase, verified by a marker). Several disks
//! are wiped in parallel; every disk gets a result and the job fails closed.

pub mod select;
pub mod signatures;

use std::path::{Path, PathBuf};
use std::time::Instant;

use proto::{WipeDiskResult, WipeMode, WipeReport};

use crate::host::aligned::AlignedBuf;
use crate::host::blockdev::{Disk, DiskError};
use crate::image::table;

const MIB: u64 = 1 << 20;

/// Why wiping one disk failed.
#[derive(Debug, thiserror::Error)]
pub enum WipeError {
    /// Opening or writing failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Zeroes were not read back where they should be.
    #[error("verification failed: non-zero data at offset {0} after wiping")]
    NotZero(u64),
    /// Secure erase is not possible on this device.
    #[error("secure erase unsupported on {device}: {why}")]
    SecureUnsupported {
        /// Device.
        device: String,
        /// Detail.
        why: String,
    },
    /// The firmware erase ran but the marker survived.
    #[error("secure erase did not erase: marker still readable at offset {0}")]
    MarkerSurvived(u64),
    /// An external erase command failed.
    #[error("firmware erase command failed")]
    Command(#[source] anyhow::Error),
}

/// Wipe every device in parallel and report per disk.
pub fn wipe_all(devices: &[PathBuf], mode: WipeMode) -> WipeReport {
    let disks: Vec<WipeDiskResult> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter()
            .map(|d| s.spawn(move || wipe_one(d, mode)))
            .collect();
        handles
            .into_iter()
            .zip(devices)
            .map(|(h, d)| {
                h.join().unwrap_or_else(|_| WipeDiskResult {
                    device: d.display().to_string(),
                    mode,
                    ok: false,
                    method: None,
                    cleared: vec![],
                    skipped: None,
                    error: Some("wipe thread panicked".into()),
                    elapsed_ms: 0,
                })
            })
            .collect()
    });
    WipeReport {
        ok: disks.iter().all(|d| d.ok || d.skipped.is_some()),
        disks,
    }
}

/// Wipe one device; never panics, always returns a result.
pub fn wipe_one(device: &Path, mode: WipeMode) -> WipeDiskResult {
    let t = Instant::now();
    let mut r = WipeDiskResult {
        device: device.display().to_string(),
        mode,
        ok: false,
        method: None,
        cleared: vec![],
        skipped: None,
        error: None,
        elapsed_ms: 0,
    };
    let res = Disk::open_write(device, true)
        .map_err(WipeError::from)
        .and_then(|disk| match mode {
            WipeMode::Metadata => metadata(&disk).map(|c| ("signatures", c)),
            WipeMode::Full => full(&disk).map(|m| (m, vec![])),
            WipeMode::Secure => secure(&disk).map(|m| (m, vec![])),
        });
    match res {
        Ok((method, cleared)) => {
            r.ok = true;
            r.method = Some(method.to_string());
            r.cleared = cleared;
        }
        Err(e) => {
            tracing::error!(device = %device.display(), error = %crate::error_chain(&e), "wipe failed");
            r.error = Some(crate::error_chain(&e));
        }
    }
    r.elapsed_ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
    r
}

fn read_region(disk: &Disk, off: u64, len: u64) -> Result<AlignedBuf, DiskError> {
    let len = usize::try_from(len).unwrap_or(0);
    let mut b = AlignedBuf::new(len);
    disk.read_at(&mut b[..len], off)?;
    Ok(b)
}

/// Clear signatures on every partition, then on the whole disk.
fn metadata(disk: &Disk) -> Result<Vec<String>, WipeError> {
    let size = disk.size();
    let sector = disk.logical_sector_size();
    let head_len = (8 * MIB).min(size);
    let head = read_region(disk, 0, head_len)?;
    let tail_len = (2 * MIB).min(size);
    let tail = read_region(disk, size - tail_len, tail_len)?;
    let mut cleared = Vec::new();
    let mut areas: Vec<(u64, u64)> = table::partitions(
        &head[..usize::try_from(head_len.min(MIB)).unwrap_or(0)],
        sector,
    )
    .into_iter()
    .filter(|&(start, len)| len > 0 && start + len <= size)
    .collect();
    for &(start, len) in &areas {
        let h = read_region(disk, start, (8 * MIB).min(len))?;
        let tl = (2 * MIB).min(len);
        let t = read_region(disk, start + len - tl, tl)?;
        for sig in signatures::detect(
            &h,
            &t[..usize::try_from(tl).unwrap_or(0)],
            len,
            sector as usize,
        ) {
            cleared.push(format!("part@{start}:{sig}"));
        }
    }
    cleared.extend(signatures::detect(
        &head[..usize::try_from(head_len).unwrap_or(0)],
        &tail[..usize::try_from(tail_len).unwrap_or(0)],
        size,
        sector as usize,
    ));
    areas.push((0, size));
    for (start, len) in areas {
        for (off, l) in signatures::ranges(len) {
            disk.zero_range(start + off, l)?;
        }
    }
    disk.sync()?;
    disk.reread_partitions()?;
    Ok(cleared)
}

fn sysfs_queue(disk: &Disk, attr: &str) -> Option<u64> {
    let name = disk.path().file_name()?.to_string_lossy().into_owned();
    let real = std::fs::canonicalize(disk.path()).ok()?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(name);
    std::fs::read_to_string(format!("/sys/class/block/{name}/queue/{attr}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Zero the whole device by the cheapest way that guarantees zeroes, then
/// verify by reading back.
fn full(disk: &Disk) -> Result<&'static str, WipeError> {
    let size = disk.size();
    let method = if disk.is_block_device()
        && sysfs_queue(disk, "discard_zeroes_data") == Some(1)
        && disk.discard(0, size).is_ok()
    {
        "discard"
    } else if disk.is_block_device()
        && sysfs_queue(disk, "write_zeroes_max_bytes").unwrap_or(0) > 0
        && disk.zeroout(0, size).is_ok()
    {
        "write_zeroes"
    } else {
        disk.zero_range(0, size)?;
        "overwrite"
    };
    disk.sync()?;
    verify_zero(disk)?;
    disk.reread_partitions()?;
    Ok(method)
}

/// Read back everything on small devices, else the ends plus 256 spread samples.
fn verify_zero(disk: &Disk) -> Result<(), WipeError> {
    let size = disk.size();
    let mut offsets: Vec<u64> = if size <= 256 * MIB {
        (0..size.div_ceil(MIB)).map(|i| i * MIB).collect()
    } else {
        let n = 256u64;
        let mut v: Vec<u64> = (0..n).map(|i| (size / n * i) / MIB * MIB).collect();
        v.push(size - MIB);
        v
    };
    offsets.dedup();
    let mut buf = AlignedBuf::new(MIB as usize);
    for off in offsets {
        let len = usize::try_from(MIB.min(size - off)).unwrap_or(0);
        disk.read_at(&mut buf[..len], off)?;
        if let Some(p) = buf[..len].iter().position(|&b| b != 0) {
            return Err(WipeError::NotZero(off + p as u64));
        }
    }
    Ok(())
}

/// What firmware erase a device offers.
fn secure_kind(disk: &Disk) -> Result<&'static str, WipeError> {
    let real = std::fs::canonicalize(disk.path()).unwrap_or_else(|_| disk.path().to_path_buf());
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sys = Path::new("/sys/class/block").join(&name);
    let devpath = std::fs::canonicalize(&sys)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("nvme") {
        Ok("nvme_format")
    } else if devpath.contains("/ata") {
        Ok("ata_secure_erase")
    } else {
        Err(WipeError::SecureUnsupported {
            device: disk.path().display().to_string(),
            why: "it is neither an NVMe namespace nor an ATA disk, so it has no firmware erase"
                .into(),
        })
    }
}

fn secure(disk: &Disk) -> Result<&'static str, WipeError> {
    let kind = secure_kind(disk)?;
    let marker: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 13) as u8).collect();
    let spots = [0, disk.size() / 2 / 4096 * 4096];
    for &o in &spots {
        disk.write_at(&marker, o)?;
    }
    disk.sync()?;
    let dev = disk.path().display().to_string();
    let cmd = match kind {
        "nvme_format" => crate::host::run(
            std::process::Command::new("nvme").args(["format", &dev, "--ses=2", "--force"]),
        )
        .or_else(|_| {
            crate::host::run(
                std::process::Command::new("nvme").args(["format", &dev, "--ses=1", "--force"]),
            )
        }),
        _ => crate::host::run(std::process::Command::new("hdparm").args([
            "--user-master",
            "u",
            "--security-set-pass",
            "ingot",
            &dev,
        ]))
        .and_then(|_| {
            crate::host::run(std::process::Command::new("hdparm").args([
                "--user-master",
                "u",
                "--security-erase-enhanced",
                "ingot",
                &dev,
            ]))
            .or_else(|_| {
                crate::host::run(std::process::Command::new("hdparm").args([
                    "--user-master",
                    "u",
                    "--security-erase",
                    "ingot",
                    &dev,
                ]))
            })
        }),
    };
    cmd.map_err(WipeError::Command)?;
    let mut buf = AlignedBuf::new(4096);
    for &o in &spots {
        disk.read_at(&mut buf[..4096], o)?;
        if buf[..4096] == marker[..] {
            return Err(WipeError::MarkerSurvived(o));
        }
    }
    disk.reread_partitions()?;
    Ok(kind)
}
