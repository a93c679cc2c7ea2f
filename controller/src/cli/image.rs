//! `ingot image import|list|show|delete`: the image store under the controller's state dir,
//! found through the same configuration as `ingot serve` (`--config`, `INGOT_*`,
//! `--state-dir`). These commands work on the files directly; a running `ingot serve`
//! sees the change at the next request.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::table;
use crate::config::FileConfig;
use crate::images::{CompressOptions, ImageRecord, ImageStore, ImportOptions};

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
    let config = FileConfig::load(args.config.as_deref())?
        .overlay(FileConfig {
            state_dir: args.state_dir,
            ..Default::default()
        })
        .validate()?;
    let store = ImageStore::new(&config.state_dir);
    tokio::task::spawn_blocking(move || execute(&store, command))
        .await
        .context("image command panicked")?
}

fn execute(store: &ImageStore, command: ImageCommand) -> anyhow::Result<String> {
    Ok(match command {
        ImageCommand::Import {
            file,
            name,
            level,
            threads,
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
                ..Default::default()
            };
            let r = store.import(&file, name.as_deref(), &opts)?;
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

/// Bytes in binary units with one decimal.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(1 << 30), "1.0 GiB");
    }
}
