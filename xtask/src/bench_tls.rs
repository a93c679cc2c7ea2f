//! `cargo xtask bench tls [--requests N] [--release] [--no-build]`: what TLS costs the agent
//! protocol on the provisioning listener, on the loopback.
//!
//! Starts `ingot serve` twice on 127.0.0.1 (fresh state each): once with `[tls]` (`ingot
//! certs init`, the agent API on the HTTPS listener) and once without (the agent API on the
//! plain listener). Against each it sends `N` agent heartbeats without a token (the
//! controller answers 401 before any store work, so what is measured is the transport),
//! first each on a new connection (a TCP connect, and with TLS a full handshake, per request:
//! what an agent pays when its connection was dropped) and then all on one kept-alive
//! connection. Prints latency percentiles per mode, the handshake cost (new connection minus
//! kept-alive, TLS minus plain) and the server's CPU time per request. The client verifies
//! the server under the CA, as the agent does (ECDSA P-256, rustls on ring both sides).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use crate::paths::{cargo, target_dir};
use crate::proc_stats::{clock_ticks, sample_tree};
use crate::server::{ServerProcess, free_port};

const USAGE: &str = "usage: cargo xtask bench tls [--requests N] [--release] [--no-build]";

/// Parsed command line.
#[derive(Debug)]
struct Args {
    requests: usize,
    release: bool,
    no_build: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut out = Args {
        requests: 500,
        release: false,
        no_build: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--requests" => {
                let v = it.next().context("--requests needs a value")?;
                out.requests = v.parse().with_context(|| format!("--requests {v}"))?;
                ensure!(
                    (10..=100_000).contains(&out.requests),
                    "--requests must be between 10 and 100000"
                );
            }
            "--release" => out.release = true,
            "--no-build" => out.no_build = true,
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(out)
}

/// Latencies of one mode.
#[derive(Debug)]
struct Mode {
    label: String,
    latencies: Vec<Duration>,
    server_cpu_secs: f64,
}

impl Mode {
    fn percentile(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).copied().unwrap_or_default()
    }

    fn mean(&self) -> Duration {
        let n = u32::try_from(self.latencies.len())
            .unwrap_or(u32::MAX)
            .max(1);
        self.latencies.iter().sum::<Duration>() / n
    }

    fn cpu_per_request_us(&self) -> f64 {
        self.server_cpu_secs * 1e6 / self.latencies.len().max(1) as f64
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let ingot = build_ingot(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let mut modes = Vec::new();
    for tls in [false, true] {
        modes.extend(bench_server(&ingot, tls, args.requests, &runtime)?);
    }
    println!(
        "\nagent heartbeats (401, no store work) on 127.0.0.1, {} each, ingot {} build",
        args.requests,
        if args.release { "release" } else { "debug" }
    );
    println!(
        "  {:<34} {:>9} {:>9} {:>9} {:>9} {:>14}",
        "mode", "mean", "p50", "p90", "p99", "server CPU/req"
    );
    for m in &modes {
        println!(
            "  {:<34} {:>6.0} µs {:>6.0} µs {:>6.0} µs {:>6.0} µs {:>11.0} µs",
            m.label,
            m.mean().as_secs_f64() * 1e6,
            m.percentile(0.5).as_secs_f64() * 1e6,
            m.percentile(0.9).as_secs_f64() * 1e6,
            m.percentile(0.99).as_secs_f64() * 1e6,
            m.cpu_per_request_us(),
        );
    }
    if let [plain_new, plain_kept, tls_new, tls_kept] = modes.as_slice() {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let handshake = us(tls_new.mean()) - us(plain_new.mean());
        println!(
            "  TLS handshake (new connection, TLS minus plain): {handshake:.0} µs per connection, \
             server CPU {:.0} µs",
            tls_new.cpu_per_request_us() - plain_new.cpu_per_request_us()
        );
        println!(
            "  TLS on a kept-alive connection (TLS minus plain): {:.0} µs per request",
            us(tls_kept.mean()) - us(plain_kept.mean())
        );
    }
    Ok(())
}

fn build_ingot(args: &Args) -> anyhow::Result<PathBuf> {
    let profile = if args.release { "release" } else { "debug" };
    if !args.no_build {
        let mut cmd = cargo();
        cmd.args(["build", "-p", "controller", "--bin", "ingot"]);
        if args.release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build")?;
        ensure!(
            status.success(),
            "cargo build -p controller failed: {status}"
        );
    }
    let bin = target_dir().join(profile).join("ingot");
    ensure!(bin.exists(), "{} does not exist", bin.display());
    Ok(bin)
}

/// Starts one `ingot serve` (with or without `[tls]`) and measures both connection modes.
fn bench_server(
    ingot: &Path,
    tls: bool,
    requests: usize,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Vec<Mode>> {
    let name = if tls { "https" } else { "http" };
    let dir = target_dir().join("bench-tls").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (api, plain, secure) = (free_port()?, free_port()?, free_port()?);
    let mut config = format!(
        "api_listen = \"127.0.0.1:{api}\"\nstate_dir = \"{state}\"\n\
         database = \"sqlite://{state}/ingot.db\"\n\n\
         [netboot]\nhttp_listen = \"127.0.0.1:{plain}\"\nhttps_listen = \"127.0.0.1:{secure}\"\n\n\
         [discovery]\nenabled = false\n",
        state = dir.display(),
    );
    let mut ca = None;
    if tls {
        let tls_dir = dir.join("tls");
        let out = std::process::Command::new(ingot)
            .args(["certs", "init", "--ip", "127.0.0.1", "--dir"])
            .arg(&tls_dir)
            .output()
            .context("running ingot certs init")?;
        ensure!(
            out.status.success(),
            "ingot certs init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        config.push_str(&format!(
            "\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            tls_dir.join("server.pem").display(),
            tls_dir.join("server.key").display()
        ));
        ca = Some(std::fs::read(tls_dir.join("ca.pem")).context("reading the CA")?);
    }
    let config_path = dir.join("ingot.toml");
    std::fs::write(&config_path, config).context("writing the config")?;
    let mut cmd = std::process::Command::new(ingot);
    cmd.args(["serve", "--config"])
        .arg(&config_path)
        .env_remove("INGOT_CONFIG")
        .env("INGOT_LOG", "warn");
    let server = ServerProcess::spawn(
        &format!("ingot ({name})"),
        cmd,
        api,
        dir.join("ingot.log"),
        Duration::from_secs(30),
    )?;
    let base = if tls {
        format!("https://127.0.0.1:{secure}")
    } else {
        format!("http://127.0.0.1:{plain}")
    };
    let pid = server.pid();
    let r = runtime.block_on(async {
        let mut modes = Vec::new();
        for fresh in [true, false] {
            let client = client(ca.as_deref(), fresh)?;
            // Warm-up: the listener is up and the path answers 401.
            for _ in 0..10 {
                heartbeat(&client, &base).await?;
            }
            let ticks = clock_ticks();
            let before = sample_tree(pid, ticks)?;
            let mut latencies = Vec::with_capacity(requests);
            for _ in 0..requests {
                let t = Instant::now();
                heartbeat(&client, &base).await?;
                latencies.push(t.elapsed());
            }
            let after = sample_tree(pid, ticks)?;
            modes.push(Mode {
                label: format!(
                    "{} {}",
                    name.to_uppercase(),
                    if fresh {
                        "new connection each"
                    } else {
                        "one kept-alive connection"
                    }
                ),
                latencies,
                server_cpu_secs: after.cpu_secs - before.cpu_secs,
            });
        }
        anyhow::Ok(modes)
    });
    let tail = server.log_tail(20);
    server.stop(Duration::from_secs(5))?;
    r.with_context(|| format!("ingot serve ({name}) log:\n{tail}"))
}

/// A client as the agent's: no proxy, the CA the only root; `fresh`: no connection reuse.
fn client(ca_pem: Option<&[u8]>, fresh: bool) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().no_proxy();
    if fresh {
        b = b.pool_max_idle_per_host(0);
    }
    b = match ca_pem {
        Some(pem) => b.tls_certs_only(
            reqwest::Certificate::from_pem_bundle(pem).context("parsing the CA certificate")?,
        ),
        None => b.tls_certs_only(Vec::new()),
    };
    b.build().context("building the HTTP client")
}

/// One heartbeat without a token: the controller must answer 401.
async fn heartbeat(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let status = client
        .post(format!("{base}/agent/v1/heartbeat"))
        .header("content-type", "application/json")
        .body(r#"{"node_uuid":"00000000-0000-4000-8000-000000000001","state":{"state":"idle"}}"#)
        .send()
        .await
        .with_context(|| format!("POST {base}/agent/v1/heartbeat"))?
        .status();
    ensure!(
        status.as_u16() == 401,
        "heartbeat answered {status}, want 401"
    );
    Ok(())
}
