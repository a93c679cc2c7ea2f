//! Pure: rewrite a GPT made for 512-byte sectors, in the held-back head of an
//! image, for a disk with larger (4096-byte) logical sectors.
//!
//! The partitions' bytes stay where they are; only the numbers that count
//! sectors change: the header moves to LBA 1 of the disk's sectors with the
//! entry array right behind it, every LBA is divided by the ratio, both CRCs
//! are recomputed, and hybrid MBR entries are scaled too. A partition that does
//! not start and end on a disk sector, or would overlap the new table, is
//! refused: this function is the rule, and [`super::check::check`] runs it on a
//! copy as soon as the head is decoded, so the refusal comes before any of the
//! image is written. [`super::finish`] then places the backup table at the
//! disk's end and fixes the protective MBR's size, as for any GPT.
//! BIOS boot code in the image (GRUB's `boot.img` pointing at its core by a
//! 512-byte LBA) is not rewritten: BIOS firmware does not boot 4Kn disks; UEFI
//! reads the rewritten table.

use super::{TableError, crc32, header_crc, put32, put64, u32_at, u64_at};

/// Rewrite the GPT at LBA 1 of `from`-byte sectors in `head` for `to`-byte
/// sectors. `head` must hold a GPT whose header and entry CRCs were checked
/// ([`super::check::check`]); on error it is left unchanged.
pub(super) fn regpt(head: &mut [u8], from: usize, to: usize) -> Result<(), TableError> {
    let mismatch = |why: String| TableError::SectorMismatch {
        table: "GPT",
        image: u32::try_from(from).unwrap_or(u32::MAX),
        disk: u32::try_from(to).unwrap_or(u32::MAX),
        why,
    };
    if to <= from || !to.is_multiple_of(from) {
        return Err(mismatch(
            "not a whole multiple of the image's sector".into(),
        ));
    }
    let ratio = (to / from) as u64;
    let old_hdr = head[from..2 * from].to_vec();
    let (alt, first_usable, last_usable, entry_lba, count, esize) = (
        u64_at(&old_hdr, 32),
        u64_at(&old_hdr, 40),
        u64_at(&old_hdr, 48),
        u64_at(&old_hdr, 72),
        u32_at(&old_hdr, 80) as usize,
        u32_at(&old_hdr, 84) as usize,
    );
    let table_len = count * esize;
    let old_table_start = entry_lba
        .checked_mul(from as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(TableError::BadGpt("entry LBA"))?;
    let mut table = head
        .get(old_table_start..old_table_start + table_len)
        .ok_or(TableError::BadGpt("entry array is not in the first MiB"))?
        .to_vec();

    // The entry array follows the header, as every tool lays it out.
    let new_entry_lba = 2u64;
    let table_sectors = (table_len as u64).div_ceil(to as u64);
    let new_first_usable = (new_entry_lba + table_sectors).max(first_usable.div_ceil(ratio));
    let new_table_start = usize::try_from(new_entry_lba).unwrap_or(2) * to;
    if new_table_start + table_len > head.len() {
        return Err(TableError::BadGpt(
            "entry array does not fit in the first MiB",
        ));
    }
    for (i, e) in table.chunks_exact_mut(esize).enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, end) = (u64_at(e, 32), u64_at(e, 40).checked_add(1));
        let end = end.ok_or(TableError::BadGpt("partition end LBA"))?;
        let last = end - 1;
        if !first.is_multiple_of(ratio) || !end.is_multiple_of(ratio) {
            return Err(mismatch(format!(
                "partition {} (LBAs {first}..={last}) is not aligned to {to} bytes",
                i + 1
            )));
        }
        let (first, last) = (first / ratio, (end / ratio).saturating_sub(1));
        if first < new_first_usable {
            return Err(mismatch(format!(
                "partition {} starts at byte {}, inside the {to}-byte-sector GPT \
                 (first usable LBA {new_first_usable})",
                i + 1,
                first * to as u64
            )));
        }
        put64(e, 32, first);
        put64(e, 40, last);
    }
    // Hybrid MBR entries (anything but the protective 0xEE one) count sectors
    // too; all are checked before any is changed.
    let r = u32::try_from(ratio).unwrap_or(u32::MAX);
    let hybrid: Vec<usize> = (0..4)
        .map(|i| 0x1be + 16 * i)
        .filter(|&o| head[o + 4] != 0 && head[o + 4] != 0xee)
        .collect();
    if let Some(o) = hybrid.iter().find(|&&o| {
        !u32_at(head, o + 8).is_multiple_of(r) || !u32_at(head, o + 12).is_multiple_of(r)
    }) {
        return Err(mismatch(format!(
            "hybrid MBR entry {} is not aligned to {to} bytes",
            (o - 0x1be) / 16 + 1
        )));
    }
    for o in hybrid {
        let (start, len) = (u32_at(head, o + 8), u32_at(head, o + 12));
        put32(head, o + 8, start / r);
        put32(head, o + 12, len / r);
    }

    let mut hdr = vec![0u8; to];
    let hdr_size = (u32_at(&old_hdr, 12) as usize).clamp(92, from);
    hdr[..hdr_size].copy_from_slice(&old_hdr[..hdr_size]);
    put64(&mut hdr, 24, 1);
    // Where the image's own backup header was, in the disk's sectors: finish()
    // zeroes that sector when the backup moves.
    put64(&mut hdr, 32, alt.saturating_mul(from as u64) / to as u64);
    put64(&mut hdr, 40, new_first_usable);
    put64(
        &mut hdr,
        48,
        (last_usable.saturating_add(1) / ratio).saturating_sub(1),
    );
    put64(&mut hdr, 72, new_entry_lba);
    put32(&mut hdr, 88, crc32(&table));
    header_crc(&mut hdr);

    // The old header and entry array must not be left behind for a reader that
    // assumes 512-byte sectors.
    head[from..2 * from].fill(0);
    head[old_table_start..old_table_start + table_len].fill(0);
    head[to..2 * to].copy_from_slice(&hdr);
    head[new_table_start..new_table_start + table_len].copy_from_slice(&table);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::check::{ImageTable, check};
    use super::super::tests::gpt_head;
    use super::*;

    #[test]
    fn rewritten_table_reads_with_the_disk_sector() {
        let mut head = gpt_head(512, &[(2048, 10239), (10240, 20479)]);
        regpt(&mut head, 512, 4096).expect("aligned");
        assert_eq!(check(&head, 4096), Ok(ImageTable::Gpt { sector: 4096 }));
        assert_eq!(&head[512..520], &[0; 8], "old header gone");
        let h = &head[4096..8192];
        assert_eq!(u64_at(h, 24), 1);
        assert_eq!(u64_at(h, 40), 6, "first usable after 4 sectors of entries");
        assert_eq!(u64_at(h, 72), 2);
        let e = &head[8192..8192 + 256];
        assert_eq!((u64_at(e, 32), u64_at(e, 40)), (256, 1279));
        assert_eq!((u64_at(e, 128 + 32), u64_at(e, 128 + 40)), (1280, 2559));
    }

    #[test]
    fn refuses_what_cannot_be_expressed_in_disk_sectors() {
        for (name, parts) in [
            ("misaligned start", [(2049u64, 10239u64)]),
            ("misaligned end", [(2048, 10238)]),
            ("inside the new entry array", [(40, 10239)]),
        ] {
            let mut head = gpt_head(512, &parts);
            let before = head.clone();
            let r = regpt(&mut head, 512, 4096);
            assert!(
                matches!(
                    r,
                    Err(TableError::SectorMismatch {
                        image: 512,
                        disk: 4096,
                        ..
                    })
                ),
                "{name}: {r:?}"
            );
            assert!(head == before, "{name}: head changed on refusal");
        }
    }
}
