//! Building arrays over partitions that exist: superblocks written to every member, the
//! array assembled, checked and stopped by the kernel ([`Kernel`]), and on any failure
//! every superblock written zeroed again (fail closed: no half-built array is left).

use std::path::{Path, PathBuf};

use proto::{Disk, RaidArray, RaidLevel, RaidMember, RaidReport};

use super::RaidError;
use crate::host::blockdev::Disk as BlockDev;
use crate::md::host::{Assembled, MdError};
use crate::md::superblock::{self, Metadata, NewArray, Superblock};

/// One member of an array to build.
#[derive(Debug, Clone)]
pub struct Member {
    /// The member partition (`/dev/vda1`).
    pub partition: PathBuf,
    /// The disk holding it, as the inventory has it.
    pub disk: Disk,
}

/// One array to build.
#[derive(Debug, Clone)]
pub struct ArrayPlan {
    pub level: RaidLevel,
    /// The name in the superblock (at most 32 bytes).
    pub name: String,
    pub metadata: Metadata,
    /// Whether it holds the root file system.
    pub root: bool,
    /// In role order.
    pub members: Vec<Member>,
}

/// What the kernel does with members whose superblocks are written: assemble them into a
/// running array, report it, and stop it again, whatever happened.
pub trait Kernel {
    fn assemble(&self, metadata: Metadata, members: &[PathBuf]) -> Result<Assembled, MdError>;
}

/// The running kernel's md driver.
#[derive(Debug, Default)]
pub struct HostKernel;

impl Kernel for HostKernel {
    fn assemble(&self, metadata: Metadata, members: &[PathBuf]) -> Result<Assembled, MdError> {
        use crate::md::host;
        host::load_modules()?;
        let array = host::Array::create()?;
        let name = array.name().to_owned();
        let result = (|| {
            array.set_version(metadata.minor())?;
            for m in members {
                array.add(m)?;
            }
            array.run()?;
            array.state()
        })();
        let stopped = array.stop();
        let state = result?;
        stopped?;
        tracing::info!(array = %name, ?state, "md array assembled and stopped");
        Ok(state)
    }
}

/// Builds every array with the running kernel: random set and device UUIDs, the time now.
pub fn build(arrays: &[ArrayPlan]) -> Result<RaidReport, RaidError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    build_with(arrays, &HostKernel, now, &mut || {
        *uuid::Uuid::new_v4().as_bytes()
    })
}

/// [`build`] with a given kernel, clock and UUID source.
pub fn build_with(
    arrays: &[ArrayPlan],
    kernel: &dyn Kernel,
    now: u64,
    uuids: &mut dyn FnMut() -> [u8; 16],
) -> Result<RaidReport, RaidError> {
    let mut written: Vec<(PathBuf, u64)> = Vec::new();
    let mut report = RaidReport::default();
    for a in arrays {
        match build_one(a, kernel, now, uuids, &mut written) {
            Ok(r) => report.arrays.push(r),
            Err(error) => {
                let leftovers = zero_all(&written);
                return Err(if leftovers.is_empty() {
                    error
                } else {
                    RaidError::Cleanup {
                        error: Box::new(error),
                        leftovers,
                    }
                });
            }
        }
    }
    Ok(report)
}

fn build_one(
    a: &ArrayPlan,
    kernel: &dyn Kernel,
    now: u64,
    uuids: &mut dyn FnMut() -> [u8; 16],
    written: &mut Vec<(PathBuf, u64)>,
) -> Result<RaidArray, RaidError> {
    let n = a.members.len();
    if !(2..=proto::raid::RAID_MAX_DISKS).contains(&n) {
        return Err(RaidError::Plan(format!(
            "array {} has {n} members, not 2 to {}",
            a.name,
            proto::raid::RAID_MAX_DISKS
        )));
    }
    let sb_err = |m: &Member| {
        let member = m.partition.display().to_string();
        move |source| RaidError::Superblock { member, source }
    };
    let mut geos = Vec::with_capacity(n);
    for m in &a.members {
        let bytes = BlockDev::open_read(&m.partition)?.size();
        geos.push(superblock::geometry(a.metadata, a.level, bytes / 512).map_err(sb_err(m))?);
    }
    let size = geos.iter().map(|g| g.size).min().unwrap_or(0);
    let array = NewArray {
        level: a.level,
        name: &a.name,
        set_uuid: uuids(),
        now,
        raid_disks: u32::try_from(n).unwrap_or(u32::MAX),
        size,
    };
    for (i, (m, g)) in a.members.iter().zip(&geos).enumerate() {
        let dev = u32::try_from(i).unwrap_or(u32::MAX);
        let sb = Superblock::new_member(&array, g, dev, uuids()).map_err(sb_err(m))?;
        let offset = g.super_offset * 512;
        // Recorded first, so that a write that fails half way is zeroed too.
        written.push((m.partition.clone(), offset));
        let disk = BlockDev::open_write(&m.partition, true)?;
        disk.write_at(&sb.encode(), offset)?;
        disk.sync()?;
    }
    let paths: Vec<PathBuf> = a.members.iter().map(|m| m.partition.clone()).collect();
    let got = kernel
        .assemble(a.metadata, &paths)
        .map_err(|source| RaidError::Md {
            name: a.name.clone(),
            source,
        })?;
    let want_level = match a.level {
        RaidLevel::Raid0 => "raid0",
        RaidLevel::Raid1 => "raid1",
    };
    let want_bytes = match a.level {
        RaidLevel::Raid1 => size * 512,
        RaidLevel::Raid0 => size * 512 * n as u64,
    };
    let disagrees = |got: String, want: String| RaidError::KernelDisagrees {
        name: a.name.clone(),
        got,
        want,
    };
    if got.level != want_level {
        return Err(disagrees(
            format!("level {}", got.level),
            format!("level {want_level}"),
        ));
    }
    if got.raid_disks as usize != n {
        return Err(disagrees(
            format!("{} raid disks", got.raid_disks),
            format!("{n} raid disks"),
        ));
    }
    if got.size_bytes < want_bytes {
        return Err(disagrees(
            format!("{} bytes", got.size_bytes),
            format!("at least {want_bytes} bytes"),
        ));
    }
    // What the kernel left on each member (it rewrites the superblocks as it stops the
    // array) still reads as a member of this array.
    for (m, g) in a.members.iter().zip(&geos) {
        let disk = BlockDev::open_read(&m.partition)?;
        let mut buf = vec![0u8; superblock::BLOCK_LEN];
        disk.read_at(&mut buf, g.super_offset * 512)?;
        let sb = superblock::parse(&buf).map_err(sb_err(m))?;
        if sb.set_uuid != array.set_uuid {
            return Err(disagrees(
                format!(
                    "a superblock of array {} on {}",
                    superblock::mdadm_uuid(&sb.set_uuid),
                    m.partition.display()
                ),
                format!("array {}", superblock::mdadm_uuid(&array.set_uuid)),
            ));
        }
    }
    Ok(RaidArray {
        level: a.level,
        name: a.name.clone(),
        uuid: superblock::mdadm_uuid(&array.set_uuid),
        metadata: a.metadata.as_str().to_owned(),
        size_bytes: got.size_bytes,
        members: a
            .members
            .iter()
            .map(|m| RaidMember {
                device: m.partition.display().to_string(),
                disk: m.disk.name.clone(),
                serial: m.disk.serial.clone().filter(|s| !s.is_empty()),
                wwn: m.disk.wwn.clone().filter(|s| !s.is_empty()),
            })
            .collect(),
        root: a.root,
    })
}

/// Zeroes the superblock block at each `(member, offset)`; the ones that failed, named.
fn zero_all(written: &[(PathBuf, u64)]) -> Vec<String> {
    let mut left = Vec::new();
    for (p, off) in written {
        if let Err(e) = zero_block(p, *off) {
            tracing::error!(member = %p.display(), offset = off, error = %crate::error_chain(&e), "md superblock not zeroed");
            left.push(format!("{}@{off}", p.display()));
        }
    }
    left
}

fn zero_block(p: &Path, off: u64) -> Result<(), crate::host::blockdev::DiskError> {
    let disk = open_write_patiently(p)?;
    disk.zero_range(off, superblock::BLOCK_LEN as u64)?;
    disk.sync()
}

/// Opens `p` exclusively, waiting up to 2 s while the kernel still holds it (an md array
/// lets its members go as it is torn down).
pub(super) fn open_write_patiently(p: &Path) -> Result<BlockDev, crate::host::blockdev::DiskError> {
    let mut tries = 0;
    loop {
        match BlockDev::open_write(p, true) {
            Err(crate::host::blockdev::DiskError::Busy(_)) if tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}
