//! Pure: the partition tables of software RAID member disks.
//!
//! A deploy onto software RAID writes the whole image to every member disk, so each member
//! is a bootable copy of the image's layout: the boot partitions (BIOS boot, ESP) are plain
//! copies the firmware reads from whichever disk it boots, and the image's root partition
//! (the one that ends last) becomes the member of the root array: it is grown in place to
//! the array's extent and typed Linux RAID; the md 1.0 superblock at its end leaves the file
//! system at its start. A second volume gets one new partition per member. [`root`] finds
//! the root partition, [`members`] rewrites the table of one member disk, and [`fresh`]
//! builds a table from nothing (for `raid.create_configuration`, which has no image).

use uuid::Uuid;

use super::check::{self, ImageTable};
use super::{
    EntryArray, GPT_SIG, MIB, TableError, TablePlan, convert, crc32, entry_array, finish_gpt,
    header_crc, put32, put64, u64_at,
};

/// Linux RAID partition type `A19D880F-05FC-4D3B-A006-743F0F84911E`.
pub const LINUX_RAID: Uuid = Uuid::from_u128(0xA19D880F_05FC_4D3B_A006_743F0F84911E);
/// EFI system partition type.
const ESP: Uuid = Uuid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
/// BIOS boot partition type (grub's core.img).
const BIOS_BOOT: Uuid = Uuid::from_u128(0x21686148_6449_6E6F_744E_656564454649);

/// The image's root partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootPartition {
    /// Index in the GPT entry array (partition number - 1).
    pub index: usize,
    /// Start, bytes.
    pub start: u64,
    /// Length, bytes.
    pub len: u64,
}

/// One partition of a member disk, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Start (a multiple of the sector size).
    pub start: u64,
    /// Length (a multiple of the sector size).
    pub len: u64,
}

/// The entry array of the GPT in `head`; RAID needs a GPT.
fn geometry(head: &[u8], s: usize) -> Result<EntryArray, TableError> {
    if !super::has_gpt(head, s) {
        return Err(TableError::BadGpt(
            "software RAID needs a GPT image (an MBR image has no room for the copies' tables)",
        ));
    }
    entry_array(head, s)
}

fn used(e: &[u8]) -> bool {
    e[..16].iter().any(|&b| b != 0)
}

fn type_of(e: &[u8]) -> Uuid {
    let mut b = [0u8; 16];
    b.copy_from_slice(&e[..16]);
    Uuid::from_bytes_le(b)
}

/// Rewrite a GPT for 512-byte sectors on a 4Kn disk (as a plain deploy does) and find the
/// image's root partition: the partition that ends last, which must be neither an ESP nor
/// a BIOS boot partition (those are copied to every member, the root file system is not).
pub fn root(head: &mut [u8], sector: u32) -> Result<RootPartition, TableError> {
    let s = sector as usize;
    match check::check(head, sector)? {
        ImageTable::Gpt { sector: image } if image != sector => {
            convert::regpt(head, image as usize, s)?;
        }
        ImageTable::Gpt { .. } => {}
        ImageTable::Mbr => {
            return Err(TableError::BadGpt(
                "software RAID needs a GPT image, this one has an MBR",
            ));
        }
    }
    let g = geometry(head, s)?;
    let mut last: Option<(usize, u64, u64)> = None;
    for i in 0..g.count {
        let e = &head[g.entry(i)];
        if !used(e) {
            continue;
        }
        let (first, end) = (u64_at(e, 32), u64_at(e, 40));
        if end < first {
            return Err(TableError::BadGpt("a partition ends before it starts"));
        }
        if last.is_none_or(|(_, _, l)| end > l) {
            last = Some((i, first, end));
        }
    }
    let (index, first, end) = last.ok_or(TableError::BadGpt("the image has no partition"))?;
    let t = type_of(&head[g.entry(index)]);
    if t == ESP || t == BIOS_BOOT {
        return Err(TableError::BadGpt(
            "the image's last partition is a boot partition, not a root file system",
        ));
    }
    let sec = u64::from(sector);
    Ok(RootPartition {
        index,
        start: first * sec,
        len: (end - first + 1) * sec,
    })
}

/// The first byte after the room partitions may use on a disk of `disk_size` bytes: before
/// the backup GPT and, with a config drive of `configdrive_len` bytes, before the config
/// drive partition that [`members`] adds at the end (the same rule as a plain deploy).
pub fn usable_end(
    head: &[u8],
    sector: u32,
    disk_size: u64,
    configdrive_len: Option<u64>,
) -> Result<u64, TableError> {
    let s = sector as usize;
    let g = geometry(head, s)?;
    let sec = u64::from(sector);
    let table_sectors = (g.len() as u64).div_ceil(sec);
    let disk_sectors = disk_size / sec;
    let last_usable = disk_sectors
        .checked_sub(2 + table_sectors)
        .ok_or(TableError::NoRoom {
            needed: 0,
            why: "disk too small for a GPT",
        })?;
    let end = (last_usable + 1) * sec;
    Ok(match configdrive_len {
        Some(len) => end.saturating_sub(len.div_ceil(MIB) * MIB) / MIB * MIB,
        None => end / MIB * MIB,
    })
}

fn fill_entry(e: &mut [u8], t: Uuid, unique: Uuid, x: Extent, sec: u64, name: &str) {
    e.fill(0);
    e[..16].copy_from_slice(&t.to_bytes_le());
    e[16..32].copy_from_slice(&unique.to_bytes_le());
    put64(e, 32, x.start / sec);
    put64(e, 40, (x.start + x.len) / sec - 1);
    for (i, u) in name.encode_utf16().take(36).enumerate() {
        e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
}

/// Which partition number each volume got on a member disk.
#[derive(Debug, PartialEq, Eq)]
pub struct MemberTable {
    /// Blocks to write (backup GPT, stale headers) and the config drive offset.
    pub plan: TablePlan,
    /// Partition number (1-based) of each volume, in volume order.
    pub partitions: Vec<u32>,
}

/// What every member disk of a deploy gets.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    /// The image's root partition ([`root`]).
    pub root: &'a RootPartition,
    /// Each volume's partition, in volume order; the first is the root volume's.
    pub extents: &'a [Extent],
    /// GPT names of the new partitions, in volume order (the root keeps the image's name).
    pub names: &'a [&'a str],
    /// The config drive's size, when there is one.
    pub configdrive_len: Option<u64>,
}

/// Rewrite `head` (the image's first MiB, after [`root`]) as the table of one member disk of
/// `disk_size` bytes: the root partition takes `extents[0]` (which must start where the
/// image's root partition starts) and the Linux RAID type, each further extent gets a new
/// partition, the config drive is added at the end as on a plain disk. `fresh_ids` gives
/// this disk its own disk and partition GUIDs (every member but the first), so that no two
/// disks of the machine share one.
pub fn members(
    head: &mut [u8],
    sector: u32,
    disk_size: u64,
    layout: &Layout<'_>,
    fresh_ids: bool,
) -> Result<MemberTable, TableError> {
    let Layout {
        root,
        extents,
        names,
        configdrive_len,
    } = *layout;
    let s = sector as usize;
    let sec = u64::from(sector);
    let g = geometry(head, s)?;
    let (first, rest) = extents
        .split_first()
        .ok_or(TableError::BadGpt("no RAID volume to lay out"))?;
    if first.start != root.start {
        return Err(TableError::BadGpt(
            "the root volume must start where the image's root partition starts",
        ));
    }
    let end = usable_end(head, sector, disk_size, configdrive_len)?;
    for x in extents {
        if x.start % sec != 0 || x.len % sec != 0 || x.len == 0 || x.start + x.len > end {
            return Err(TableError::NoRoom {
                needed: x.len,
                why: "a RAID member partition does not fit the disk",
            });
        }
    }
    // The root entry keeps its GUID and name; only its extent and type change.
    let r = g.entry(root.index);
    let unique = {
        let mut b = [0u8; 16];
        b.copy_from_slice(&head[r.start + 16..r.start + 32]);
        Uuid::from_bytes_le(b)
    };
    let mut name = String::new();
    for c in char::decode_utf16(
        head[r.start + 56..r.start + 128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0),
    ) {
        name.push(c.unwrap_or('?'));
    }
    fill_entry(&mut head[r.clone()], LINUX_RAID, unique, *first, sec, &name);
    let mut partitions = vec![u32::try_from(root.index + 1).unwrap_or(u32::MAX)];
    for (k, x) in rest.iter().enumerate() {
        let free = (0..g.count)
            .find(|&i| !used(&head[g.entry(i)]))
            .ok_or(TableError::NoRoom {
                needed: x.len,
                why: "no free GPT entry",
            })?;
        let name = names.get(k + 1).copied().unwrap_or("raid");
        let range = g.entry(free);
        fill_entry(&mut head[range], LINUX_RAID, Uuid::new_v4(), *x, sec, name);
        partitions.push(u32::try_from(free + 1).unwrap_or(u32::MAX));
    }
    // No other partition may overlap the member partitions.
    for i in 0..g.count {
        let e = &head[g.entry(i)];
        if !used(e) || partitions.contains(&u32::try_from(i + 1).unwrap_or(0)) {
            continue;
        }
        let (a, b) = (u64_at(e, 32) * sec, (u64_at(e, 40) + 1) * sec);
        if extents.iter().any(|x| a < x.start + x.len && x.start < b) {
            return Err(TableError::BadGpt(
                "an image partition overlaps a RAID member partition",
            ));
        }
    }
    if fresh_ids {
        let h = &mut head[s..2 * s];
        h[56..72].copy_from_slice(&Uuid::new_v4().to_bytes_le());
        for i in 0..g.count {
            let range = g.entry(i);
            if used(&head[range.clone()]) {
                head[range.start + 16..range.start + 32]
                    .copy_from_slice(&Uuid::new_v4().to_bytes_le());
            }
        }
    }
    let plan = finish_gpt(head, s, disk_size, configdrive_len)?;
    Ok(MemberTable { plan, partitions })
}

/// A table from nothing for a member disk of `disk_size` bytes: a protective MBR and a GPT of
/// 128 entries holding one Linux RAID partition per extent (numbered from 1, named after
/// `names`). Returns the first MiB to write at offset 0 and the blocks for the end of the
/// disk.
pub fn fresh(
    sector: u32,
    disk_size: u64,
    extents: &[Extent],
    names: &[&str],
) -> Result<(Vec<u8>, TablePlan), TableError> {
    let s = sector as usize;
    let sec = u64::from(sector);
    let mut head = vec![0u8; MIB as usize];
    // Protective MBR: one 0xEE partition from LBA 1.
    head[0x1be + 4] = 0xee;
    put32(&mut head, 0x1be + 8, 1);
    head[510] = 0x55;
    head[511] = 0xaa;
    let count = 128usize;
    let entries_lba = 2u64;
    let h = &mut head[s..2 * s];
    h[..8].copy_from_slice(GPT_SIG);
    put32(h, 8, 0x0001_0000);
    put32(h, 12, 92);
    put64(h, 24, 1);
    put64(h, 40, entries_lba + ((count * 128) as u64).div_ceil(sec));
    h[56..72].copy_from_slice(&Uuid::new_v4().to_bytes_le());
    put64(h, 72, entries_lba);
    put32(h, 80, count as u32);
    put32(h, 84, 128);
    let first_usable = entries_lba + ((count * 128) as u64).div_ceil(sec);
    let end = usable_end(&head, sector, disk_size, None)?;
    for (i, x) in extents.iter().enumerate() {
        if x.start < first_usable * sec
            || x.start % sec != 0
            || x.len % sec != 0
            || x.len == 0
            || x.start + x.len > end
        {
            return Err(TableError::NoRoom {
                needed: x.len,
                why: "a RAID member partition does not fit the disk",
            });
        }
        let off = usize::try_from(entries_lba * sec).unwrap_or(usize::MAX) + i * 128;
        let name = names.get(i).copied().unwrap_or("raid");
        fill_entry(
            &mut head[off..off + 128],
            LINUX_RAID,
            Uuid::new_v4(),
            *x,
            sec,
            name,
        );
    }
    // finish_gpt sets the alternate and last usable LBAs and both CRCs for this disk.
    let crc = crc32(&head[2 * s..2 * s + count * 128]);
    put32(&mut head[s..2 * s], 88, crc);
    header_crc(&mut head[s..2 * s]);
    let plan = finish_gpt(&mut head, s, disk_size, None)?;
    Ok((head, plan))
}

#[cfg(test)]
mod tests;
