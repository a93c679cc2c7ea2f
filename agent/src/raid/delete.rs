//! Removing software RAID from disks: stop the arrays the kernel runs over them, zero every
//! md superblock (1.0, 1.1, 1.2 and 0.90 places, found by the wipe's signature detector) on
//! each partition and on the whole disk, then clear the partition tables at both ends of
//! the disks that held any.
//! Fails closed: a superblock that could not be zeroed (or still reads back) is an error.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::RaidError;
use crate::host::blockdev::Disk as BlockDev;
use crate::md::superblock;

const MIB: u64 = 1 << 20;
/// What is read at each end of an area to find superblocks (0.90 sits 64-128 KiB before
/// the end, 1.0 8-12 KiB; 1.1 and 1.2 in the first 8 KiB).
const HEAD: u64 = 64 << 10;
const TAIL: u64 = 128 << 10;

/// One superblock zeroed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Byte offset on the disk.
    pub offset: u64,
    /// md metadata version (`1.0`, `1.1`, `1.2`, `0.90`).
    pub metadata: String,
    /// `disk`, or the byte offset where the partition holding it starts.
    pub on: String,
}

/// What [`delete_all`] did to one disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskCleared {
    pub device: String,
    pub superblocks: Vec<Removed>,
    /// The first and last MiB (partition tables) zeroed: done on the disks that held md.
    pub table_cleared: bool,
}

/// What [`delete_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// md arrays the kernel ran over the disks, stopped.
    pub stopped: Vec<String>,
    pub disks: Vec<DiskCleared>,
}

/// Stops every md array over `disks`, zeroes every md superblock on them and clears their
/// partition tables.
pub fn delete_all(disks: &[PathBuf]) -> Result<Report, RaidError> {
    let names: Vec<String> = disks
        .iter()
        .map(|d| {
            std::fs::canonicalize(d)
                .unwrap_or_else(|_| d.clone())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let mut report = Report::default();
    for md in crate::md::host::arrays_over(Path::new("/sys"), &names) {
        crate::md::host::stop_by_name(&md).map_err(|source| RaidError::Md {
            name: md.clone(),
            source,
        })?;
        tracing::info!(array = %md, "md array stopped");
        report.stopped.push(md);
    }
    for d in disks {
        report.disks.push(clear_disk(d)?);
    }
    Ok(report)
}

/// Reads through an aligned buffer: the disk is open with `O_DIRECT`.
fn read(disk: &BlockDev, off: u64, len: u64) -> Result<Vec<u8>, RaidError> {
    let len = usize::try_from(len).unwrap_or(0);
    let mut b = crate::host::aligned::AlignedBuf::new(len);
    disk.read_at(&mut b[..len], off)?;
    Ok(b[..len].to_vec())
}

/// PURE over the bytes: the md superblocks in an area of `len` bytes whose first bytes are
/// `head` and last bytes `tail`: `(offset in the area, version)`.
pub fn find(head: &[u8], tail: &[u8], len: u64, sector: usize) -> Vec<(u64, String)> {
    let tail_start = len - tail.len() as u64;
    crate::wipe::signatures::detect(head, tail, len, sector)
        .into_iter()
        .filter_map(|s| s.strip_prefix("linux_raid_member@")?.parse::<u64>().ok())
        .map(|off| {
            let at = if off >= tail_start {
                tail.get(usize::try_from(off - tail_start).unwrap_or(usize::MAX)..)
            } else {
                head.get(usize::try_from(off).unwrap_or(usize::MAX)..)
            };
            let version = match at.and_then(superblock::major_version) {
                Some(0) => "0.90",
                _ if off == 0 => "1.1",
                _ if off == 4096 => "1.2",
                _ => "1.0",
            };
            (off, version.to_owned())
        })
        .collect()
}

fn clear_disk(path: &Path) -> Result<DiskCleared, RaidError> {
    let disk = super::build::open_write_patiently(path)?;
    let size = disk.size();
    let sector = disk.logical_sector_size();
    let head = read(&disk, 0, MIB.min(size))?;
    let mut areas: Vec<(u64, u64, String)> = crate::image::table::partitions(&head, sector)
        .into_iter()
        .filter(|&(start, len)| len > 0 && start.checked_add(len).is_some_and(|e| e <= size))
        .map(|(start, len)| (start, len, start.to_string()))
        .collect();
    areas.push((0, size, "disk".to_owned()));
    let mut removed = Vec::new();
    for (start, len, on) in areas {
        let h = read(&disk, start, HEAD.min(len))?;
        let tl = TAIL.min(len);
        let t = read(&disk, start + len - tl, tl)?;
        for (off, metadata) in find(&h, &t, len, sector as usize) {
            removed.push(Removed {
                offset: start + off,
                metadata,
                on: on.clone(),
            });
        }
    }
    removed.sort_by_key(|r| r.offset);
    removed.dedup_by_key(|r| r.offset);
    for r in &removed {
        disk.zero_range(r.offset, superblock::BLOCK_LEN as u64)?;
    }
    // A disk that held md loses its partition table too; the others keep theirs.
    let table_cleared = !removed.is_empty();
    if table_cleared {
        disk.zero_range(0, MIB.min(size))?;
        disk.zero_range(size.saturating_sub(MIB), MIB.min(size))?;
    }
    disk.sync()?;
    for r in &removed {
        let b = read(&disk, r.offset, 4096.min(size - r.offset))?;
        if superblock::has_magic(&b) {
            return Err(RaidError::Other {
                what: format!(
                    "the md {} superblock at byte {} of {} still reads back after zeroing",
                    r.metadata,
                    r.offset,
                    path.display()
                ),
            });
        }
    }
    disk.reread_partitions()?;
    for r in &removed {
        tracing::info!(device = %path.display(), offset = r.offset, metadata = %r.metadata, "md superblock zeroed");
    }
    Ok(DiskCleared {
        device: path.display().to_string(),
        superblocks: removed,
        table_cleared,
    })
}
