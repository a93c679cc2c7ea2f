//! Member tables checked against `sfdisk`, which reads both GPT copies.

use std::os::unix::fs::FileExt;

use super::super::tests::sfdisk;
use super::*;

/// A 64 MiB image laid out as `cargo xtask image debian` lays out its disk: BIOS boot, ESP,
/// root to the end.
fn image() -> Vec<u8> {
    let f = tempfile::NamedTempFile::new().expect("tempfile");
    f.as_file().set_len(64 * MIB).expect("size");
    let script = "label: gpt
start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=\"bios-boot\"
start=4096, size=8192, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"esp\"
start=12288, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root\"
";
    let out = sfdisk(&["-q"], f.path(), Some(script));
    assert!(!out.contains("failed"), "{out}");
    std::fs::read(f.path()).expect("read")[..MIB as usize].to_vec()
}

fn json(disk: &tempfile::NamedTempFile) -> serde_json::Value {
    let out = sfdisk(&["--verify"], disk.path(), None);
    assert!(out.contains("No errors detected"), "{out}");
    serde_json::from_str(&sfdisk(&["-J"], disk.path(), None)).expect("sfdisk json")
}

/// Apply a member table to an empty disk of `size` bytes.
fn disk_with(head: &[u8], t: &MemberTable, size: u64) -> tempfile::NamedTempFile {
    let disk = tempfile::NamedTempFile::new().expect("tempfile");
    disk.as_file().set_len(size).expect("size");
    for (off, bytes) in &t.plan.writes {
        disk.as_file().write_all_at(bytes, *off).expect("write");
    }
    disk.as_file().write_all_at(head, 0).expect("head");
    disk
}

#[test]
fn finds_the_root_partition_and_refuses_boot_or_mbr_images() {
    let mut head = image();
    let root = root(&mut head, 512).expect("root");
    assert_eq!(
        root,
        RootPartition {
            index: 2,
            start: 12288 * 512,
            // sfdisk ends the last partition on a MiB boundary before the backup GPT.
            len: 57 * MIB
        }
    );
    // An image whose last partition is its ESP has no root file system to mirror.
    let f = tempfile::NamedTempFile::new().expect("tempfile");
    f.as_file().set_len(64 * MIB).expect("size");
    let out = sfdisk(
        &["-q"],
        f.path(),
        Some("label: gpt\nstart=2048, size=8192, type=L\nstart=12288, type=U\n"),
    );
    assert!(!out.contains("failed"), "{out}");
    let mut head = std::fs::read(f.path()).expect("read")[..MIB as usize].to_vec();
    let e = super::root(&mut head, 512).expect_err("ESP last");
    assert!(e.to_string().contains("boot partition"), "{e}");
    let mut mbr = super::super::tests::mbr_head();
    let e = super::root(&mut mbr, 512).expect_err("MBR");
    assert!(e.to_string().contains("GPT"), "{e}");
}

#[test]
fn member_tables_grow_the_root_add_a_volume_and_a_config_drive() {
    let disk_size = 256 * MIB;
    let mut img = image();
    let root = root(&mut img, 512).expect("root");
    let end = usable_end(&img, 512, disk_size, Some(300_000)).expect("end");
    assert_eq!(
        end,
        disk_size - 2 * MIB,
        "1 MiB config drive before the backup GPT"
    );
    let extents = [
        Extent {
            start: root.start,
            len: 128 * MIB,
        },
        Extent {
            start: root.start + 128 * MIB,
            len: end - root.start - 128 * MIB,
        },
    ];
    let mut uuids = Vec::new();
    for (i, fresh) in [false, true].into_iter().enumerate() {
        let mut head = img.clone();
        let layout = Layout {
            root: &root,
            extents: &extents,
            names: &["root", "data"],
            configdrive_len: Some(300_000),
        };
        let t = members(&mut head, 512, disk_size, &layout, fresh).expect("member table");
        assert_eq!(t.partitions, vec![3, 4], "disk {i}");
        let cd = t.plan.configdrive_offset.expect("config drive");
        assert_eq!(cd, end);
        let v = json(&disk_with(&head, &t, disk_size));
        let parts = v["partitiontable"]["partitions"].as_array().expect("parts");
        let got: Vec<(u64, u64, &str, &str)> = parts
            .iter()
            .map(|p| {
                (
                    p["start"].as_u64().expect("start"),
                    p["size"].as_u64().expect("size"),
                    p["type"].as_str().expect("type"),
                    p["name"].as_str().unwrap_or(""),
                )
            })
            .collect();
        let raid = "A19D880F-05FC-4D3B-A006-743F0F84911E";
        assert_eq!(
            got,
            vec![
                (
                    2048,
                    2048,
                    "21686148-6449-6E6F-744E-656564454649",
                    "bios-boot"
                ),
                (4096, 8192, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "esp"),
                (12288, 128 * MIB / 512, raid, "root"),
                (12288 + 128 * MIB / 512, extents[1].len / 512, raid, "data"),
                (
                    cd / 512,
                    MIB / 512,
                    "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                    "config-2"
                ),
            ],
            "disk {i}"
        );
        uuids.push((
            v["partitiontable"]["id"]
                .as_str()
                .expect("disk id")
                .to_owned(),
            parts[0]["uuid"].as_str().expect("uuid").to_owned(),
        ));
    }
    assert_ne!(uuids[0].0, uuids[1].0, "each member has its own disk GUID");
    assert_ne!(uuids[0].1, uuids[1].1, "and its own partition GUIDs");
}

#[test]
fn member_tables_refuse_what_does_not_fit() {
    let mut img = image();
    let root = root(&mut img, 512).expect("root");
    let table = |extents: &[Extent]| {
        let mut head = img.clone();
        let layout = Layout {
            root: &root,
            extents,
            names: &[],
            configdrive_len: None,
        };
        members(&mut head, 512, 128 * MIB, &layout, false)
    };
    let moved = table(&[Extent {
        start: root.start + MIB,
        len: 8 * MIB,
    }]);
    assert!(matches!(moved, Err(TableError::BadGpt(_))), "{moved:?}");
    let too_big = table(&[Extent {
        start: root.start,
        len: 128 * MIB,
    }]);
    assert!(
        matches!(too_big, Err(TableError::NoRoom { .. })),
        "{too_big:?}"
    );
    assert!(matches!(table(&[]), Err(TableError::BadGpt(_))));
}

#[test]
fn fresh_tables_hold_one_raid_partition_per_extent() {
    let size = 96 * MIB;
    let extents = [
        Extent {
            start: MIB,
            len: 40 * MIB,
        },
        Extent {
            start: 41 * MIB,
            len: 40 * MIB,
        },
    ];
    let (head, plan) = fresh(512, size, &extents, &["root", "data"]).expect("fresh");
    let t = MemberTable {
        plan,
        partitions: vec![1, 2],
    };
    let v = json(&disk_with(&head, &t, size));
    let parts = v["partitiontable"]["partitions"].as_array().expect("parts");
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["start"].as_u64(), Some(2048));
    assert_eq!(parts[1]["size"].as_u64(), Some(40 * MIB / 512));
    assert_eq!(parts[1]["name"].as_str(), Some("data"));
    assert_eq!(
        parts[0]["type"].as_str(),
        Some("A19D880F-05FC-4D3B-A006-743F0F84911E")
    );
    assert!(
        fresh(
            512,
            size,
            &[Extent {
                start: MIB,
                len: size
            }],
            &[]
        )
        .is_err()
    );
    assert!(fresh(512, size, &[Extent { start: 0, len: MIB }], &[]).is_err());
}
