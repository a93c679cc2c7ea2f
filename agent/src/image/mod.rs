//! Writing an OS image to a disk, safely.
//!
//! Order of work (each step a [`Phase`] with its own timing):
//! 1. open the disk exclusively, `O_DIRECT`;
//! 2. destroy the old partition table (first and last MiB) and sync, so a
//!    failure from here on leaves a disk that does not boot;
//! 3. stream: download, hash, decode and write everything but the first MiB
//!    ([`pipeline`]); once the head is decoded, refuse an image that does not
//!    start with a partition table readable with the disk's sector size
//!    ([`table::check`]) before anything of it is written;
//! 4. compare the checksum of the bytes as served;
//! 5. fix up the partition table in the held-back head ([`table`]): a GPT for
//!    512-byte sectors rewritten for a 4Kn disk, backup GPT to the real end of
//!    the disk, config drive partition; write those blocks;
//! 6. write the head last, fsync, re-read partitions.
//!
//! Any failure after step 1 wipes the first and last MiB again (and the end of
//! what we wrote, where the image's own backup GPT sits) and reports the
//! original error.

pub mod checksum;
pub mod fetch;
pub mod format;
pub mod pipeline;
pub mod raid;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proto::{AgentEvent, Phase, PhaseTiming, ProgressEvent, WriteImageResult};

use crate::events::EventSink;
use crate::host::aligned::AlignedBuf;
use crate::host::blockdev::{Disk, DiskError};
use checksum::Checksum;
use fetch::{FetchError, FetchOptions};
use format::DecodeError;
use pipeline::Counters;
use table::TableError;

/// Bytes held back and written only after the checksum matched.
pub const HEAD_LEN: usize = 1 << 20;
const MIB: u64 = 1 << 20;

/// Why an image write failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageWriteError {
    /// Opening or writing the disk failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The download failed.
    #[error("downloading the image")]
    Fetch(#[from] FetchError),
    /// The image could not be decoded.
    #[error("decoding the image")]
    Decode(#[from] DecodeError),
    /// The bytes served do not match the expected checksum.
    #[error("checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// Expected `algo:hex`.
        expected: String,
        /// Computed `algo:hex`.
        actual: String,
    },
    /// The decoded image does not fit.
    #[error("image is larger than the disk ({disk_size} bytes): at least {image_at_least} bytes")]
    TooLarge {
        /// Disk size.
        disk_size: u64,
        /// Image bytes seen so far.
        image_at_least: u64,
    },
    /// The decoded image does not start with a partition table the disk can
    /// read (noise, a partition image, a table for other sector sizes).
    #[error("refusing the image")]
    Refused(#[source] TableError),
    /// Editing the partition table failed.
    #[error("updating the partition table")]
    Table(#[from] TableError),
    /// Reading the config drive file failed.
    #[error("reading config drive {path}")]
    ConfigDrive {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Building or checking the software RAID failed.
    #[error("software RAID")]
    Raid(#[source] crate::raid::RaidError),
    /// A pipeline stage stopped because another one failed (never reported).
    #[error("stopped because another pipeline stage failed")]
    Cancelled,
    /// A bug: a thread panicked or could not start.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// What to write where.
#[derive(Debug, Clone)]
pub struct WriteImageOptions {
    /// Image URL (http or https).
    pub url: String,
    /// Expected checksum of the bytes as served.
    pub checksum: Checksum,
    /// Target device.
    pub device: PathBuf,
    /// Config drive image (ISO9660) to append as a partition.
    pub configdrive: Option<PathBuf>,
    /// Download policy.
    pub fetch: FetchOptions,
    /// Use `O_DIRECT` when possible.
    pub direct: bool,
    /// Interval between progress events.
    pub progress_interval: Duration,
}

struct Timings {
    start: Instant,
    list: Vec<PhaseTiming>,
}

impl Timings {
    fn run<T>(
        &mut self,
        phase: Phase,
        events: &dyn EventSink,
        f: impl FnOnce() -> Result<T, ImageWriteError>,
    ) -> Result<T, (Phase, ImageWriteError)> {
        let t = Instant::now();
        let r = f().map_err(|e| (phase, e))?;
        let timing = PhaseTiming {
            phase,
            ms: ms(t.elapsed()),
        };
        events.emit(&AgentEvent::PhaseDone(timing.clone()));
        self.list.push(timing);
        Ok(r)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn rate(bytes: u64, d: Duration) -> u64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        (bytes as f64 / s) as u64
    } else {
        0
    }
}

/// Read the config drive file (raw ISO, or gzip-compressed as Ironic sends it).
fn read_configdrive(path: &Path) -> Result<Vec<u8>, ImageWriteError> {
    let err = |source| ImageWriteError::ConfigDrive {
        path: path.to_path_buf(),
        source,
    };
    let data = std::fs::read(path).map_err(err)?;
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[..]), &mut out)
            .map_err(err)?;
        return Ok(out);
    }
    Ok(data)
}

/// Write the image. On failure the disk is left without a partition table and
/// the original error is returned together with the phase it happened in.
pub fn write_image(
    opts: &WriteImageOptions,
    events: &dyn EventSink,
) -> Result<WriteImageResult, (Phase, ImageWriteError)> {
    let mut timings = Timings {
        start: Instant::now(),
        list: Vec::new(),
    };
    let configdrive = match &opts.configdrive {
        Some(p) => Some(read_configdrive(p).map_err(|e| (Phase::Prepare, e))?),
        None => None,
    };
    let disk = timings.run(Phase::Prepare, events, || {
        Ok(Disk::open_write(&opts.device, opts.direct)?)
    })?;
    tracing::info!(device = %opts.device.display(), size = disk.size(), sector = disk.logical_sector_size(), direct = disk.is_direct(), "writing image");
    let counters = Arc::new(Counters::default());
    let mut written_end = 0u64;
    let result = run(
        opts,
        events,
        &disk,
        &counters,
        &mut timings,
        configdrive.as_deref(),
        &mut written_end,
    );
    if let Err((phase, e)) = &result {
        tracing::error!(?phase, error = %crate::error_chain(e), "image write failed, destroying the partition table");
        let t = Instant::now();
        if let Err(ce) = destroy_table(&disk, Some(written_end)) {
            tracing::error!(error = %crate::error_chain(&ce), "cleanup after failed write also failed");
        }
        events.emit(&AgentEvent::PhaseDone(PhaseTiming {
            phase: Phase::Cleanup,
            ms: ms(t.elapsed()),
        }));
    }
    result
}

/// The verify stage: the hex digest of the bytes as served (the pipeline's hash thread)
/// against the expected checksum; a mismatch names both.
pub(crate) fn verify_checksum(
    expected: &Checksum,
    digest_hex: &str,
) -> Result<(), ImageWriteError> {
    let actual = Checksum {
        algo: expected.algo,
        hex: digest_hex.to_owned(),
    };
    if actual != *expected {
        return Err(ImageWriteError::ChecksumMismatch {
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Zero the first and last MiB, and the last MiB before `written_end` (where a
/// partly written image keeps its backup GPT), then sync and re-read.
pub fn destroy_table(disk: &Disk, written_end: Option<u64>) -> Result<(), DiskError> {
    let size = disk.size();
    disk.zero_range(0, MIB.min(size))?;
    disk.zero_range(size.saturating_sub(MIB), MIB)?;
    if let Some(end) = written_end.filter(|&e| e > MIB) {
        let end = end.div_ceil(MIB) * MIB;
        disk.zero_range(end.saturating_sub(MIB).max(MIB), MIB)?;
    }
    disk.sync()?;
    disk.reread_partitions()
}

fn run(
    opts: &WriteImageOptions,
    events: &dyn EventSink,
    disk: &Disk,
    counters: &Arc<Counters>,
    timings: &mut Timings,
    configdrive: Option<&[u8]>,
    written_end: &mut u64,
) -> Result<WriteImageResult, (Phase, ImageWriteError)> {
    timings.run(Phase::ClearTable, events, || Ok(destroy_table(disk, None)?))?;
    let streamed = stream_verified(
        opts,
        events,
        std::slice::from_ref(disk),
        counters,
        timings,
        written_end,
    )?;

    let mut head = streamed.head;
    let plan = timings.run(Phase::RelocateGpt, events, || {
        let plan = table::finish(
            &mut head,
            disk.logical_sector_size(),
            disk.size(),
            configdrive.map(|c| c.len() as u64),
        )?;
        for (off, bytes) in &plan.writes {
            disk.write_at(bytes, *off)?;
        }
        Ok(plan)
    })?;
    if let (Some(iso), Some(off)) = (configdrive, plan.configdrive_offset) {
        timings.run(Phase::ConfigDrive, events, || {
            let buf = AlignedBuf::from_slice(iso);
            let len = (iso.len() as u64).div_ceil(MIB) * MIB;
            disk.zero_range(off, len)?;
            disk.write_at(&buf[..iso.len()], off)?;
            Ok(())
        })?;
    }
    timings.run(Phase::WriteHead, events, || {
        let len = usize::try_from(disk.size().min(HEAD_LEN as u64)).unwrap_or(HEAD_LEN);
        disk.write_at(&head[..len], 0)?;
        counters
            .written
            .fetch_add(streamed.image_len.min(HEAD_LEN as u64), Ordering::Relaxed);
        Ok(())
    })?;
    timings.run(Phase::Sync, events, || Ok(disk.sync()?))?;
    timings.run(Phase::Reread, events, || Ok(disk.reread_partitions()?))?;

    let elapsed = timings.start.elapsed();
    Ok(WriteImageResult {
        device: opts.device.display().to_string(),
        format: streamed.format.name().to_string(),
        checksum: opts.checksum.to_string(),
        bytes_fetched: streamed.fetch.bytes,
        bytes_written: streamed.image_len,
        retries: streamed.fetch.retries,
        elapsed_ms: ms(elapsed),
        rate_bps: rate(streamed.image_len, elapsed),
        timings: timings.list.clone(),
        configdrive_offset: plan.configdrive_offset,
        raid: None,
    })
}

/// The stream phase with progress events, then the checksum: every disk of `disks` gets the
/// image but its held-back first MiB. `written_end` follows what may have been written, for
/// the cleanup after a failure.
fn stream_verified(
    opts: &WriteImageOptions,
    events: &dyn EventSink,
    disks: &[Disk],
    counters: &Arc<Counters>,
    timings: &mut Timings,
    written_end: &mut u64,
) -> Result<pipeline::Streamed, (Phase, ImageWriteError)> {
    let start = timings.start;
    let done = AtomicBool::new(false);
    let streamed = std::thread::scope(|s| {
        let reporter = s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                std::thread::park_timeout(opts.progress_interval);
                if done.load(Ordering::Relaxed) {
                    break;
                }
                events.emit(&AgentEvent::Progress(progress(counters, start)));
            }
        });
        let r = timings.run(Phase::Stream, events, || {
            pipeline::stream(&opts.url, &opts.fetch, opts.checksum.algo, disks, counters)
        });
        done.store(true, Ordering::Relaxed);
        reporter.thread().unpark();
        r
    });
    // The writer may have written up to here even on failure.
    *written_end = counters.written.load(Ordering::Relaxed) + HEAD_LEN as u64;
    let streamed = streamed?;
    *written_end = streamed.image_len;
    verify_checksum(&opts.checksum, &streamed.digest).map_err(|e| (Phase::Stream, e))?;
    Ok(streamed)
}

fn progress(c: &Counters, start: Instant) -> ProgressEvent {
    let written = c.written.load(Ordering::Relaxed);
    let total = c.total.load(Ordering::Relaxed);
    ProgressEvent {
        phase: Phase::Stream,
        bytes_fetched: c.fetched.load(Ordering::Relaxed),
        bytes_written: written,
        bytes_total: (total > 0).then_some(total),
        rate_bps: rate(written, start.elapsed()),
        elapsed_ms: ms(start.elapsed()),
    }
}
