//! The scan loop on fakes that fail at chosen offsets, whole scans of temp files through the
//! real disk code, and the report.

use std::io::Write as _;
use std::sync::Mutex;

use proto::ProgressEvent;

use super::*;
use crate::events::CollectSink;

/// A device of `size` bytes whose bytes in `bad` cannot be read: a read that reaches one
/// returns the bytes before it, and a read starting on one fails with EIO (as a disk
/// answers). Reads must be whole `granule`s (EINVAL otherwise, as under `O_DIRECT`); it
/// keeps every read asked for.
struct FakeDevice {
    size: u64,
    granule: usize,
    bad: Vec<std::ops::Range<u64>>,
    /// At most this many bytes per read (short reads), and one EINTR first.
    short: Option<usize>,
    interrupted: Mutex<bool>,
    reads: Mutex<Vec<(u64, usize)>>,
}

impl FakeDevice {
    fn new(size: u64) -> Self {
        FakeDevice {
            size,
            granule: 1,
            bad: vec![],
            short: None,
            interrupted: Mutex::new(false),
            reads: Mutex::new(vec![]),
        }
    }
}

impl ScanDevice for FakeDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn granule(&self) -> usize {
        self.granule
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.reads.lock().expect("lock").push((offset, buf.len()));
        if !offset.is_multiple_of(self.granule as u64) || !buf.len().is_multiple_of(self.granule) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if self.short.is_some() {
            let mut i = self.interrupted.lock().expect("lock");
            if !*i {
                *i = true;
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
        }
        let len = buf.len().min(self.short.unwrap_or(usize::MAX)) as u64;
        let end = (offset + len).min(self.size);
        if offset >= end {
            return Ok(0);
        }
        if self.bad.iter().any(|b| b.contains(&offset)) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let stop = self
            .bad
            .iter()
            .filter(|b| b.start > offset && b.start < end)
            .map(|b| b.start)
            .min()
            .unwrap_or(end);
        let n = usize::try_from(stop - offset).expect("small");
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = (offset as usize + i) as u8;
        }
        Ok(n)
    }
}

const KIB: u64 = 1024;
const MIB_U: u64 = 1 << 20;

#[test]
fn a_clean_device_is_read_to_its_end_in_blocks() {
    let dev = FakeDevice::new(MIB_U + 100);
    let p = ScanProgress::default();
    let s = scan_device(&dev, None, 256 * KIB as usize, &p);
    assert_eq!(
        s,
        Surface {
            bytes_read: MIB_U + 100,
            errors: vec![],
            error_count: 0,
        }
    );
    let reads = dev.reads.lock().expect("lock").clone();
    assert_eq!(
        reads,
        vec![
            (0, 256 * 1024),
            (256 * KIB, 256 * 1024),
            (512 * KIB, 256 * 1024),
            (768 * KIB, 256 * 1024),
            (MIB_U, 100)
        ],
        "sequential, block by block"
    );
    assert_eq!(p.total.load(Ordering::Relaxed), MIB_U + 100);
    assert_eq!(p.done.load(Ordering::Relaxed), MIB_U + 100);
}

#[test]
fn max_bytes_bounds_the_scan() {
    for (max, want) in [
        (1, 1),
        (300 * KIB + 7, 300 * KIB + 7),
        (MIB_U, MIB_U),
        (10 * MIB_U, MIB_U),
    ] {
        let dev = FakeDevice::new(MIB_U);
        let s = scan_device(
            &dev,
            Some(max),
            256 * KIB as usize,
            &ScanProgress::default(),
        );
        assert_eq!(s.bytes_read, want, "max_bytes {max}");
        let last = *dev.reads.lock().expect("lock").last().expect("a read");
        assert_eq!(last.0 + last.1 as u64, want, "nothing read past the bound");
    }
}

#[test]
fn direct_reads_are_whole_granules_and_count_only_the_bytes_asked_for() {
    let dev = FakeDevice {
        granule: 4096,
        ..FakeDevice::new(64 * KIB)
    };
    // A block that is not whole granules is made so; the last read is rounded up.
    let s = scan_device(&dev, Some(10_000), 5000, &ScanProgress::default());
    assert_eq!(s.bytes_read, 10_000);
    assert_eq!(s.error_count, 0, "{s:?}");
    assert_eq!(
        *dev.reads.lock().expect("lock"),
        vec![(0, 8192), (8192, 4096)]
    );
}

#[test]
fn read_errors_are_recorded_with_their_offsets_and_the_scan_goes_on() {
    let dev = FakeDevice {
        bad: vec![100_000..100_512, 500_000..500_512, 1_000_000..1_048_576],
        ..FakeDevice::new(2 * MIB_U)
    };
    let p = ScanProgress::default();
    let s = scan_device(&dev, None, 64 * KIB as usize, &p);
    let offsets: Vec<u64> = s.errors.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, vec![100_000, 500_000, 1_000_000]);
    assert_eq!(s.error_count, 3);
    assert!(
        s.errors.iter().all(|e| e.error.contains("os error 5")),
        "{s:?}"
    );
    // Each error skips the rest of its 64 KiB block; the bytes before it were read.
    let lost = (131_072 - 100_000) + (524_288 - 500_000) + (1_048_576 - 1_000_000);
    assert_eq!(s.bytes_read, 2 * MIB_U - lost);
    let reads = dev.reads.lock().expect("lock").clone();
    assert!(
        reads.iter().any(|&(o, _)| o == 2 * MIB_U - 64 * KIB),
        "the scan read on to the last block"
    );
    assert_eq!(
        p.done.load(Ordering::Relaxed),
        2 * MIB_U,
        "skipped bytes count as scanned"
    );
}

#[test]
fn errors_past_the_kept_ones_are_counted() {
    let dev = FakeDevice {
        bad: (0..40).map(|i| i * 8192..i * 8192 + 512).collect(),
        ..FakeDevice::new(40 * 8192)
    };
    let s = scan_device(&dev, None, 8192, &ScanProgress::default());
    assert_eq!(s.errors.len(), ERRORS_KEPT);
    assert_eq!(s.error_count, 40);
    assert_eq!(s.errors[15].offset, 15 * 8192);
    assert_eq!(s.bytes_read, 0);
}

#[test]
fn short_and_interrupted_reads_are_read_on() {
    let dev = FakeDevice {
        short: Some(1000),
        ..FakeDevice::new(10_000)
    };
    let s = scan_device(&dev, None, 4096, &ScanProgress::default());
    assert_eq!(s.bytes_read, 10_000);
    assert_eq!(s.error_count, 0);
}

/// A device that is shorter than it says.
struct Shrunk;

impl ScanDevice for Shrunk {
    fn size(&self) -> u64 {
        10_000
    }
    fn granule(&self) -> usize {
        1
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        Ok(usize::try_from(6000u64.saturating_sub(offset))
            .expect("small")
            .min(buf.len()))
    }
}

#[test]
fn a_device_that_ends_early_is_an_error() {
    let p = ScanProgress::default();
    let s = scan_device(&Shrunk, None, 4096, &p);
    assert_eq!(s.bytes_read, 6000);
    assert_eq!(s.errors.len(), 1);
    assert_eq!(s.errors[0].offset, 6000);
    assert!(s.errors[0].error.contains("ends here"), "{s:?}");
    assert_eq!(p.done.load(Ordering::Relaxed), 10_000);
}

fn temp_file(dir: &Path, len: usize) -> PathBuf {
    let path = dir.join(format!("disk-{len}.img"));
    let mut f = std::fs::File::create(&path).expect("create");
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    f.write_all(&data).expect("write");
    f.sync_all().expect("sync");
    path
}

fn progress(sink: &CollectSink) -> Vec<ProgressEvent> {
    sink.events
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Progress(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// Whole temp files through the real disk code (`O_DIRECT` where the file system takes
/// it): every byte counted, nothing changed, progress like the wipe's.
#[test]
fn whole_files_are_scanned_through_the_real_disk_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = temp_file(dir.path(), 9 * MIB_U as usize + 123);
    let b = temp_file(dir.path(), 4096);
    let before = std::fs::read(&a).expect("read");
    let sink = CollectSink::default();
    let scans = scan_all(
        &[a.clone(), b.clone()],
        None,
        &open_disk,
        BLOCK,
        &sink,
        Duration::from_millis(1),
    );
    assert_eq!(scans.len(), 2);
    assert_eq!(scans[0].device, a.display().to_string());
    assert_eq!(scans[0].surface.bytes_read, 9 * MIB_U + 123);
    assert_eq!(scans[1].surface.bytes_read, 4096);
    assert!(scans.iter().all(DiskScan::ok), "{scans:?}");
    assert_eq!(std::fs::read(&a).expect("read"), before, "read-only");
    let p = progress(&sink);
    let last = p.last().expect("a last progress event");
    assert_eq!(last.phase, Phase::Verify);
    assert_eq!(last.bytes_written, 9 * MIB_U + 123 + 4096);
    assert_eq!(last.bytes_total, Some(9 * MIB_U + 123 + 4096));
    assert!(
        p.windows(2)
            .all(|w| w[0].bytes_written <= w[1].bytes_written)
    );
    let Report::Succeeded {
        detail: Some(d), ..
    } = report(&scans)
    else {
        panic!("the scan succeeds: {scans:?}")
    };
    let d: ScanDetail = serde_json::from_value(d).expect("detail");
    assert_eq!(d.disks[0].bytes_read, 9 * MIB_U + 123);
    assert_eq!(d.disks[1].device, b.display().to_string());

    let bounded = scan_all(
        std::slice::from_ref(&a),
        Some(MIB_U + 1),
        &open_disk,
        BLOCK,
        &CollectSink::default(),
        Duration::from_secs(1),
    );
    assert_eq!(bounded[0].surface.bytes_read, MIB_U + 1);
}

#[test]
fn unopenable_disks_and_read_errors_fail_the_scan_with_each_in_the_causes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = temp_file(dir.path(), 64 * KIB as usize);
    let missing = dir.path().join("gone");
    let bad = PathBuf::from("fake-bad");
    let open = |p: &Path| -> Result<Box<dyn ScanDevice>, DiskError> {
        if p == bad {
            Ok(Box::new(FakeDevice {
                bad: (0..20).map(|i| i * 4096..i * 4096 + 1).collect(),
                ..FakeDevice::new(20 * 4096)
            }))
        } else {
            open_disk(p)
        }
    };
    let scans = scan_all(
        &[good.clone(), missing.clone(), bad.clone()],
        None,
        &open,
        4096,
        &CollectSink::default(),
        Duration::from_secs(1),
    );
    let Report::Failed { error } = report(&scans) else {
        panic!("the scan fails: {scans:?}")
    };
    assert_eq!(error.phase, Some(Phase::Verify));
    assert_eq!(error.message, "the surface scan failed on 2 of 3 disks");
    assert_eq!(
        error.causes[0],
        format!(
            "{}: cannot be opened: device {} does not exist",
            missing.display(),
            missing.display()
        )
    );
    assert_eq!(
        error.causes.len(),
        1 + ERRORS_KEPT + 1,
        "{:?}",
        error.causes
    );
    assert!(
        error.causes[1].starts_with("fake-bad: read error at byte 0: "),
        "{:?}",
        error.causes
    );
    assert!(error.causes[2].starts_with("fake-bad: read error at byte 4096: "));
    assert_eq!(error.causes[17], "fake-bad: 4 more read errors");
    assert!(!error.causes.iter().any(|c| c.contains("disk-65536")));
}

#[test]
fn the_detail_has_each_disks_bytes_time_and_rate() {
    let scan = |device: &str, bytes: u64, ms: u64| DiskScan {
        device: device.into(),
        open_error: None,
        surface: Surface {
            bytes_read: bytes,
            ..Surface::default()
        },
        elapsed: Duration::from_millis(ms),
    };
    let r = report(&[
        scan("/dev/vdb", 300 * MIB_U, 2000),
        scan("/dev/vdc", 1000, 0),
        scan("/dev/vdd", MIB_U, 3333),
    ]);
    assert_eq!(
        r,
        Report::Succeeded {
            inventory: None,
            detail: Some(serde_json::json!({"disks": [
                {"device": "/dev/vdb", "bytes_read": 314572800, "seconds": 2.0, "mib_per_s": 150.0},
                {"device": "/dev/vdc", "bytes_read": 1000, "seconds": 0.0, "mib_per_s": 0.0},
                {"device": "/dev/vdd", "bytes_read": 1048576, "seconds": 3.333, "mib_per_s": 0.3},
            ]}))
        }
    );
}

#[test]
fn by_default_the_disks_the_wipe_would_pick_are_scanned() {
    let d = |name: &str| InventoryDisk {
        name: name.into(),
        ..Default::default()
    };
    let boot = vec!["/dev/sda".to_owned()];
    let disks = [
        d("/dev/sda"),
        InventoryDisk {
            read_only: true,
            ..d("/dev/sdb")
        },
        InventoryDisk {
            removable: true,
            ..d("/dev/sr0")
        },
        d("/dev/nvme0n1"),
    ];
    assert_eq!(
        pick(&disks, &boot),
        Ok(vec![
            PathBuf::from("/dev/sdb"),
            PathBuf::from("/dev/nvme0n1")
        ])
    );
    assert_eq!(
        pick(&disks[..1], &boot),
        Err("no disk found to scan (passed over: /dev/sda (boot medium))".to_owned())
    );
    assert_eq!(pick(&[], &boot), Err("no disk found to scan".to_owned()));
}
