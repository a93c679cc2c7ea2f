use std::cell::RefCell;

use proto::{RootDeviceHints, SizeHint};

use super::*;
use crate::md::host::{Assembled, MdError};

fn disk(name: &str, gib: u64, serial: &str) -> Disk {
    Disk {
        name: format!("/dev/{name}"),
        size: gib * GIB,
        serial: Some(serial.into()),
        logical_sector_size: 512,
        physical_sector_size: 512,
        ..Default::default()
    }
}

fn vol(level: RaidLevel, size_gb: Option<u64>) -> RaidVolume {
    RaidVolume {
        level,
        size_gb,
        name: None,
    }
}

fn serial(s: &str) -> RootDeviceHints {
    RootDeviceHints {
        serial: Some(s.into()),
        ..Default::default()
    }
}

fn plan(disks: Vec<RootDeviceHints>) -> SoftwareRaid {
    SoftwareRaid {
        disks,
        volumes: vec![vol(RaidLevel::Raid1, None)],
    }
}

fn names(v: &[Disk]) -> Vec<&str> {
    v.iter().map(|d| d.name.as_str()).collect()
}

#[test]
fn resolves_members_by_hints_sorted_by_name() {
    let disks = vec![
        disk("vdc", 20, "C"),
        disk("vda", 10, "A"),
        disk("vdb", 10, "B"),
    ];
    let got =
        resolve_excluding(&plan(vec![serial("C"), serial("A")]), &disks, &[]).expect("resolves");
    assert_eq!(names(&got), vec!["/dev/vda", "/dev/vdc"]);
    // No hints: every eligible disk.
    let got = resolve_excluding(&plan(vec![]), &disks, &[]).expect("resolves");
    assert_eq!(names(&got), vec!["/dev/vda", "/dev/vdb", "/dev/vdc"]);
    let mut odd = disks.clone();
    odd[0].read_only = true;
    odd.push(Disk {
        removable: true,
        transport: Some("usb".into()),
        ..disk("sdz", 1, "U")
    });
    odd.push(Disk {
        removable: true,
        ..disk("sdy", 1, "R")
    });
    odd.push(disk("sr0", 1, "CD"));
    let got = resolve_excluding(&plan(vec![]), &odd, &["/dev/vdb".to_owned()]);
    match got {
        Err(e @ RaidError::TooFewDisks { .. }) => assert_eq!(
            e.to_string(),
            "software RAID needs at least 2 member disks; 1 eligible (passed over: /dev/vdc \
             (read-only), /dev/vdb (the boot medium), /dev/sdz (virtual media), /dev/sdy \
             (removable), /dev/sr0 (virtual media))"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn resolve_errors_name_the_hint() {
    let mut disks = vec![
        disk("vda", 10, "A"),
        disk("vdb", 10, "B"),
        disk("vdc", 20, "C"),
    ];
    disks[2].read_only = true;
    let big = RootDeviceHints {
        size: Some(SizeHint::parse(">= 5").expect("hint")),
        ..Default::default()
    };
    let cases: Vec<(SoftwareRaid, &str)> = vec![
        (
            plan(vec![serial("A"), serial("Z")]),
            r#"software RAID member hint {"serial":"Z"} matches no disk"#,
        ),
        (
            plan(vec![serial("A"), big]),
            r#"matches 3 disks (/dev/vda, /dev/vdb, /dev/vdc): a member hint must name one disk"#,
        ),
        (
            plan(vec![
                serial("A"),
                RootDeviceHints {
                    name: Some("vda".into()),
                    ..Default::default()
                },
            ]),
            r#"software RAID member hints {"serial":"A"} and {"name":"vda"} both match /dev/vda"#,
        ),
        (
            plan(vec![serial("A"), serial("C")]),
            r#"software RAID member hint {"serial":"C"} matches /dev/vdc, which cannot be a member: read-only"#,
        ),
        (plan(vec![serial("A")]), "at least 2 member disks, 1 named"),
        (
            SoftwareRaid {
                disks: vec![],
                volumes: vec![],
            },
            "software RAID plan refused: software RAID has 1 or 2 volumes, not 0",
        ),
    ];
    for (p, want) in cases {
        let e = resolve_excluding(&p, &disks, &[]).expect_err("refused");
        assert!(e.to_string().contains(want), "{e}\nwant {want}");
    }
    let many: Vec<Disk> = (0..17).map(|i| disk(&format!("sd{i}"), 1, "S")).collect();
    assert!(matches!(
        resolve_excluding(&plan(vec![]), &many, &[]),
        Err(RaidError::TooManyDisks(17))
    ));
}

const M: u64 = MIB;

#[test]
fn extents_place_volumes_in_order() {
    let disk = 100 * GIB;
    let (start, end) = (M, disk - M);
    let cases: Vec<(Vec<RaidVolume>, usize, Vec<Extent>)> = vec![
        // One MAX mirror: everything between the ends.
        (
            vec![vol(RaidLevel::Raid1, None)],
            2,
            vec![Extent {
                start: M,
                len: disk - 2 * M,
            }],
        ),
        // 10 GiB root, MAX RAID-0 after it.
        (
            vec![vol(RaidLevel::Raid1, Some(10)), vol(RaidLevel::Raid0, None)],
            2,
            vec![
                Extent {
                    start: M,
                    len: 10 * GIB + M,
                },
                Extent {
                    start: 10 * GIB + 2 * M,
                    len: disk - 10 * GIB - 3 * M,
                },
            ],
        ),
        // MAX root first: the second volume goes at the end of the range.
        (
            vec![vol(RaidLevel::Raid1, None), vol(RaidLevel::Raid0, Some(30))],
            3,
            vec![
                Extent {
                    start: M,
                    len: disk - 2 * M - (10 * GIB + M),
                },
                Extent {
                    start: disk - M - (10 * GIB + M),
                    len: 10 * GIB + M,
                },
            ],
        ),
        // RAID-0 share rounded up to 1 MiB: 1 GiB over 3 members.
        (
            vec![
                vol(RaidLevel::Raid1, Some(1)),
                vol(RaidLevel::Raid0, Some(1)),
            ],
            3,
            vec![
                Extent {
                    start: M,
                    len: GIB + M,
                },
                Extent {
                    start: GIB + 2 * M,
                    len: GIB.div_ceil(3).div_ceil(M) * M + M,
                },
            ],
        ),
        // Two fixed mirrors, the rest left free.
        (
            vec![
                vol(RaidLevel::Raid1, Some(5)),
                vol(RaidLevel::Raid1, Some(6)),
            ],
            2,
            vec![
                Extent {
                    start: M,
                    len: 5 * GIB + M,
                },
                Extent {
                    start: 5 * GIB + 2 * M,
                    len: 6 * GIB + M,
                },
            ],
        ),
    ];
    for (vols, members, want) in cases {
        let got = extents(&vols, members, disk, start, end, 0).expect("fits");
        assert_eq!(got, want, "{vols:?}");
        let mut at = start;
        for (i, (e, v)) in got.iter().zip(&vols).enumerate() {
            assert_eq!(e.start % M, 0);
            assert_eq!(e.len % M, 0);
            assert!(e.start >= at && e.start + e.len <= end);
            at = e.start + e.len;
            if let Some(gb) = v.size_gb {
                let usable = usable_bytes(v.level, metadata_of(i), members, e.len).expect("geo");
                assert!(usable >= gb * GIB, "volume {i}: {usable} < {gb} GiB");
            }
        }
    }
}

#[test]
fn extents_refuse_what_does_not_fit() {
    let disk = 20 * GIB;
    let v = |a, b| vec![vol(RaidLevel::Raid1, a), vol(RaidLevel::Raid0, b)];
    let cases: Vec<(Vec<RaidVolume>, usize, u64, &str)> = vec![
        (
            v(Some(15), Some(10)),
            2,
            0,
            "software RAID volumes do not fit: volume 1 RAID-1 15 GiB, volume 2 RAID-0 10 GiB \
             need 21476933632 bytes per member disk; members have 21472739328 bytes from byte \
             1048576 to 21473787904",
        ),
        (v(Some(20), None), 2, 0, "plus room for the MAX volume"),
        (
            v(None, Some(1)),
            2,
            20 * GIB,
            "bytes, less than the image's root partition of 21474836480 bytes",
        ),
        (v(None, None), 1, 0, "at least 2 member disks, not 1"),
    ];
    for (vols, members, min_root, want) in cases {
        let e = extents(&vols, members, disk, M, disk - M, min_root).expect_err("refused");
        assert!(e.to_string().contains(want), "{e}\nwant {want}");
    }
    let e = extents(&v(None, None), 2, disk, disk, disk, 0).expect_err("no room");
    assert!(e.to_string().contains("no whole MiB"), "{e}");
    // The root just fits its image.
    let got = extents(&v(None, Some(1)), 2, disk, M, disk - M, 18 * GIB).expect("fits");
    assert!(usable_bytes(RaidLevel::Raid1, Metadata::V1_0, 2, got[0].len).expect("g") >= 18 * GIB);
}

#[test]
fn partition_paths() {
    for (d, n, want) in [
        ("/dev/vda", 3, "/dev/vda3"),
        ("/dev/sdb", 1, "/dev/sdb1"),
        ("/dev/nvme0n1", 3, "/dev/nvme0n1p3"),
        ("/dev/mmcblk0", 1, "/dev/mmcblk0p1"),
        ("/dev/loop7", 2, "/dev/loop7p2"),
    ] {
        assert_eq!(partition_path(Path::new(d), n), PathBuf::from(want));
    }
}

/// A kernel that reads the superblocks off the member files the way md does (checksum,
/// offsets, one set) and answers as the real one would, or fails as told.
struct FakeKernel {
    fail: Option<&'static str>,
    calls: RefCell<Vec<(Metadata, usize)>>,
}

impl Kernel for FakeKernel {
    fn assemble(&self, metadata: Metadata, members: &[PathBuf]) -> Result<Assembled, MdError> {
        self.calls.borrow_mut().push((metadata, members.len()));
        if let Some(why) = self.fail {
            return Err(MdError::Io {
                what: format!("RUN_ARRAY: {why}"),
                source: std::io::ErrorKind::InvalidInput.into(),
            });
        }
        let mut first: Option<superblock::Superblock> = None;
        for m in members {
            let data = std::fs::read(m).expect("member");
            let sectors = data.len() as u64 / 512;
            let at = match metadata {
                Metadata::V1_0 => (sectors - 16) & !7,
                Metadata::V1_2 => 8,
            };
            let sb = superblock::parse(&data[at as usize * 512..]).expect("valid superblock");
            assert_eq!(sb.super_offset, at, "super_offset where md looks");
            assert!(sb.data_offset + sb.data_size <= sectors);
            assert!(sb.size <= sb.data_size);
            if let Some(f) = &first {
                assert_eq!(f.set_uuid, sb.set_uuid);
                assert_eq!(f.size, sb.size);
            } else {
                first = Some(sb);
            }
        }
        let sb = first.expect("members");
        let n = members.len() as u64;
        Ok(Assembled {
            level: format!("raid{}", sb.level),
            raid_disks: sb.raid_disks,
            array_state: "clean".into(),
            size_bytes: sb.size * 512 * if sb.level == 0 { n } else { 1 },
        })
    }
}

fn member_files(dir: &Path, n: usize, mib: u64) -> Vec<Member> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("part{i}"));
            let f = std::fs::File::create(&p).expect("create");
            f.set_len(mib * M).expect("size");
            Member {
                partition: p,
                disk: Disk {
                    serial: Some(format!("S{i}")),
                    ..disk(&format!("vd{i}"), 1, "")
                },
            }
        })
        .collect()
}

fn counter() -> impl FnMut() -> [u8; 16] {
    let mut n = 0u8;
    move || {
        n += 1;
        [n; 16]
    }
}

#[test]
fn builds_arrays_and_reports_them() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = ArrayPlan {
        level: RaidLevel::Raid1,
        name: "root".into(),
        metadata: Metadata::V1_0,
        root: true,
        members: member_files(&t.path().join(""), 2, 64),
    };
    let dir2 = t.path().join("data");
    std::fs::create_dir(&dir2).expect("mkdir");
    let data = ArrayPlan {
        level: RaidLevel::Raid0,
        name: "data".into(),
        metadata: Metadata::V1_2,
        root: false,
        members: member_files(&dir2, 2, 33),
    };
    let k = FakeKernel {
        fail: None,
        calls: RefCell::default(),
    };
    let report = build_with(&[root, data], &k, 1_700_000_000, &mut counter()).expect("builds");
    assert_eq!(
        *k.calls.borrow(),
        vec![(Metadata::V1_0, 2), (Metadata::V1_2, 2)]
    );
    let r = &report.arrays[0];
    assert_eq!(r.uuid, "01010101:01010101:01010101:01010101");
    assert_eq!(
        (r.metadata.as_str(), r.root, r.level),
        ("1.0", true, RaidLevel::Raid1)
    );
    assert_eq!(r.size_bytes, (64 * M / 512 - 16 - 264) * 512);
    assert_eq!(r.members[1].serial.as_deref(), Some("S1"));
    assert_eq!(r.members[1].disk, "/dev/vd1");
    let d = &report.arrays[1];
    assert_eq!(d.uuid, "04040404:04040404:04040404:04040404");
    assert_eq!(d.metadata, "1.2");
    assert_eq!(d.size_bytes, 2 * 32 * M, "1 MiB data offset, whole chunks");
    // The root members start with whatever was there (the file system): the superblock is
    // at the end only.
    let bytes = std::fs::read(t.path().join("part0")).expect("read");
    assert!(bytes[..64 * M as usize - 12 * 1024].iter().all(|&b| b == 0));
}

#[test]
fn a_failed_build_zeroes_every_superblock_it_wrote() {
    let t = tempfile::tempdir().expect("tempdir");
    let members = member_files(t.path(), 3, 16);
    let plan = ArrayPlan {
        level: RaidLevel::Raid1,
        name: "root".into(),
        metadata: Metadata::V1_0,
        root: true,
        members: members.clone(),
    };
    let k = FakeKernel {
        fail: Some("invalid superblock"),
        calls: RefCell::default(),
    };
    let e = build_with(&[plan], &k, 0, &mut counter()).expect_err("fails");
    assert!(e.to_string().contains("md array root"), "{e}");
    assert!(crate::error_chain(&e).contains("invalid superblock"), "{e}");
    for m in &members {
        let b = std::fs::read(&m.partition).expect("read");
        assert!(
            b.iter().all(|&x| x == 0),
            "{} zeroed",
            m.partition.display()
        );
    }
    // The first array built is taken down too when the second fails.
    let ok = FakeKernel {
        fail: None,
        calls: RefCell::default(),
    };
    let good = ArrayPlan {
        members: members[..2].to_vec(),
        ..plan_of(&members)
    };
    let bad = ArrayPlan {
        members: vec![members[2].clone()],
        ..plan_of(&members)
    };
    let e = build_with(&[good, bad], &ok, 0, &mut counter()).expect_err("one member");
    assert!(e.to_string().contains("has 1 members"), "{e}");
    for m in &members {
        let b = std::fs::read(&m.partition).expect("read");
        assert!(
            b.iter().all(|&x| x == 0),
            "{} zeroed",
            m.partition.display()
        );
    }
    // Members too small for the metadata are refused before anything is written.
    let tiny = member_files(&t.path().join(""), 2, 1);
    let e = build_with(
        &[ArrayPlan {
            members: tiny,
            ..plan_of(&members)
        }],
        &ok,
        0,
        &mut counter(),
    )
    .expect_err("tiny");
    assert!(crate::error_chain(&e).contains("too small"), "{e}");
}

fn plan_of(members: &[Member]) -> ArrayPlan {
    ArrayPlan {
        level: RaidLevel::Raid1,
        name: "r".into(),
        metadata: Metadata::V1_0,
        root: true,
        members: members.to_vec(),
    }
}

#[test]
fn finds_superblocks_of_every_version() {
    let len = 64 * M;
    let mut head = vec![0u8; 64 << 10];
    let mut tail = vec![0u8; 128 << 10];
    let tail_start = len - tail.len() as u64;
    let magic = superblock::MAGIC.to_le_bytes();
    head[4096..4100].copy_from_slice(&magic);
    head[4100] = 1;
    let v10 = (len - 8192 - tail_start) as usize;
    tail[v10..v10 + 4].copy_from_slice(&magic);
    tail[v10 + 4] = 1;
    let v090 = (len - 65536 - tail_start) as usize;
    tail[v090..v090 + 4].copy_from_slice(&magic);
    assert_eq!(
        delete::find(&head, &tail, len, 512),
        vec![
            (4096, "1.2".to_owned()),
            (len - 65536, "0.90".to_owned()),
            (len - 8192, "1.0".to_owned()),
        ]
    );
    head[..4].copy_from_slice(&magic);
    head[4] = 1;
    assert_eq!(delete::find(&head, &[], len, 512)[0], (0, "1.1".to_owned()));
}
