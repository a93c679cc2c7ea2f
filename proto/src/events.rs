//! Progress and result events the agent emits while it works.
//!
//! The same values go to the controller (`progress`/`result` reports) and, as
//! JSON lines, to stdout when the agent runs as a command.

use serde::{Deserialize, Serialize};

/// A phase of a write or wipe job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Choosing and opening the target device.
    Prepare,
    /// Destroying the old partition table.
    ClearTable,
    /// Streaming, verifying, decoding and writing the body of the image.
    Stream,
    /// Writing the held-back first MiB after the checksum matched.
    WriteHead,
    /// Moving the backup GPT to the end of a larger disk.
    RelocateGpt,
    /// Appending the config drive partition.
    ConfigDrive,
    /// Flushing caches to stable storage.
    Sync,
    /// Asking the kernel to re-read the partition table.
    Reread,
    /// Wiping a disk.
    Wipe,
    /// Reading back to verify a wipe.
    Verify,
    /// Cleaning up after a failure (destroying the partial table).
    Cleanup,
    /// Writing md superblocks and checking the arrays with the kernel (software RAID).
    BuildRaid,
}

/// Periodic progress of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// Current phase.
    pub phase: Phase,
    /// Bytes received from the network (as served, before decoding).
    pub bytes_fetched: u64,
    /// Bytes written to the disk (decoded).
    pub bytes_written: u64,
    /// Size of the served image, when the server told us.
    #[serde(default)]
    pub bytes_total: Option<u64>,
    /// Write rate since the start, bytes per second.
    pub rate_bps: u64,
    /// Time since the job started, in milliseconds.
    pub elapsed_ms: u64,
}

/// Time spent in one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTiming {
    /// The phase.
    pub phase: Phase,
    /// Milliseconds spent in it.
    pub ms: u64,
}

/// The outcome of a successful image write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteImageResult {
    /// Device written.
    pub device: String,
    /// Detected format: `raw`, `gzip`, `xz` or `zstd`.
    pub format: String,
    /// Checksum that matched, `algo:hex`.
    pub checksum: String,
    /// Bytes received (as served).
    pub bytes_fetched: u64,
    /// Bytes written (decoded image size).
    pub bytes_written: u64,
    /// Connections re-established after a failure.
    pub retries: u32,
    /// Whole job, in milliseconds.
    pub elapsed_ms: u64,
    /// Average write rate, bytes per second.
    pub rate_bps: u64,
    /// Per-phase timings, in order.
    pub timings: Vec<PhaseTiming>,
    /// Start offset of the config drive partition, when one was written.
    #[serde(default)]
    pub configdrive_offset: Option<u64>,
    /// The arrays built when the deploy asked for software RAID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid: Option<crate::RaidReport>,
}

/// How thoroughly to wipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WipeMode {
    /// Clear every known signature and the first and last MiB.
    Metadata,
    /// Zero the whole device and verify.
    Full,
    /// Firmware erase (NVMe format / ATA security erase), verified by a marker.
    Secure,
}

/// The result of wiping one disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WipeDiskResult {
    /// Device path.
    pub device: String,
    /// Requested mode.
    pub mode: WipeMode,
    /// True when the disk was wiped and verified.
    pub ok: bool,
    /// Method used (`signatures`, `discard`, `write_zeroes`, `overwrite`, `nvme_format`, `ata_secure_erase`).
    #[serde(default)]
    pub method: Option<String>,
    /// Signatures found and cleared, e.g. `ext4@1080`.
    #[serde(default)]
    pub cleared: Vec<String>,
    /// Why the disk was skipped (only with `--all`).
    #[serde(default)]
    pub skipped: Option<String>,
    /// The error, when `ok` is false and the disk was not skipped.
    #[serde(default)]
    pub error: Option<String>,
    /// Milliseconds spent.
    pub elapsed_ms: u64,
    /// Which disk this is, beyond its name (the controller matches it with the inventory).
    #[serde(default, flatten)]
    pub id: DiskId,
}

/// What identifies a disk across boots and renames: its serial, WWN and `/dev/disk/by-path`
/// name (from the inventory's [`crate::Disk`]), and its size in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskId {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl DiskId {
    /// The identity of an inventory disk.
    pub fn of(d: &crate::Disk) -> Self {
        DiskId {
            serial: d.serial.clone().filter(|s| !s.is_empty()),
            wwn: d.wwn.clone().filter(|s| !s.is_empty()),
            by_path: d.by_path.clone().filter(|s| !s.is_empty()),
            size: Some(d.size),
        }
    }

    /// Whether nothing identifies the disk (no serial, WWN or by-path name).
    pub fn is_anonymous(&self) -> bool {
        self.serial.is_none() && self.wwn.is_none() && self.by_path.is_none()
    }

    /// PURE: whether `self` and `other` are the same disk: the WWN decides when both have
    /// one, else the serial, else the by-path name; never the device name, which can change
    /// between boots.
    pub fn same_disk(&self, other: &DiskId) -> bool {
        fn pick<'a>(a: &'a Option<String>, b: &'a Option<String>) -> Option<(&'a str, &'a str)> {
            Some((a.as_deref()?, b.as_deref()?))
        }
        if let Some((a, b)) = pick(&self.wwn, &other.wwn) {
            return a.eq_ignore_ascii_case(b);
        }
        if let Some((a, b)) = pick(&self.serial, &other.serial) {
            return a == b;
        }
        if let Some((a, b)) = pick(&self.by_path, &other.by_path) {
            return a == b;
        }
        false
    }

    /// `serial S` / `wwn W` / `by-path P` for messages, or `no identity`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.serial {
            parts.push(format!("serial {s}"));
        }
        if let Some(w) = &self.wwn {
            parts.push(format!("wwn {w}"));
        }
        if let Some(p) = &self.by_path {
            parts.push(format!("by-path {p}"));
        }
        if parts.is_empty() {
            "no serial, WWN or by-path".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Per-disk results of a wipe job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WipeReport {
    /// True when every disk that was not skipped is `ok`.
    pub ok: bool,
    /// One entry per disk.
    pub disks: Vec<WipeDiskResult>,
}

/// A failure, with the chain of causes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// Phase where it failed.
    #[serde(default)]
    pub phase: Option<Phase>,
    /// Top-level message.
    pub message: String,
    /// Causes, outermost first.
    #[serde(default)]
    pub causes: Vec<String>,
}

/// One event line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// Periodic progress.
    Progress(ProgressEvent),
    /// A phase finished.
    PhaseDone(PhaseTiming),
    /// An image write finished.
    WriteImageDone(WriteImageResult),
    /// A wipe finished.
    WipeDone(WipeReport),
    /// A job failed.
    Failed(ErrorReport),
}
