//! The software RAID steps: `raid.create_configuration` (the controller fills its `raid`
//! argument from the node's `target_raid_config`) and `raid.delete_configuration`. Both run
//! the `raid` module's code; the report of what was built or removed is the detail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::protocol::Report;
use proto::{ErrorReport, Phase, RaidReport, SoftwareRaid};

use super::args::Args;
use crate::events::EventSink;
use crate::raid::{self, ArrayPlan, Member, RaidError};

const MIB: u64 = 1 << 20;

/// `raid.create_configuration`: the arrays of the `raid` plan, built from scratch.
pub(super) fn create_configuration(args: &Args, _sink: &dyn EventSink) -> Report {
    let Some(plan) = args.software_raid("raid") else {
        return failure(&RaidError::Plan("argument `raid` is required".to_owned()));
    };
    match create(Path::new("/"), plan) {
        Ok(report) => Report::Succeeded {
            inventory: None,
            detail: serde_json::to_value(&report).ok(),
        },
        Err(e) => failure(&e),
    }
}

/// `raid.delete_configuration`: every md array and superblock on the disks a RAID could
/// use, removed.
pub(super) fn delete_configuration(_args: &Args, _sink: &dyn EventSink) -> Report {
    match delete(Path::new("/")) {
        Ok(report) => Report::Succeeded {
            inventory: None,
            detail: serde_json::to_value(&report).ok(),
        },
        Err(e) => failure(&e),
    }
}

fn failure(e: &RaidError) -> Report {
    tracing::error!(error = %crate::error_chain(e), "software RAID step failed");
    Report::Failed {
        error: ErrorReport {
            phase: Some(Phase::Wipe),
            message: e.to_string(),
            causes: crate::error_causes(e),
        },
    }
}

fn listing(e: std::io::Error) -> RaidError {
    RaidError::Other {
        what: format!("listing disks: {e}"),
    }
}

/// Builds the plan on the disks found under `root` (`/` but in tests): members resolved,
/// every table computed before anything is touched, old arrays and superblocks removed, a
/// fresh GPT with one partition per volume on each member, then the arrays.
pub fn create(root: &Path, plan: &SoftwareRaid) -> Result<RaidReport, RaidError> {
    let names = raid::volume_names(plan)?;
    let disks = crate::inventory::block::disks(root).map_err(listing)?;
    let boot = crate::wipe::select::boot_disks(root);
    let members = raid::resolve_excluding(plan, &disks, &boot)?;
    let member_bytes = members.iter().map(|d| d.size).min().unwrap_or(0);
    let extents = raid::extents(
        &plan.volumes,
        members.len(),
        member_bytes,
        MIB,
        member_bytes.saturating_sub(MIB),
        0,
    )?;
    let parts: Vec<(u64, u64, &str)> = extents
        .iter()
        .zip(&names)
        .map(|(e, n)| (e.start, e.len, n.as_str()))
        .collect();
    let mut tables = Vec::with_capacity(members.len());
    for d in &members {
        tables.push(raid::member_gpt(d.logical_sector_size, d.size, &parts)?);
    }
    let paths: Vec<PathBuf> = members.iter().map(|d| PathBuf::from(&d.name)).collect();
    let removed = raid::delete_all(&paths)?;
    tracing::info!(?removed, "old software RAID removed from the members");
    for (p, blocks) in paths.iter().zip(tables) {
        let disk = crate::host::blockdev::Disk::open_write(p, true)?;
        for (offset, bytes) in blocks {
            disk.write_at(&bytes, offset)?;
        }
        disk.sync()?;
        disk.reread_partitions()?;
    }
    let arrays: Vec<ArrayPlan> = plan
        .volumes
        .iter()
        .zip(names)
        .enumerate()
        .map(|(i, (v, name))| ArrayPlan {
            level: v.level,
            name,
            metadata: raid::metadata_of(i),
            root: i == 0,
            members: members
                .iter()
                .map(|d| Member {
                    partition: raid::partition_path(Path::new(&d.name), i as u32 + 1),
                    disk: d.clone(),
                })
                .collect(),
        })
        .collect();
    let nodes: Vec<PathBuf> = arrays
        .iter()
        .flat_map(|a| a.members.iter().map(|m| m.partition.clone()))
        .collect();
    crate::md::host::wait_for_nodes(&nodes, Duration::from_secs(10)).map_err(|source| {
        RaidError::Md {
            name: "partitions".to_owned(),
            source,
        }
    })?;
    raid::build(&arrays)
}

/// Removes every md array and superblock from the disks under `root` a RAID could use.
pub fn delete(root: &Path) -> Result<raid::Report, RaidError> {
    let boot = crate::wipe::select::boot_disks(root);
    let disks: Vec<PathBuf> = crate::inventory::block::disks(root)
        .map_err(listing)?
        .into_iter()
        .filter(|d| raid::ineligible(d, &boot).is_none())
        .map(|d| PathBuf::from(d.name))
        .collect();
    raid::delete_all(&disks)
}
