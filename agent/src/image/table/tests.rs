//! Table edits checked against `sfdisk`, which reads both GPT copies.

use std::os::unix::fs::FileExt;
use std::process::Command;

use super::*;

fn sfdisk(args: &[&str], path: &std::path::Path, stdin: Option<&str>) -> String {
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
        Err(TableError::NoTable)
    );
    assert_eq!(
        finish(&mut blank, 512, 64 * MIB, None),
        Ok(TablePlan::default())
    );
    let img = image("gpt", 16 * MIB);
    let mut head = std::fs::read(img.path()).expect("read")[..MIB as usize].to_vec();
    assert!(matches!(
        finish(&mut head, 512, 16 * MIB, Some(32 * MIB)),
        Err(TableError::NoRoom { .. })
    ));
}
