//! The controller's own image store: `ingot image import|list|delete`, served to agents
//! under `/images/` on the provisioning listener.
//!
//! Layout under `<state_dir>/images/`: one directory per image, `<name>/image.raw.zst` (the
//! raw disk, zstd-compressed) and `<name>/image.json` (its [`ImageRecord`]). An import builds
//! everything in a hidden `.import-*` directory and renames it into place, so an image is
//! either there whole or not at all; a failed import removes its directory, and one that was
//! killed is swept by the next import. `image_source = "ingot://NAME"` in a node's
//! `instance_info` deploys a stored image ([`resolve`]).

pub mod compress;
pub mod format;
pub mod http;
pub mod inspect;
pub mod mapped;
pub mod progress;
pub mod resolve;
pub mod signing;

use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Read};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use compress::CompressOptions;
use format::{FormatError, SourceFormat};
use inspect::InspectError;
pub use progress::{ImportProgress, ProgressSink};

/// File name of the stored (compressed) disk in an image directory.
pub const DATA_FILE: &str = "image.raw.zst";
/// File name of the record in an image directory.
pub const RECORD_FILE: &str = "image.json";
const IMPORT_PREFIX: &str = ".import-";
const DELETE_PREFIX: &str = ".delete-";

/// One stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    /// Format of the file that was imported (`raw`, `qcow2`, ...).
    pub source_format: String,
    /// Size of the raw disk (bytes the agent writes).
    pub size: u64,
    /// Hex sha256 of the raw disk.
    pub raw_sha256: String,
    /// Size of the stored, compressed file (bytes the agent downloads).
    pub stored_size: u64,
    /// Hex sha256 of the stored file: what the agent verifies.
    pub sha256: String,
    /// zstd level used.
    pub zstd_level: i32,
    pub created_at: DateTime<Utc>,
}

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: no such file")]
    SourceMissing { path: PathBuf },
    #[error("{path}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path}: {source}")]
    Format {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error(
        "invalid image name {name:?}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
    )]
    InvalidName { name: String },
    #[error("an image named {0:?} already exists (delete it first or pick another --name)")]
    NameTaken(String),
    #[error("no image named {0:?}")]
    NotFound(String),
    #[error(
        "{format} images are converted with qemu-img, which is not installed (apt-get install qemu-utils)"
    )]
    QemuImgMissing { format: &'static str },
    #[error("{path}: refused before conversion: {source}")]
    Unsafe {
        path: PathBuf,
        #[source]
        source: InspectError,
    },
    #[error("{path}: qemu-img info -f {format} (under prlimit) failed: {detail}")]
    Inspect {
        path: PathBuf,
        format: &'static str,
        detail: String,
    },
    #[error(
        "{path}: the converted {format} disk has no partition table (MBR or GPT boot signature) \
         in its first sector"
    )]
    NoPartitionTable { path: PathBuf, format: &'static str },
    #[error("qemu-img convert -f {format} failed: {stderr}")]
    Convert {
        format: &'static str,
        stderr: String,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("image record {path} is unreadable: {reason}")]
    BadRecord { path: PathBuf, reason: String },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// Settings of an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub compress: CompressOptions,
    /// The `qemu-img` program.
    pub qemu_img: PathBuf,
    /// The `prlimit` program the inspection runs under.
    pub prlimit: PathBuf,
    /// Largest virtual disk size accepted (`max_image_virtual_size`).
    pub max_virtual_size: u64,
    /// Where progress goes (nowhere by default).
    pub progress: ProgressSink,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            compress: CompressOptions::default(),
            qemu_img: PathBuf::from("qemu-img"),
            prlimit: PathBuf::from("prlimit"),
            max_virtual_size: inspect::DEFAULT_MAX_VIRTUAL_SIZE,
            progress: ProgressSink::default(),
        }
    }
}

/// Checks an image name (also a path component and part of a URL).
pub fn validate_name(name: &str) -> Result<(), ImageError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// PURE: the default name of an image imported from `path`: the file name without disk
/// image extensions, other characters replaced by `-`.
pub fn default_name(path: &Path) -> String {
    let mut name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    'strip: loop {
        for ext in [
            ".qcow2", ".qcow", ".raw", ".img", ".vmdk", ".vdi", ".vhdx", ".vhd",
        ] {
            if name.len() > ext.len() && name.to_ascii_lowercase().ends_with(ext) {
                name.truncate(name.len() - ext.len());
                continue 'strip;
            }
        }
        break;
    }
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    cleaned
        .trim_start_matches(['.', '-'])
        .chars()
        .take(64)
        .collect()
}

/// The image directory of a controller.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

impl ImageStore {
    /// The store under `<state_dir>/images` (created on first import).
    pub fn new(state_dir: &Path) -> Self {
        ImageStore {
            dir: state_dir.join("images"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a stored image's compressed data (it may not exist).
    pub fn data_path(&self, name: &str) -> Result<PathBuf, ImageError> {
        validate_name(name)?;
        Ok(self.dir.join(name).join(DATA_FILE))
    }

    /// One image's record.
    pub fn get(&self, name: &str) -> Result<ImageRecord, ImageError> {
        validate_name(name)?;
        let path = self.dir.join(name).join(RECORD_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound(name.to_owned()));
            }
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_str(&text).map_err(|e| ImageError::BadRecord {
            path,
            reason: e.to_string(),
        })
    }

    /// Every stored image, by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("listing {}", self.dir.display()))(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(format!("listing {}", self.dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || validate_name(&name).is_err() {
                continue;
            }
            match self.get(&name) {
                Ok(r) => out.push(r),
                // A directory without a record is not an image (never made by an import).
                Err(ImageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes an image; downloads already running finish from their open file.
    pub fn delete(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let record = self.get(name)?;
        let doomed = self.dir.join(format!(
            "{DELETE_PREFIX}{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::rename(self.dir.join(name), &doomed)
            .map_err(io_err(format!("removing image {name}")))?;
        std::fs::remove_dir_all(&doomed)
            .map_err(io_err(format!("removing {}", doomed.display())))?;
        Ok(record)
    }

    /// Imports a raw or qcow2 (or other `qemu-img`) disk image as `name` (default: from the
    /// file name). Nothing is left behind when it fails.
    pub fn import(
        &self,
        src: &Path,
        name: Option<&str>,
        opts: &ImportOptions,
    ) -> Result<ImageRecord, ImageError> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => default_name(src),
        };
        validate_name(&name)?;
        let format = sniff(src)?;
        if format == SourceFormat::Raw {
            let size = std::fs::metadata(src)
                .map_err(io_err(format!("reading {}", src.display())))?
                .len();
            if size > opts.max_virtual_size {
                return Err(ImageError::Unsafe {
                    path: src.to_path_buf(),
                    source: InspectError::TooLarge {
                        size,
                        max: opts.max_virtual_size,
                    },
                });
            }
        }
        if self.dir.join(&name).exists() {
            return Err(ImageError::NameTaken(name));
        }
        // 0700 like the state dir `ingot serve` creates, should an import come first.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(crate::instance::DIR_MODE)
            .create(&self.dir)
            .map_err(io_err(format!("creating {}", self.dir.display())))?;
        self.sweep_stale();
        let work = TempDir::create(self.dir.join(format!(
            "{IMPORT_PREFIX}{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        )))?;
        let raw = match format {
            SourceFormat::Raw => src.to_path_buf(),
            SourceFormat::Convert(f) => {
                let private = inspect_source(src, f, &work.path, opts)?;
                let out = work.path.join("converted.raw");
                convert(&opts.qemu_img, f, &private, &out, &opts.progress)?;
                std::fs::remove_file(&private).map_err(io_err("removing the source copy"))?;
                check_converted(&out, src, f)?;
                out
            }
        };
        let data = work.path.join(DATA_FILE);
        let started = std::time::Instant::now();
        let sink = &opts.progress;
        let c = compress::compress_file(&raw, &data, opts.compress, &|done, total| {
            sink.report(&ImportProgress::Compress {
                done,
                total,
                started,
            })
        })
        .map_err(io_err(format!("compressing {}", raw.display())))?;
        if raw != src {
            std::fs::remove_file(&raw).map_err(io_err("removing the converted raw disk"))?;
        }
        let record = ImageRecord {
            name: name.clone(),
            source_format: format.name().to_owned(),
            size: c.raw_size,
            raw_sha256: c.raw_sha256,
            stored_size: c.stored_size,
            sha256: c.stored_sha256,
            zstd_level: opts.compress.level,
            created_at: Utc::now(),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| ImageError::BadRecord {
            path: work.path.join(RECORD_FILE),
            reason: e.to_string(),
        })?;
        write_synced(&work.path.join(RECORD_FILE), &json)?;
        sync_dir(&work.path)?;
        let dest = self.dir.join(&name);
        match std::fs::rename(&work.path, &dest) {
            Ok(()) => {}
            // A non-empty directory of that name appeared meanwhile (a concurrent import).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::EEXIST | nix::libc::ENOTEMPTY)
                ) =>
            {
                return Err(ImageError::NameTaken(name));
            }
            Err(e) => {
                return Err(io_err(format!("moving the image into {}", dest.display()))(
                    e,
                ));
            }
        }
        work.keep();
        sync_dir(&self.dir)?;
        Ok(record)
    }

    /// Removes import directories left by a process that no longer runs.
    fn sweep_stale(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = if let Some(rest) = name.strip_prefix(IMPORT_PREFIX) {
                rest.split('-')
                    .next()
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            } else {
                name.starts_with(DELETE_PREFIX)
            };
            if stale {
                tracing::info!(dir = %name, "removing a leftover of an interrupted image operation");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Opens `src` and detects its format.
fn sniff(src: &Path) -> Result<SourceFormat, ImageError> {
    let mut f = match File::open(src) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ImageError::SourceMissing {
                path: src.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err(format!("opening {}", src.display()))(e)),
    };
    let meta = f
        .metadata()
        .map_err(io_err(format!("reading {}", src.display())))?;
    if !meta.is_file() {
        return Err(ImageError::NotAFile {
            path: src.to_path_buf(),
        });
    }
    let mut head = Vec::with_capacity(format::HEAD_LEN);
    (&mut f)
        .take(format::HEAD_LEN as u64)
        .read_to_end(&mut head)
        .map_err(io_err(format!("reading {}", src.display())))?;
    format::detect(&head, meta.len()).map_err(|source| ImageError::Format {
        path: src.to_path_buf(),
        source,
    })
}

/// Copies `src` into the private work directory, runs `qemu-img info` on the copy and
/// refuses anything [`inspect::check`] refuses; returns the copy's path, which the
/// conversion then uses. The copy is what makes the check hold: whoever can write `src`
/// or its directory cannot swap the file between the inspection and the conversion.
fn inspect_source(
    src: &Path,
    format: &'static str,
    work: &Path,
    opts: &ImportOptions,
) -> Result<PathBuf, ImageError> {
    let unsafe_err = |source| ImageError::Unsafe {
        path: src.to_path_buf(),
        source,
    };
    if !inspect::ALLOWED_FORMATS.contains(&format) {
        return Err(unsafe_err(InspectError::FormatNotAllowed {
            expected: format.to_owned(),
            found: format.to_owned(),
        }));
    }
    if !program_exists(&opts.qemu_img) {
        return Err(ImageError::QemuImgMissing { format });
    }
    let copy = work.join(format!("source.{format}"));
    std::fs::copy(src, &copy).map_err(io_err(format!(
        "copying {} into the import directory",
        src.display()
    )))?;
    let canonical =
        std::fs::canonicalize(&copy).map_err(io_err(format!("resolving {}", copy.display())))?;
    let json = match inspect::qemu_img_info(&opts.prlimit, &opts.qemu_img, format, &canonical) {
        Ok(Ok(json)) => json,
        Ok(Err(detail)) => {
            return Err(ImageError::Inspect {
                path: src.to_path_buf(),
                format,
                detail,
            });
        }
        Err(e) => {
            return Err(io_err(format!(
                "running {} (util-linux) for qemu-img info",
                opts.prlimit.display()
            ))(e));
        }
    };
    let image = canonical.to_string_lossy();
    inspect::check(&json, format, &image, opts.max_virtual_size).map_err(unsafe_err)?;
    Ok(canonical)
}

/// Whether `program` (a path, or a name looked up in `PATH`) is an existing file.
fn program_exists(program: &Path) -> bool {
    if program.components().count() > 1 {
        return program.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// The converted disk must start with a partition table, as a raw import must.
fn check_converted(out: &Path, src: &Path, format: &'static str) -> Result<(), ImageError> {
    let mut head = Vec::with_capacity(format::HEAD_LEN);
    let len = File::open(out)
        .and_then(|f| {
            let len = f.metadata()?.len();
            f.take(format::HEAD_LEN as u64).read_to_end(&mut head)?;
            Ok(len)
        })
        .map_err(io_err(format!("reading {}", out.display())))?;
    match format::detect(&head, len) {
        Ok(SourceFormat::Raw) => Ok(()),
        _ => Err(ImageError::NoPartitionTable {
            path: src.to_path_buf(),
            format,
        }),
    }
}

/// `qemu-img convert -f FORMAT -O raw SRC OUT`.
fn convert(
    qemu_img: &Path,
    format: &'static str,
    src: &Path,
    out: &Path,
    progress: &ProgressSink,
) -> Result<(), ImageError> {
    let spawned = Command::new(qemu_img)
        .args(["convert", "-p", "-f", format, "-O", "raw"])
        .arg(src)
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ImageError::QemuImgMissing { format });
        }
        Err(e) => return Err(io_err(format!("running {}", qemu_img.display()))(e)),
    };
    // stderr is read on its own thread so neither pipe can fill up and stall qemu-img.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = e.read_to_string(&mut text);
            text
        })
    });
    let started = std::time::Instant::now();
    progress.report(&ImportProgress::Convert {
        format,
        percent: 0.0,
        started,
    });
    if let Some(stdout) = child.stdout.take() {
        // `-p` redraws one line with carriage returns.
        for chunk in BufReader::new(stdout).split(b'\r').map_while(Result::ok) {
            if let Some(percent) = progress::qemu_img_percent(&String::from_utf8_lossy(&chunk)) {
                progress.report(&ImportProgress::Convert {
                    format,
                    percent,
                    started,
                });
            }
        }
    }
    let status = child
        .wait()
        .map_err(io_err(format!("waiting for {}", qemu_img.display())))?;
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        return Err(ImageError::Convert {
            format,
            stderr: stderr.trim().to_owned(),
        });
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    use std::io::Write;
    let ctx = || format!("writing {}", path.display());
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(ctx()))?;
    f.write_all(bytes).map_err(io_err(ctx()))?;
    f.sync_all().map_err(io_err(ctx()))
}

fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing {}", dir.display())))
}

/// A work directory removed on drop unless [`TempDir::keep`] was called.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn create(path: PathBuf) -> Result<TempDir, ImageError> {
        std::fs::create_dir(&path).map_err(io_err(format!("creating {}", path.display())))?;
        Ok(TempDir { path, keep: false })
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests;
