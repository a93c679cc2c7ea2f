//! Software RAID (Ironic's `target_raid_config` with `"controller": "software"`): which
//! disks are members ([`resolve`]), where each volume's partition goes on every member
//! ([`extents`]), building the arrays over those partitions ([`build`]: md superblocks
//! written by [`crate::md`], assembled, checked and stopped by the kernel) and removing
//! every array and superblock from disks ([`delete_all`]). The planning is pure; the rest
//! is a thin layer over `md::host` and `host::blockdev`.
//!
//! The first volume holds the root file system: RAID-1 with md metadata 1.0, so each
//! member partition starts with the plain file system that firmware and boot loaders read.
//! A second volume uses metadata 1.2. The instance's own mdadm assembles them at boot.

mod build;
mod delete;

use std::path::{Path, PathBuf};

use proto::{Disk, RaidLevel, RaidVolume, SoftwareRaid};

pub use build::{ArrayPlan, Kernel, Member, build, build_with};
pub use delete::{DiskCleared, Removed, Report, delete_all, find};

pub use crate::md::superblock::Metadata;
use crate::md::superblock::{self, SuperblockError};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Why a RAID plan cannot be carried out; nothing names a disk by a guess.
#[derive(Debug, thiserror::Error)]
pub enum RaidError {
    #[error("software RAID plan refused: {0}")]
    Plan(String),
    #[error("software RAID member hint {hint} matches no disk")]
    NoDisk { hint: String },
    #[error("software RAID member hint {hint} matches {} disks ({}): a member hint must name one disk", disks.len(), disks.join(", "))]
    Ambiguous { hint: String, disks: Vec<String> },
    #[error("software RAID member hints {first} and {second} both match {disk}")]
    Twice {
        disk: String,
        first: String,
        second: String,
    },
    #[error("software RAID member hint {hint} matches {disk}, which cannot be a member: {why}")]
    NotEligible {
        hint: String,
        disk: String,
        why: &'static str,
    },
    #[error("software RAID needs at least 2 member disks; {found} eligible{}", passed_over(.skipped))]
    TooFewDisks { found: usize, skipped: Vec<String> },
    #[error("software RAID found {0} eligible disks, more than the {max} members it takes: name the member disks", max = proto::raid::RAID_MAX_DISKS)]
    TooManyDisks(usize),
    #[error("software RAID volumes do not fit: {0}")]
    DoesNotFit(String),
    #[error(
        "the root RAID volume holds {usable} bytes, less than the image's root partition \
         of {need} bytes"
    )]
    RootTooSmall { usable: u64, need: u64 },
    #[error("md superblock for {member}")]
    Superblock {
        member: String,
        #[source]
        source: SuperblockError,
    },
    #[error(transparent)]
    Disk(#[from] crate::host::blockdev::DiskError),
    #[error("md array {name}")]
    Md {
        name: String,
        #[source]
        source: crate::md::host::MdError,
    },
    #[error("the kernel assembled md array {name} as {got}, not {want}")]
    KernelDisagrees {
        name: String,
        got: String,
        want: String,
    },
    #[error("laying out a RAID member's partition table")]
    Table(#[source] crate::image::table::TableError),
    #[error("{what}")]
    Other { what: String },
    #[error("{error}; and these md superblocks could not be zeroed again: {}", leftovers.join(", "))]
    Cleanup {
        error: Box<RaidError>,
        leftovers: Vec<String>,
    },
}

fn passed_over(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (passed over: {})", skipped.join(", "))
    }
}

/// A hint set as the operator wrote it, for messages.
fn shown(h: &proto::RootDeviceHints) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| "{..}".to_owned())
}

/// Why a disk cannot be a RAID member, or None: read-only, virtual media, removable, or
/// the medium the agent booted from (`boot_disks`).
pub fn ineligible(d: &Disk, boot_disks: &[String]) -> Option<&'static str> {
    if d.read_only {
        Some("read-only")
    } else if d.is_virtual_media() {
        Some("virtual media")
    } else if d.removable {
        Some("removable")
    } else if boot_disks.contains(&d.name) {
        Some("the boot medium")
    } else {
        None
    }
}

/// PURE: the member disks of `plan` among `disks`, sorted by name: each hint set matches
/// exactly one eligible disk and no disk twice; no hints means every eligible disk (at
/// least 2). The boot media (`boot_disks`, `/dev/...` names) are never eligible.
pub fn resolve_excluding(
    plan: &SoftwareRaid,
    disks: &[Disk],
    boot_disks: &[String],
) -> Result<Vec<Disk>, RaidError> {
    plan.check().map_err(RaidError::Plan)?;
    let mut out: Vec<(Disk, String)> = Vec::new();
    if plan.disks.is_empty() {
        let mut skipped = Vec::new();
        for d in disks {
            match ineligible(d, boot_disks) {
                Some(why) => skipped.push(format!("{} ({why})", d.name)),
                None => out.push((d.clone(), String::new())),
            }
        }
        if out.len() < 2 {
            return Err(RaidError::TooFewDisks {
                found: out.len(),
                skipped,
            });
        }
        if out.len() > proto::raid::RAID_MAX_DISKS {
            return Err(RaidError::TooManyDisks(out.len()));
        }
    } else {
        for h in &plan.disks {
            let hint = shown(h);
            let found: Vec<&Disk> = disks
                .iter()
                .filter(|d| crate::hints::matches(h, d))
                .collect();
            let d = match found.as_slice() {
                [] => return Err(RaidError::NoDisk { hint }),
                [d] => *d,
                many => {
                    return Err(RaidError::Ambiguous {
                        hint,
                        disks: many.iter().map(|d| d.name.clone()).collect(),
                    });
                }
            };
            if let Some(why) = ineligible(d, boot_disks) {
                return Err(RaidError::NotEligible {
                    hint,
                    disk: d.name.clone(),
                    why,
                });
            }
            if let Some((_, first)) = out.iter().find(|(o, _)| o.name == d.name) {
                return Err(RaidError::Twice {
                    disk: d.name.clone(),
                    first: first.clone(),
                    second: hint,
                });
            }
            out.push((d.clone(), hint));
        }
    }
    let mut members: Vec<Disk> = out.into_iter().map(|(d, _)| d).collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(members)
}

/// The byte range of one volume's partition on every member disk (the table code's type).
pub use crate::image::table::raid::Extent;

/// The volume names: given, else `root` and `data`; two volumes may not share one.
pub fn volume_names(plan: &SoftwareRaid) -> Result<Vec<String>, RaidError> {
    let names: Vec<String> = plan
        .volumes
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.name
                .clone()
                .unwrap_or_else(|| if i == 0 { "root" } else { "data" }.to_owned())
        })
        .collect();
    if names.len() == 2 && names[0] == names[1] {
        return Err(RaidError::Plan(format!(
            "both software RAID volumes are named {}",
            names[0]
        )));
    }
    Ok(names)
}

/// The md metadata of volume `index`: 1.0 for the root volume (the first), else 1.2.
pub fn metadata_of(index: usize) -> Metadata {
    if index == 0 {
        Metadata::V1_0
    } else {
        Metadata::V1_2
    }
}

/// PURE: the usable bytes of an array of `level` over `members` partitions of `len` bytes
/// each, with `metadata` (what the superblock geometry leaves).
pub fn usable_bytes(
    level: RaidLevel,
    metadata: Metadata,
    members: usize,
    len: u64,
) -> Result<u64, SuperblockError> {
    let g = superblock::geometry(metadata, level, len / 512)?;
    Ok(match level {
        RaidLevel::Raid1 => g.size * 512,
        RaidLevel::Raid0 => g.size * 512 * members as u64,
    })
}

/// PURE: where each volume's partition goes on every member (volume order, 1 MiB aligned,
/// inside `[start, end)` of members of `member_bytes`). A volume's `size_gb` is the usable
/// size of its array: its partition is that (RAID-1) or that over the members (RAID-0,
/// rounded up to 1 MiB) plus the metadata's reserve. A `MAX` volume takes the room the
/// others leave, wherever it is in the list. The root volume must hold `min_root_bytes`.
pub fn extents(
    volumes: &[RaidVolume],
    members: usize,
    member_bytes: u64,
    start: u64,
    end: u64,
    min_root_bytes: u64,
) -> Result<Vec<Extent>, RaidError> {
    if members < 2 {
        return Err(RaidError::Plan(format!(
            "software RAID needs at least 2 member disks, not {members}"
        )));
    }
    if volumes.is_empty() {
        return Err(RaidError::Plan("no volume to place".to_owned()));
    }
    let lo = start.div_ceil(MIB) * MIB;
    let hi = end.min(member_bytes) / MIB * MIB;
    if lo >= hi {
        return Err(RaidError::DoesNotFit(format!(
            "no whole MiB between bytes {start} and {end} of members of {member_bytes} bytes"
        )));
    }
    let room = hi - lo;
    let mut lens: Vec<Option<u64>> = Vec::with_capacity(volumes.len());
    for (i, v) in volumes.iter().enumerate() {
        let reserve = metadata_of(i).reserve_bytes();
        lens.push(match v.size_gb {
            None => None,
            Some(gb) => {
                let usable = gb.checked_mul(GIB).ok_or_else(|| {
                    RaidError::DoesNotFit(format!("volume {} asks for {gb} GiB", i + 1))
                })?;
                let per_member = match v.level {
                    RaidLevel::Raid1 => usable,
                    RaidLevel::Raid0 => usable.div_ceil(members as u64).div_ceil(MIB) * MIB,
                };
                Some(per_member + reserve)
            }
        });
    }
    let fixed: u64 = lens.iter().flatten().sum();
    let need_max = if lens.iter().any(Option::is_none) {
        2 * MIB
    } else {
        0
    };
    if fixed + need_max > room {
        let asked: Vec<String> = volumes
            .iter()
            .enumerate()
            .map(|(i, v)| match v.size_gb {
                Some(gb) => format!("volume {} RAID-{} {gb} GiB", i + 1, v.level.as_str()),
                None => format!("volume {} RAID-{} MAX", i + 1, v.level.as_str()),
            })
            .collect();
        return Err(RaidError::DoesNotFit(format!(
            "{} need {fixed} bytes{} per member disk; members have {room} bytes from byte {lo} \
             to {hi}",
            asked.join(", "),
            if need_max > 0 {
                " plus room for the MAX volume"
            } else {
                ""
            }
        )));
    }
    let mut out = Vec::with_capacity(volumes.len());
    let mut at = lo;
    for len in lens {
        let len = len.unwrap_or(room - fixed);
        out.push(Extent { start: at, len });
        at += len;
    }
    for (i, (v, e)) in volumes.iter().zip(&out).enumerate() {
        let usable = usable_bytes(v.level, metadata_of(i), members, e.len)
            .map_err(|err| RaidError::DoesNotFit(format!("volume {}: {err}", i + 1)))?;
        if i == 0 && usable < min_root_bytes {
            return Err(RaidError::RootTooSmall {
                usable,
                need: min_root_bytes,
            });
        }
    }
    Ok(out)
}

/// The blocks to write for a fresh GPT on a member disk of `disk_size` bytes and `sector`
/// byte sectors, one Linux RAID partition per `(start, len, name)`: the first MiB (protective
/// MBR and primary GPT) and the backup GPT at the end
/// ([`crate::image::table::raid::fresh`]).
pub fn member_gpt(
    sector: u32,
    disk_size: u64,
    parts: &[(u64, u64, &str)],
) -> Result<Vec<(u64, Vec<u8>)>, RaidError> {
    let extents: Vec<Extent> = parts
        .iter()
        .map(|&(start, len, _)| Extent { start, len })
        .collect();
    let names: Vec<&str> = parts.iter().map(|&(_, _, n)| n).collect();
    let (head, plan) = crate::image::table::raid::fresh(sector, disk_size, &extents, &names)
        .map_err(RaidError::Table)?;
    let mut blocks = vec![(0, head)];
    blocks.extend(plan.writes);
    Ok(blocks)
}

/// The path of partition `n` of `disk`: `/dev/vda` 3 is `/dev/vda3`, a name ending in a
/// digit takes a `p` (`/dev/nvme0n1p3`, `/dev/mmcblk0p1`, `/dev/loop0p2`).
pub fn partition_path(disk: &Path, n: u32) -> PathBuf {
    let mut s = disk.as_os_str().to_os_string();
    if s.to_string_lossy().ends_with(|c: char| c.is_ascii_digit()) {
        s.push("p");
    }
    s.push(n.to_string());
    PathBuf::from(s)
}

#[cfg(test)]
mod tests;
