//! `cargo xtask bench api [--secure] [--peer ironic]`: the operator API under load, side by
//! side with Ironic.
//!
//! Builds `ingot` with the release profile, starts it on 127.0.0.1 with a fresh SQLite
//! database, runs the workload in `bench_api/workload.rs` and reports cold start, memory,
//! enroll throughput, server CPU per node, latency percentiles and lifecycle wall time against
//! the targets of DESIGN.md §7. With `--secure` it runs the same workload a second time
//! against `ingot serve` with `auth_strategy = http_basic` (bcrypt cost 5, `htpasswd -B`'s)
//! and the API over HTTPS (`ingot certs init`), the client sending the credentials on every
//! request and trusting only that CA, and prints both with their ratio (the cost of
//! security). With `--peer ironic` it runs the same workload against real Ironic 39.0.0 in
//! the same run. Loopback only.

mod report;
mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::paths::{cargo, target_dir};
use crate::proc_stats::{TreeSample, clock_ticks, sample_tree};
use crate::server::{ServerProcess, free_port};
use report::ServerReport;
use workload::{Config, Target};

/// Parsed command line.
#[derive(Debug)]
struct Args {
    peer: Option<String>,
    /// Also measure Ingot with http_basic over HTTPS.
    secure: bool,
    skip_ingot: bool,
    no_build: bool,
    cfg: Config,
}

const USAGE: &str = "usage: cargo xtask bench api [--secure] [--peer ironic] [--skip-ingot] \
                     [--no-build] [--nodes N] [--lifecycle N] [--list-repeats N] [--concurrency N] \
                     [--poll-ms MS]";

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut out = Args {
        peer: None,
        secure: false,
        skip_ingot: false,
        no_build: false,
        cfg: Config {
            nodes: 500,
            concurrency: 8,
            list_repeats: 50,
            lifecycle_nodes: 50,
            transition_timeout: Duration::from_secs(120),
            poll_every: None,
        },
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> anyhow::Result<usize> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            let n: usize = v
                .parse()
                .with_context(|| format!("{name} {v}: not a number"))?;
            if n == 0 || n > 100_000 {
                bail!("{name} must be between 1 and 100000");
            }
            Ok(n)
        };
        match arg.as_str() {
            "--peer" => {
                let peer = it.next().context("--peer needs a value")?;
                if peer != "ironic" {
                    bail!("unknown peer {peer}; only ironic is known");
                }
                out.peer = Some(peer.clone());
            }
            "--secure" => out.secure = true,
            "--skip-ingot" => out.skip_ingot = true,
            "--no-build" => out.no_build = true,
            "--nodes" => out.cfg.nodes = number("--nodes")?,
            "--lifecycle" => out.cfg.lifecycle_nodes = number("--lifecycle")?,
            "--list-repeats" => out.cfg.list_repeats = number("--list-repeats")?,
            "--concurrency" => out.cfg.concurrency = number("--concurrency")?,
            "--poll-ms" => {
                out.cfg.poll_every = Some(Duration::from_millis(number("--poll-ms")? as u64));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    out.cfg.lifecycle_nodes = out.cfg.lifecycle_nodes.min(out.cfg.nodes);
    if out.skip_ingot && out.peer.is_none() {
        bail!("--skip-ingot without --peer leaves nothing to measure");
    }
    if out.skip_ingot && out.secure {
        bail!("--secure measures Ingot; it cannot go with --skip-ingot");
    }
    Ok(out)
}

/// Entry point of `cargo xtask bench api`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let work = target_dir().join("bench-api");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    println!(
        "bench api: {} nodes + 1 port each with {} clients, /v1/nodes/detail x{}, lifecycle of {} nodes polled {}; loopback only",
        args.cfg.nodes,
        args.cfg.concurrency,
        args.cfg.list_repeats,
        args.cfg.lifecycle_nodes,
        match args.cfg.poll_every {
            Some(d) => format!("every {} ms", d.as_millis()),
            None => "with a 1-100 ms backoff".to_owned(),
        }
    );

    let mut reports = Vec::new();
    if !args.skip_ingot {
        let bin = build_ingot(args.no_build)?;
        let (server, target) = start_ingot(&bin, &work, false)?;
        reports.push(measure(
            "ingot (release)",
            server,
            &target,
            &args.cfg,
            &runtime,
        )?);
        if args.secure {
            let (server, target) = start_ingot(&bin, &work, true)?;
            reports.push(measure(
                "ingot basic+tls",
                server,
                &target,
                &args.cfg,
                &runtime,
            )?);
        }
    }
    if args.peer.is_some() {
        println!("bench api: preparing Ironic 39.0.0 (venv cached under target/)");
        let venv = crate::ironic::venv()?;
        let dir = crate::ironic::fresh_dir("bench")?;
        let server = crate::ironic::start(&venv, &dir, 0)?;
        let target = Target {
            base: server.base_url.clone(),
            credentials: None,
            ca_pem: None,
        };
        reports.push(measure(
            "ironic 39.0.0",
            server,
            &target,
            &args.cfg,
            &runtime,
        )?);
    }

    println!();
    println!("{}", report::table(&reports, args.cfg.lifecycle_nodes));
    let json = serde_json::json!({
        "config": {
            "nodes": args.cfg.nodes, "concurrency": args.cfg.concurrency,
            "list_repeats": args.cfg.list_repeats, "lifecycle_nodes": args.cfg.lifecycle_nodes, "poll_ms": args.cfg.poll_every.map(|d| d.as_millis() as u64),
        },
        "servers": reports.iter().map(ServerReport::to_json).collect::<Vec<_>>(),
    });
    let results = work.join("results.json");
    std::fs::write(&results, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", results.display()))?;
    println!("figures written to {}", results.display());
    let broken: Vec<&str> = reports
        .iter()
        .filter(|r| {
            r.outcome.error_count > 0 || r.outcome.lifecycle_done < args.cfg.lifecycle_nodes
        })
        .map(|r| r.label.as_str())
        .collect();
    if !broken.is_empty() {
        bail!(
            "requests failed during the bench for: {}",
            broken.join(", ")
        );
    }
    Ok(())
}

/// Builds `ingot` with the release profile and returns its path.
fn build_ingot(no_build: bool) -> anyhow::Result<PathBuf> {
    let bin = target_dir().join("release").join("ingot");
    if !no_build {
        println!("bench api: cargo build --release -p controller (profile: release)");
        let status = cargo()
            .args(["build", "--release", "-p", "controller", "--bin", "ingot"])
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release -p controller failed: {status}");
        }
    }
    if !bin.exists() {
        bail!("{} does not exist", bin.display());
    }
    Ok(bin)
}

/// Starts `ingot serve` (`bin`) on a free loopback port with a fresh database under `work`:
/// `noauth` on plain HTTP, or with `secure` `http_basic` over HTTPS (a certificate from
/// `ingot certs init` for 127.0.0.1, an htpasswd file with one bcrypt entry).
fn start_ingot(bin: &Path, work: &Path, secure: bool) -> anyhow::Result<(ServerProcess, Target)> {
    let kind = if secure { "secure" } else { "open" };
    let dir = fresh(&work.join(format!("ingot-{kind}-{}", std::process::id())))?;
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--api-listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database")
        .arg(format!("sqlite://{}", dir.join("ingot.db").display()))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env(
            "INGOT_LOG",
            std::env::var("BENCH_API_LOG").unwrap_or_else(|_| "warn".into()),
        );
    let mut credentials = None;
    let mut ca = None;
    if secure {
        let tls = dir.join("tls");
        let out = Command::new(bin)
            .args(["certs", "init", "--ip", "127.0.0.1", "--dir"])
            .arg(&tls)
            .output()
            .context("running ingot certs init")?;
        if !out.status.success() {
            bail!("ingot certs init: {}", String::from_utf8_lossy(&out.stderr));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let password = format!("bench-{}-{nanos:09}", std::process::id());
        // htpasswd -B's default cost; the server checks it once per client and remembers it.
        let hash = bcrypt::hash(&password, 5).context("hashing the bench password")?;
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, format!("bench:{hash}\n"))
            .with_context(|| format!("writing {}", htpasswd.display()))?;
        cmd.args([
            "--auth-strategy",
            "http_basic",
            "--http-basic-auth-user-file",
        ])
        .arg(&htpasswd)
        .arg("--tls-cert-file")
        .arg(tls.join("server.pem"))
        .arg("--tls-key-file")
        .arg(tls.join("server.key"));
        credentials = Some(("bench".to_owned(), password));
        ca = Some(tls.join("ca.pem"));
    }
    let server = ServerProcess::spawn_with(
        "ingot",
        cmd,
        port,
        dir.join("ingot.log"),
        Duration::from_secs(30),
        ca.as_deref(),
    )?;
    let ca_pem = ca
        .map(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let target = Target {
        base: server.base_url.clone(),
        credentials,
        ca_pem,
    };
    Ok((server, target))
}

fn fresh(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// Runs the workload against a started server and stops it.
fn measure(
    label: &str,
    server: ServerProcess,
    target: &Target,
    cfg: &Config,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<ServerReport> {
    let ticks = clock_ticks();
    let pid = server.pid();
    println!(
        "bench api: {label} up at {} (pid {pid}) after {:.1} ms; log {}",
        server.base_url,
        server.cold_start.as_secs_f64() * 1000.0,
        server.log_path.display()
    );
    // Let start-up work settle before reading idle memory.
    std::thread::sleep(Duration::from_millis(500));
    let idle = sample_tree(pid, ticks)?;
    let cpu = move || {
        sample_tree(pid, ticks)
            .map(|s| s.cpu_secs)
            .unwrap_or(f64::NAN)
    };
    let outcome = runtime.block_on(workload::run(target, cfg, &cpu))?;
    let after: TreeSample = sample_tree(pid, ticks)?;
    println!(
        "bench api: {label}: enroll {:.2} s, detail x{} {:.2} s, lifecycle {:.2} s, {} errors",
        outcome.enroll.wall.as_secs_f64(),
        cfg.list_repeats,
        outcome.list.wall.as_secs_f64(),
        outcome.lifecycle.wall.as_secs_f64(),
        outcome.error_count
    );
    let cold_start = server.cold_start;
    let exit = match server.stop(Duration::from_secs(20)) {
        Ok(status) => status.to_string(),
        Err(err) => format!("{err:#}"),
    };
    Ok(ServerReport {
        label: label.to_owned(),
        cold_start,
        idle_rss_kib: idle.rss_kib,
        idle_pss_kib: idle.pss_kib,
        after_rss_kib: after.rss_kib,
        after_pss_kib: after.pss_kib,
        processes: after.processes,
        nodes: cfg.nodes,
        outcome,
        exit,
    })
}
