use super::*;

const GIB_SECTORS: u64 = 1 << 21;

fn array(level: RaidLevel, raid_disks: u32, size: u64) -> NewArray<'static> {
    NewArray {
        level,
        name: "root",
        set_uuid: [0x11; 16],
        now: 0x1234_5678_9abc,
        raid_disks,
        size,
    }
}

#[test]
fn geometry_of_each_metadata() {
    // (metadata, level, member sectors) -> (super, data offset, data size, size, chunk)
    let cases: Vec<(Metadata, RaidLevel, u64, Geometry)> = vec![
        (
            Metadata::V1_0,
            RaidLevel::Raid1,
            10 * GIB_SECTORS,
            Geometry {
                super_offset: 10 * GIB_SECTORS - 16,
                data_offset: 0,
                data_size: 10 * GIB_SECTORS - 16 - 264,
                size: 10 * GIB_SECTORS - 16 - 264,
                chunk: 0,
            },
        ),
        // Not a multiple of 4 KiB: the superblock goes down to the 4 KiB boundary.
        (
            Metadata::V1_0,
            RaidLevel::Raid1,
            100_003,
            Geometry {
                super_offset: 99_984,
                data_offset: 0,
                data_size: 99_984 - 264,
                size: 99_984 - 264,
                chunk: 0,
            },
        ),
        (
            Metadata::V1_2,
            RaidLevel::Raid1,
            GIB_SECTORS + 2048,
            Geometry {
                super_offset: 8,
                data_offset: 2048,
                data_size: GIB_SECTORS,
                size: GIB_SECTORS,
                chunk: 0,
            },
        ),
        // RAID-0 rounds the used size down to the 512 KiB chunk.
        (
            Metadata::V1_2,
            RaidLevel::Raid0,
            GIB_SECTORS + 2048 + 1000,
            Geometry {
                super_offset: 8,
                data_offset: 2048,
                data_size: GIB_SECTORS + 1000,
                size: GIB_SECTORS,
                chunk: 1024,
            },
        ),
    ];
    for (m, l, sectors, want) in cases {
        let g = geometry(m, l, sectors).expect("fits");
        assert_eq!(g, want, "{m:?} {l:?} {sectors}");
        assert!(g.size <= g.data_size);
        assert_eq!(g.data_size % 8, 0, "4 KiB multiple");
        match m {
            Metadata::V1_0 => {
                assert!(g.data_offset + g.data_size <= g.super_offset);
                assert!(sectors - g.super_offset >= 16 && sectors - g.super_offset < 24);
                assert_eq!(g.super_offset % 8, 0);
            }
            Metadata::V1_2 => assert!(g.data_offset + g.data_size <= sectors),
        }
        // What a mirror's metadata costs fits the reserve the partition planner adds.
        if l == RaidLevel::Raid1 {
            assert!((sectors - g.size) * 512 <= m.reserve_bytes() + 4096);
        }
    }
}

#[test]
fn tiny_members_are_refused() {
    for (m, sectors) in [
        (Metadata::V1_0, 0),
        (Metadata::V1_0, 15),
        (Metadata::V1_0, 2048),
        (Metadata::V1_2, 4095),
    ] {
        let e = geometry(m, RaidLevel::Raid1, sectors).expect_err("too small");
        assert!(e.to_string().contains("too small"), "{e}");
    }
    geometry(Metadata::V1_2, RaidLevel::Raid1, 4096).expect("1 MiB of data");
}

#[test]
fn fields_sit_at_the_headers_offsets() {
    let g = geometry(Metadata::V1_2, RaidLevel::Raid0, 4 * GIB_SECTORS).expect("fits");
    let sb = Superblock::new_member(&array(RaidLevel::Raid0, 3, g.size), &g, 2, [0x22; 16])
        .expect("builds");
    let b = sb.encode();
    assert_eq!(b.len(), 4096);
    let le32 = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
    let le64 = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    assert_eq!(&b[0..4], &[0xfc, 0x4e, 0x2b, 0xa9], "magic, little-endian");
    assert_eq!(le32(4), 1, "major_version");
    assert_eq!(le32(8), 0, "feature_map");
    assert_eq!(le32(12), 0, "pad0");
    assert_eq!(&b[16..32], &[0x11; 16], "set_uuid");
    assert_eq!(&b[32..36], b"root");
    assert!(b[36..64].iter().all(|&x| x == 0), "set_name NUL-padded");
    assert_eq!(le64(64), 0x1234_5678_9abc & 0xff_ffff_ffff, "ctime");
    assert_eq!(le32(72), 0, "level");
    assert_eq!(le32(76), 0, "layout");
    assert_eq!(le64(80), g.size, "size");
    assert_eq!(le32(88), 1024, "chunksize");
    assert_eq!(le32(92), 3, "raid_disks");
    assert!(
        b[96..128].iter().all(|&x| x == 0),
        "bitmap and reshape fields"
    );
    assert_eq!(le64(128), 2048, "data_offset");
    assert_eq!(le64(136), 4 * GIB_SECTORS - 2048, "data_size");
    assert_eq!(le64(144), 8, "super_offset");
    assert_eq!(le64(152), 0, "recovery_offset");
    assert_eq!(le32(160), 2, "dev_number");
    assert_eq!(&b[168..184], &[0x22; 16], "device_uuid");
    assert!(
        b[184..192].iter().all(|&x| x == 0),
        "devflags, bad block log"
    );
    assert_eq!(le64(192), le64(64), "utime");
    assert_eq!(le64(200), 1, "events");
    assert_eq!(le64(208), u64::MAX, "RAID-0 needs no resync");
    assert_eq!(le32(220), 3, "max_dev");
    assert!(b[224..256].iter().all(|&x| x == 0), "pad3");
    assert_eq!(&b[256..262], &[0, 0, 1, 0, 2, 0], "roles 0, 1, 2");
    assert!(b[262..].iter().all(|&x| x == 0));

    let g1 = geometry(Metadata::V1_0, RaidLevel::Raid1, 4 * GIB_SECTORS).expect("fits");
    let r1 = Superblock::new_member(&array(RaidLevel::Raid1, 2, 100), &g1, 0, [0; 16])
        .expect("builds")
        .encode();
    assert_eq!(le32_of(&r1, 72), 1);
    assert_eq!(le32_of(&r1, 88), 0, "RAID-1 has no chunk");
    assert_eq!(&r1[208..216], &[0; 8], "RAID-1 resyncs from the start");
}

fn le32_of(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4"))
}

/// The checksum computed by hand for small buffers.
#[test]
fn checksum_by_hand() {
    let mut b = vec![0u8; 258];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4] = 1; // major_version
    b[220] = 1; // max_dev
    // 0xa92b4efc + 1 + 1; the role word (a trailing u16) is 0.
    assert_eq!(checksum(&b, 1), 0xa92b_4efe);
    // The stored checksum does not count.
    b[216..220].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(checksum(&b, 1), 0xa92b_4efe);
    // The trailing u16 of an odd count of words is added: role 0x0102.
    b[256] = 0x02;
    b[257] = 0x01;
    assert_eq!(checksum(&b, 1), 0xa92b_4efe + 0x0102);
    // Carries fold back in: four 0xffffffff words make the sum 0x4_a92b4ffc, folded to
    // 0xa92b4ffc + 4.
    b[16..32].copy_from_slice(&[0xff; 16]);
    let sum: u64 = 0xa92b_4efc + 1 + 1 + 0x0102 + 4 * 0xffff_ffff;
    assert_eq!(sum, 0x4_a92b_4ffc);
    assert_eq!(checksum(&b, 1), 0xa92b_5000);
    // Two roles: the length is a multiple of 4, no trailing u16 handling.
    let mut c = vec![0u8; 260];
    c[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    c[256..260].copy_from_slice(&[1, 0, 2, 0]);
    assert_eq!(checksum(&c, 2), 0xa92b_4efc + 0x0002_0001);
}

#[test]
fn round_trip_both_versions() {
    for m in [Metadata::V1_0, Metadata::V1_2] {
        for (level, n) in [(RaidLevel::Raid1, 2u32), (RaidLevel::Raid0, 4)] {
            let g = geometry(m, level, 20 * GIB_SECTORS + 77).expect("fits");
            for dev in 0..n {
                let sb = Superblock::new_member(&array(level, n, g.size), &g, dev, [dev as u8; 16])
                    .expect("builds");
                let b = sb.encode();
                let back = parse(&b).expect("parses");
                assert_eq!(back, sb);
                assert_eq!(back.name(), "root");
                assert_eq!(back.dev_roles[dev as usize], dev as u16);
                // Only the first 256 + 2 * max_dev bytes are read.
                let back = parse(&b[..256 + 2 * n as usize]).expect("exact length");
                assert_eq!(back, sb);
            }
        }
    }
}

#[test]
fn bad_superblocks_are_refused() {
    let g = geometry(Metadata::V1_2, RaidLevel::Raid1, GIB_SECTORS).expect("fits");
    let good = Superblock::new_member(&array(RaidLevel::Raid1, 2, g.size), &g, 0, [1; 16])
        .expect("builds")
        .encode();
    let with = |o: usize, v: &[u8]| {
        let mut b = good.clone();
        b[o..o + v.len()].copy_from_slice(v);
        b
    };
    let resum = |mut b: Vec<u8>| {
        let max = le32_of(&b, 220).min(MAX_DEV_LIMIT);
        let c = checksum(&b, max);
        b[216..220].copy_from_slice(&c.to_le_bytes());
        b
    };
    let cases: Vec<(Vec<u8>, SuperblockError)> = vec![
        (
            good[..255].to_vec(),
            SuperblockError::Short {
                len: 255,
                need: 256,
            },
        ),
        (with(0, &[0, 0, 0, 0]), SuperblockError::BadMagic(0)),
        (
            resum(with(4, &[0, 0, 0, 0])),
            SuperblockError::BadVersion(0),
        ),
        (
            resum(with(4, &[2, 0, 0, 0])),
            SuperblockError::BadVersion(2),
        ),
        (
            resum(with(220, &[0, 0, 0, 0])),
            SuperblockError::BadMaxDev(0),
        ),
        (
            with(220, &1921u32.to_le_bytes()),
            SuperblockError::BadMaxDev(1921),
        ),
        (
            resum(with(220, &200u32.to_le_bytes()))[..300].to_vec(),
            SuperblockError::Short {
                len: 300,
                need: 656,
            },
        ),
    ];
    for (b, want) in cases {
        assert_eq!(parse(&b), Err(want.clone()), "{want}");
    }
    // Any changed byte of the checksummed area fails the checksum.
    for o in [8usize, 40, 80, 150, 200, 257] {
        let mut b = good.clone();
        b[o] ^= 0x40;
        match parse(&b) {
            Err(SuperblockError::BadChecksum { stored, computed }) => assert_ne!(stored, computed),
            other => panic!("byte {o}: {other:?}"),
        }
    }
    // Past the roles nothing counts.
    let mut b = good.clone();
    b[1000] = 7;
    parse(&b).expect("bytes past the roles are not read");
}

#[test]
fn refuses_what_it_cannot_encode() {
    let g = geometry(Metadata::V1_2, RaidLevel::Raid1, GIB_SECTORS).expect("fits");
    let long = NewArray {
        name: "a-name-of-thirty-three-characters",
        ..array(RaidLevel::Raid1, 2, g.size)
    };
    assert_eq!(
        Superblock::new_member(&long, &g, 0, [0; 16]),
        Err(SuperblockError::LongName(33))
    );
    let none = array(RaidLevel::Raid1, 0, g.size);
    assert_eq!(
        Superblock::new_member(&none, &g, 0, [0; 16]),
        Err(SuperblockError::BadMaxDev(0))
    );
}

#[test]
fn locations_of_every_version() {
    let bytes = 1u64 << 30; // 2097152 sectors
    assert_eq!(
        locations(bytes),
        vec![
            (0, "1.1"),
            (4096, "1.2"),
            (bytes - 8192, "1.0"),
            (bytes - 65536, "0.90"),
        ]
    );
    // 1.0 rounds down to 4 KiB, 0.90 to 64 KiB.
    let odd = bytes + 9 * 512;
    assert_eq!(locations(odd)[2], (bytes - 4096, "1.0"));
    assert_eq!(locations(odd)[3], (bytes - 65536, "0.90"));
    assert!(locations(4096).is_empty());
}

#[test]
fn uuids_print_as_mdadm_does() {
    let u: [u8; 16] = core::array::from_fn(|i| i as u8 * 0x11);
    assert_eq!(mdadm_uuid(&u), "00112233:44556677:8899aabb:ccddeeff");
}

#[test]
fn magic_and_version_of_any_bytes() {
    assert!(!has_magic(&[0xfc, 0x4e, 0x2b]));
    assert_eq!(
        major_version(&[0xfc, 0x4e, 0x2b, 0xa9, 0, 0, 0, 0]),
        Some(0)
    );
    assert_eq!(major_version(&[0xfc, 0x4e, 0x2b, 0xa9]), None);
    assert_eq!(major_version(&[0; 8]), None);
}
