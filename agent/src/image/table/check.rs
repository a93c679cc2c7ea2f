//! Pure: whether the decoded head of an image is a whole disk that can boot from
//! a disk with a given logical sector size, and what must be done to it.
//!
//! The controller's `ingot image import` (`controller/src/images/format.rs`)
//! accepts a raw disk when its first sector carries the boot signature 0x55AA;
//! every image it stores has one, so every image it serves passes here too. This
//! check also accepts a GPT header without a protective MBR, and it goes further
//! than the import can: only the writer knows the target disk's sector size.
//! Nothing here does I/O.

use super::{GPT_SIG, TableError, crc32, u32_at, u64_at};

/// The partition table an image starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageTable {
    /// A GPT whose header (signature and header CRC valid) is at LBA 1 of
    /// `sector`-byte sectors.
    Gpt {
        /// 512 or 4096.
        sector: u32,
    },
    /// An MBR (boot signature 0x55AA at byte 510) and no GPT header.
    Mbr,
}

/// The sector sizes a GPT header is looked for at.
const GPT_SECTORS: [u32; 2] = [512, 4096];

/// Whether `head` holds a GPT signature at LBA 1 of `sector`-byte sectors, and
/// if so whether the header CRC matches.
fn gpt_header_at(head: &[u8], sector: usize) -> Option<bool> {
    let h = head.get(sector..2 * sector)?;
    if &h[..8] != GPT_SIG {
        return None;
    }
    let size = u32_at(h, 12) as usize;
    if !(92..=sector).contains(&size) {
        return Some(false);
    }
    let mut copy = h[..size].to_vec();
    copy[16..20].fill(0);
    Some(crc32(&copy) == u32_at(h, 16))
}

/// The table `head` (the first bytes of the decoded image, zero padded) starts
/// with; a GPT for `disk_sector` wins over one for the other size. A GPT
/// signature with a wrong header CRC, or a protective MBR without a GPT, is a
/// broken GPT image, never an MBR one.
pub fn detect(head: &[u8], disk_sector: u32) -> Result<ImageTable, TableError> {
    let order = if disk_sector == GPT_SECTORS[1] {
        [GPT_SECTORS[1], GPT_SECTORS[0]]
    } else {
        GPT_SECTORS
    };
    let found: Vec<(u32, bool)> = order
        .iter()
        .filter_map(|&s| gpt_header_at(head, s as usize).map(|ok| (s, ok)))
        .collect();
    if let Some(&(sector, _)) = found.iter().find(|(_, ok)| *ok) {
        return Ok(ImageTable::Gpt { sector });
    }
    if !found.is_empty() {
        return Err(TableError::BadGpt("GPT header CRC mismatch"));
    }
    if head.len() < 512 || head[510..512] != [0x55, 0xaa] {
        return Err(TableError::NotADiskImage);
    }
    if (0..4).any(|i| head[0x1be + 16 * i + 4] == 0xee) {
        return Err(TableError::BadGpt(
            "protective MBR without a GPT header at LBA 1",
        ));
    }
    Ok(ImageTable::Mbr)
}

/// Check that the entry array of the GPT at `sector` lies in `head` and matches
/// its CRC.
fn check_entries(head: &[u8], sector: usize) -> Result<(), TableError> {
    let arr = super::entry_array(head, sector)?;
    if crc32(&head[arr.range()]) != u32_at(&head[sector..2 * sector], 88) {
        return Err(TableError::BadGpt("entry array CRC mismatch"));
    }
    Ok(())
}

/// Whether the image whose decoded head is `head` can be written to a disk with
/// `disk_sector`-byte logical sectors, and with which table. A GPT for a smaller
/// sector size is accepted when [`super::convert::regpt`] can rewrite it (every
/// partition boundary a multiple of the disk's sector, none inside the new
/// table); anything else that would not read on the disk is refused.
pub fn check(head: &[u8], disk_sector: u32) -> Result<ImageTable, TableError> {
    let table = detect(head, disk_sector)?;
    match table {
        ImageTable::Gpt { sector } => {
            check_entries(head, sector as usize)?;
            if sector == disk_sector {
                return Ok(table);
            }
            if sector > disk_sector {
                return Err(TableError::SectorMismatch {
                    table: "GPT",
                    image: sector,
                    disk: disk_sector,
                    why: "only images for 512-byte sectors are rewritten, for 4096-byte disks"
                        .into(),
                });
            }
            // The rewrite itself is the rule: try it on a copy.
            super::convert::regpt(&mut head.to_vec(), sector as usize, disk_sector as usize)?;
            Ok(table)
        }
        ImageTable::Mbr if disk_sector == 512 => Ok(table),
        ImageTable::Mbr => Err(TableError::SectorMismatch {
            table: "MBR",
            image: 512,
            disk: disk_sector,
            why: "an MBR has no sector size of its own, its LBAs and the BIOS boot code \
                  that reads them count 512-byte sectors in images built as files, and \
                  BIOS firmware does not boot 4Kn disks; use a GPT (UEFI) image"
                .into(),
        }),
    }
}

/// Byte offsets `(partition index, start)` of the partitions whose first
/// sector must be looked at as it streams by ([`filesystem_fits`]): those of a
/// GPT that is rewritten for larger disk sectors. Empty otherwise.
pub fn starts_to_check(head: &[u8], table: ImageTable, disk_sector: u32) -> Vec<(usize, u64)> {
    let ImageTable::Gpt { sector } = table else {
        return vec![];
    };
    if sector >= disk_sector {
        return vec![];
    }
    let s = sector as usize;
    let h = &head[s..2 * s];
    let (entry_lba, count, esize) = (
        u64_at(h, 72),
        u32_at(h, 80) as usize,
        u32_at(h, 84) as usize,
    );
    let Some(table) = entry_lba
        .checked_mul(u64::from(sector))
        .and_then(|b| usize::try_from(b).ok())
        .and_then(|start| head.get(start..start + count * esize))
    else {
        return vec![];
    };
    table
        .chunks_exact(esize.max(1))
        .enumerate()
        .filter(|(_, e)| e[..16].iter().any(|&b| b != 0))
        .map(|(i, e)| (i, u64_at(e, 32).saturating_mul(u64::from(sector))))
        .collect()
}

/// The logical sector size of the FAT filesystem whose boot sector is `boot`,
/// or `None` when it is not one.
fn fat_sector(boot: &[u8]) -> Option<u16> {
    if boot.len() < 512 || boot[510..512] != [0x55, 0xaa] || !matches!(boot[0], 0xeb | 0xe9) {
        return None;
    }
    let size = u16::from_le_bytes([boot[11], boot[12]]);
    let fat = &boot[0x36..0x39] == b"FAT" || &boot[0x52..0x55] == b"FAT";
    (fat && size.is_power_of_two() && (512..=4096).contains(&size)).then_some(size)
}

/// Whether the filesystem starting with `boot` (partition `index`, of a GPT
/// rewritten from `image_sector` for `disk_sector`) can be read on the disk.
/// A FAT (the EFI system partition) counts in its own logical sectors, which
/// Linux refuses when they are smaller than the device's ("logical sector size
/// too small for device", fs/fat/inode.c): the machine would boot and then fail
/// to mount `/boot/efi`. Other filesystems (ext4, xfs with 4 KiB blocks) work.
pub fn filesystem_fits(
    index: usize,
    boot: &[u8],
    image_sector: u32,
    disk_sector: u32,
) -> Result<(), TableError> {
    match fat_sector(boot) {
        Some(fat) if u32::from(fat) < disk_sector => Err(TableError::SectorMismatch {
            table: "GPT",
            image: image_sector,
            disk: disk_sector,
            why: format!(
                "partition {} holds a FAT filesystem with {fat}-byte sectors, which Linux \
                 cannot mount from this disk (format it with mkfs.vfat -S {disk_sector}, \
                 or use an image built for {disk_sector}-byte sectors)",
                index + 1
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{gpt_head, mbr_head};
    use super::*;

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491u32;
        let mut v: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect();
        // Random bytes could hold the boot signature (1 in 65536); these must not.
        v[511] = 0;
        v.resize(1 << 20, 0);
        v
    }

    #[test]
    fn accepts_only_heads_with_a_table_readable_on_the_disk() {
        let aligned = [(2048, 10239), (10240, 20479)];
        let misaligned = [(2048, 10239), (10241, 20479)];
        let mut bad_crc = gpt_head(512, &aligned);
        bad_crc[512 + 16] ^= 1;
        let mut no_gpt = gpt_head(512, &aligned);
        no_gpt[512..520].fill(0);
        let mut bad_entries = gpt_head(512, &aligned);
        bad_entries[1024 + 32] ^= 1;
        let sector_mismatch = |table, image, disk| {
            move |r: &Result<ImageTable, TableError>| {
                matches!(r, Err(TableError::SectorMismatch { table: t, image: i, disk: d, .. })
                    if *t == table && *i == image && *d == disk)
            }
        };
        type Expect = Box<dyn Fn(&Result<ImageTable, TableError>) -> bool>;
        let gpt = |s| -> Expect { Box::new(move |r| *r == Ok(ImageTable::Gpt { sector: s })) };
        let cases: Vec<(&str, Vec<u8>, u32, Expect)> = vec![
            (
                "4 KiB of noise",
                noise(4096),
                512,
                Box::new(|r| *r == Err(TableError::NotADiskImage)),
            ),
            (
                "noise on 4Kn",
                noise(4096),
                4096,
                Box::new(|r| *r == Err(TableError::NotADiskImage)),
            ),
            (
                "zeros",
                vec![0; 1 << 20],
                512,
                Box::new(|r| *r == Err(TableError::NotADiskImage)),
            ),
            ("gpt 512 on 512", gpt_head(512, &aligned), 512, gpt(512)),
            (
                "gpt 4096 on 4096",
                gpt_head(4096, &aligned),
                4096,
                gpt(4096),
            ),
            (
                "gpt 512 aligned on 4096",
                gpt_head(512, &aligned),
                4096,
                gpt(512),
            ),
            (
                "gpt 512 misaligned on 4096",
                gpt_head(512, &misaligned),
                4096,
                Box::new(sector_mismatch("GPT", 512, 4096)),
            ),
            (
                "gpt 512 misaligned on 512",
                gpt_head(512, &misaligned),
                512,
                gpt(512),
            ),
            (
                "gpt 4096 on 512",
                gpt_head(4096, &aligned),
                512,
                Box::new(sector_mismatch("GPT", 4096, 512)),
            ),
            (
                "gpt header CRC broken",
                bad_crc.clone(),
                512,
                // The protective MBR remains, but a GPT image with a broken
                // header must not pass as an MBR image.
                Box::new(|r| *r == Err(TableError::BadGpt("GPT header CRC mismatch"))),
            ),
            (
                "gpt entry CRC broken",
                bad_entries,
                512,
                Box::new(|r| *r == Err(TableError::BadGpt("entry array CRC mismatch"))),
            ),
            (
                "protective MBR without GPT",
                no_gpt,
                512,
                Box::new(|r| matches!(r, Err(TableError::BadGpt(_)))),
            ),
            (
                "mbr on 512",
                mbr_head(),
                512,
                Box::new(|r| *r == Ok(ImageTable::Mbr)),
            ),
            (
                "mbr on 4096",
                mbr_head(),
                4096,
                Box::new(sector_mismatch("MBR", 512, 4096)),
            ),
        ];
        for (name, head, disk, expect) in cases {
            let r = check(&head, disk);
            assert!(expect(&r), "{name}: {r:?}");
        }
    }

    #[test]
    fn fat_with_sectors_smaller_than_the_disk_does_not_fit() {
        let fat = |size: u16, label_at: usize| {
            let mut b = vec![0u8; 512];
            b[..3].copy_from_slice(&[0xeb, 0x3c, 0x90]);
            b[11..13].copy_from_slice(&size.to_le_bytes());
            b[label_at..label_at + 5].copy_from_slice(b"FAT16");
            b[510] = 0x55;
            b[511] = 0xaa;
            b
        };
        let ext4 = vec![0u8; 512];
        let cases: [(&str, Vec<u8>, u32, bool); 6] = [
            ("fat16 512 on 4096", fat(512, 0x36), 4096, false),
            ("fat32 512 on 4096", fat(512, 0x52), 4096, false),
            ("fat 4096 on 4096", fat(4096, 0x52), 4096, true),
            ("fat 512 on 512", fat(512, 0x36), 512, true),
            ("not fat", ext4, 4096, true),
            ("bad sector size", fat(1000, 0x36), 4096, true),
        ];
        for (name, boot, disk, fits) in cases {
            let r = filesystem_fits(0, &boot, 512, disk);
            assert_eq!(r.is_ok(), fits, "{name}: {r:?}");
        }
        let head = gpt_head(512, &[(2048, 10239), (10240, 20479)]);
        let t = ImageTable::Gpt { sector: 512 };
        assert_eq!(
            starts_to_check(&head, t, 4096),
            vec![(0, 1 << 20), (1, 10240 * 512)]
        );
        assert_eq!(starts_to_check(&head, t, 512), vec![]);
    }

    #[test]
    fn refusals_name_both_sector_sizes() {
        let head = gpt_head(512, &[(2049, 10239)]);
        let msg = check(&head, 4096).expect_err("misaligned").to_string();
        assert!(
            msg.contains("512-byte") && msg.contains("4096-byte"),
            "{msg}"
        );
        let msg = check(&noise(4096), 512).expect_err("noise").to_string();
        assert!(msg.contains("no partition table"), "{msg}");
    }
}
