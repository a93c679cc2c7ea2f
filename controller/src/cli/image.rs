//! `ingot image import|list|show|delete`: the image store under the controller's state dir,
//! found through the same configuration as `ingot serve` (`--config`, `INGOT_*`,
//! `--state-dir`). These commands work on the files directly; a running `ingot serve`
//! sees the change at the next request.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::table;
use super::watch::{Progress, bar, human_bytes as human, progress_text};
use crate::config::FileConfig;
use crate::images::{
    CompressOptions, ImageRecord, ImageStore, ImportOptions, ImportProgress, ProgressSink,
};

/// Where the image store is: the state dir of the controller's configuration.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Config file (TOML), as for `ingot serve`. Default: /etc/ingot/ingot.toml when it exists.
    #[arg(long, global = true, env = "INGOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// State directory (images live in its `images/`); overrides the config.
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Store a raw or qcow2 (or vmdk, vdi, vhdx...) disk image, zstd-compressed, for deploys
    /// with `image_source=ingot://NAME`.
    Import {
        /// The disk image file.
        file: PathBuf,
        /// Image name (default: the file name without its extension).
        #[arg(long)]
        name: Option<String>,
        /// zstd level (1-19).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
        level: i32,
        /// zstd worker threads (default: one per core).
        #[arg(long)]
        threads: Option<u32>,
        /// Largest virtual disk size accepted, in bytes (config `max_image_virtual_size`,
        /// default 2 TiB).
        #[arg(long)]
        max_image_virtual_size: Option<u64>,
    },
    /// List stored images.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one stored image.
    Show {
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a stored image.
    Delete { name: String },
}

/// Runs an image command; returns what to print.
pub async fn run(args: StoreArgs, command: ImageCommand) -> anyhow::Result<String> {
    let max_image_virtual_size = match &command {
        ImageCommand::Import {
            max_image_virtual_size,
            ..
        } => *max_image_virtual_size,
        _ => None,
    };
    let config = FileConfig::load(args.config.as_deref())?
        .overlay(FileConfig {
            state_dir: args.state_dir,
            max_image_virtual_size,
            ..Default::default()
        })
        .validate()?;
    let store = ImageStore::new(&config.state_dir);
    let max = config.max_image_virtual_size;
    tokio::task::spawn_blocking(move || execute(&store, command, max))
        .await
        .context("image command panicked")?
}

fn execute(
    store: &ImageStore,
    command: ImageCommand,
    max_virtual_size: u64,
) -> anyhow::Result<String> {
    Ok(match command {
        ImageCommand::Import {
            file,
            name,
            level,
            threads,
            max_image_virtual_size: _,
        } => {
            let mut compress = CompressOptions {
                level,
                ..Default::default()
            };
            if let Some(t) = threads {
                compress.threads = t;
            }
            let started = Instant::now();
            let opts = ImportOptions {
                compress,
                progress: progress_drawer(std::io::stderr().is_terminal()),
                max_virtual_size,
                ..Default::default()
            };
            let r = store.import(&file, name.as_deref(), &opts);
            if std::io::stderr().is_terminal() {
                // Leave the redrawn progress line.
                eprintln!();
            }
            let r = r?;
            let secs = started.elapsed().as_secs_f64();
            format!(
                "imported {} ({}): {} raw -> {} stored ({:.1}%) in {secs:.1} s, {:.0} MB/s\n\
                 sha256 {}\ndeploy with: image_source=ingot://{}\n",
                r.name,
                r.source_format,
                human(r.size),
                human(r.stored_size),
                100.0 * r.stored_size as f64 / r.size.max(1) as f64,
                r.size as f64 / secs.max(1e-9) / 1e6,
                r.sha256,
                r.name
            )
        }
        ImageCommand::List { json } => {
            let list = store.list()?;
            if json {
                serde_json::to_string_pretty(&list)? + "\n"
            } else {
                let rows: Vec<Vec<String>> = list.iter().map(row).collect();
                table::render(
                    &["name", "format", "size", "stored", "sha256", "created"],
                    &rows,
                )
            }
        }
        ImageCommand::Show { name, json } => {
            let r = store.get(&name)?;
            if json {
                serde_json::to_string_pretty(&r)? + "\n"
            } else {
                let data = store.data_path(&name)?;
                let rows = vec![
                    vec!["name".into(), r.name.clone()],
                    vec!["source_format".into(), r.source_format.clone()],
                    vec!["size".into(), format!("{} ({})", r.size, human(r.size))],
                    vec![
                        "stored_size".into(),
                        format!("{} ({})", r.stored_size, human(r.stored_size)),
                    ],
                    vec!["sha256".into(), r.sha256.clone()],
                    vec!["raw_sha256".into(), r.raw_sha256.clone()],
                    vec!["zstd_level".into(), r.zstd_level.to_string()],
                    vec!["created_at".into(), r.created_at.to_rfc3339()],
                    vec!["file".into(), data.display().to_string()],
                    vec!["image_source".into(), format!("ingot://{}", r.name)],
                ];
                table::render(&["field", "value"], &rows)
            }
        }
        ImageCommand::Delete { name } => {
            let r = store.delete(&name)?;
            format!("deleted {}\n", r.name)
        }
    })
}

fn row(r: &ImageRecord) -> Vec<String> {
    vec![
        r.name.clone(),
        r.source_format.clone(),
        human(r.size),
        human(r.stored_size),
        r.sha256.chars().take(16).collect::<String>() + "…",
        r.created_at.format("%Y-%m-%d %H:%M").to_string(),
    ]
}

/// PURE: the progress line of an import at `now`: `convert qcow2 45%`, or
/// `compress 50% 1.0 GiB/2.0 GiB 350.2 MB/s ETA 0:03` (the bar in front on a terminal).
pub fn import_line(p: &ImportProgress, now: Instant, tty: bool) -> String {
    let (pct, text) = match *p {
        ImportProgress::Convert {
            format,
            percent,
            started,
        } => {
            let secs = now.saturating_duration_since(started).as_secs();
            (
                percent as u64,
                format!("convert {format} to raw {percent:.0}% ({secs} s)"),
            )
        }
        ImportProgress::Compress {
            done,
            total,
            started,
        } => {
            let elapsed = now.saturating_duration_since(started);
            let rate = (done as f64 / elapsed.as_secs_f64().max(1e-3)) as u64;
            let p = Progress {
                phase: "compress".into(),
                bytes_fetched: done,
                bytes_written: done,
                bytes_total: Some(total),
                rate_bps: rate,
                elapsed_ms: elapsed.as_millis() as u64,
            };
            (p.percent().unwrap_or(0), progress_text(&p))
        }
    };
    if tty {
        format!("{} {text}", bar(pct, 20))
    } else {
        text
    }
}

/// PURE: whether a report is drawn: always when it starts a new phase or tenth (`step`), and
/// on a terminal also when the line is 100 ms old.
fn should_draw(tty: bool, last: Option<(Instant, u64)>, now: Instant, step: u64) -> bool {
    match last {
        None => true,
        Some((at, last_step)) => {
            step != last_step || (tty && now.saturating_duration_since(at) >= DRAW_EVERY)
        }
    }
}

const DRAW_EVERY: Duration = Duration::from_millis(100);

/// A sink that draws on stderr: one line redrawn in place on a terminal, plain lines
/// otherwise.
fn progress_drawer(tty: bool) -> ProgressSink {
    let last: Mutex<Option<(Instant, u64)>> = Mutex::new(None);
    ProgressSink::new(move |p| {
        let now = Instant::now();
        // A step: the phase and the tenth it is in (0-10 convert, 20-30 compress).
        let step = match *p {
            ImportProgress::Convert { percent, .. } => (percent as u64) / 10,
            ImportProgress::Compress { done, total, .. } => {
                20 + (u128::from(done) * 10 / u128::from(total.max(1))) as u64
            }
        };
        let Ok(mut last) = last.lock() else {
            return;
        };
        if !should_draw(tty, *last, now, step) {
            return;
        }
        *last = Some((now, step));
        let line = import_line(p, now, tty);
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_lines() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(2);
        let c = ImportProgress::Compress {
            done: 512 << 20,
            total: 1 << 30,
            started: t0,
        };
        assert_eq!(
            import_line(&c, later, false),
            "compress 50% 512.0 MiB/1.0 GiB 268.4 MB/s ETA 0:02"
        );
        assert_eq!(
            import_line(&c, later, true),
            "[##########----------] compress 50% 512.0 MiB/1.0 GiB 268.4 MB/s ETA 0:02"
        );
        let v = ImportProgress::Convert {
            format: "qcow2",
            percent: 45.0,
            started: t0,
        };
        assert_eq!(
            import_line(&v, later, false),
            "convert qcow2 to raw 45% (2 s)"
        );
    }

    #[test]
    fn draws_sparingly() {
        let t0 = Instant::now();
        let soon = t0 + Duration::from_millis(10);
        let later = t0 + Duration::from_millis(150);
        // First report always; in a log only when the tenth changes.
        assert!(should_draw(false, None, t0, 20));
        assert!(!should_draw(false, Some((t0, 20)), later, 20));
        assert!(should_draw(false, Some((t0, 20)), soon, 21));
        // On a terminal also every 100 ms.
        assert!(!should_draw(true, Some((t0, 21)), soon, 21));
        assert!(should_draw(true, Some((t0, 21)), later, 21));
        assert!(should_draw(true, Some((t0, 28)), soon, 29));
    }

    #[test]
    fn sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(1 << 30), "1.0 GiB");
    }
}
