//! md v1.x superblocks (`struct mdp_superblock_1` of the kernel's
//! `include/uapi/linux/raid/md_p.h`): where one goes on a member ([`geometry`]), its bytes
//! ([`Superblock::encode`]) and the bounded, panic-free reader of whatever a disk holds
//! ([`parse`]). Pure: no I/O.
//!
//! Layout of the fixed 256 bytes (little-endian), as the header gives it: magic 0, major
//! version 4, feature map 8, set UUID 16, set name 32 (32 bytes), ctime 64, level 72,
//! layout 76, size 80, chunk size 88, raid disks 92, data offset 128, data size 136, super
//! offset 144, recovery offset 152, dev number 160, device UUID 168, utime 192, events 200,
//! resync offset 208, checksum 216, max dev 220, then one `u16` role per device from 256.

use proto::RaidLevel;

/// `MD_SB_MAGIC`.
pub const MAGIC: u32 = 0xa92b_4efc;
/// Bytes of the fixed part, before the roles.
pub const FIXED_LEN: usize = 256;
/// The largest `max_dev` the kernel loads (`(4096 - 256) / 2`, md.c `super_1_load`).
pub const MAX_DEV_LIMIT: u32 = 1920;
/// Bytes written for one superblock: a 4 KiB block (the kernel reads at least a logical
/// block, so a 4Kn sector too), zeroes after the roles.
pub const BLOCK_LEN: usize = 4096;
/// RAID-0 chunk: 1024 sectors (512 KiB), mdadm's default.
pub const RAID0_CHUNK_SECTORS: u64 = 1024;
/// Sectors kept free just before a 1.0 superblock: mdadm's largest bitmap space (128 KiB,
/// `choose_bm_space` above 200 GiB) plus its bad block log (4 KiB), whatever the size, so
/// that mdadm can later add an internal bitmap in place.
pub const V10_RESERVE_SECTORS: u64 = 256 + 8;
/// 1.2: superblock 4 KiB from the start of the member.
pub const V12_SUPER_SECTOR: u64 = 8;
/// 1.2: data 1 MiB from the start (mdadm's data offset for small members; it takes up to
/// 128 MiB on big ones, for reshape headroom we never use).
pub const V12_DATA_SECTOR: u64 = 2048;
/// The smallest usable area per member we build (1 MiB).
pub const MIN_DATA_SECTORS: u64 = 2048;

const SECTOR: u64 = 512;

/// The md metadata version of an array Ingot builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    /// Superblock at the end, data from sector 0: a member reads as a plain partition.
    V1_0,
    /// Superblock 4 KiB from the start, data from 1 MiB.
    V1_2,
}

impl Metadata {
    /// The minor version (`SET_ARRAY_INFO`'s `minor_version`).
    pub fn minor(self) -> i32 {
        match self {
            Metadata::V1_0 => 0,
            Metadata::V1_2 => 2,
        }
    }

    /// mdadm's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Metadata::V1_0 => "1.0",
            Metadata::V1_2 => "1.2",
        }
    }

    /// Bytes a member partition needs beyond the array's data on it, rounded up to 1 MiB:
    /// 1.0 keeps at most 8-12 KiB for the superblock and [`V10_RESERVE_SECTORS`] before it;
    /// 1.2 keeps its 1 MiB data offset.
    pub fn reserve_bytes(self) -> u64 {
        1 << 20
    }
}

/// The kernel's level number.
pub fn level_number(level: RaidLevel) -> u32 {
    match level {
        RaidLevel::Raid0 => 0,
        RaidLevel::Raid1 => 1,
    }
}

/// Where things are on one member, in 512-byte sectors from the member's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The superblock.
    pub super_offset: u64,
    /// The first data sector.
    pub data_offset: u64,
    /// Sectors from `data_offset` the array may use.
    pub data_size: u64,
    /// The component size the array uses (`size`): `data_size`, rounded down to the chunk
    /// for RAID-0.
    pub size: u64,
    /// Chunk size in sectors (0 for RAID-1).
    pub chunk: u64,
}

/// Why a superblock cannot be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    /// The member is too small for the metadata and 1 MiB of data.
    #[error(
        "a member of {sectors} sectors is too small for md metadata {metadata} and 1 MiB of data"
    )]
    TooSmall {
        sectors: u64,
        metadata: &'static str,
    },
    /// Fewer bytes than the superblock needs.
    #[error("{len} bytes hold no md superblock (it needs {need})")]
    Short { len: usize, need: usize },
    /// Not the md magic number.
    #[error("no md magic number (found {0:#010x})")]
    BadMagic(u32),
    /// Not a version 1 superblock (0.90 is another layout).
    #[error("md superblock major version {0}, not 1")]
    BadVersion(u32),
    /// More role slots than the kernel reads, or none.
    #[error("md superblock max_dev {0} is not 1 to {MAX_DEV_LIMIT}")]
    BadMaxDev(u32),
    /// The checksum does not match.
    #[error("md superblock checksum {stored:#010x} does not match {computed:#010x}")]
    BadChecksum { stored: u32, computed: u32 },
    /// A name longer than the field.
    #[error("md set name of {0} bytes does not fit its 32")]
    LongName(usize),
}

/// [`Geometry`] of a member of `member_sectors` sectors.
pub fn geometry(
    metadata: Metadata,
    level: RaidLevel,
    member_sectors: u64,
) -> Result<Geometry, SuperblockError> {
    let small = SuperblockError::TooSmall {
        sectors: member_sectors,
        metadata: metadata.as_str(),
    };
    let (super_offset, data_offset, data_size) = match metadata {
        // md.c super_1_load: `sb_start = sectors - 8 * 2; sb_start &= ~(4 * 2 - 1)`.
        Metadata::V1_0 => {
            let sb = member_sectors.checked_sub(16).ok_or(small.clone())? & !7;
            (sb, 0, sb.saturating_sub(V10_RESERVE_SECTORS))
        }
        Metadata::V1_2 => (
            V12_SUPER_SECTOR,
            V12_DATA_SECTOR,
            member_sectors.saturating_sub(V12_DATA_SECTOR) & !7,
        ),
    };
    let chunk = match level {
        RaidLevel::Raid0 => RAID0_CHUNK_SECTORS,
        RaidLevel::Raid1 => 0,
    };
    let size = data_size
        .checked_div(chunk)
        .map_or(data_size, |chunks| chunks * chunk);
    if size < MIN_DATA_SECTORS {
        return Err(small);
    }
    Ok(Geometry {
        super_offset,
        data_offset,
        data_size,
        size,
        chunk,
    })
}

/// The fields of a v1 superblock Ingot writes or reads. What it leaves out (bitmap,
/// reshape, bad block log, per-device flags) is written as zeroes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub feature_map: u32,
    pub set_uuid: [u8; 16],
    /// `set_name`, NUL-padded.
    pub set_name: [u8; 32],
    /// Low 40 bits seconds.
    pub ctime: u64,
    pub level: u32,
    pub layout: u32,
    /// Sectors of each member the array uses.
    pub size: u64,
    pub chunksize: u32,
    pub raid_disks: u32,
    pub data_offset: u64,
    pub data_size: u64,
    pub super_offset: u64,
    pub recovery_offset: u64,
    pub dev_number: u32,
    pub device_uuid: [u8; 16],
    pub utime: u64,
    pub events: u64,
    pub resync_offset: u64,
    /// One role per device slot (`max_dev` of them).
    pub dev_roles: Vec<u16>,
}

/// What one member's superblock says, for [`Superblock::new_member`].
#[derive(Debug, Clone)]
pub struct NewArray<'a> {
    pub level: RaidLevel,
    pub name: &'a str,
    pub set_uuid: [u8; 16],
    /// Seconds since the epoch.
    pub now: u64,
    pub raid_disks: u32,
    /// The component size all members use (the smallest member's [`Geometry::size`]).
    pub size: u64,
}

impl Superblock {
    /// The superblock of member `dev_number` (its role too) of a new array: one event, no
    /// bitmap, RAID-1 marked for a full resync (the kernel mirrors role 0 onto the others),
    /// RAID-0 clean.
    pub fn new_member(
        a: &NewArray<'_>,
        geo: &Geometry,
        dev_number: u32,
        device_uuid: [u8; 16],
    ) -> Result<Superblock, SuperblockError> {
        if a.name.len() > 32 {
            return Err(SuperblockError::LongName(a.name.len()));
        }
        if a.raid_disks == 0 || a.raid_disks > MAX_DEV_LIMIT {
            return Err(SuperblockError::BadMaxDev(a.raid_disks));
        }
        let mut set_name = [0u8; 32];
        set_name[..a.name.len()].copy_from_slice(a.name.as_bytes());
        let time = a.now & ((1 << 40) - 1);
        Ok(Superblock {
            feature_map: 0,
            set_uuid: a.set_uuid,
            set_name,
            ctime: time,
            level: level_number(a.level),
            layout: 0,
            size: a.size,
            chunksize: u32::try_from(geo.chunk).unwrap_or(0),
            raid_disks: a.raid_disks,
            data_offset: geo.data_offset,
            data_size: geo.data_size,
            super_offset: geo.super_offset,
            recovery_offset: 0,
            dev_number,
            device_uuid,
            utime: time,
            events: 1,
            resync_offset: match a.level {
                RaidLevel::Raid1 => 0,
                RaidLevel::Raid0 => u64::MAX,
            },
            dev_roles: (0..a.raid_disks)
                .map(|i| u16::try_from(i).unwrap_or(u16::MAX))
                .collect(),
        })
    }

    /// `set_name` up to its first NUL, lossily as text.
    pub fn name(&self) -> String {
        let end = self.set_name.iter().position(|&b| b == 0).unwrap_or(32);
        String::from_utf8_lossy(&self.set_name[..end]).into_owned()
    }

    /// The [`BLOCK_LEN`] bytes to write at `super_offset`, checksum included. The roles
    /// are cut at [`MAX_DEV_LIMIT`].
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_LEN];
        let roles = &self.dev_roles[..self.dev_roles.len().min(MAX_DEV_LIMIT as usize)];
        put32(&mut b, 0, MAGIC);
        put32(&mut b, 4, 1);
        put32(&mut b, 8, self.feature_map);
        b[16..32].copy_from_slice(&self.set_uuid);
        b[32..64].copy_from_slice(&self.set_name);
        put64(&mut b, 64, self.ctime);
        put32(&mut b, 72, self.level);
        put32(&mut b, 76, self.layout);
        put64(&mut b, 80, self.size);
        put32(&mut b, 88, self.chunksize);
        put32(&mut b, 92, self.raid_disks);
        put64(&mut b, 128, self.data_offset);
        put64(&mut b, 136, self.data_size);
        put64(&mut b, 144, self.super_offset);
        put64(&mut b, 152, self.recovery_offset);
        put32(&mut b, 160, self.dev_number);
        b[168..184].copy_from_slice(&self.device_uuid);
        put64(&mut b, 192, self.utime);
        put64(&mut b, 200, self.events);
        put64(&mut b, 208, self.resync_offset);
        let max_dev = u32::try_from(roles.len()).unwrap_or(MAX_DEV_LIMIT);
        put32(&mut b, 220, max_dev);
        for (i, r) in roles.iter().enumerate() {
            let o = FIXED_LEN + 2 * i;
            b[o..o + 2].copy_from_slice(&r.to_le_bytes());
        }
        let sum = checksum(&b, max_dev);
        put32(&mut b, 216, sum);
        b
    }
}

/// The kernel's `calc_sb_1_csum`: the little-endian `u32` words of the first
/// `256 + 2 * max_dev` bytes summed into 64 bits with the checksum field taken as zero, a
/// trailing `u16` added when the length is not a multiple of 4, and the sum folded once
/// (`low + high`, truncated to 32 bits). Bytes past the end of `buf` count as zeroes.
pub fn checksum(buf: &[u8], max_dev: u32) -> u32 {
    let len = FIXED_LEN + 2 * max_dev as usize;
    let mut sum: u64 = 0;
    let mut i = 0;
    while i + 4 <= len {
        if i != 216 {
            sum += u64::from(u32_at(buf, i));
        }
        i += 4;
    }
    if len - i == 2 {
        sum += u64::from(u16::from_le_bytes([byte(buf, i), byte(buf, i + 1)]));
    }
    ((sum & 0xffff_ffff) + (sum >> 32)) as u32
}

/// Whether `buf` starts with the md magic number (any version, 0.90 included).
pub fn has_magic(buf: &[u8]) -> bool {
    buf.len() >= 4 && u32_at(buf, 0) == MAGIC
}

/// The md major version `buf` claims, when it starts with the magic number (0 for 0.90,
/// whose `major_version` is also the second word).
pub fn major_version(buf: &[u8]) -> Option<u32> {
    (has_magic(buf) && buf.len() >= 8).then(|| u32_at(buf, 4))
}

/// Reads a v1 superblock from the start of `buf`: magic, major version 1, `max_dev` 1 to
/// [`MAX_DEV_LIMIT`] with its roles inside `buf`, and the checksum must all hold. Never
/// panics and reads nothing past `256 + 2 * max_dev` bytes.
pub fn parse(buf: &[u8]) -> Result<Superblock, SuperblockError> {
    if buf.len() < FIXED_LEN {
        return Err(SuperblockError::Short {
            len: buf.len(),
            need: FIXED_LEN,
        });
    }
    let magic = u32_at(buf, 0);
    if magic != MAGIC {
        return Err(SuperblockError::BadMagic(magic));
    }
    let major = u32_at(buf, 4);
    if major != 1 {
        return Err(SuperblockError::BadVersion(major));
    }
    let max_dev = u32_at(buf, 220);
    if max_dev == 0 || max_dev > MAX_DEV_LIMIT {
        return Err(SuperblockError::BadMaxDev(max_dev));
    }
    let need = FIXED_LEN + 2 * max_dev as usize;
    if buf.len() < need {
        return Err(SuperblockError::Short {
            len: buf.len(),
            need,
        });
    }
    let stored = u32_at(buf, 216);
    let computed = checksum(buf, max_dev);
    if stored != computed {
        return Err(SuperblockError::BadChecksum { stored, computed });
    }
    let arr16 = |o: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&buf[o..o + 16]);
        a
    };
    let mut set_name = [0u8; 32];
    set_name.copy_from_slice(&buf[32..64]);
    Ok(Superblock {
        feature_map: u32_at(buf, 8),
        set_uuid: arr16(16),
        set_name,
        ctime: u64_at(buf, 64),
        level: u32_at(buf, 72),
        layout: u32_at(buf, 76),
        size: u64_at(buf, 80),
        chunksize: u32_at(buf, 88),
        raid_disks: u32_at(buf, 92),
        data_offset: u64_at(buf, 128),
        data_size: u64_at(buf, 136),
        super_offset: u64_at(buf, 144),
        recovery_offset: u64_at(buf, 152),
        dev_number: u32_at(buf, 160),
        device_uuid: arr16(168),
        utime: u64_at(buf, 192),
        events: u64_at(buf, 200),
        resync_offset: u64_at(buf, 208),
        dev_roles: (0..max_dev as usize)
            .map(|i| u16::from_le_bytes([buf[256 + 2 * i], buf[257 + 2 * i]]))
            .collect(),
    })
}

/// Where a superblock of each md version sits on a device (or partition) of `bytes`:
/// `(byte offset, version)` for 1.1 (0), 1.2 (4 KiB), 1.0 (8-12 KiB before the end, 4 KiB
/// aligned) and 0.90 (64 KiB before the 64 KiB-aligned end), the ones that fit.
pub fn locations(bytes: u64) -> Vec<(u64, &'static str)> {
    let sectors = bytes / SECTOR;
    let mut v = Vec::new();
    if sectors >= 16 {
        v.push((0, "1.1"));
        v.push((V12_SUPER_SECTOR * SECTOR, "1.2"));
        v.push((((sectors - 16) & !7) * SECTOR, "1.0"));
    }
    if sectors >= 256 {
        v.push((((sectors & !127) - 128) * SECTOR, "0.90"));
    }
    v
}

/// mdadm's form of an array UUID: the 16 bytes in hex, a `:` after every four.
pub fn mdadm_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(35);
    for (i, b) in u.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn byte(b: &[u8], o: usize) -> u8 {
    b.get(o).copied().unwrap_or(0)
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([byte(b, o), byte(b, o + 1), byte(b, o + 2), byte(b, o + 3)])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32_at(b, o)) | (u64::from(u32_at(b, o + 4)) << 32)
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests;
