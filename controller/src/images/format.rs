//! PURE: what kind of disk image a file is, from its first bytes (never its name).
//!
//! Raw disks are recognised by the boot signature of their first sector (an MBR or a GPT's
//! protective MBR); container formats by their headers, and handed to `qemu-img` under the
//! format name it uses. Compressed files are refused with a hint: what gets stored is always
//! a raw disk the import compresses itself.

/// Bytes of the file's head [`detect`] wants (it copes with fewer).
pub const HEAD_LEN: usize = 4096;

/// What a source file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// A raw disk (partition table in the first sector).
    Raw,
    /// A container `qemu-img` converts; the value is its `-f` name (`qcow2`, `vmdk`, ...).
    Convert(&'static str),
}

impl SourceFormat {
    /// The name shown to operators and stored in the record.
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Raw => "raw",
            SourceFormat::Convert(f) => f,
        }
    }
}

/// Why a file is not an importable disk image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("file is empty")]
    Empty,
    #[error("file is {0} bytes, smaller than one disk sector")]
    TooSmall(u64),
    #[error("{0}-compressed file: decompress it first (the import compresses the raw disk itself)")]
    Compressed(&'static str),
    #[error(
        "a text VMDK descriptor keeps the disk in other files: import a self-contained \
         (monolithicSparse or streamOptimized) VMDK instead"
    )]
    VmdkDescriptor,
    #[error(
        "unknown format: no qcow2 (or other qemu-img) header, and no partition table \
         (MBR or GPT boot signature) in the first sector"
    )]
    Unknown,
}

/// Detects the format from the first bytes of a file of `len` bytes.
pub fn detect(head: &[u8], len: u64) -> Result<SourceFormat, FormatError> {
    if len == 0 || head.is_empty() {
        return Err(FormatError::Empty);
    }
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"QFI\xfb") {
        let version = head
            .get(4..8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        return Ok(SourceFormat::Convert(if version == Some(1) {
            "qcow"
        } else {
            "qcow2"
        }));
    }
    if starts(b"QED\0") {
        return Ok(SourceFormat::Convert("qed"));
    }
    if starts(b"# Disk DescriptorFile") {
        return Err(FormatError::VmdkDescriptor);
    }
    if starts(b"KDMV") {
        return Ok(SourceFormat::Convert("vmdk"));
    }
    if starts(b"vhdxfile") {
        return Ok(SourceFormat::Convert("vhdx"));
    }
    if starts(b"conectix") {
        return Ok(SourceFormat::Convert("vpc"));
    }
    if head.get(0x40..0x44) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        return Ok(SourceFormat::Convert("vdi"));
    }
    for (magic, name) in [
        (&b"\x28\xb5\x2f\xfd"[..], "zstd"),
        (&b"\x1f\x8b"[..], "gzip"),
        (&b"\xfd7zXZ\0"[..], "xz"),
        (&b"BZh"[..], "bzip2"),
    ] {
        if starts(magic) {
            return Err(FormatError::Compressed(name));
        }
    }
    if len < 512 || head.len() < 512 {
        return Err(FormatError::TooSmall(len));
    }
    if head[510..512] == [0x55, 0xaa] {
        return Ok(SourceFormat::Raw);
    }
    Err(FormatError::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sector(sig: bool) -> Vec<u8> {
        let mut s = vec![0u8; 4096];
        if sig {
            s[510] = 0x55;
            s[511] = 0xaa;
        }
        s
    }

    #[test]
    fn formats_by_magic() {
        let mut q = vec![0u8; 512];
        q[..4].copy_from_slice(b"QFI\xfb");
        q[7] = 3;
        assert_eq!(detect(&q, 1 << 20), Ok(SourceFormat::Convert("qcow2")));
        q[7] = 1;
        assert_eq!(detect(&q, 1 << 20), Ok(SourceFormat::Convert("qcow")));
        assert_eq!(detect(&sector(true), 1 << 30), Ok(SourceFormat::Raw));
        assert_eq!(detect(&sector(false), 1 << 30), Err(FormatError::Unknown));
        let mut vdi = sector(false);
        vdi[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        assert_eq!(detect(&vdi, 1 << 20), Ok(SourceFormat::Convert("vdi")));
        assert_eq!(
            detect(b"vhdxfile\0\0", 1 << 20),
            Ok(SourceFormat::Convert("vhdx"))
        );
        assert_eq!(
            detect(b"KDMV....", 1 << 20),
            Ok(SourceFormat::Convert("vmdk"))
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(detect(&[], 0), Err(FormatError::Empty));
        assert_eq!(detect(&[0x55; 100], 100), Err(FormatError::TooSmall(100)));
        assert_eq!(
            detect(b"\x28\xb5\x2f\xfd\x00\x00", 1 << 20),
            Err(FormatError::Compressed("zstd"))
        );
        assert_eq!(
            detect(b"\x1f\x8b\x08", 1 << 20),
            Err(FormatError::Compressed("gzip"))
        );
        assert_eq!(
            detect(b"# Disk DescriptorFile\nversion=1\n", 1 << 20),
            Err(FormatError::VmdkDescriptor)
        );
        assert!(
            FormatError::Unknown
                .to_string()
                .contains("no partition table")
        );
    }
}
