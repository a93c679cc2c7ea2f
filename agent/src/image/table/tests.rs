//! Table edits checked against `sfdisk`, which reads both GPT copies.

use std::os::unix::fs::FileExt;
use std::process::Command;

use super::*;

pub(super) fn sfdisk(args: &[&str], path: &std::path::Path, stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut c = Command::new("sfdisk");
    c.args(args)
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("sfdisk runs (package fdisk)");
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(s.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("sfdisk");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A 1 MiB head with a protective MBR and a GPT for `sector`-byte sectors
/// (header at LBA 1, 128 entries from LBA 2) holding Linux partitions with the
/// given first and last LBAs; the disk is taken to be 64 MiB.
pub(super) fn gpt_head(sector: usize, parts: &[(u64, u64)]) -> Vec<u8> {
    let mut head = vec![0u8; MIB as usize];
    let sec = sector as u64;
    let last = 64 * MIB / sec - 1;
    let table_sectors = (128 * 128) / sec;
    head[0x1be + 4] = 0xee;
    put32(&mut head, 0x1be + 8, 1);
    put32(
        &mut head,
        0x1be + 12,
        u32::try_from(last).expect("small disk"),
    );
    head[510] = 0x55;
    head[511] = 0xaa;
    let table = 2 * sector;
    for (i, (first, end)) in parts.iter().enumerate() {
        let e = &mut head[table + 128 * i..table + 128 * (i + 1)];
        e[..16].copy_from_slice(&LINUX_DATA.to_bytes_le());
        e[16..32].copy_from_slice(&Uuid::from_u128(i as u128 + 1).to_bytes_le());
        put64(e, 32, *first);
        put64(e, 40, *end);
    }
    let crc = crc32(&head[table..table + 128 * 128]);
    let h = &mut head[sector..2 * sector];
    h[..8].copy_from_slice(GPT_SIG);
    put32(h, 8, 0x0001_0000);
    put32(h, 12, 92);
    put64(h, 24, 1);
    put64(h, 32, last);
    put64(h, 40, 2 + table_sectors);
    put64(h, 48, last - 1 - table_sectors);
    put64(h, 72, 2);
    put32(h, 80, 128);
    put32(h, 84, 128);
    put32(h, 88, crc);
    header_crc(h);
    head
}

/// A 1 MiB head with an MBR holding one Linux partition at 1 MiB.
pub(super) fn mbr_head() -> Vec<u8> {
    let mut head = vec![0u8; MIB as usize];
    head[0x1be + 4] = 0x83;
    put32(&mut head, 0x1be + 8, 2048);
    put32(&mut head, 0x1be + 12, 8192);
    head[510] = 0x55;
    head[511] = 0xaa;
    head
}

fn image(label: &str, size: u64) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("tempfile");
    f.as_file().set_len(size).expect("size");
    let script = format!("label: {label}\nstart=2048, size=8192, type=L\n");
    let out = sfdisk(&["-q"], f.path(), Some(&script));
    assert!(!out.contains("failed"), "{out}");
    f
}

/// Copy `img` onto a larger disk, apply `finish`, and return the disk.
fn apply(
    img: &tempfile::NamedTempFile,
    disk_size: u64,
    cd: Option<u64>,
) -> (tempfile::NamedTempFile, TablePlan) {
    let data = std::fs::read(img.path()).expect("read image");
    let disk = tempfile::NamedTempFile::new().expect("tempfile");
    disk.as_file().set_len(disk_size).expect("size");
    disk.as_file()
        .write_all_at(&data[MIB as usize..], MIB)
        .expect("body");
    let mut head = data[..MIB as usize].to_vec();
    let plan = finish(&mut head, 512, disk_size, cd).expect("finish");
    for (off, bytes) in &plan.writes {
        disk.as_file().write_all_at(bytes, *off).expect("write");
    }
    disk.as_file().write_all_at(&head, 0).expect("head");
    (disk, plan)
}

#[test]
fn moves_backup_gpt_to_the_end_of_a_larger_disk() {
    let img = image("gpt", 16 * MIB);
    let (disk, plan) = apply(&img, 64 * MIB, None);
    assert_eq!(plan.configdrive_offset, None);
    let out = sfdisk(&["--verify"], disk.path(), None);
    assert!(out.contains("No errors detected"), "{out}");
    let json = sfdisk(&["-J"], disk.path(), None);
    let v: serde_json::Value = serde_json::from_str(&json).expect("sfdisk json");
    let lastlba = v["partitiontable"]["lastlba"].as_u64().expect("lastlba");
    assert_eq!(lastlba, 64 * MIB / 512 - 34);
}

#[test]
fn adds_config_drive_partition_to_gpt_and_mbr() {
    for label in ["gpt", "dos"] {
        let img = image(label, 16 * MIB);
        let (disk, plan) = apply(&img, 64 * MIB, Some(300_000));
        let off = plan.configdrive_offset.expect("offset");
        assert_eq!(off % MIB, 0);
        let json = sfdisk(&["-J"], disk.path(), None);
        let v: serde_json::Value = serde_json::from_str(&json).expect("sfdisk json");
        let parts = v["partitiontable"]["partitions"]
            .as_array()
            .expect("partitions");
        assert_eq!(parts.len(), 2, "{label}: {json}");
        assert_eq!(
            parts[1]["start"].as_u64(),
            Some(off / 512),
            "{label}: {json}"
        );
        assert_eq!(
            parts[1]["size"].as_u64(),
            Some(MIB / 512),
            "{label}: {json}"
        );
        if label == "gpt" {
            assert_eq!(parts[1]["name"].as_str(), Some("config-2"));
            let out = sfdisk(&["--verify"], disk.path(), None);
            assert!(out.contains("No errors detected"), "{out}");
        }
    }
}

#[test]
fn refuses_without_table_or_room() {
    let mut blank = vec![0u8; MIB as usize];
    assert_eq!(
        finish(&mut blank, 512, 64 * MIB, Some(1)),
        Err(TableError::NotADiskImage)
    );
    assert_eq!(
        finish(&mut blank, 512, 64 * MIB, None),
        Err(TableError::NotADiskImage)
    );
    let img = image("gpt", 16 * MIB);
    let mut head = std::fs::read(img.path()).expect("read")[..MIB as usize].to_vec();
    assert!(matches!(
        finish(&mut head, 512, 16 * MIB, Some(32 * MIB)),
        Err(TableError::NoRoom { .. })
    ));
}

#[test]
fn converts_a_512_gpt_for_a_4kn_disk_with_backup_and_config_drive() {
    let mut head = gpt_head(512, &[(2048, 10239)]);
    let disk = 64 * MIB;
    let plan = finish(&mut head, 4096, disk, Some(300_000)).expect("aligned image converts");
    let h = &head[4096..8192];
    let last = disk / 4096 - 1;
    assert_eq!(&h[..8], GPT_SIG);
    assert_eq!((u64_at(h, 24), u64_at(h, 32)), (1, last));
    assert_eq!(u64_at(h, 48), last - 5, "backup entries take 4 sectors");
    let e = &head[8192..8192 + 256];
    assert_eq!((u64_at(e, 32), u64_at(e, 40)), (256, 1279));
    // The config drive: 1 MiB at the last whole MiB before the backup table.
    let cd = plan.configdrive_offset.expect("config drive added");
    assert_eq!(cd, disk - 2 * MIB);
    assert_eq!(u64_at(e, 128 + 32), cd / 4096);
    assert_eq!(u64_at(e, 128 + 40), cd / 4096 + 255);
    assert_eq!(u32_at(&head, 0x1be + 12), u32::try_from(last).expect("u32"));
    // The backup table and header, in 4096-byte sectors, at the disk's end.
    let (off, tail) = plan.writes.last().expect("backup write");
    assert_eq!(*off, (last - 4) * 4096);
    assert_eq!(tail.len(), 5 * 4096);
    assert_eq!(&tail[4 * 4096..4 * 4096 + 8], GPT_SIG);
    assert_eq!(u64_at(&tail[4 * 4096..], 24), last);
    assert_eq!(u64_at(&tail[4 * 4096..], 72), last - 4);
}

#[test]
fn refuses_a_misaligned_512_gpt_on_a_4kn_disk_without_editing() {
    let mut head = gpt_head(512, &[(2048, 10239), (10241, 20479)]);
    let before = head.clone();
    let e = finish(&mut head, 4096, 64 * MIB, None).expect_err("misaligned");
    assert!(
        matches!(
            e,
            TableError::SectorMismatch {
                image: 512,
                disk: 4096,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(head == before);
}
