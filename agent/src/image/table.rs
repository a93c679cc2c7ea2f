//! Pure partition-table rules on the held-back head of an image: whether it is
//! a disk that can boot from the target ([`check`]), the GPT rewritten for a
//! 4Kn disk ([`convert`]), the backup GPT moved to the real end of a larger
//! disk, and the config drive partition added (GPT or MBR). Nothing here does
//! I/O; the caller writes the returned blocks and then the head.

pub mod check;
mod convert;
pub mod raid;

use uuid::Uuid;

use check::ImageTable;

const GPT_SIG: &[u8; 8] = b"EFI PART";
const MIB: u64 = 1 << 20;
/// Linux filesystem data partition type `0FC63DAF-8483-4772-8E79-3D69D8477DE4`.
const LINUX_DATA: Uuid = Uuid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);

/// Why the table could not be edited.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    /// The decoded image does not start with a partition table: it is not a
    /// whole-disk image (or it is noise), and nothing could boot from it.
    #[error(
        "image is not a whole-disk image: no partition table (no MBR boot signature \
         0x55AA at byte 510, no GPT header at LBA 1 for 512- or 4096-byte sectors)"
    )]
    NotADiskImage,
    /// The image's table counts sectors of another size than the disk's and
    /// cannot be rewritten for it.
    #[error(
        "{table} image made for {image}-byte sectors cannot boot from a disk with \
         {disk}-byte logical sectors: {why}"
    )]
    SectorMismatch {
        /// `GPT` or `MBR`.
        table: &'static str,
        /// Sector size the image's table counts in.
        image: u32,
        /// The disk's logical sector size.
        disk: u32,
        /// Detail.
        why: String,
    },
    /// The GPT header or its entry array is not where we can edit it.
    #[error("GPT header is malformed: {0}")]
    BadGpt(&'static str),
    /// No free entry, or no room after the last partition.
    #[error("no room for a {needed}-byte config drive partition: {why}")]
    NoRoom {
        /// Bytes needed.
        needed: u64,
        /// Detail.
        why: &'static str,
    },
}

/// Blocks to write (before the head) and where the config drive goes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TablePlan {
    /// `(offset, bytes)` to write before the head.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// Byte offset of the config drive partition, when one was added.
    pub configdrive_offset: Option<u64>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}
fn crc32(b: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(b);
    c.sum()
}

/// Whether `head` starts with a GPT for this sector size.
pub fn has_gpt(head: &[u8], sector: usize) -> bool {
    head.len() >= 2 * sector && &head[sector..sector + 8] == GPT_SIG
}

fn header_crc(h: &mut [u8]) {
    let size = usize::try_from(u32_at(h, 12))
        .unwrap_or(92)
        .clamp(92, h.len());
    put32(h, 16, 0);
    let c = crc32(&h[..size]);
    put32(h, 16, c);
}

/// Where a GPT's entry array lies in `head` (a disk's first MiB): the one reading of the
/// header's entry LBA, count and size, bounded (at most 4096 entries of at least 128 bytes,
/// after the header, inside `head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryArray {
    /// Byte offset in `head`.
    pub start: usize,
    /// Number of entries.
    pub count: usize,
    /// Bytes per entry.
    pub esize: usize,
}

impl EntryArray {
    /// Bytes of the whole array.
    pub fn len(&self) -> usize {
        self.count * self.esize
    }

    /// The whole array's bytes in `head`.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.start + self.len()
    }

    /// Entry `i`'s bytes in `head`.
    pub fn entry(&self, i: usize) -> std::ops::Range<usize> {
        self.start + i * self.esize..self.start + (i + 1) * self.esize
    }
}

/// The entry array of the GPT whose header is at LBA 1 of `sector`-byte sectors in `head`.
pub(crate) fn entry_array(head: &[u8], sector: usize) -> Result<EntryArray, TableError> {
    let h = head
        .get(sector..2 * sector)
        .ok_or(TableError::BadGpt("no GPT header"))?;
    let (lba, count, esize) = (
        u64_at(h, 72),
        u32_at(h, 80) as usize,
        u32_at(h, 84) as usize,
    );
    if esize < 128 || count == 0 || count > 4096 {
        return Err(TableError::BadGpt("entry size or count out of range"));
    }
    let start = usize::try_from(lba)
        .ok()
        .and_then(|l| l.checked_mul(sector))
        .filter(|&s| s >= 2 * sector)
        .ok_or(TableError::BadGpt("entry LBA"))?;
    if start + count * esize > head.len() {
        return Err(TableError::BadGpt("entry array is not in the first MiB"));
    }
    Ok(EntryArray {
        start,
        count,
        esize,
    })
}

/// Edit `head` (the first MiB of the image) for a disk of `disk_size` bytes and
/// `sector`-byte logical sectors, and return what else must be written.
/// `configdrive_len` adds a partition of at least that many bytes at the end of
/// the disk. An image without a table, or whose table cannot be read with the
/// disk's sector size, is refused ([`check::check`]); a GPT for 512-byte
/// sectors on a 4Kn disk is rewritten first ([`convert`]).
pub fn finish(
    head: &mut [u8],
    sector: u32,
    disk_size: u64,
    configdrive_len: Option<u64>,
) -> Result<TablePlan, TableError> {
    let s = sector as usize;
    match check::check(head, sector)? {
        ImageTable::Gpt { sector: image } => {
            if image != sector {
                convert::regpt(head, image as usize, s)?;
            }
            finish_gpt(head, s, disk_size, configdrive_len)
        }
        ImageTable::Mbr => match configdrive_len {
            Some(len) => finish_mbr(head, sector, disk_size, len),
            None => Ok(TablePlan::default()),
        },
    }
}

fn finish_gpt(
    head: &mut [u8],
    s: usize,
    disk_size: u64,
    configdrive_len: Option<u64>,
) -> Result<TablePlan, TableError> {
    let sec = s as u64;
    let disk_sectors = disk_size / sec;
    let hdr = s..2 * s;
    let old_alt = u64_at(&head[hdr.clone()], 32);
    let arr = entry_array(head, s)?;
    let (table_start, table_len, count, esize) = (arr.start, arr.len(), arr.count, arr.esize);
    let table_sectors = (table_len as u64).div_ceil(sec);
    let last = disk_sectors - 1;
    let backup_entries = last - table_sectors;
    let last_usable = backup_entries - 1;
    let mut plan = TablePlan::default();

    if let Some(len) = configdrive_len {
        let part_len = len.div_ceil(MIB) * MIB;
        let table = &head[table_start..table_start + table_len];
        let mut max_end = 0u64;
        let mut free = None;
        for i in 0..count {
            let e = &table[i * esize..(i + 1) * esize];
            if e[..16].iter().all(|&b| b == 0) {
                free.get_or_insert(i);
            } else {
                max_end = max_end.max(u64_at(e, 40));
            }
        }
        let free = free.ok_or(TableError::NoRoom {
            needed: part_len,
            why: "no free GPT entry",
        })?;
        let end_bytes = (last_usable + 1) * sec;
        let start_bytes = end_bytes.checked_sub(part_len).ok_or(TableError::NoRoom {
            needed: part_len,
            why: "disk too small",
        })? / MIB
            * MIB;
        let start = start_bytes / sec;
        if start <= max_end {
            return Err(TableError::NoRoom {
                needed: part_len,
                why: "last partition reaches the end",
            });
        }
        let e = &mut head[table_start + free * esize..table_start + (free + 1) * esize];
        e.fill(0);
        e[..16].copy_from_slice(&LINUX_DATA.to_bytes_le());
        e[16..32].copy_from_slice(&Uuid::new_v4().to_bytes_le());
        put64(e, 32, start);
        put64(e, 40, start + part_len / sec - 1);
        for (i, u) in "config-2".encode_utf16().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        plan.configdrive_offset = Some(start_bytes);
    }

    let table_crc = crc32(&head[table_start..table_start + table_len]);
    {
        let h = &mut head[hdr.clone()];
        put64(h, 32, last);
        put64(h, 48, last_usable);
        put32(h, 88, table_crc);
        header_crc(h);
    }
    // The protective MBR covers the whole disk (capped at 32 bits).
    if head[510] == 0x55 && head[511] == 0xaa && head[0x1be + 4] == 0xee {
        put32(
            head,
            0x1be + 12,
            u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX),
        );
    }
    let mut backup_hdr = head[hdr].to_vec();
    put64(&mut backup_hdr, 24, last);
    put64(&mut backup_hdr, 32, 1);
    put64(&mut backup_hdr, 72, backup_entries);
    header_crc(&mut backup_hdr);
    let mut tail = head[table_start..table_start + table_len].to_vec();
    tail.resize(usize::try_from(table_sectors * sec).unwrap_or(table_len), 0);
    tail.extend_from_slice(&backup_hdr);
    // The image's own backup header is stale once the disk is larger.
    if old_alt != last && old_alt > 1 && old_alt < disk_sectors {
        plan.writes.push((old_alt * sec, vec![0; s]));
    }
    plan.writes.push((backup_entries * sec, tail));
    Ok(plan)
}

fn finish_mbr(
    head: &mut [u8],
    sector: u32,
    disk_size: u64,
    len: u64,
) -> Result<TablePlan, TableError> {
    let sec = u64::from(sector);
    let part_len = len.div_ceil(MIB) * MIB;
    let mut max_end = 0u64;
    let mut free = None;
    for i in 0..4 {
        let e = &head[0x1be + 16 * i..0x1be + 16 * (i + 1)];
        if e[4] == 0 {
            free.get_or_insert(i);
        } else {
            max_end = max_end.max(u64::from(u32_at(e, 8)) + u64::from(u32_at(e, 12)));
        }
    }
    let free = free.ok_or(TableError::NoRoom {
        needed: part_len,
        why: "no free MBR slot",
    })?;
    let disk_end = disk_size.min(u64::from(u32::MAX) * sec);
    let start_bytes = disk_end.checked_sub(part_len).ok_or(TableError::NoRoom {
        needed: part_len,
        why: "disk too small",
    })? / MIB
        * MIB;
    let start = start_bytes / sec;
    if start < max_end {
        return Err(TableError::NoRoom {
            needed: part_len,
            why: "last partition reaches the end",
        });
    }
    let e = &mut head[0x1be + 16 * free..0x1be + 16 * (free + 1)];
    e.copy_from_slice(&[
        0, 0xfe, 0xff, 0xff, 0x83, 0xfe, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    put32(
        e,
        8,
        u32::try_from(start).map_err(|_| TableError::NoRoom {
            needed: part_len,
            why: "beyond 2 TiB",
        })?,
    );
    put32(e, 12, u32::try_from(part_len / sec).unwrap_or(u32::MAX));
    Ok(TablePlan {
        writes: vec![],
        configdrive_offset: Some(start_bytes),
    })
}

/// Partitions `(start, length)` in bytes listed by the GPT or MBR in `head`
/// (the first MiB of a disk); empty when there is no table.
pub fn partitions(head: &[u8], sector: u32) -> Vec<(u64, u64)> {
    let s = sector as usize;
    let sec = u64::from(sector);
    if has_gpt(head, s) {
        let Ok(arr) = entry_array(head, s) else {
            return vec![];
        };
        return (0..arr.count)
            .map(|i| &head[arr.entry(i)])
            .filter(|e| e[..16].iter().any(|&b| b != 0))
            .map(|e| {
                (
                    u64_at(e, 32) * sec,
                    (u64_at(e, 40) + 1).saturating_sub(u64_at(e, 32)) * sec,
                )
            })
            .collect();
    }
    if head.len() >= 512 && head[510] == 0x55 && head[511] == 0xaa {
        return (0..4)
            .map(|i| &head[0x1be + 16 * i..0x1be + 16 * (i + 1)])
            .filter(|e| e[4] != 0 && e[4] != 0xee)
            .map(|e| {
                (
                    u64::from(u32_at(e, 8)) * sec,
                    u64::from(u32_at(e, 12)) * sec,
                )
            })
            .collect();
    }
    vec![]
}

#[cfg(test)]
mod tests;
