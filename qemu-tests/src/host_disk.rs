//! Looking at a lab machine's disk image from the host: `blkid -p` at an offset, the MBR's
//! partition entries, and "nothing recognisable left" (blkid and `wipefs -n`), for the
//! checks after a deploy, a failed deploy and a release.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail, ensure};

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

/// The MBR entries of a disk's first sector(s): (type, start byte, length in bytes); empty
/// without the 0x55AA signature.
pub fn mbr_partitions(head: &[u8]) -> Vec<(u8, u64, u64)> {
    if head.len() < 512 || head[510..512] != [0x55, 0xaa] {
        return Vec::new();
    }
    (0..4)
        .filter_map(|i| {
            let e = &head[446 + 16 * i..446 + 16 * (i + 1)];
            let start = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
            let len = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
            (e[4] != 0 && len != 0).then_some((e[4], start * 512, len * 512))
        })
        .collect()
}

/// Fails when blkid recognises anything at the start of `disk` or at one of `offsets`, or
/// `wipefs -n` lists a signature: no partition table, no filesystem, nothing a firmware or
/// an OS would pick up.
pub fn ensure_no_signatures(disk: &Path, offsets: &[u64]) -> anyhow::Result<()> {
    for &offset in [0].iter().chain(offsets) {
        if let Some(found) = probe(disk, offset)? {
            bail!("signature at byte {offset} of {}: {found}", disk.display());
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
        "wipefs -n finds signatures on {}: {text}{}",
        disk.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Fails when the first sector of `disk` is a boot sector (0x55AA) or holds an MBR
/// partition entry: firmware finds nothing to boot there.
pub fn ensure_no_boot_sector(disk: &Path) -> anyhow::Result<()> {
    let mut head = [0u8; 512];
    let mut f = std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    std::io::Read::read_exact(&mut f, &mut head)?;
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
    fn mbr_entries_are_read_and_empty_ones_skipped() {
        let mut head = vec![0u8; 512];
        assert!(mbr_partitions(&head).is_empty());
        head[510] = 0x55;
        head[511] = 0xaa;
        head[446 + 4] = 0xef;
        head[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        head[446 + 12..446 + 16].copy_from_slice(&16384u32.to_le_bytes());
        assert_eq!(mbr_partitions(&head), vec![(0xef, 1 << 20, 8 << 20)]);
    }
}
