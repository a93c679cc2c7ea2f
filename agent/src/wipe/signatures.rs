//! Where on-disk signatures live, and how to recognise them: the ranges a
//! metadata wipe zeroes, plus a detector used to report what was cleared.
//! Pure: takes sizes and byte slices, does no I/O.

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Ranges `(offset, len)` to zero on a device (or partition) of `size` bytes.
///
/// - The first 8 MiB: MBR, primary GPT, ext2/3/4 (1080), xfs (0), btrfs
///   (64 KiB), swap (page end), LVM2 label (sectors 0-3), md 1.1/1.2 (0, 4 KiB),
///   LUKS1/LUKS2 with every secondary-header offset up to 4 MiB, iso9660
///   (32 KiB), ZFS labels L0/L1 (0, 256 KiB), vfat/ntfs boot sectors.
/// - The last 2 MiB: backup GPT, md 0.90 (64 KiB-aligned end) and 1.0
///   (end - 8 KiB), ZFS labels L2/L3 (last 512 KiB of the 256 KiB-aligned size).
/// - btrfs backup superblocks at 64 MiB and 256 GiB.
pub fn ranges(size: u64) -> Vec<(u64, u64)> {
    let mut v = vec![(0, (8 * MIB).min(size))];
    if size > 2 * MIB {
        v.push((size - 2 * MIB, 2 * MIB));
    }
    // ZFS L2/L3 sit in the last 512 KiB of the 256 KiB-aligned size: inside
    // the last 2 MiB above.
    for b in [64 * MIB, 256 * (1 << 30)] {
        if b + 64 * KIB <= size {
            v.push((b, 64 * KIB));
        }
    }
    v
}

/// Signatures found in the first 8 MiB (`head`) and last 2 MiB (`tail`, which
/// ends at the end of a device of `size` bytes). Names follow blkid.
pub fn detect(head: &[u8], tail: &[u8], size: u64, sector: usize) -> Vec<String> {
    let at = |b: &[u8], off: usize, magic: &[u8]| b.get(off..off + magic.len()) == Some(magic);
    let mut found = Vec::new();
    let mut add = |name: &str, off: u64| found.push(format!("{name}@{off}"));
    if head.len() >= 512 && head[510] == 0x55 && head[511] == 0xaa {
        add(
            if head[0x1be + 4] == 0xee {
                "PMBR"
            } else {
                "dos"
            },
            510,
        );
    }
    if at(head, sector, b"EFI PART") {
        add("gpt", sector as u64);
    }
    if at(head, 1080, &[0x53, 0xef]) {
        add("ext4", 1080);
    }
    if at(head, 0, b"XFSB") {
        add("xfs", 0);
    }
    if at(head, 0x10040, b"_BHRfS_M") {
        add("btrfs", 0x10040);
    }
    for page in [4096usize, 8192, 16384, 65536] {
        if at(head, page - 10, b"SWAPSPACE2") || at(head, page - 10, b"SWAP-SPACE") {
            add("swap", page as u64 - 10);
        }
    }
    for s in 0..4 {
        if at(head, s * 512, b"LABELONE") {
            add("LVM2_member", (s * 512) as u64);
        }
    }
    for off in [
        0usize, 0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
    ] {
        if at(head, off, b"LUKS\xba\xbe") || at(head, off, b"SKUL\xba\xbe") {
            add("crypto_LUKS", off as u64);
        }
    }
    let md = 0xa92b_4efc_u32.to_le_bytes();
    for off in [0usize, 4096] {
        if at(head, off, &md) {
            add("linux_raid_member", off as u64);
        }
    }
    if at(head, 0x8001, b"CD001") {
        add("iso9660", 0x8001);
    }
    if at(head, 3, b"NTFS    ") {
        add("ntfs", 3);
    }
    if at(head, 0x52, b"FAT32   ") || at(head, 0x36, b"FAT1") {
        add("vfat", 0x36);
    }
    let tail_start = size - tail.len() as u64;
    let md090 = (size / (64 * KIB) * (64 * KIB)).saturating_sub(64 * KIB);
    let md10 = (size - 8 * KIB) / (4 * KIB) * (4 * KIB);
    for off in [md090, md10] {
        if off >= tail_start
            && at(
                tail,
                usize::try_from(off - tail_start).unwrap_or(usize::MAX),
                &md,
            )
        {
            add("linux_raid_member", off);
        }
    }
    if tail.len() >= sector && &tail[tail.len() - sector..tail.len() - sector + 8] == b"EFI PART" {
        add("gpt-backup", size - sector as u64);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_both_ends_and_btrfs_backups() {
        let size = 100 * MIB + 5 * KIB;
        let r = ranges(size);
        assert_eq!(r[0], (0, 8 * MIB));
        assert!(r.contains(&(size - 2 * MIB, 2 * MIB)));
        assert!(r.contains(&(64 * MIB, 64 * KIB)));
        // Tiny devices are zeroed whole, never beyond their end.
        assert_eq!(ranges(MIB), vec![(0, MIB)]);
        for (o, l) in ranges(size) {
            assert!(o + l <= size);
        }
    }

    #[test]
    fn detects_magic_numbers() {
        let mut head = vec![0u8; 8 << 20];
        head[1080..1082].copy_from_slice(&[0x53, 0xef]);
        head[4086..4096].copy_from_slice(b"SWAPSPACE2");
        head[512..520].copy_from_slice(b"LABELONE");
        let size = 64 * MIB;
        let mut tail = vec![0u8; 2 << 20];
        let md090 = size - 64 * KIB - (size - tail.len() as u64);
        tail[md090 as usize..md090 as usize + 4].copy_from_slice(&0xa92b_4efc_u32.to_le_bytes());
        let found = detect(&head, &tail, size, 512);
        assert_eq!(
            found,
            vec![
                "ext4@1080".to_string(),
                "swap@4086".into(),
                "LVM2_member@512".into(),
                format!("linux_raid_member@{}", size - 64 * KIB)
            ]
        );
    }
}
