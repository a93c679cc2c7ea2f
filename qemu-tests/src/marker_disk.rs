//! A small whole-disk image that boots under both firmwares and says so on the serial port:
//! its MBR boot code prints [`BIOS_MARKER`] to COM1 (SeaBIOS), and its EFI system partition
//! holds `\EFI\BOOT\BOOTX64.EFI`, a hand-assembled UEFI application that prints
//! [`UEFI_MARKER`] through `ConOut` (OVMF sends it to the serial port). Both then halt.
//!
//! Layout (MBR): partition 1 = ESP (type 0xEF, FAT made with mtools) at 1 MiB; partition 2 =
//! filler (type 0x83) of deterministic pseudo-random bytes, so that a deploy moves a
//! realistic amount of data. The image can be zstd-compressed with its sha256 for a deploy.
//!
//! Needs `mtools` (mformat, mmd, mcopy) and `zstd`, `sha256sum` on the host.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

/// What SeaBIOS prints after booting the disk.
pub const BIOS_MARKER: &str = "INGOT-BIOS-DISK-OK";
/// What OVMF prints after booting the disk.
pub const UEFI_MARKER: &str = "INGOT-UEFI-DISK-OK";

const MIB: u64 = 1 << 20;
/// Size of the EFI system partition.
const ESP_MIB: u64 = 8;

/// A built image: the raw file, and its zstd-compressed copy with the sha256 of that copy.
#[derive(Debug, Clone)]
pub struct MarkerDisk {
    pub raw: PathBuf,
    pub raw_bytes: u64,
    pub zst: PathBuf,
    pub zst_bytes: u64,
    pub zst_sha256: String,
}

/// 16-bit real-mode boot sector code: prints `msg` on COM1 (port 0x3F8), then `cli; hlt`.
fn mbr_code(marker: &str) -> Vec<u8> {
    let mut code: Vec<u8> = vec![
        0xfa, // cli
        0x31, 0xc0, // xor ax,ax
        0x8e, 0xd8, // mov ds,ax
        0xbe, 0x00, 0x00, // mov si,imm16 (patched below)
        0xba, 0xf8, 0x03, // mov dx,0x3f8
        0xac, // loop: lodsb
        0x84, 0xc0, // test al,al
        0x74, 0x03, // jz done
        0xee, // out dx,al
        0xeb, 0xf8, // jmp loop
        0xf4, // done: hlt
        0xeb, 0xfd, // jmp done
    ];
    let msg_addr = 0x7c00u16 + u16::try_from(code.len()).expect("short code");
    code[6..8].copy_from_slice(&msg_addr.to_le_bytes());
    code.extend_from_slice(format!("\r\n{marker}\r\n\0").as_bytes());
    code
}

/// One MBR partition entry (LBA only; CHS fields say "use LBA").
fn mbr_entry(kind: u8, start_lba: u64, sectors: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = kind;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&u32::try_from(start_lba).expect("small disk").to_le_bytes());
    e[12..16].copy_from_slice(&u32::try_from(sectors).expect("small disk").to_le_bytes());
    e
}

/// A PE32+ EFI application (subsystem 10) whose entry point calls
/// `SystemTable->ConOut->OutputString(ConOut, msg)` and then halts in a loop.
fn efi_app(marker: &str) -> Vec<u8> {
    const TEXT_RVA: u32 = 0x1000;
    const FILE_ALIGN: usize = 0x200;
    // x86-64, Microsoft ABI: RCX = ImageHandle, RDX = SystemTable.
    let mut text: Vec<u8> = vec![
        0x48, 0x83, 0xec, 0x28, // sub rsp,0x28 (shadow space, 16-byte alignment)
        0x48, 0x8b, 0x4a, 0x40, // mov rcx,[rdx+0x40]  (SystemTable->ConOut)
        0x48, 0x8d, 0x15, 0x09, 0x00, 0x00, 0x00, // lea rdx,[rip+9]  (msg at 24)
        0xff, 0x51, 0x08, // call [rcx+8]  (ConOut->OutputString)
        0xf4, // halt: hlt
        0xeb, 0xfd, // jmp halt
        0x00, 0x00, 0x00, // pad to 24
    ];
    for unit in format!("\r\n{marker}\r\n").encode_utf16().chain([0]) {
        text.extend_from_slice(&unit.to_le_bytes());
    }
    let raw_size = text.len().div_ceil(FILE_ALIGN) * FILE_ALIGN;
    text.resize(raw_size, 0);

    let mut h = vec![0u8; FILE_ALIGN];
    h[0..2].copy_from_slice(b"MZ");
    h[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    h[0x40..0x44].copy_from_slice(b"PE\0\0");
    // COFF header at 0x44.
    let coff = 0x44;
    h[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
    h[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
    h[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
    // Executable, large-address aware; relocations are NOT marked stripped, so the loader
    // may place the image anywhere (the code is position independent).
    h[coff + 18..coff + 20].copy_from_slice(&0x0022u16.to_le_bytes());
    // Optional header (PE32+) at 0x58.
    let o = coff + 20;
    let raw32 = u32::try_from(raw_size).expect("small app");
    h[o..o + 2].copy_from_slice(&0x20bu16.to_le_bytes());
    h[o + 4..o + 8].copy_from_slice(&raw32.to_le_bytes()); // SizeOfCode
    h[o + 16..o + 20].copy_from_slice(&TEXT_RVA.to_le_bytes()); // AddressOfEntryPoint
    h[o + 20..o + 24].copy_from_slice(&TEXT_RVA.to_le_bytes()); // BaseOfCode
    h[o + 24..o + 32].copy_from_slice(&0x1_0000_0000u64.to_le_bytes()); // ImageBase
    h[o + 32..o + 36].copy_from_slice(&0x1000u32.to_le_bytes()); // SectionAlignment
    h[o + 36..o + 40].copy_from_slice(&0x200u32.to_le_bytes()); // FileAlignment
    let image_size = TEXT_RVA + raw32.div_ceil(0x1000) * 0x1000;
    h[o + 56..o + 60].copy_from_slice(&image_size.to_le_bytes()); // SizeOfImage
    h[o + 60..o + 64].copy_from_slice(&0x200u32.to_le_bytes()); // SizeOfHeaders
    h[o + 68..o + 70].copy_from_slice(&10u16.to_le_bytes()); // Subsystem: EFI application
    for (off, v) in [(72, 0x10000u64), (80, 0x1000), (88, 0x10000), (96, 0x1000)] {
        h[o + off..o + off + 8].copy_from_slice(&v.to_le_bytes()); // stack/heap sizes
    }
    h[o + 108..o + 112].copy_from_slice(&16u32.to_le_bytes()); // NumberOfRvaAndSizes
    // Section table right after the optional header (240 bytes).
    let s = o + 240;
    h[s..s + 8].copy_from_slice(b".text\0\0\0");
    h[s + 8..s + 12].copy_from_slice(&raw32.to_le_bytes()); // VirtualSize
    h[s + 12..s + 16].copy_from_slice(&TEXT_RVA.to_le_bytes()); // VirtualAddress
    h[s + 16..s + 20].copy_from_slice(&raw32.to_le_bytes()); // SizeOfRawData
    h[s + 20..s + 24].copy_from_slice(&0x200u32.to_le_bytes()); // PointerToRawData
    h[s + 36..s + 40].copy_from_slice(&0x6000_0020u32.to_le_bytes()); // code, exec, read
    h.extend_from_slice(&text);
    h
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the image (`size_mib` >= 10 MiB in all) in `dir` as `marker-disk.img`, plus
/// `marker-disk.img.zst`.
pub fn build(dir: &Path, size_mib: u64) -> anyhow::Result<MarkerDisk> {
    ensure!(size_mib > ESP_MIB + 1, "image too small: {size_mib} MiB");
    std::fs::create_dir_all(dir)?;
    let raw = dir.join("marker-disk.img");
    let bytes = size_mib * MIB;
    let esp_start = MIB / 512;
    let esp_sectors = ESP_MIB * MIB / 512;
    let fill_start = esp_start + esp_sectors;
    let fill_sectors = bytes / 512 - fill_start;

    let mut mbr = mbr_code(BIOS_MARKER);
    ensure!(mbr.len() <= 446, "boot code too long");
    mbr.resize(446, 0);
    mbr.extend_from_slice(&mbr_entry(0xef, esp_start, esp_sectors));
    mbr.extend_from_slice(&mbr_entry(0x83, fill_start, fill_sectors));
    mbr.resize(510, 0);
    mbr.extend_from_slice(&[0x55, 0xaa]);

    // Filler: xorshift bytes, a quarter of each 4 KiB block zeroed so zstd has some work.
    let mut image = vec![0u8; usize::try_from(bytes).context("image size")?];
    image[..512].copy_from_slice(&mbr);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let fill = usize::try_from(fill_start * 512).context("offset")?;
    for (i, chunk) in image[fill..].chunks_mut(8).enumerate() {
        if (i * 8) % 4096 >= 3072 {
            continue;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    std::fs::write(&raw, &image).context("writing the image")?;

    let app = dir.join("BOOTX64.EFI");
    std::fs::write(&app, efi_app(UEFI_MARKER))?;
    let esp = format!("{}@@{}", raw.display(), esp_start * 512);
    // mformat would take the rest of the file; say the partition size in sectors.
    run(Command::new("mformat")
        .args(["-i", &esp, "-v", "ESP", "-T"])
        .arg(esp_sectors.to_string())
        .args(["-h", "64", "-s", "32", "::"]))
    .context("mformat (install mtools)")?;
    run(Command::new("mmd").args(["-i", &esp, "::/EFI", "::/EFI/BOOT"]))?;
    run(Command::new("mcopy")
        .args(["-i", &esp])
        .arg(&app)
        .arg("::/EFI/BOOT/BOOTX64.EFI"))?;

    let zst = dir.join("marker-disk.img.zst");
    run(Command::new("zstd")
        .args(["-q", "-f", "-3", "-T0"])
        .arg(&raw)
        .arg("-o")
        .arg(&zst))?;
    let sum = run(Command::new("sha256sum").arg(&zst))?;
    let zst_sha256 = sum
        .split_whitespace()
        .next()
        .filter(|s| s.len() == 64)
        .context("sha256sum output")?
        .to_owned();
    Ok(MarkerDisk {
        raw,
        raw_bytes: bytes,
        zst_bytes: std::fs::metadata(&zst)?.len(),
        zst,
        zst_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_sector_fits_and_points_at_its_message() {
        let code = mbr_code(BIOS_MARKER);
        assert!(code.len() < 446);
        let addr = u16::from_le_bytes([code[6], code[7]]) - 0x7c00;
        let msg = &code[usize::from(addr)..];
        assert!(msg.starts_with(format!("\r\n{BIOS_MARKER}").as_bytes()));
        assert_eq!(msg.last(), Some(&0));
    }

    #[test]
    fn efi_app_is_a_pe32_plus_efi_application() {
        let app = efi_app(UEFI_MARKER);
        assert_eq!(&app[0..2], b"MZ");
        assert_eq!(&app[0x40..0x44], b"PE\0\0");
        assert_eq!(u16::from_le_bytes([app[0x58], app[0x59]]), 0x20b);
        assert_eq!(u16::from_le_bytes([app[0x58 + 68], app[0x58 + 69]]), 10);
        assert_eq!(app.len() % 0x200, 0);
        // The lea at text offset 8 points 9 bytes past its end (offset 24): the message.
        let text = &app[0x200..];
        assert_eq!(&text[8..11], &[0x48, 0x8d, 0x15]);
        let msg: Vec<u16> = text[24..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        assert_eq!(
            String::from_utf16_lossy(&msg),
            format!("\r\n{UEFI_MARKER}\r\n")
        );
    }
}
