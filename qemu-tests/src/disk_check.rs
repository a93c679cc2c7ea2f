//! Looking at a lab machine's disk image from the host: the partitions of its table (MBR or
//! GPT), what `blkid -p` recognises at an offset, the files of a `config-2` config drive,
//! and the check after release that no partition table or filesystem signature is left.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail, ensure};

/// One partition of a disk image: its table's type (MBR type byte, or 0 for GPT), start and
/// length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub mbr_type: u8,
    pub start: u64,
    pub len: u64,
}

/// `blkid -p` of the disk image at `offset`: `None` when nothing is recognised (exit 2).
pub fn probe(disk: &Path, offset: u64) -> anyhow::Result<Option<String>> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export", "-O"])
        .arg(offset.to_string())
        .arg(disk)
        .output()
        .context("running blkid")?;
    match out.status.code() {
        Some(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
        Some(2) => Ok(None),
        _ => bail!(
            "blkid -p {} failed: {}",
            disk.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// PURE: the MBR entries of a disk's first sector (a protective MBR gives one 0xee entry).
pub fn mbr_partitions(head: &[u8]) -> Vec<Partition> {
    if head.len() < 512 || head[510..512] != [0x55, 0xaa] {
        return Vec::new();
    }
    (0..4)
        .filter_map(|i| {
            let e = &head[446 + 16 * i..446 + 16 * (i + 1)];
            let start = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
            let len = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
            (e[4] != 0 && len != 0).then_some(Partition {
                mbr_type: e[4],
                start: start * 512,
                len: len * 512,
            })
        })
        .collect()
}

/// PURE: the used entries of a GPT, given the disk's first 34 sectors (512-byte sectors,
/// header at LBA 1); empty when there is no GPT header.
pub fn gpt_partitions(head: &[u8]) -> Vec<Partition> {
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let le64 = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
    if head.len() < 1024 || &head[512..520] != b"EFI PART" {
        return Vec::new();
    }
    let h = &head[512..1024];
    let entries_lba = le64(&h[72..80]);
    let count = le32(&h[80..84]) as usize;
    let size = le32(&h[84..88]) as usize;
    if size < 128 {
        return Vec::new();
    }
    let base = (entries_lba * 512) as usize;
    (0..count)
        .filter_map(|i| {
            let e = head.get(base + i * size..base + i * size + 128)?;
            let (first, last) = (le64(&e[32..40]), le64(&e[40..48]));
            (e[..16].iter().any(|&b| b != 0) && last >= first).then_some(Partition {
                mbr_type: 0,
                start: first * 512,
                len: (last - first + 1) * 512,
            })
        })
        .collect()
}

/// The partitions of a disk image: its GPT if it has one, else its MBR.
pub fn partitions(disk: &Path) -> anyhow::Result<Vec<Partition>> {
    let mut head = vec![0u8; 64 * 1024];
    let mut f = std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    f.read_exact(&mut head)?;
    let gpt = gpt_partitions(&head);
    Ok(if gpt.is_empty() {
        mbr_partitions(&head)
    } else {
        gpt
    })
}

/// Extracts `/openstack/latest` of the `config-2` ISO at `offset` on `disk` into `out_dir`
/// (with xorriso: no iso9660 mount needed) and returns `(meta_data.json, user_data)`.
pub fn read_config_drive(
    disk: &Path,
    offset: u64,
    len: u64,
    out_dir: &Path,
) -> anyhow::Result<(String, String)> {
    let found = probe(disk, offset)?.unwrap_or_default();
    ensure!(
        found.contains("TYPE=iso9660") && found.contains("LABEL=config-2"),
        "no config drive at byte {offset}: {found}"
    );
    std::fs::create_dir_all(out_dir)?;
    let iso = out_dir.join("configdrive.iso");
    let mut part = vec![0u8; usize::try_from(len.min(64 << 20))?];
    let mut f = std::fs::File::open(disk)?;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut part)?;
    std::fs::write(&iso, &part)?;
    let files = out_dir.join("files");
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&iso)
        .args(["-extract", "/openstack/latest"])
        .arg(&files)
        .output()
        .context("running xorriso")?;
    ensure!(
        out.status.success(),
        "xorriso: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((
        std::fs::read_to_string(files.join("meta_data.json"))?,
        std::fs::read_to_string(files.join("user_data"))?,
    ))
}

/// After release: nothing that blkid recognises at the start of the disk or where the
/// deployed partitions were (`old_offsets`), and nothing `wipefs -n` lists (it also looks
/// for a backup GPT at the end).
pub fn check_wiped(disk: &Path, old_offsets: &[u64]) -> anyhow::Result<()> {
    for &offset in [0].iter().chain(old_offsets) {
        if let Some(found) = probe(disk, offset)? {
            bail!("signature left at byte {offset} after cleaning: {found}");
        }
    }
    let out = Command::new("wipefs")
        .arg("-n")
        .arg(disk)
        .output()
        .context("running wipefs")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.trim().is_empty(),
        "wipefs -n finds signatures: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        partitions(disk)?.is_empty(),
        "a partition table is left on {}",
        disk.display()
    );
    Ok(())
}

/// Fails unless the `len` bytes at each of `offsets` of `disk` read as zeroes (where the
/// agent wrote its secure-erase markers).
pub fn ensure_zero_at(disk: &Path, offsets: &[u64], len: usize) -> anyhow::Result<()> {
    use std::io::{Seek as _, SeekFrom};
    let mut f = std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let mut buf = vec![0u8; len];
    for &o in offsets {
        f.seek(SeekFrom::Start(o))?;
        f.read_exact(&mut buf)?;
        ensure!(
            buf.iter().all(|&b| b == 0),
            "{} holds data at byte {o} after the erase",
            disk.display()
        );
    }
    Ok(())
}

/// Fails when the first sector of `disk` is a boot sector (0x55AA) or holds an MBR
/// partition entry: firmware finds nothing to boot there (after a failed deploy).
pub fn ensure_no_boot_sector(disk: &Path) -> anyhow::Result<()> {
    let mut head = [0u8; 512];
    let mut f = std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    f.read_exact(&mut head)?;
    ensure!(
        head[510..512] != [0x55, 0xaa],
        "{} still has a boot sector signature; partitions {:?}",
        disk.display(),
        mbr_partitions(&head)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mbr_and_gpt_entries() {
        let mut head = vec![0u8; 34 * 512];
        assert!(mbr_partitions(&head).is_empty());
        assert!(gpt_partitions(&head).is_empty());
        // Protective MBR: one 0xee entry from LBA 1.
        head[510] = 0x55;
        head[511] = 0xaa;
        head[446 + 4] = 0xee;
        head[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        head[446 + 12..446 + 16].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(
            mbr_partitions(&head),
            [Partition {
                mbr_type: 0xee,
                start: 512,
                len: 100 * 512
            }]
        );
        // GPT header at LBA 1, entries at LBA 2, two entries of which one is used.
        head[512..520].copy_from_slice(b"EFI PART");
        head[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        head[512 + 80..512 + 84].copy_from_slice(&2u32.to_le_bytes());
        head[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        let e = 1024 + 128;
        head[e] = 0xaf;
        head[e + 32..e + 40].copy_from_slice(&2048u64.to_le_bytes());
        head[e + 40..e + 48].copy_from_slice(&4095u64.to_le_bytes());
        assert_eq!(
            gpt_partitions(&head),
            [Partition {
                mbr_type: 0,
                start: 2048 * 512,
                len: 2048 * 512
            }]
        );
    }
}
