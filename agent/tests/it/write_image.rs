//! `write-image` on real loop devices: round trips in every format and sector
//! size, and every fault leaving the disk without a partition table.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agent::events::CollectSink;
use agent::image::fetch::FetchError;
use agent::image::fetch::FetchOptions;
use agent::image::format::DecodeError;
use agent::image::{ImageWriteError, WriteImageOptions, write_image};
use proto::{AgentEvent, Phase};

use crate::server::{Route, Server};
use crate::support::*;

pub(crate) fn opts(url: &str, checksum: &str, dev: &Path) -> WriteImageOptions {
    WriteImageOptions {
        url: url.to_string(),
        checksum: checksum.parse().expect("checksum"),
        device: dev.to_path_buf(),
        configdrive: None,
        fetch: FetchOptions {
            max_retries: 3,
            backoff: Duration::from_millis(20),
            stall_timeout: Duration::from_secs(5),
            ..FetchOptions::default()
        },
        direct: true,
        progress_interval: Duration::from_millis(50),
    }
}

pub(crate) fn route(data: Vec<u8>) -> Route {
    Route {
        data: data.into(),
        range: true,
        ..Default::default()
    }
}

#[test]
fn round_trips_every_format_on_512_and_4096_byte_sectors() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let server = Server::start();
    for sector in [512usize, 4096] {
        let (img, files) = gpt_ext4_image(24 * MIB, sector);
        let formats: &[&str] = if sector == 512 {
            &["raw", "zstd", "gzip", "xz"]
        } else {
            &["zstd"]
        };
        for fmt in formats {
            let served = compress(fmt, &img);
            let url = server.add(&format!("/{sector}/img.{fmt}"), route(served.clone()));
            let lo = LoopDev::new(48 * MIB, sector as u32, false);
            lo.fill(0xa5);
            let sink = CollectSink::default();
            let r = write_image(&opts(&url, &sha256(&served), &lo.dev), &sink).unwrap_or_else(
                |(p, e)| panic!("{fmt}/{sector}: {p:?}: {}", agent::error_chain(&e)),
            );
            assert_eq!(r.format, *fmt);
            assert_eq!(r.bytes_written, img.len() as u64);
            let disk = lo.read_all();
            // The body is identical; only the GPT fix-up (backup moved to the
            // end) may differ in the table sectors.
            let body = MIB..img.len() - 33 * 512;
            assert_eq!(
                disk[body.clone()],
                img[body],
                "{fmt}/{sector}: body differs"
            );
            let out = sh(Command::new("sfdisk").arg("--verify").arg(&lo.dev));
            assert!(out.contains("No errors detected"), "{out}");
            for (name, data) in &files {
                assert_eq!(
                    &read_from_partition(&lo.dev, name),
                    data,
                    "{fmt}/{sector}: {name}"
                );
            }
            let events = sink.events.lock().expect("events");
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, AgentEvent::PhaseDone(t) if t.phase == Phase::WriteHead))
            );
        }
    }
}

#[test]
fn raw_image_that_fills_the_disk_is_byte_identical() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let server = Server::start();
    let (img, _) = gpt_ext4_image(24 * MIB, 512);
    let url = server.add("/exact.raw", route(img.clone()));
    let lo = LoopDev::new(24 * MIB, 512, false);
    use sha2::Digest as _;
    let sums = [
        sha256(&img),
        format!("sha512:{}", hex::encode(sha2::Sha512::digest(&img))),
        format!("md5:{}", hex::encode(md5::Md5::digest(&img))),
    ];
    for sum in sums {
        lo.fill(0x33);
        let r = write_image(&opts(&url, &sum, &lo.dev), &CollectSink::default()).expect("write");
        assert_eq!(r.checksum, sum);
        assert!(lo.read_all() == img, "{sum}: disk differs from the image");
    }
}

pub(crate) fn expect_failure(lo: &LoopDev, o: &WriteImageOptions) -> ImageWriteError {
    lo.fill(0x5a);
    // Put a valid table on the disk first, to prove the failure removes it.
    sh_stdin(
        Command::new("sfdisk").arg("-q").arg(&lo.dev),
        "label: gpt\nstart=2048, size=8192, type=L\n",
    );
    match write_image(o, &CollectSink::default()) {
        Ok(r) => panic!("write unexpectedly succeeded: {r:?}"),
        Err((_, e)) => {
            assert_no_partition_table(&lo.dev);
            e
        }
    }
}

#[test]
fn faults_leave_no_partition_table_and_report_the_cause() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let server = Server::start();
    let (img, _) = gpt_ext4_image(24 * MIB, 512);
    let z = compress("zstd", &img);
    let lo = LoopDev::new(32 * MIB, 512, false);

    // Wrong checksum.
    let url = server.add("/ok.zst", route(z.clone()));
    let e = expect_failure(&lo, &opts(&url, &sha256(b"other"), &lo.dev));
    assert!(
        matches!(e, ImageWriteError::ChecksumMismatch { .. }),
        "{e:?}"
    );

    // Truncated compressed stream (served completely, but cut short).
    let url = server.add("/trunc.zst", route(z[..z.len() / 2].to_vec()));
    let e = expect_failure(&lo, &opts(&url, &sha256(&z[..z.len() / 2]), &lo.dev));
    assert!(
        matches!(
            e,
            ImageWriteError::Decode(DecodeError::Truncated { .. } | DecodeError::Corrupt { .. })
        ),
        "{e:?}"
    );

    // Trailing garbage.
    let mut tg = z.clone();
    tg.extend_from_slice(b"GARBAGE!");
    let url = server.add("/trail.zst", route(tg.clone()));
    let e = expect_failure(&lo, &opts(&url, &sha256(&tg), &lo.dev));
    assert!(
        matches!(e, ImageWriteError::Decode(DecodeError::TrailingData { .. })),
        "{e:?}"
    );

    // Unknown (refused) format.
    let mut q = b"QFI\xfb\0\0\0\x03".to_vec();
    q.resize(MIB, 0);
    let url = server.add("/img.qcow2", route(q.clone()));
    let e = expect_failure(&lo, &opts(&url, &sha256(&q), &lo.dev));
    assert!(
        matches!(e, ImageWriteError::Decode(DecodeError::Unsupported(_))),
        "{e:?}"
    );

    // Image larger than the disk.
    let big = LoopDev::new(16 * MIB, 512, false);
    let url = server.add("/big.zst", route(z.clone()));
    let e = expect_failure(&big, &opts(&url, &sha256(&z), &big.dev));
    assert!(matches!(e, ImageWriteError::TooLarge { .. }), "{e:?}");

    // 404 fails at once; 500 is retried, then fails.
    let url = format!("{}/missing", server.addr);
    let e = expect_failure(&lo, &opts(&url, &sha256(&z), &lo.dev));
    assert!(
        matches!(
            e,
            ImageWriteError::Fetch(FetchError::Status { status: 404, .. })
        ),
        "{e:?}"
    );
    let url = server.add(
        "/err500",
        Route {
            status: Some(500),
            ..Default::default()
        },
    );
    let e = expect_failure(&lo, &opts(&url, &sha256(&z), &lo.dev));
    match e {
        ImageWriteError::Fetch(FetchError::RetriesExhausted {
            retries: 3, last, ..
        }) => {
            assert!(matches!(*last, FetchError::Status { status: 500, .. }))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests("/err500"), 4);

    // A cut that never heals: retries run out, clear failure.
    let url = server.add(
        "/always-cut",
        Route {
            cut_after: Some(100_000),
            cuts: 100,
            ..route(z.clone())
        },
    );
    let e = expect_failure(&lo, &opts(&url, &sha256(&z), &lo.dev));
    assert!(
        matches!(
            e,
            ImageWriteError::Fetch(FetchError::RetriesExhausted { .. })
        ),
        "{e:?}"
    );
}

#[test]
fn cut_connection_resumes_with_range_or_restarts_without_it() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let server = Server::start();
    let (img, files) = gpt_ext4_image(24 * MIB, 512);
    let z = compress("gzip", &img);
    for range in [true, false] {
        let path = format!("/cut-{range}.gz");
        let url = server.add(
            &path,
            Route {
                data: z.clone().into(),
                range,
                cut_after: Some(z.len() / 3),
                cuts: 2,
                ..Default::default()
            },
        );
        let lo = LoopDev::new(32 * MIB, 512, false);
        let r = write_image(&opts(&url, &sha256(&z), &lo.dev), &CollectSink::default())
            .unwrap_or_else(|(p, e)| panic!("range={range}: {p:?}: {}", agent::error_chain(&e)));
        assert_eq!(r.retries, 2);
        assert_eq!(server.requests(&path), 3);
        // With Range we fetch the image once; without, the prefix again each time.
        if range {
            assert_eq!(r.bytes_fetched, z.len() as u64);
        }
        assert_eq!(read_from_partition(&lo.dev, &files[1].0), files[1].1);
    }
}

#[test]
fn missing_and_read_only_devices_fail_clearly() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let server = Server::start();
    let url = server.add("/x", route(vec![0; MIB]));
    let e = write_image(
        &opts(&url, &sha256(&[0; MIB]), Path::new("/dev/does-not-exist")),
        &CollectSink::default(),
    )
    .expect_err("missing device");
    assert!(e.1.to_string().contains("does not exist"), "{}", e.1);
    let ro = LoopDev::new(8 * MIB, 512, true);
    let e = write_image(
        &opts(&url, &sha256(&[0; MIB]), &ro.dev),
        &CollectSink::default(),
    )
    .expect_err("read-only");
    assert!(e.1.to_string().contains("read-only"), "{}", e.1);
}

#[test]
fn cli_writes_and_reports_json_events() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let server = Server::start();
    let (img, _) = gpt_ext4_image(24 * MIB, 512);
    let z = compress("xz", &img);
    let url = server.add("/cli.xz", route(z.clone()));
    let lo = LoopDev::new(32 * MIB, 512, false);
    let out = Command::new(env!("CARGO_BIN_EXE_ingot-agent"))
        .args([
            "write-image",
            "--json",
            "--url",
            &url,
            "--checksum",
            &sha256(&z),
            "--device",
        ])
        .arg(&lo.dev)
        .output()
        .expect("run ingot-agent");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("a line")
        .to_string();
    let ev: AgentEvent = serde_json::from_str(&last).expect("event json");
    assert!(
        matches!(ev, AgentEvent::WriteImageDone(ref r) if r.format == "xz"),
        "{last}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_ingot-agent"))
        .args([
            "write-image",
            "--json",
            "--url",
            &url,
            "--checksum",
            &sha256(b"x"),
            "--device",
        ])
        .arg(&lo.dev)
        .output()
        .expect("run ingot-agent");
    assert!(!out.status.success());
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("a line")
        .to_string();
    assert!(
        last.contains("\"failed\"") && last.contains("checksum mismatch"),
        "{last}"
    );
    assert_no_partition_table(&lo.dev);
}

#[test]
fn stalled_transfer_times_out_and_resumes() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let server = Server::start();
    let (img, files) = gpt_ext4_image(24 * MIB, 512);
    let z = compress("zstd", &img);
    let url = server.add(
        "/stall.zst",
        Route {
            stall_after: Some(z.len() / 2),
            cuts: 1,
            ..route(z.clone())
        },
    );
    let lo = LoopDev::new(32 * MIB, 512, false);
    let mut o = opts(&url, &sha256(&z), &lo.dev);
    o.fetch.stall_timeout = Duration::from_millis(400);
    let t = std::time::Instant::now();
    let r = write_image(&o, &CollectSink::default())
        .unwrap_or_else(|(p, e)| panic!("{p:?}: {}", agent::error_chain(&e)));
    assert_eq!(r.retries, 1);
    assert_eq!(r.bytes_fetched, z.len() as u64, "resumed, not restarted");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "waited for the stalled server instead of timing out"
    );
    assert_eq!(read_from_partition(&lo.dev, &files[1].0), files[1].1);
}
