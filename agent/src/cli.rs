//! Command-line interface of `ingot-agent`: one subcommand per job. Results go
//! to stdout as JSON (proto types), progress and errors to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use proto::{AgentEvent, ErrorReport};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::events::{ConsoleSink, EventSink};
use crate::image::checksum::Checksum;
use crate::image::fetch::FetchOptions;
use crate::image::{WriteImageOptions, write_image};

/// Ingot deploy agent.
#[derive(Debug, Parser)]
#[command(name = "ingot-agent", version)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Stream an image to a disk, verified.
    WriteImage(WriteImageArgs),
    /// Wipe disks (several in parallel); fails if any disk could not be wiped.
    Wipe(WipeArgs),
    /// Build an OpenStack config drive (ISO9660, label config-2).
    Configdrive(ConfigdriveArgs),
    /// Run the agent protocol loop against a controller (what PID 1 does after boot).
    Run(RunArgs),
    /// Print this machine's hardware inventory.
    Inventory {
        /// JSON (proto::Inventory) instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Controller base URL, e.g. `http://192.0.2.1:6385`; repeat it for each controller
    /// replica (tried in order, the next when one stops answering).
    #[arg(long, required = true)]
    url: Vec<String>,
    /// Pin the controller's TLS certificate: `sha256:HEX` of its DER.
    #[arg(long)]
    ca: Option<String>,
    /// The MAC this machine booted from.
    #[arg(long)]
    boot_mac: Option<String>,
    /// Really reboot or power off when the controller says so (else just exit).
    #[arg(long)]
    halt: bool,
}

#[derive(Debug, clap::Args)]
struct ConfigdriveArgs {
    /// meta_data.json content: inline JSON, or a file path.
    #[arg(long)]
    meta_data: String,
    /// user_data file.
    #[arg(long)]
    user_data: Option<PathBuf>,
    /// network_data.json content: inline JSON, or a file path.
    #[arg(long)]
    network_data: Option<String>,
    /// vendor_data.json content: inline JSON, or a file path.
    #[arg(long)]
    vendor_data: Option<String>,
    /// Output ISO file.
    #[arg(long)]
    out: PathBuf,
}

/// Inline JSON (starts with `{`) or the path of a JSON file.
fn json_arg(v: &str) -> anyhow::Result<serde_json::Value> {
    let text = if v.trim_start().starts_with('{') {
        v.to_string()
    } else {
        std::fs::read_to_string(v).with_context(|| format!("reading {v}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("parsing JSON from {v}"))
}

#[derive(Debug, clap::Args)]
struct WipeArgs {
    /// Device to wipe (repeatable).
    #[arg(long)]
    device: Vec<PathBuf>,
    /// Wipe every disk except virtual media and the boot medium (a read-only disk fails).
    #[arg(long, conflicts_with = "device")]
    all: bool,
    /// metadata (signatures and both ends), full (zero all) or secure (firmware erase).
    #[arg(long, value_enum, default_value = "metadata")]
    mode: WipeModeArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WipeModeArg {
    Metadata,
    Full,
    Secure,
}

#[derive(Debug, clap::Args)]
struct WriteImageArgs {
    /// Image URL (http:// or https://).
    #[arg(long)]
    url: String,
    /// Expected checksum of the bytes as served: `sha256:HEX`, `sha512:HEX` or `md5:HEX`.
    #[arg(long)]
    checksum: String,
    /// Target device. Without it, `--root-device-hints` chooses one.
    #[arg(long)]
    device: Option<PathBuf>,
    /// Root device hints as JSON (Ironic names), e.g. `{"size": ">= 100"}`.
    #[arg(long)]
    root_device_hints: Option<String>,
    /// Config drive image (ISO9660, optionally gzip) to append as a partition.
    #[arg(long)]
    configdrive: Option<PathBuf>,
    /// Extra CA certificate (PEM) for HTTPS.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Reconnections allowed after a broken transfer.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Seconds without data before a transfer counts as broken.
    #[arg(long, default_value_t = 30)]
    stall_timeout: u64,
    /// First retry backoff in milliseconds (doubles each time).
    #[arg(long, default_value_t = 250)]
    backoff_ms: u64,
    /// Do not use O_DIRECT.
    #[arg(long)]
    no_direct: bool,
    /// Print JSON event lines on stdout.
    #[arg(long)]
    json: bool,
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let filter = std::env::var("RUST_LOG").ok();
    let (targets, bad) = log_targets(filter.as_deref());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // The builder's own default is INFO; the targets decide.
        .with_max_level(LevelFilter::TRACE)
        .finish()
        .with(targets)
        .try_init();
    if let Some(bad) = bad {
        tracing::warn!("RUST_LOG: {bad}; logging at info");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ingot-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log filter from `RUST_LOG` or `ingot.log=`: `tracing_subscriber`'s `Targets` syntax
/// (`info`, `info,agent::init=debug`; no span or field filters, which would pull the regex
/// engine into the static binary). An empty or missing filter means `info`; an invalid one
/// means `info` and the parse error, for the caller to log once logging is up.
pub fn log_targets(filter: Option<&str>) -> (Targets, Option<String>) {
    let info = || Targets::new().with_default(LevelFilter::INFO);
    match filter.map(str::trim).filter(|f| !f.is_empty()) {
        None => (info(), None),
        Some(f) => match f.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (info(), Some(format!("invalid filter {f:?}: {e}"))),
        },
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::WriteImage(a) => write_image_cmd(a),
        Cmd::Wipe(a) => wipe_cmd(a),
        Cmd::Run(a) => run_cmd(a),
        Cmd::Inventory { json } => {
            let inv = crate::inventory::collect_live();
            if json {
                println!("{}", serde_json::to_string_pretty(&inv)?);
            } else {
                println!(
                    "{} x {} ({} sockets), {} MiB memory, boot {:?}",
                    inv.cpu.count,
                    inv.cpu.model_name,
                    inv.cpu.socket_count,
                    inv.memory.total >> 20,
                    inv.boot.current_boot_mode
                );
                for d in &inv.disks {
                    println!(
                        "disk {} {} GiB serial={} transport={} by_path={}",
                        d.name,
                        d.size >> 30,
                        d.serial.as_deref().unwrap_or("-"),
                        d.transport.as_deref().unwrap_or("-"),
                        d.by_path.as_deref().unwrap_or("-")
                    );
                }
                for n in &inv.interfaces {
                    println!(
                        "nic {} {} carrier={} driver={} addresses={:?}",
                        n.name,
                        n.mac_address,
                        n.has_carrier,
                        n.driver.as_deref().unwrap_or("-"),
                        n.addresses
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Configdrive(a) => {
            let cd = crate::configdrive::ConfigDrive {
                meta_data: json_arg(&a.meta_data)?,
                user_data: a
                    .user_data
                    .map(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display())))
                    .transpose()?,
                network_data: a.network_data.as_deref().map(json_arg).transpose()?,
                vendor_data: a.vendor_data.as_deref().map(json_arg).transpose()?,
            };
            let iso = cd.build()?;
            std::fs::write(&a.out, &iso).with_context(|| format!("writing {}", a.out.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_image_cmd(a: WriteImageArgs) -> anyhow::Result<ExitCode> {
    let checksum: Checksum = a.checksum.parse()?;
    let device = match (a.device, a.root_device_hints) {
        (Some(d), _) => d,
        (None, Some(h)) => {
            crate::hints::choose_device(&h).context("choosing the device from root device hints")?
        }
        (None, None) => anyhow::bail!("either --device or --root-device-hints is required"),
    };
    let opts = WriteImageOptions {
        url: a.url,
        checksum,
        device,
        configdrive: a.configdrive,
        fetch: FetchOptions {
            max_retries: a.retries,
            stall_timeout: Duration::from_secs(a.stall_timeout),
            backoff: Duration::from_millis(a.backoff_ms),
            ca_cert: a.ca_cert,
            ..FetchOptions::default()
        },
        direct: !a.no_direct,
        progress_interval: Duration::from_secs(1),
    };
    let sink = ConsoleSink { json: a.json };
    match write_image(&opts, &sink) {
        Ok(r) => {
            sink.emit(&AgentEvent::WriteImageDone(r));
            Ok(ExitCode::SUCCESS)
        }
        Err((phase, e)) => {
            sink.emit(&AgentEvent::Failed(ErrorReport {
                phase: Some(phase),
                message: crate::error_chain(&e),
                causes: crate::error_causes(&e),
            }));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn run_cmd(a: RunArgs) -> anyhow::Result<ExitCode> {
    let mut line: String = a.url.iter().map(|u| format!("ingot.url={u} ")).collect();
    if let Some(ca) = &a.ca {
        line.push_str(&format!(" ingot.ca={ca}"));
    }
    if let Some(m) = &a.boot_mac {
        line.push_str(&format!(" BOOTIF={m}"));
    }
    let cfg = crate::cmdline::parse(&line)?;
    let opts = crate::run::RunOptions {
        urls: cfg.urls,
        ca_sha256: cfg.ca_sha256,
        boot_mac: cfg.boot_mac,
        lldp_timeout: cfg.lldp_timeout,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let h = rt.block_on(crate::run::run_agent(&opts))?;
    if a.halt {
        crate::init::halt(h);
    }
    tracing::info!(?h, "the controller asked to stop (use --halt to act on it)");
    Ok(ExitCode::SUCCESS)
}

fn wipe_cmd(a: WipeArgs) -> anyhow::Result<ExitCode> {
    use crate::wipe::select;
    let mode = match a.mode {
        WipeModeArg::Metadata => proto::WipeMode::Metadata,
        WipeModeArg::Full => proto::WipeMode::Full,
        WipeModeArg::Secure => proto::WipeMode::Secure,
    };
    let (devices, skipped) = if a.all {
        select::plan(std::path::Path::new("/"), mode)?
    } else {
        (a.device, vec![])
    };
    if devices.is_empty() {
        anyhow::bail!("no device given: use --device PATH (repeatable) or --all");
    }
    let mut report = crate::wipe::wipe_all(&devices, mode);
    report.disks.extend(skipped);
    if let Ok(disks) = crate::inventory::block::disks(std::path::Path::new("/")) {
        select::identify(&mut report, &disks);
    }
    let ok = report.ok;
    let sink = ConsoleSink { json: false };
    sink.emit(&AgentEvent::WipeDone(report.clone()));
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::log_targets;

    #[test]
    fn log_filter_takes_targets_syntax() {
        let (t, bad) = log_targets(Some("info,agent::init=debug"));
        assert_eq!(bad, None);
        assert!(t.would_enable("agent::init::dhcp", &Level::DEBUG));
        assert!(!t.would_enable("agent::run", &Level::DEBUG));
        assert!(t.would_enable("agent::run", &Level::INFO));
        assert!(!t.would_enable("hyper", &Level::DEBUG));
    }

    /// The filter decides alone: a debug directive reaches debug events (the fmt builder's
    /// own INFO default once dropped them).
    #[test]
    fn debug_directives_are_honoured_by_the_whole_subscriber() {
        use tracing_subscriber::filter::LevelFilter;
        use tracing_subscriber::layer::SubscriberExt as _;
        let (targets, _) = log_targets(Some("info,agent::init=debug"));
        let sub = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(LevelFilter::TRACE)
            .finish()
            .with(targets);
        tracing::subscriber::with_default(sub, || {
            assert!(tracing::enabled!(target: "agent::init::dhcp", Level::DEBUG));
            assert!(!tracing::enabled!(target: "agent::run", Level::DEBUG));
        });
    }

    #[test]
    fn missing_or_bad_filter_means_info() {
        for f in [None, Some(""), Some("  ")] {
            let (t, bad) = log_targets(f);
            assert_eq!(bad, None);
            assert!(t.would_enable("agent", &Level::INFO));
            assert!(!t.would_enable("agent", &Level::DEBUG));
        }
        let (t, bad) = log_targets(Some("agent=loud"));
        assert!(bad.is_some_and(|e| e.contains("agent=loud")));
        assert!(t.would_enable("agent", &Level::INFO));
        assert!(!t.would_enable("agent", &Level::DEBUG));
    }
}
