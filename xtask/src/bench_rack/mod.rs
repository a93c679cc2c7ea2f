//! `cargo xtask bench rack [--agents N] [--image-mib M] [--replicas R] [--pin] [--no-build]`:
//! N simulated machines against one `ingot serve` (release build, SQLite, loopback only), or
//! R replicas on a PostgreSQL the bench starts.
//!
//! Each machine (`sim.rs`) speaks the real agent protocol with the agent's own client and
//! fetches images with the agent's own downloader. The machines power on unregistered and
//! are discovered; then each is managed, cleaned (`provide`), deployed with a stored image
//! (`ingot://bench`, streamed from the controller over a signed URL, discarded) and
//! released (`undeploy`, cleaned again), all at once with fast track on, as an operator
//! would drive a new rack. Printed: each phase's wall time, the controller's CPU seconds
//! and peak RSS (total, and its anonymous memory sampled every 50 ms, per 100 machines), the
//! simulators' own CPU seconds, the agent API calls' p50/p99 (lookups and result reports),
//! the aggregate image throughput (first byte of the first download to the last byte of the
//! last) against loopback's ceiling measured in the same run (the same bytes over plain TCP
//! connections from memory, 1 MiB per system call: what the kernel moves), and the errors.
//! Targets (DESIGN.md, issue 13): 0 errors, image fan-out at 80% of the ceiling or better,
//! agent API p99 under 50 ms.
//!
//! The image is 64 MiB by default: with a few MiB each download lasts milliseconds and the
//! window measures how fast the conductor hands out deploys, not the data plane. The
//! simulators run from a release build of this bench (it builds one and runs it), since
//! they share the CPUs with the controller (`--no-build` runs as invoked: use
//! `target/release/xtask bench rack --no-build` for the same); `--pin` puts the controller
//! on CPU 0 and the simulators on the others, to tell the controller's latency from the
//! machine's saturation (the ceiling is then measured on every CPU).
//!
//! Not measured here: a replica's death (`controller/tests/it/replicas.rs` kills one of
//! three under 24 machines).

mod ceiling;
mod sim;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::paths::{cargo, target_dir};
use crate::proc_stats::{clock_ticks, kib_field, own_cpu_secs, sample_tree};
use crate::server::{ServerProcess, free_port};

const USAGE: &str = "usage: cargo xtask bench rack [--agents N] [--image-mib M] [--replicas 1|3] [--pin] [--no-build]";

#[derive(Debug)]
struct Args {
    agents: usize,
    image_mib: usize,
    /// 1: SQLite; more: PostgreSQL started by the bench.
    replicas: usize,
    /// The controllers on CPU 0, the simulated machines on the others (with two CPUs:
    /// one each), so the controller's latency is told from the machine's saturation.
    pin: bool,
    no_build: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut out = Args {
        agents: 100,
        image_mib: 64,
        replicas: 1,
        pin: false,
        no_build: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str, max: usize| -> anyhow::Result<usize> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            let n: usize = v
                .parse()
                .with_context(|| format!("{name} {v}: not a number"))?;
            if n == 0 || n > max {
                bail!("{name} must be between 1 and {max}");
            }
            Ok(n)
        };
        match arg.as_str() {
            "--agents" => out.agents = number("--agents", 20_000)?,
            "--image-mib" => out.image_mib = number("--image-mib", 1024)?,
            "--replicas" => out.replicas = number("--replicas", 8)?,
            "--pin" => out.pin = true,
            "--no-build" => out.no_build = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(out)
}

/// Entry point.
pub fn run(raw: &[String]) -> anyhow::Result<()> {
    let args = parse(raw)?;
    let bin = target_dir().join("release").join("ingot");
    if !args.no_build {
        // The simulated machines share the CPUs with the controller: they run optimized
        // too (this bench again from a release build of xtask), or their client code
        // would take CPU a real rack's machines spend on their own.
        // Two builds, not one: built together, the two packages' dependencies would get
        // their features unified and the controller would differ from the one other
        // benches build (and rebuild each time one follows the other).
        for package in [
            ["-p", "controller", "--bin", "ingot"],
            ["-p", "xtask", "--bin", "xtask"],
        ] {
            println!("bench rack: cargo build --release {}", package.join(" "));
            let st = cargo()
                .args(["build", "--release"])
                .args(package)
                .status()
                .context("running cargo build")?;
            if !st.success() {
                bail!("cargo build failed: {st}");
            }
        }
        if cfg!(debug_assertions) {
            use std::os::unix::process::CommandExt as _;
            let err = Command::new(target_dir().join("release").join("xtask"))
                .args(["bench", "rack", "--no-build"])
                .args(raw)
                .exec();
            return Err(err).context("running the release build of xtask");
        }
    }
    let work = target_dir().join("bench-rack");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    if args.pin {
        if cpus() < 2 {
            bail!("--pin needs two CPUs or more");
        }
        // This process (the simulated machines) off CPU 0; threads made later inherit it.
        pin_self(&format!("1-{}", cpus() - 1))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let image = image_bytes(args.image_mib);
    let pg = if args.replicas > 1 {
        Some(qemu_tests::pg::PgServer::shared().context("PostgreSQL is not installed")?)
    } else {
        None
    };
    let database = match &pg {
        Some(pg) => pg.create_database(),
        None => format!("sqlite://{}", work.join("ingot.db").display()),
    };
    let mut servers: Vec<ServerProcess> = Vec::new();
    let mut boot_urls = Vec::new();
    let first_state = work.join("r0").join("state");
    for r in 0..args.replicas {
        let dir = work.join(format!("r{r}"));
        let state = dir.join("state");
        if r == 0 {
            import_image(&bin, &state, &dir, &image)?;
        } else {
            share_state(&first_state, &state)?;
        }
        let (api_port, boot_port) = (free_port()?, free_port()?);
        let config = config(&dir, &state, &database, r, api_port, boot_port, args.agents)?;
        let mut cmd = if args.pin {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        cmd.arg("serve").arg("--config").arg(&config).env(
            "INGOT_LOG",
            std::env::var("BENCH_RACK_LOG").unwrap_or_else(|_| "warn".into()),
        );
        servers.push(ServerProcess::spawn(
            "ingot",
            cmd,
            api_port,
            dir.join("ingot.log"),
            Duration::from_secs(30),
        )?);
        boot_urls.push(format!("http://127.0.0.1:{boot_port}"));
    }
    let pg_pid = pg.as_ref().map(|p| p.pid());
    let result = runtime.block_on(drive(&args, &servers, &boot_urls, &image, pg_pid));
    for server in servers {
        let tail = server.log_tail(20);
        let _ = server.stop(Duration::from_secs(10));
        if result.is_err() {
            eprintln!("--- ingot log (last lines) ---\n{tail}");
        }
    }
    drop(pg);
    result
}

/// The machine's online CPUs (not `available_parallelism`, which counts this process's
/// affinity: once pinned, it says 1 and the bench would pin itself back onto CPU 0 alone).
fn cpus() -> usize {
    Command::new("getconf")
        .arg("_NPROCESSORS_ONLN")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

/// Every thread of this process on the CPUs `list` (taskset's syntax).
fn pin_self(list: &str) -> anyhow::Result<()> {
    let st = Command::new("taskset")
        .args(["-a", "-c", "-p", list])
        .arg(std::process::id().to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset")?;
    if !st.success() {
        bail!("taskset failed: {st}");
    }
    Ok(())
}

/// A replica's state dir: the first one's keys (queued commands and BMC secrets are sealed
/// with `secrets.key`, image URLs signed with `image-url.key`) and its images directory
/// (replicas serve images from one shared directory).
fn share_state(first: &Path, state: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(state)?;
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700))?;
    for key in ["secrets.key", "image-url.key"] {
        let from = first.join(key);
        if from.exists() {
            std::fs::copy(&from, state.join(key))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    std::os::unix::fs::symlink(first.join("images"), state.join("images"))
        .context("sharing the images directory")?;
    Ok(())
}

/// Incompressible bytes (the stored image's zstd is then as large as the raw one, so the
/// bytes on the wire are what was asked for).
fn image_bytes(mib: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    // A disk image: an MBR with one Linux partition over the rest (the import refuses raw
    // files without a partition table).
    bytes[..512].fill(0);
    let sectors = u32::try_from((mib << 20) / 512).unwrap_or(u32::MAX);
    let entry = &mut bytes[446..462];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.saturating_sub(2048).to_le_bytes());
    bytes[510] = 0x55;
    bytes[511] = 0xaa;
    bytes
}

fn import_image(bin: &Path, state: &Path, work: &Path, image: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(state)?;
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700))?;
    let raw = work.join("bench.raw");
    std::fs::write(&raw, image)?;
    let out = Command::new(bin)
        .args(["image", "import"])
        .arg(&raw)
        .arg("--state-dir")
        .arg(state)
        .output()
        .context("running ingot image import")?;
    if !out.status.success() {
        bail!(
            "ingot image import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn config(
    work: &Path,
    state: &Path,
    database: &str,
    replica: usize,
    api_port: u16,
    boot_port: u16,
    agents: usize,
) -> anyhow::Result<std::path::PathBuf> {
    let kernel = work.join("vmlinuz");
    let initramfs = work.join("initramfs.cpio.zst");
    std::fs::write(&kernel, vec![1u8; 4096])?;
    std::fs::write(&initramfs, vec![7u8; 1000])?;
    let text = format!(
        r#"api_listen = "127.0.0.1:{api_port}"
database = "{database}"
state_dir = "{state}"
conductor_name = "r{replica}"
enabled_hardware_types = ["manual"]

[netboot]
mode = "off"
http_listen = "127.0.0.1:{boot_port}"
agent_kernel = "{kernel}"
agent_initramfs = "{initramfs}"

[discovery]
enabled = true
rate_per_minute = {rate}
burst = {agents}

[conductor]
max_concurrent_deploys = {agents}
max_concurrent_cleanings = {agents}
power_sync_interval_secs = 0

[deploy]
fast_track = true
"#,
        state = state.display(),
        kernel = kernel.display(),
        initramfs = initramfs.display(),
        rate = agents.max(60) * 60,
    );
    let path = work.join("ingot.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The API client with the microversion that shows every field used here; verbs go to
/// the replicas in turn (any replica takes any request).
struct Api {
    http: reqwest::Client,
    bases: Vec<String>,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.call_at(0, method, path, body).await
    }

    async fn call_at(
        &self,
        replica: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let base = &self.bases[replica % self.bases.len()];
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .header("X-OpenStack-Ironic-API-Version", "1.96");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("calling {path}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Node UUID -> provision state.
    async fn states(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut path = "/v1/nodes?fields=uuid,provision_state&limit=1000".to_owned();
        loop {
            let (s, v) = self.call(reqwest::Method::GET, &path, None).await?;
            if s != 200 {
                bail!("listing nodes: {s} {v}");
            }
            for n in v["nodes"].as_array().cloned().unwrap_or_default() {
                out.push((
                    n["uuid"].as_str().unwrap_or_default().to_owned(),
                    n["provision_state"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            match v["next"].as_str() {
                Some(next) => {
                    path = next
                        .find("/v1/")
                        .map(|i| next[i..].to_owned())
                        .context("next link")?;
                }
                None => return Ok(out),
            }
        }
    }

    /// Waits until `count` nodes are in `state`; the time it took.
    async fn wait(&self, state: &str, count: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let states = self.states().await?;
            let there = states.iter().filter(|(_, s)| s == state).count();
            if there >= count {
                return Ok(());
            }
            if Instant::now() > deadline {
                let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
                for (_, s) in &states {
                    *by.entry(s.as_str()).or_default() += 1;
                }
                bail!("{there} of {count} nodes {state} after {limit:?}: {by:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sends the provision verb `target` to every node, 32 at a time, node `k` through
    /// replica `k` (in turn).
    async fn all(&self, nodes: &[String], target: &str) -> anyhow::Result<()> {
        use futures_util::StreamExt as _;
        let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(nodes.iter().enumerate())
            .map(|(k, uuid)| async move {
                let (s, v) = self
                    .call_at(
                        k,
                        reqwest::Method::PUT,
                        &format!("/v1/nodes/{uuid}/states/provision"),
                        Some(json!({"target": target})),
                    )
                    .await?;
                if s != 202 {
                    bail!("{target} {uuid}: {s} {v}");
                }
                Ok(())
            })
            .buffer_unordered(32)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// CPU seconds of all the servers' process trees.
fn cpu_of(servers: &[ServerProcess], ticks: f64) -> anyhow::Result<f64> {
    let mut cpu = 0.0;
    for s in servers {
        cpu += sample_tree(s.pid(), ticks)?.cpu_secs;
    }
    Ok(cpu)
}

/// Waits until every replica sees all of them alive (the ring is then complete a
/// heartbeat later).
async fn wait_replicas(api: &Api, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for r in 0..api.bases.len() {
        loop {
            let (s, v) = api
                .call_at(r, reqwest::Method::GET, "/v1/conductors", None)
                .await?;
            let alive = v["conductors"].as_array().map_or(0, |l| {
                l.iter().filter(|c| c["alive"] == json!(true)).count()
            });
            if s == 200 && alive == count {
                break;
            }
            if Instant::now() > deadline {
                bail!("replica {r} sees {alive} of {count} alive: {v}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    Ok(())
}

async fn drive(
    args: &Args,
    servers: &[ServerProcess],
    boot_urls: &[String],
    image: &[u8],
    pg: Option<u32>,
) -> anyhow::Result<()> {
    let n = args.agents;
    let api = Api {
        http: reqwest::Client::builder().no_proxy().build()?,
        bases: servers.iter().map(|s| s.base_url.clone()).collect(),
    };
    if servers.len() > 1 {
        wait_replicas(&api, servers.len()).await?;
    }
    let ticks = clock_ticks();
    let idle = cpu_of(servers, ticks)?;
    let me = std::process::id();
    let sims_idle = own_cpu_secs(me, ticks)?;
    let pg_idle = pg.map(|pid| sample_tree(pid, ticks)).transpose()?;
    let stats = Arc::new(Mutex::new(sim::Stats::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let store = if servers.len() > 1 {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "bench rack: {n} simulated machines, image {} MiB, {} replica(s) on {store}, loopback",
        args.image_mib,
        servers.len()
    );
    // The controllers' own memory (anonymous pages; image files mapped while served are
    // page cache and count in VmHWM): sampled every 50 ms, the largest sum kept.
    let pids: Vec<u32> = servers.iter().map(ServerProcess::pid).collect();
    let anon_peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = tokio::spawn({
        let anon_peak = anon_peak.clone();
        let mut stop = stop_rx.clone();
        async move {
            loop {
                let kib: u64 = pids
                    .iter()
                    .map(|p| kib_field(&format!("/proc/{p}/status"), "RssAnon:").unwrap_or(0))
                    .sum();
                anon_peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    });
    let mut phases: Vec<(String, Duration)> = Vec::new();
    let t = Instant::now();
    let mut machines = Vec::new();
    // Where each phase began, for the agent API's latency per phase.
    let mut starts: Vec<Instant> = vec![t];
    for i in 0..n {
        // Each machine starts at another replica and moves on when it stops answering.
        let urls: Vec<String> = (0..boot_urls.len())
            .map(|k| boot_urls[(i + k) % boot_urls.len()].clone())
            .collect();
        let ctl = agent::run::client::HttpController::with_source(&urls, None, sim::source(i))?;
        machines.push(tokio::spawn(sim::run(
            i,
            ctl,
            stats.clone(),
            stop_rx.clone(),
        )));
    }
    let long = Duration::from_secs(120 + n as u64 / 2);
    api.wait("enroll", n, long).await.context("discovery")?;
    phases.push(("discover".into(), t.elapsed()));
    let nodes: Vec<String> = api.states().await?.into_iter().map(|(u, _)| u).collect();
    let t = Instant::now();
    starts.push(t);
    api.all(&nodes, "manage").await?;
    api.wait("manageable", n, long).await.context("manage")?;
    phases.push(("manage".into(), t.elapsed()));
    let t = Instant::now();
    starts.push(t);
    api.all(&nodes, "provide").await?;
    api.wait("available", n, long).await.context("clean")?;
    phases.push(("clean (provide)".into(), t.elapsed()));
    for uuid in &nodes {
        let (s, v) = api
            .call(
                reqwest::Method::PATCH,
                &format!("/v1/nodes/{uuid}"),
                Some(json!([
                    {"op": "add", "path": "/instance_info/image_source", "value": "ingot://bench"},
                    {"op": "add", "path": "/instance_info/root_gb", "value": 1}
                ])),
            )
            .await?;
        if s != 200 {
            bail!("setting the image of {uuid}: {s} {v}");
        }
    }
    let t = Instant::now();
    starts.push(t);
    api.all(&nodes, "active").await?;
    api.wait("active", n, long).await.context("deploy")?;
    let deploy = t.elapsed();
    phases.push(("deploy".into(), deploy));
    let t = Instant::now();
    starts.push(t);
    api.all(&nodes, "deleted").await?;
    api.wait("available", n, long).await.context("undeploy")?;
    phases.push(("release (undeploy + clean)".into(), t.elapsed()));
    let busy = cpu_of(servers, ticks)?;
    let sims_cpu = own_cpu_secs(me, ticks)? - sims_idle;
    let pg_busy = pg.map(|pid| sample_tree(pid, ticks)).transpose()?;
    let hwm_kib: u64 = servers.iter().map(|s| peak_rss_kib(s.pid())).sum();
    let _ = stop_tx.send(true);
    for m in machines {
        let _ = m.await;
    }
    let _ = sampler.await;
    let anon_kib = anon_peak.load(std::sync::atomic::Ordering::Relaxed);

    // Loopback's ceiling, as many connections at once, on every CPU (as the controller and
    // the machines had between them).
    if args.pin {
        pin_self(&format!("0-{}", cpus() - 1))?;
    }
    let ceiling = ceiling::loopback(image, n).await?;
    let s = stats.lock().unwrap_or_else(|e| e.into_inner());
    let mut calls = s.calls_us.clone();
    calls.sort_unstable();
    let first = s.fetches.iter().map(|f| f.0).min();
    let last = s.fetches.iter().map(|f| f.1).max();
    let fanout = match (first, last) {
        (Some(a), Some(b)) if b > a => s.image_bytes as f64 / (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let cpu = busy - idle;
    let per100 = 100.0 / n as f64;
    println!();
    for (name, d) in &phases {
        println!("  {name:<28} {:>9.2} s", d.as_secs_f64());
    }
    println!(
        "  controller CPU               {cpu:>9.2} s ({:.3} s per 100 machines)",
        cpu * per100
    );
    println!(
        "  simulated machines' CPU      {sims_cpu:>9.2} s (the bench's own process{})",
        if args.pin {
            "; pinned off CPU 0, the controller on it"
        } else {
            "; same CPUs as the controller"
        }
    );
    if let (Some(a), Some(b)) = (pg_idle, pg_busy) {
        let db = b.cpu_secs - a.cpu_secs;
        println!(
            "  PostgreSQL CPU               {db:>9.2} s ({:.3} s per 100 machines; RSS {:.1} MiB over {} processes)",
            db * per100,
            b.rss_kib as f64 / 1024.0,
            b.processes
        );
    }
    println!(
        "  controller peak RSS          {:>9.1} MiB (with the image file mapped while served)",
        hwm_kib as f64 / 1024.0,
    );
    println!(
        "  controller peak anonymous    {:>9.1} MiB ({:.1} MiB per 100 machines; its own memory)",
        anon_kib as f64 / 1024.0,
        anon_kib as f64 / 1024.0 * per100
    );
    println!(
        "  agent API calls              {:>9} (lookups + reports) p50 {:.1} ms  p99 {:.1} ms  (target p99 < 50 ms)",
        calls.len(),
        percentile(&calls, 0.50),
        percentile(&calls, 0.99)
    );
    for (name, v) in [("lookups", &s.lookups_us), ("reports", &s.reports_us)] {
        let mut v = v.clone();
        v.sort_unstable();
        println!(
            "    {name:<26} {:>9} p50 {:.1} ms  p99 {:.1} ms",
            v.len(),
            percentile(&v, 0.50),
            percentile(&v, 0.99)
        );
    }
    for (k, (name, _)) in phases.iter().enumerate() {
        let (from, to) = (starts.get(k).copied(), starts.get(k + 1).copied());
        let mut v: Vec<u64> = s
            .calls_at
            .iter()
            .zip(&s.calls_us)
            .filter(|(at, _)| from.is_some_and(|f| **at >= f) && to.is_none_or(|t| **at < t))
            .map(|(_, us)| *us)
            .collect();
        v.sort_unstable();
        println!(
            "    during {name:<19} {:>9} p50 {:.1} ms  p99 {:.1} ms",
            v.len(),
            percentile(&v, 0.50),
            percentile(&v, 0.99)
        );
    }
    println!(
        "  image fan-out                {:>9.1} MiB/s ({} fetches, {:.1} MiB)",
        fanout / 1048576.0,
        s.fetches.len(),
        s.image_bytes as f64 / 1048576.0
    );
    println!(
        "  loopback ceiling             {:>9.1} MiB/s (kernel: TCP from memory, 1 MiB calls) -> {:.0}% (target >= 80%)",
        ceiling / 1048576.0,
        if ceiling > 0.0 {
            100.0 * fanout / ceiling
        } else {
            0.0
        }
    );
    println!("  errors                       {:>9}", s.errors);
    for e in &s.error_samples {
        println!("    {e}");
    }
    let results = json!({
        "agents": n, "image_mib": args.image_mib, "replicas": servers.len(),
        "phases_s": phases.iter().map(|(k, d)| (k.clone(), d.as_secs_f64())).collect::<std::collections::BTreeMap<_, _>>(),
        "controller_cpu_s": cpu, "simulators_cpu_s": sims_cpu, "pinned": args.pin,
        "postgres_cpu_s": match (pg_idle, pg_busy) { (Some(a), Some(b)) => json!(b.cpu_secs - a.cpu_secs), _ => Value::Null }, "controller_peak_rss_kib": hwm_kib, "controller_peak_anon_kib": anon_kib,
        "agent_api_p50_ms": percentile(&calls, 0.5), "agent_api_p99_ms": percentile(&calls, 0.99),
        "image_fanout_bps": fanout, "loopback_ceiling_bps": ceiling, "errors": s.errors,
    });
    let out = target_dir()
        .join("bench-rack")
        .join(format!("results-{}.json", servers.len()));
    std::fs::write(&out, serde_json::to_string_pretty(&results)?)?;
    println!("figures written to {}", out.display());
    if s.errors > 0 {
        bail!("{} errors during the run", s.errors);
    }
    Ok(())
}

/// `VmHWM` (peak RSS) of the process, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), "VmHWM:").unwrap_or(0)
}
