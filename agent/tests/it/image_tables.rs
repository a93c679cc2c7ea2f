//! `write-image` and the image's partition table on real loop devices: noise is
//! refused before any of it is written, a GPT for 512-byte sectors is rewritten
//! for a 4Kn disk (with a config drive), and what cannot be rewritten is refused;
//! every refusal leaves the disk without a table.

use std::process::Command;

use agent::events::CollectSink;
use agent::image::table::TableError;
use agent::image::{ImageWriteError, write_image};
use proto::AgentEvent;

use crate::server::Server;
use crate::support::*;
use crate::write_image::{expect_failure, opts, route};

/// `len` bytes of xorshift noise, without the boot signature at 510.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[1]
        })
        .collect();
    v[510] = 0;
    v
}

#[test]
fn noise_is_refused_in_every_format_before_anything_is_written() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let server = Server::start();
    let lo = LoopDev::new(32 * MIB, 512, false);
    // 4 KiB as found, and 8 MiB so the refusal must come before the writer
    // writes past the held-back first MiB.
    for len in [4096, 8 * MIB] {
        let data = noise(len);
        for fmt in ["raw", "zstd", "gzip", "xz"] {
            let served = compress(fmt, &data);
            let url = server.add(&format!("/noise-{len}.{fmt}"), route(served.clone()));
            let e = expect_failure(&lo, &opts(&url, &sha256(&served), &lo.dev));
            assert!(
                matches!(e, ImageWriteError::Refused(TableError::NotADiskImage)),
                "{len}/{fmt}: {e:?}"
            );
            let msg = agent::error_chain(&e);
            assert!(msg.contains("not a whole-disk image"), "{msg}");
            let disk = lo.read_all();
            assert!(
                disk[MIB..2 * MIB].iter().all(|&b| b == 0x5a),
                "{len}/{fmt}: image bytes reached the disk"
            );
        }
    }
}

#[test]
fn cli_refuses_noise_with_a_clear_error() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let server = Server::start();
    let data = noise(4096);
    let url = server.add("/noise.raw", route(data.clone()));
    let lo = LoopDev::new(16 * MIB, 512, false);
    sh_stdin(
        Command::new("sfdisk").arg("-q").arg(&lo.dev),
        "label: dos\nstart=2048, size=8192, type=L\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ingot-agent"))
        .args([
            "write-image",
            "--json",
            "--url",
            &url,
            "--checksum",
            &sha256(&data),
            "--device",
        ])
        .arg(&lo.dev)
        .output()
        .expect("run ingot-agent");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a line");
    let ev: AgentEvent = serde_json::from_str(last).expect("event json");
    let AgentEvent::Failed(err) = ev else {
        panic!("not a failure: {last}")
    };
    assert!(
        err.message.contains("refusing the image") && err.message.contains("no partition table"),
        "{}",
        err.message
    );
    assert_no_partition_table(&lo.dev);
}

/// `sfdisk` on a plain file (512-byte sectors) with `script`, over `body`.
fn image_from_script(size: usize, script: &str) -> Vec<u8> {
    let f = tempfile::NamedTempFile::new_in("/var/tmp").expect("tempfile");
    f.as_file().set_len(size as u64).expect("size");
    sh_stdin(Command::new("sfdisk").arg("-q").arg(f.path()), script);
    std::fs::read(f.path()).expect("read image")
}

#[test]
fn gpt_for_512_byte_sectors_is_rewritten_for_a_4kn_disk() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let server = Server::start();
    // ext4 in partition 1 at 1 MiB, as sfdisk lays it out for 512-byte sectors.
    let (img, files) = gpt_ext4_image(24 * MIB, 512);
    let z = compress("zstd", &img);
    let url = server.add("/512-on-4k.zst", route(z.clone()));
    let lo = LoopDev::new(48 * MIB, 4096, false);
    lo.fill(0xa5);
    let cd_file = tempfile::NamedTempFile::new().expect("config drive");
    let cd: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(cd_file.path(), &cd).expect("write config drive");
    let mut o = opts(&url, &sha256(&z), &lo.dev);
    o.configdrive = Some(cd_file.path().to_path_buf());
    let r = write_image(&o, &CollectSink::default())
        .unwrap_or_else(|(p, e)| panic!("{p:?}: {}", agent::error_chain(&e)));

    let dump = sh(Command::new("sfdisk").arg("-d").arg(&lo.dev));
    assert!(dump.contains("sector-size: 4096"), "{dump}");
    let out = sh(Command::new("sfdisk").arg("--verify").arg(&lo.dev));
    assert!(out.contains("No errors detected"), "{out}");
    let json = sh(Command::new("sfdisk").arg("-J").arg(&lo.dev));
    let v: serde_json::Value = serde_json::from_str(&json).expect("sfdisk json");
    let t = &v["partitiontable"];
    assert_eq!(t["sectorsize"].as_u64(), Some(4096), "{json}");
    assert_eq!(t["lastlba"].as_u64(), Some((48 * MIB / 4096 - 6) as u64));
    let parts = t["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 2, "{json}");
    // Partition 1: same bytes at the same offset, now counted in 4 KiB sectors.
    let fs_len = 24 * MIB - 2 * MIB;
    assert_eq!(parts[0]["start"].as_u64(), Some((MIB / 4096) as u64));
    assert_eq!(parts[0]["size"].as_u64(), Some((fs_len / 4096) as u64));
    assert_eq!(parts[0]["name"].as_str(), Some("root"));
    let disk = lo.read_all();
    assert!(
        disk[MIB..MIB + fs_len] == img[MIB..MIB + fs_len],
        "partition bytes differ"
    );
    for (name, data) in &files {
        assert_eq!(&read_from_partition(&lo.dev, name), data, "{name}");
    }
    let blkid = sh(Command::new("blkid").arg("-p").arg(&lo.dev));
    assert!(blkid.contains("PTTYPE=\"gpt\""), "{blkid}");
    // Partition 2: the config drive, in the disk's sectors.
    let off = r.configdrive_offset.expect("config drive offset");
    assert_eq!(parts[1]["name"].as_str(), Some("config-2"));
    assert_eq!(parts[1]["start"].as_u64(), Some(off / 4096));
    let off = usize::try_from(off).expect("offset");
    assert!(disk[off..off + cd.len()] == cd[..], "config drive bytes");
    // No 512-byte-sector GPT header is left behind.
    assert_eq!(&disk[512..520], &[0; 8]);
}

#[test]
fn tables_that_cannot_be_read_on_a_4kn_disk_are_refused() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let server = Server::start();
    let lo = LoopDev::new(64 * MIB, 4096, false);
    let cases = [
        (
            "gpt-misaligned",
            "GPT",
            "label: gpt\nstart=2048, size=8192, type=L\nstart=10241, size=8191, type=L\n",
        ),
        ("mbr", "MBR", "label: dos\nstart=2048, size=8192, type=L\n"),
    ];
    for (name, table, script) in cases {
        let img = image_from_script(16 * MIB, script);
        let z = compress("zstd", &img);
        let url = server.add(&format!("/{name}.zst"), route(z.clone()));
        let e = expect_failure(&lo, &opts(&url, &sha256(&z), &lo.dev));
        match &e {
            ImageWriteError::Refused(TableError::SectorMismatch {
                table: t,
                image: 512,
                disk: 4096,
                ..
            }) if *t == table => {}
            other => panic!("{name}: {other:?}"),
        }
        let msg = agent::error_chain(&e);
        assert!(
            msg.contains("512-byte") && msg.contains("4096-byte"),
            "{name}: {msg}"
        );
        let disk = lo.read_all();
        assert!(
            disk[MIB..2 * MIB].iter().all(|&b| b == 0x5a),
            "{name}: image bytes reached the disk"
        );
    }
}

/// A 16 MiB GPT image for 512-byte sectors (sfdisk on a file) whose 4 MiB EFI
/// system partition at 1 MiB holds a FAT made with `mkfs.vfat -S fat_sector`.
fn esp_image(fat_sector: u32) -> Vec<u8> {
    let mut img = image_from_script(
        16 * MIB,
        "label: gpt\nstart=2048, size=8192, type=U, name=esp\n",
    );
    let fs = tempfile::NamedTempFile::new_in("/var/tmp").expect("tempfile");
    fs.as_file().set_len(4 * MIB as u64).expect("size");
    sh(Command::new("mkfs.vfat")
        .args(["-S", &fat_sector.to_string(), "-n", "ESP"])
        .arg(fs.path()));
    let data = std::fs::read(fs.path()).expect("read fs");
    img[MIB..MIB + data.len()].copy_from_slice(&data);
    img
}

#[test]
fn esp_with_512_byte_fat_sectors_is_refused_on_a_4kn_disk() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let server = Server::start();
    let lo = LoopDev::new(64 * MIB, 4096, false);

    // mkfs.vfat's default for a file: 512-byte sectors, unreadable for Linux
    // from a 4Kn disk.
    let img = esp_image(512);
    let url = server.add("/esp-512.raw", route(img.clone()));
    let e = expect_failure(&lo, &opts(&url, &sha256(&img), &lo.dev));
    assert!(
        matches!(
            e,
            ImageWriteError::Refused(TableError::SectorMismatch {
                image: 512,
                disk: 4096,
                ..
            })
        ),
        "{e:?}"
    );
    let msg = agent::error_chain(&e);
    assert!(
        msg.contains("FAT filesystem with 512-byte sectors"),
        "{msg}"
    );

    // The same image with a FAT for 4096-byte sectors converts.
    let img = esp_image(4096);
    let url = server.add("/esp-4096.raw", route(img.clone()));
    write_image(&opts(&url, &sha256(&img), &lo.dev), &CollectSink::default())
        .unwrap_or_else(|(p, e)| panic!("{p:?}: {}", agent::error_chain(&e)));
    let dump = sh(Command::new("sfdisk").arg("-d").arg(&lo.dev));
    assert!(
        dump.contains("sector-size: 4096")
            && dump.contains("start=         256, size=        1024"),
        "{dump}"
    );
    let disk = lo.read_all();
    assert!(disk[MIB..5 * MIB] == img[MIB..5 * MIB], "ESP bytes differ");
}
