//! Writing an OS image onto software RAID.
//!
//! Every member disk gets the whole image, so each one is a bootable copy of the image's
//! layout: the firmware boots whichever disk it finds, from its own BIOS boot partition or
//! ESP, and the boot loader reads the root partition as a plain file system. The image's
//! root partition becomes the member of the root array (RAID-1, md metadata 1.0, whose
//! superblock sits at the end and leaves the file system at the start); a second volume gets
//! a partition of its own on every member. The instance assembles the arrays at boot (its
//! initramfs needs mdadm, as Ironic requires too).
//!
//! Order of work, as a plain deploy ([`super::write_image`]) with more disks:
//! 1. stop arrays and remove md superblocks on the members, open them exclusively;
//! 2. destroy every member's partition table;
//! 3. stream the image to all members at once, checksum;
//! 4. lay out each member's table ([`table::raid`]): root partition grown in place to the
//!    root volume's extent, a partition per further volume, config drive at the end;
//! 5. config drive and head on every member, sync, re-read;
//! 6. write the md superblocks and let the kernel assemble each array once to prove them
//!    ([`crate::raid::build`]), then stop it again.
//!
//! Any failure wipes every member's table again, as a plain deploy does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use proto::{AgentEvent, Phase, PhaseTiming, SoftwareRaid, WriteImageResult};

use super::table::raid::{self as raid_table, Layout, MemberTable};
use super::{
    Counters, HEAD_LEN, ImageWriteError, MIB, Timings, WriteImageOptions, destroy_table, ms, rate,
    read_configdrive, stream_verified,
};
use crate::events::EventSink;
use crate::host::aligned::AlignedBuf;
use crate::host::blockdev::Disk;
use crate::raid::{ArrayPlan, Member};

/// Write the image onto the members of `raid` (already resolved to `members`, in order).
/// `opts.device` is ignored. On failure every member is left without a partition table.
pub fn write_image_raid(
    opts: &WriteImageOptions,
    raid: &SoftwareRaid,
    members: &[proto::Disk],
    events: &dyn EventSink,
) -> Result<WriteImageResult, (Phase, ImageWriteError)> {
    let mut timings = Timings {
        start: std::time::Instant::now(),
        list: Vec::new(),
    };
    let configdrive = match &opts.configdrive {
        Some(p) => Some(read_configdrive(p).map_err(|e| (Phase::Prepare, e))?),
        None => None,
    };
    let paths: Vec<PathBuf> = members.iter().map(|d| PathBuf::from(&d.name)).collect();
    let mut disks = timings.run(Phase::Prepare, events, || {
        crate::raid::delete_all(&paths).map_err(ImageWriteError::Raid)?;
        let disks = paths
            .iter()
            .map(|p| Disk::open_write(p, opts.direct))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(disks)
    })?;
    tracing::info!(members = ?paths, volumes = raid.volumes.len(), "writing image onto software RAID");
    let counters = Arc::new(Counters::default());
    let mut written_end = 0u64;
    let result = run(
        opts,
        raid,
        members,
        events,
        &mut disks,
        &counters,
        &mut timings,
        configdrive.as_deref(),
        &mut written_end,
    );
    if let Err((phase, e)) = &result {
        tracing::error!(?phase, error = %crate::error_chain(e), "RAID image write failed, destroying the members' tables");
        let t = std::time::Instant::now();
        // The handles are closed before the arrays are built (the kernel claims the member
        // partitions, which an open whole disk forbids): open them again.
        if disks.is_empty() {
            for p in &paths {
                match Disk::open_write(p, false) {
                    Ok(d) => disks.push(d),
                    Err(ce) => {
                        tracing::error!(device = %p.display(), error = %crate::error_chain(&ce), "cleanup after failed write could not open the disk");
                    }
                }
            }
        }
        for d in &disks {
            if let Err(ce) = destroy_table(d, Some(written_end)) {
                tracing::error!(device = %d.path().display(), error = %crate::error_chain(&ce), "cleanup after failed write also failed");
            }
        }
        events.emit(&AgentEvent::PhaseDone(PhaseTiming {
            phase: Phase::Cleanup,
            ms: ms(t.elapsed()),
        }));
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn run(
    opts: &WriteImageOptions,
    raid: &SoftwareRaid,
    members: &[proto::Disk],
    events: &dyn EventSink,
    disks: &mut Vec<Disk>,
    counters: &Arc<Counters>,
    timings: &mut Timings,
    configdrive: Option<&[u8]>,
    written_end: &mut u64,
) -> Result<WriteImageResult, (Phase, ImageWriteError)> {
    timings.run(Phase::ClearTable, events, || {
        for d in disks.iter() {
            destroy_table(d, None)?;
        }
        Ok(())
    })?;
    let streamed = stream_verified(opts, events, disks, counters, timings, written_end)?;
    let sector = disks
        .first()
        .map(Disk::logical_sector_size)
        .ok_or((Phase::Prepare, ImageWriteError::Internal("no member disk")))?;
    let smallest = disks.iter().map(Disk::size).min().unwrap_or(0);
    let cd_len = configdrive.map(|c| c.len() as u64);
    let names =
        crate::raid::volume_names(raid).map_err(|e| (Phase::Prepare, ImageWriteError::Raid(e)))?;
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();

    let mut image_head = streamed.head;
    let tables: Vec<(AlignedBuf, MemberTable)> = timings.run(Phase::RelocateGpt, events, || {
        let root = raid_table::root(&mut image_head, sector)?;
        let end = raid_table::usable_end(&image_head, sector, smallest, cd_len)?;
        let extents = crate::raid::extents(
            &raid.volumes,
            disks.len(),
            smallest,
            root.start,
            end,
            root.len,
        )
        .map_err(ImageWriteError::Raid)?;
        let layout = Layout {
            root: &root,
            extents: &extents,
            names: &name_refs,
            configdrive_len: cd_len,
        };
        let mut tables = Vec::with_capacity(disks.len());
        for (i, d) in disks.iter().enumerate() {
            let mut head = AlignedBuf::from_slice(&image_head);
            let t = raid_table::members(&mut head, sector, d.size(), &layout, i > 0)?;
            for (off, bytes) in &t.plan.writes {
                d.write_at(bytes, *off)?;
            }
            tables.push((head, t));
        }
        Ok(tables)
    })?;
    if let Some(iso) = configdrive {
        timings.run(Phase::ConfigDrive, events, || {
            let buf = AlignedBuf::from_slice(iso);
            let len = (iso.len() as u64).div_ceil(MIB) * MIB;
            for (d, (_, t)) in disks.iter().zip(&tables) {
                if let Some(off) = t.plan.configdrive_offset {
                    d.zero_range(off, len)?;
                    d.write_at(&buf[..iso.len()], off)?;
                }
            }
            Ok(())
        })?;
    }
    timings.run(Phase::WriteHead, events, || {
        for (d, (head, _)) in disks.iter().zip(&tables) {
            let len = usize::try_from(d.size().min(HEAD_LEN as u64)).unwrap_or(HEAD_LEN);
            d.write_at(&head[..len], 0)?;
        }
        counters
            .written
            .fetch_add(streamed.image_len.min(HEAD_LEN as u64), Ordering::Relaxed);
        Ok(())
    })?;
    timings.run(Phase::Sync, events, || {
        for d in disks.iter() {
            d.sync()?;
        }
        Ok(())
    })?;
    timings.run(Phase::Reread, events, || {
        for d in disks.iter() {
            d.reread_partitions()?;
        }
        Ok(())
    })?;
    // Close the member disks: the kernel claims their partitions when it assembles an array,
    // and an exclusive open of the whole disk would make that fail.
    disks.clear();
    let report = timings.run(Phase::BuildRaid, events, || {
        let mut plans: Vec<ArrayPlan> = Vec::with_capacity(raid.volumes.len());
        for (v, vol) in raid.volumes.iter().enumerate() {
            let mut parts = Vec::with_capacity(members.len());
            for (m, (_, t)) in members.iter().zip(&tables) {
                let n = t
                    .partitions
                    .get(v)
                    .copied()
                    .ok_or(ImageWriteError::Internal("a volume without a partition"))?;
                parts.push(Member {
                    partition: crate::raid::partition_path(Path::new(&m.name), n),
                    disk: m.clone(),
                });
            }
            plans.push(ArrayPlan {
                level: vol.level,
                name: names[v].clone(),
                metadata: crate::raid::metadata_of(v),
                root: v == 0,
                members: parts,
            });
        }
        let nodes: Vec<PathBuf> = plans
            .iter()
            .flat_map(|a| a.members.iter().map(|m| m.partition.clone()))
            .collect();
        crate::md::host::wait_for_nodes(&nodes, std::time::Duration::from_secs(10)).map_err(
            |source| {
                ImageWriteError::Raid(crate::raid::RaidError::Md {
                    name: "member partitions".to_owned(),
                    source,
                })
            },
        )?;
        crate::raid::build(&plans).map_err(ImageWriteError::Raid)
    })?;

    let elapsed = timings.start.elapsed();
    let root = report.arrays.first();
    Ok(WriteImageResult {
        device: root.map_or_else(String::new, |a| format!("md:{}", a.name)),
        format: streamed.format.name().to_string(),
        checksum: opts.checksum.to_string(),
        bytes_fetched: streamed.fetch.bytes,
        bytes_written: streamed.image_len * disks.len() as u64,
        retries: streamed.fetch.retries,
        elapsed_ms: ms(elapsed),
        rate_bps: rate(streamed.image_len, elapsed),
        timings: timings.list.clone(),
        configdrive_offset: tables.first().and_then(|(_, t)| t.plan.configdrive_offset),
        raid: Some(report),
    })
}
