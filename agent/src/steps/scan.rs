//! `deploy.scan_disks`: a read-only surface scan. Each disk is read from its start,
//! sequentially, in [`BLOCK`]-sized aligned reads (`O_DIRECT` where the device takes it, so
//! the medium answers and not the page cache), to its end or `max_bytes`. Nothing is ever
//! written: disks are opened read-only. A read error is recorded with its byte offset
//! ([`ERRORS_KEPT`] per disk, the rest counted) and the scan goes on after the block that
//! failed. The step fails when any disk had a read error or could not be opened, with each
//! in the failure's causes; else its detail is [`ScanDetail`]. Disks are scanned in
//! parallel, with byte progress like the wipe's (phase `verify`: a read pass).
//!
//! The reading loop, [`scan_device`], works on a [`ScanDevice`], so tests drive it with fakes
//! that fail at chosen offsets.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use proto::protocol::Report;
use proto::{AgentEvent, Disk as InventoryDisk, ErrorReport, Phase, WipeMode};
use serde::{Deserialize, Serialize};

use super::args::Args;
use crate::events::EventSink;
use crate::host::aligned::AlignedBuf;
use crate::host::blockdev::{Disk, DiskError};

/// Bytes per read: large enough that a disk streams at its full rate, small enough that a
/// read error skips little.
pub const BLOCK: usize = 4 << 20;
/// Read errors recorded per disk; the ones after are counted only.
pub const ERRORS_KEPT: usize = 16;

const MIB: f64 = (1u64 << 20) as f64;

/// A device the scan reads: a size and positional reads.
pub trait ScanDevice {
    /// Bytes on the device.
    fn size(&self) -> u64;
    /// Offsets and lengths of reads must be multiples of this (the sector under
    /// `O_DIRECT`; 1 for buffered reads). The scan reads at multiples of [`BLOCK`], so only
    /// the length of the last read is rounded up.
    fn granule(&self) -> usize;
    /// One read of at most `buf.len()` bytes at `offset`: the bytes read, 0 at the end.
    /// A short read is not an error; the scan reads on from where it stopped.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ScanDevice for Disk {
    fn size(&self) -> u64 {
        Disk::size(self)
    }

    fn granule(&self) -> usize {
        if self.is_direct() {
            self.direct_granule_len()
        } else {
            1
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.read_some_at(buf, offset)
    }
}

/// One read error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// The byte the failed read started at (after the bytes of a short read before it).
    pub offset: u64,
    pub error: String,
}

/// What reading one device found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Surface {
    /// Bytes read without error.
    pub bytes_read: u64,
    /// The first [`ERRORS_KEPT`] read errors, in offset order.
    pub errors: Vec<ReadError>,
    /// Every read error, the ones not kept too.
    pub error_count: u64,
}

impl Surface {
    fn record(&mut self, offset: u64, error: String) {
        self.error_count += 1;
        if self.errors.len() < ERRORS_KEPT {
            self.errors.push(ReadError { offset, error });
        }
    }
}

/// Bytes scanned (read or skipped after an error) of the bytes to scan, across the disks
/// of one job; shared by the scan threads and the progress reporter.
#[derive(Debug, Default)]
pub struct ScanProgress {
    pub total: AtomicU64,
    pub done: AtomicU64,
}

impl ScanProgress {
    /// The progress event for now, `elapsed` after the job started: the wipe's, in the
    /// `verify` phase.
    pub fn event(&self, elapsed: Duration) -> proto::ProgressEvent {
        crate::wipe::progress_event(
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
            true,
            elapsed,
        )
    }
}

/// Reads `dev` from its start to its end, or to `max_bytes`, in `block`-sized reads (made
/// whole granules); a read error is recorded and the scan goes on with the next block.
pub fn scan_device(
    dev: &dyn ScanDevice,
    max_bytes: Option<u64>,
    block: usize,
    progress: &ScanProgress,
) -> Surface {
    let granule = dev.granule().max(1);
    let block = block.max(1).div_ceil(granule) * granule;
    let block_len = block as u64;
    let end = max_bytes.map_or(dev.size(), |m| m.min(dev.size()));
    progress.total.fetch_add(end, Ordering::Relaxed);
    let mut surface = Surface::default();
    let mut buf = AlignedBuf::new(block);
    let mut off = 0u64;
    while off < end {
        let want = (end - off).min(block_len);
        // Under O_DIRECT a read is whole granules; the bytes past `want` are not counted.
        let len = usize::try_from(want)
            .unwrap_or(block)
            .div_ceil(granule)
            .saturating_mul(granule)
            .min(block);
        let (got, err) = read_full(dev, &mut buf[..len], off, granule);
        let got = u64::try_from(got).unwrap_or(0).min(want);
        surface.bytes_read += got;
        match err {
            Some(e) => surface.record(off + got, e.to_string()),
            None if got < want => {
                surface.record(
                    off + got,
                    format!("the device ends here, before the {end} bytes to scan"),
                );
                progress.done.fetch_add(end - off, Ordering::Relaxed);
                break;
            }
            None => {}
        }
        progress.done.fetch_add(want, Ordering::Relaxed);
        off += want;
    }
    surface
}

/// Fills `buf` from `offset` with as many reads as it takes: the bytes read (fewer at the
/// end of the device) and the error that stopped it, if one did.
fn read_full(
    dev: &dyn ScanDevice,
    buf: &mut [u8],
    offset: u64,
    granule: usize,
) -> (usize, Option<io::Error>) {
    let mut got = 0;
    while got < buf.len() {
        match dev.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            // A direct read stops inside a granule only at the end of the device (and the
            // next read from there would be unaligned).
            Ok(n) if !n.is_multiple_of(granule) => {
                got += n;
                break;
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

/// The scan of one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskScan {
    pub device: String,
    /// Why the disk could not be opened (nothing was read then).
    pub open_error: Option<String>,
    pub surface: Surface,
    pub elapsed: Duration,
}

impl DiskScan {
    fn ok(&self) -> bool {
        self.open_error.is_none() && self.surface.error_count == 0
    }
}

/// Opens a device for the scan.
pub type Opener<'a> = dyn Fn(&Path) -> Result<Box<dyn ScanDevice>, DiskError> + Sync + 'a;

/// Opens a disk read-only, with `O_DIRECT` when it takes it.
pub fn open_disk(path: &Path) -> Result<Box<dyn ScanDevice>, DiskError> {
    Ok(Box::new(Disk::open_read_direct(path)?))
}

/// Scans every device in parallel (each opened with `open`), emitting a progress event to
/// `sink` every `interval` while they are read and a last one at the end.
pub fn scan_all(
    devices: &[PathBuf],
    max_bytes: Option<u64>,
    open: &Opener<'_>,
    block: usize,
    sink: &dyn EventSink,
    interval: Duration,
) -> Vec<DiskScan> {
    let progress = ScanProgress::default();
    let started = Instant::now();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let scans = std::thread::scope(|s| {
        let p = &progress;
        let reporter = s.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stop_rx.recv_timeout(interval)
            {
                sink.emit(&AgentEvent::Progress(p.event(started.elapsed())));
            }
        });
        let handles: Vec<_> = devices
            .iter()
            .map(|d| s.spawn(move || scan_one(d, max_bytes, open, block, p)))
            .collect();
        let scans: Vec<DiskScan> = handles
            .into_iter()
            .zip(devices)
            .map(|(h, d)| {
                h.join().unwrap_or_else(|_| DiskScan {
                    device: d.display().to_string(),
                    open_error: Some("the scan thread panicked".into()),
                    surface: Surface::default(),
                    elapsed: Duration::ZERO,
                })
            })
            .collect();
        drop(stop_tx);
        let _ = reporter.join();
        scans
    });
    sink.emit(&AgentEvent::Progress(progress.event(started.elapsed())));
    scans
}

fn scan_one(
    path: &Path,
    max_bytes: Option<u64>,
    open: &Opener<'_>,
    block: usize,
    p: &ScanProgress,
) -> DiskScan {
    let t = Instant::now();
    let device = path.display().to_string();
    let (open_error, surface) = match open(path) {
        Ok(dev) => (None, scan_device(dev.as_ref(), max_bytes, block, p)),
        Err(e) => (Some(crate::error_chain(&e)), Surface::default()),
    };
    let scan = DiskScan {
        device,
        open_error,
        surface,
        elapsed: t.elapsed(),
    };
    match &scan.open_error {
        Some(e) => {
            tracing::error!(device = %scan.device, error = %e, "cannot open the disk to scan")
        }
        None => tracing::info!(
            device = %scan.device,
            bytes_read = scan.surface.bytes_read,
            read_errors = scan.surface.error_count,
            ms = u64::try_from(scan.elapsed.as_millis()).unwrap_or(u64::MAX),
            "disk scanned"
        ),
    }
    for e in &scan.surface.errors {
        tracing::warn!(device = %scan.device, offset = e.offset, error = %e.error, "read error");
    }
    scan
}

/// The detail of a successful scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanDetail {
    pub disks: Vec<DiskSummary>,
}

/// One disk of [`ScanDetail`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskSummary {
    pub device: String,
    pub bytes_read: u64,
    /// Wall time of the disk's scan, to the millisecond.
    pub seconds: f64,
    /// Its read rate in MiB (2^20 bytes) per second, to a tenth.
    pub mib_per_s: f64,
}

impl DiskSummary {
    /// PURE: the summary of a disk's scan.
    pub fn of(scan: &DiskScan) -> Self {
        let secs = scan.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            scan.surface.bytes_read as f64 / MIB / secs
        } else {
            0.0
        };
        DiskSummary {
            device: scan.device.clone(),
            bytes_read: scan.surface.bytes_read,
            seconds: (secs * 1000.0).round() / 1000.0,
            mib_per_s: (rate * 10.0).round() / 10.0,
        }
    }
}

/// PURE: the step's report: the [`ScanDetail`] when every disk was opened and read without
/// error, else a failure whose causes list each disk that could not be opened and each
/// recorded read error (with the count of those not recorded).
pub fn report(scans: &[DiskScan]) -> Report {
    let bad: Vec<&DiskScan> = scans.iter().filter(|s| !s.ok()).collect();
    if bad.is_empty() {
        let detail = ScanDetail {
            disks: scans.iter().map(DiskSummary::of).collect(),
        };
        return Report::Succeeded {
            inventory: None,
            detail: serde_json::to_value(detail).ok(),
        };
    }
    let mut causes = Vec::new();
    for s in &bad {
        if let Some(e) = &s.open_error {
            causes.push(format!("{}: cannot be opened: {e}", s.device));
        }
        for e in &s.surface.errors {
            causes.push(format!(
                "{}: read error at byte {}: {}",
                s.device, e.offset, e.error
            ));
        }
        let unlisted = s.surface.error_count - s.surface.errors.len() as u64;
        if unlisted > 0 {
            causes.push(format!("{}: {unlisted} more read errors", s.device));
        }
    }
    Report::Failed {
        error: ErrorReport {
            phase: Some(Phase::Verify),
            message: format!(
                "the surface scan failed on {} of {} disks",
                bad.len(),
                scans.len()
            ),
            causes,
        },
    }
}

/// PURE: the disks to scan when none are named: the ones the wipe would pick (not virtual
/// media, not the boot medium; read-only disks too). Fails when that leaves none.
pub fn pick(disks: &[InventoryDisk], boot_disks: &[String]) -> Result<Vec<PathBuf>, String> {
    let (go, skipped) = crate::wipe::select::split(disks, boot_disks, WipeMode::Metadata);
    if !go.is_empty() {
        return Ok(go);
    }
    let passed: Vec<String> = skipped
        .iter()
        .map(|d| {
            format!(
                "{} ({})",
                d.device,
                d.skipped.as_deref().unwrap_or("skipped")
            )
        })
        .collect();
    Err(if passed.is_empty() {
        "no disk found to scan".to_owned()
    } else {
        format!("no disk found to scan (passed over: {})", passed.join(", "))
    })
}

/// The step `deploy.scan_disks`: `devices` (else [`pick`] on this machine's disks), each
/// read to its end or `max_bytes`.
pub(super) fn scan_disks(args: &Args, sink: &dyn EventSink) -> Report {
    let devices: Vec<PathBuf> = match args.devices("devices") {
        Some(d) => d.iter().map(PathBuf::from).collect(),
        None => match default_devices(Path::new("/")) {
            Ok(d) => d,
            Err(e) => return crate::failed(&e, Some(Phase::Verify)),
        },
    };
    let max_bytes = args.positive_int("max_bytes");
    tracing::info!(?devices, ?max_bytes, "scanning disks");
    let scans = scan_all(
        &devices,
        max_bytes,
        &open_disk,
        BLOCK,
        sink,
        Duration::from_secs(1),
    );
    report(&scans)
}

fn default_devices(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let disks = crate::inventory::block::disks(root).context("listing disks")?;
    let boot = crate::wipe::select::boot_disks(root);
    pick(&disks, &boot).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests;
