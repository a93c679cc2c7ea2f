//! Disk wiping: `metadata` (every known signature, on the disk and on each
//! partition, plus both ends), `full` (zero everything, verified by reading
//! back) and `secure` (`secure.rs`: the firmware erase of an NVMe namespace, crypto then
//! user-data, or of an ATA disk, enhanced then normal, each proven by markers read back,
//! falling back to `full`). Several disks
//! are wiped in parallel; every disk gets a result and the job fails closed. Progress
//! (bytes cleared of the total, rate) is reported like the image writer's.

pub mod ata;
pub mod nvme;
mod secure;
pub mod select;
pub mod signatures;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proto::{AgentEvent, Phase, ProgressEvent, WipeDiskResult, WipeMode, WipeReport};

use crate::events::EventSink;
use crate::host::aligned::AlignedBuf;
use crate::host::blockdev::{Disk, DiskError};
use crate::image::table;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Why wiping one disk failed.
#[derive(Debug, thiserror::Error)]
pub enum WipeError {
    /// Opening or writing failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Zeroes were not read back where they should be.
    #[error("verification failed: non-zero data at offset {0} after wiping")]
    NotZero(u64),
    /// The firmware erase ran but the marker survived.
    #[error("secure erase did not erase: marker still readable at offset {0}")]
    MarkerSurvived(u64),
    /// An external erase command failed.
    #[error("firmware erase command failed")]
    Command(#[source] anyhow::Error),
}

/// Bytes wiped so far across the disks of one job, shared by the wipe threads and the
/// progress reporter.
#[derive(Debug, Default)]
pub struct WipeProgress {
    /// Bytes the job will clear.
    pub total: AtomicU64,
    /// Bytes cleared so far.
    pub done: AtomicU64,
    /// Disks that are reading back their zeroes.
    pub verifying: AtomicU64,
}

impl WipeProgress {
    fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    fn add_done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// The progress event for now, `elapsed` after the job started.
    pub fn event(&self, elapsed: Duration) -> ProgressEvent {
        progress_event(
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
            self.verifying.load(Ordering::Relaxed) > 0,
            elapsed,
        )
    }
}

/// A wipe's progress event: bytes cleared of the total, the rate since the start, and the
/// phase (`verify` while any disk reads back). Pure.
pub fn progress_event(done: u64, total: u64, verifying: bool, elapsed: Duration) -> ProgressEvent {
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    ProgressEvent {
        phase: if verifying {
            Phase::Verify
        } else {
            Phase::Wipe
        },
        bytes_fetched: 0,
        bytes_written: done,
        bytes_total: Some(total),
        rate_bps: done.saturating_mul(1000).checked_div(ms).unwrap_or(0),
        elapsed_ms: ms,
    }
}

/// Wipe every device in parallel and report per disk.
pub fn wipe_all(devices: &[PathBuf], mode: WipeMode) -> WipeReport {
    wipe_all_with_progress(
        devices,
        mode,
        &crate::events::CollectSink::default(),
        Duration::MAX,
    )
}

/// [`wipe_all`], emitting a progress event (bytes cleared, rate) to `sink` every
/// `interval` while the disks are wiped, and a last one at the end.
pub fn wipe_all_with_progress(
    devices: &[PathBuf],
    mode: WipeMode,
    sink: &dyn EventSink,
    interval: Duration,
) -> WipeReport {
    let progress = WipeProgress::default();
    let started = Instant::now();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let disks: Vec<WipeDiskResult> = std::thread::scope(|s| {
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
            .map(|d| s.spawn(move || wipe_one_with_progress(d, mode, p)))
            .collect();
        let results = handles
            .into_iter()
            .zip(devices)
            .map(|(h, d)| {
                h.join().unwrap_or_else(|_| WipeDiskResult {
                    device: d.display().to_string(),
                    mode,
                    ok: false,
                    method: None,
                    cleared: vec![],
                    skipped: None,
                    error: Some("wipe thread panicked".into()),
                    elapsed_ms: 0,
                    id: Default::default(),
                })
            })
            .collect();
        drop(stop_tx);
        let _ = reporter.join();
        results
    });
    sink.emit(&AgentEvent::Progress(progress.event(started.elapsed())));
    WipeReport {
        ok: disks.iter().all(|d| d.ok || d.skipped.is_some()),
        disks,
    }
}

/// Wipe one device; never panics, always returns a result.
pub fn wipe_one(device: &Path, mode: WipeMode) -> WipeDiskResult {
    wipe_one_with_progress(device, mode, &WipeProgress::default())
}

fn wipe_one_with_progress(device: &Path, mode: WipeMode, p: &WipeProgress) -> WipeDiskResult {
    let t = Instant::now();
    let mut r = WipeDiskResult {
        device: device.display().to_string(),
        mode,
        ok: false,
        method: None,
        cleared: vec![],
        skipped: None,
        error: None,
        elapsed_ms: 0,
        id: Default::default(),
    };
    let res = Disk::open_write(device, true)
        .map_err(WipeError::from)
        .and_then(|disk| match mode {
            WipeMode::Metadata => metadata(&disk, p).map(|c| ("signatures", c)),
            WipeMode::Full => full(&disk, p).map(|m| (m, vec![])),
            WipeMode::Secure => secure::secure(&disk, p),
        });
    match res {
        Ok((method, cleared)) => {
            r.ok = true;
            r.method = Some(method.to_string());
            r.cleared = cleared;
        }
        Err(e) => {
            tracing::error!(device = %device.display(), error = %crate::error_chain(&e), "wipe failed");
            r.error = Some(crate::error_chain(&e));
        }
    }
    r.elapsed_ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
    r
}

/// Runs `op` over `[0, size)` in `step`-sized pieces, counting each into `p`.
fn in_steps(
    size: u64,
    step: u64,
    p: &WipeProgress,
    mut op: impl FnMut(u64, u64) -> Result<(), DiskError>,
) -> Result<(), DiskError> {
    let mut off = 0;
    while off < size {
        let n = step.min(size - off);
        op(off, n)?;
        p.add_done(n);
        off += n;
    }
    Ok(())
}

fn read_region(disk: &Disk, off: u64, len: u64) -> Result<AlignedBuf, DiskError> {
    let len = usize::try_from(len).unwrap_or(0);
    let mut b = AlignedBuf::new(len);
    disk.read_at(&mut b[..len], off)?;
    Ok(b)
}

/// Clear signatures on every partition, then on the whole disk.
fn metadata(disk: &Disk, p: &WipeProgress) -> Result<Vec<String>, WipeError> {
    let size = disk.size();
    let sector = disk.logical_sector_size();
    let head_len = (8 * MIB).min(size);
    let head = read_region(disk, 0, head_len)?;
    let tail_len = (2 * MIB).min(size);
    let tail = read_region(disk, size - tail_len, tail_len)?;
    let mut cleared = Vec::new();
    let mut areas: Vec<(u64, u64)> = table::partitions(
        &head[..usize::try_from(head_len.min(MIB)).unwrap_or(0)],
        sector,
    )
    .into_iter()
    .filter(|&(start, len)| len > 0 && start + len <= size)
    .collect();
    for &(start, len) in &areas {
        let h = read_region(disk, start, (8 * MIB).min(len))?;
        let tl = (2 * MIB).min(len);
        let t = read_region(disk, start + len - tl, tl)?;
        for sig in signatures::detect(
            &h,
            &t[..usize::try_from(tl).unwrap_or(0)],
            len,
            sector as usize,
        ) {
            cleared.push(format!("part@{start}:{sig}"));
        }
    }
    cleared.extend(signatures::detect(
        &head[..usize::try_from(head_len).unwrap_or(0)],
        &tail[..usize::try_from(tail_len).unwrap_or(0)],
        size,
        sector as usize,
    ));
    areas.push((0, size));
    let work: Vec<(u64, u64)> = areas
        .iter()
        .flat_map(|&(start, len)| {
            signatures::ranges(len)
                .into_iter()
                .map(move |(off, l)| (start + off, l))
        })
        .collect();
    p.add_total(work.iter().map(|&(_, l)| l).sum());
    for (off, l) in work {
        disk.zero_range(off, l)?;
        p.add_done(l);
    }
    disk.sync()?;
    disk.reread_partitions()?;
    Ok(cleared)
}

fn sysfs_queue(disk: &Disk, attr: &str) -> Option<u64> {
    let name = disk.path().file_name()?.to_string_lossy().into_owned();
    let real = std::fs::canonicalize(disk.path()).ok()?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(name);
    std::fs::read_to_string(format!("/sys/class/block/{name}/queue/{attr}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Zero the whole device by the cheapest way that guarantees zeroes, then
/// verify by reading back.
pub(crate) fn full(disk: &Disk, p: &WipeProgress) -> Result<&'static str, WipeError> {
    let size = disk.size();
    p.add_total(size);
    // Offload in 1 GiB steps and overwrite in 64 MiB ones, so progress moves; an offload
    // that fails on its first step falls back to the next way.
    let first_ok = |f: &dyn Fn(u64, u64) -> Result<(), DiskError>| f(0, GIB.min(size)).is_ok();
    let method = if disk.is_block_device()
        && sysfs_queue(disk, "discard_zeroes_data") == Some(1)
        && first_ok(&|o, l| disk.discard(o, l))
    {
        p.add_done(GIB.min(size));
        in_steps(size.saturating_sub(GIB), GIB, p, |o, l| {
            disk.discard(GIB + o, l)
        })?;
        "discard"
    } else if disk.is_block_device()
        && sysfs_queue(disk, "write_zeroes_max_bytes").unwrap_or(0) > 0
        && first_ok(&|o, l| disk.zeroout(o, l))
    {
        p.add_done(GIB.min(size));
        in_steps(size.saturating_sub(GIB), GIB, p, |o, l| {
            disk.zeroout(GIB + o, l)
        })?;
        "write_zeroes"
    } else {
        in_steps(size, 64 * MIB, p, |o, l| disk.zero_range(o, l))?;
        "overwrite"
    };
    disk.sync()?;
    p.verifying.fetch_add(1, Ordering::Relaxed);
    let verified = verify_zero(disk);
    p.verifying.fetch_sub(1, Ordering::Relaxed);
    verified?;
    disk.reread_partitions()?;
    Ok(method)
}

/// Read back everything on small devices, else the ends plus 256 spread samples.
fn verify_zero(disk: &Disk) -> Result<(), WipeError> {
    let size = disk.size();
    let mut offsets: Vec<u64> = if size <= 256 * MIB {
        (0..size.div_ceil(MIB)).map(|i| i * MIB).collect()
    } else {
        let n = 256u64;
        let mut v: Vec<u64> = (0..n).map(|i| (size / n * i) / MIB * MIB).collect();
        v.push(size - MIB);
        v
    };
    offsets.dedup();
    let mut buf = AlignedBuf::new(MIB as usize);
    for off in offsets {
        let len = usize::try_from(MIB.min(size - off)).unwrap_or(0);
        disk.read_at(&mut buf[..len], off)?;
        if let Some(p) = buf[..len].iter().position(|&b| b != 0) {
            return Err(WipeError::NotZero(off + p as u64));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_event_counts_bytes_rate_and_phase() {
        let e = progress_event(500 * MIB, 1000 * MIB, false, Duration::from_secs(2));
        assert_eq!(e.phase, Phase::Wipe);
        assert_eq!(e.bytes_written, 500 * MIB);
        assert_eq!(e.bytes_total, Some(1000 * MIB));
        assert_eq!(e.rate_bps, 250 * MIB);
        assert_eq!(e.elapsed_ms, 2000);
        assert_eq!(e.bytes_fetched, 0);
        let v = progress_event(1000 * MIB, 1000 * MIB, true, Duration::ZERO);
        assert_eq!(v.phase, Phase::Verify);
        assert_eq!(v.rate_bps, 0, "no division by zero");
    }

    #[test]
    fn in_steps_covers_the_range_once() {
        let p = WipeProgress::default();
        let mut seen = Vec::new();
        in_steps(10, 4, &p, |o, l| {
            seen.push((o, l));
            Ok(())
        })
        .expect("steps");
        assert_eq!(seen, vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(p.done.load(Ordering::Relaxed), 10);
    }
}
