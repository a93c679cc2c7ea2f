//! `cargo xtask bench dhcp [--clients N] [--release] [--no-build]`: a PXE storm against
//! `ingot serve` and against dnsmasq with the same PXE configuration, in one run (root).
//!
//! Two network namespaces joined by a veth pair, nothing else in them and no route out: the
//! server's (10.78.0.1/21) runs one DHCP server at a time, the client's runs the load
//! generator (`load.rs`: `N` machines with distinct MACs, DISCOVER all at once, REQUEST on
//! each OFFER, one retransmission after 4 s). `ingot serve` runs full-mode DHCP with
//! discovery on (unknown machines get the agent's iPXE script), its leases in SQLite;
//! dnsmasq gets the same pool, lease time, PXE/iPXE boot files and `--no-ping` (ingot does
//! not probe addresses either). Prints, per server: clients answered on the first try,
//! drops (first DISCOVERs without an OFFER), clients bound, addresses given twice, OFFERs
//! per second, time to bind (p50/p99) and the server's CPU time; then ingot's ratio to
//! dnsmasq. Every process started here is stopped by PID and both namespaces are deleted.

pub mod load;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};

use crate::paths::{cargo, target_dir};
use crate::proc_stats::{clock_ticks, sample_tree};
use load::Figures;

const USAGE: &str = "usage: cargo xtask bench dhcp [--clients N] [--release] [--no-build]";
const SERVER_IP: &str = "10.78.0.1";
const POOL: (&str, &str) = ("10.78.0.10", "10.78.7.250");
const NETMASK: &str = "255.255.248.0";
const LEASE_SECS: u64 = 600;

#[derive(Debug)]
struct Args {
    clients: usize,
    release: bool,
    no_build: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut out = Args {
        clients: 1000,
        release: false,
        no_build: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--clients" => {
                let v = it.next().context("--clients needs a value")?;
                out.clients = v.parse().with_context(|| format!("--clients {v}"))?;
                ensure!(
                    (1..=2000).contains(&out.clients),
                    "--clients must be between 1 and 2000 (the pool holds 2001 addresses)"
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

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    ensure!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The two namespaces and the veth between them; deleted on drop.
struct Net {
    server: String,
    client: String,
    server_if: String,
    client_if: String,
}

impl Net {
    fn create() -> anyhow::Result<Net> {
        let id = std::process::id() % 100_000;
        let net = Net {
            server: format!("ingot-bds-{id}"),
            client: format!("ingot-bdc-{id}"),
            server_if: format!("bds{id}"),
            client_if: format!("bdc{id}"),
        };
        sh(&["ip", "netns", "add", &net.server])?;
        sh(&["ip", "netns", "add", &net.client])?;
        for ns in [&net.server, &net.client] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        sh(&[
            "ip",
            "link",
            "add",
            "name",
            &net.server_if,
            "netns",
            &net.server,
            "type",
            "veth",
            "peer",
            "name",
            &net.client_if,
            "netns",
            &net.client,
        ])?;
        let cidr = format!("{SERVER_IP}/21");
        sh(&[
            "ip",
            "-n",
            &net.server,
            "addr",
            "add",
            &cidr,
            "dev",
            &net.server_if,
        ])?;
        sh(&["ip", "-n", &net.server, "link", "set", &net.server_if, "up"])?;
        sh(&["ip", "-n", &net.client, "link", "set", &net.client_if, "up"])?;
        Ok(net)
    }

    fn exec(&self, ns: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A server process started here; SIGTERM, then SIGKILL, by its PID on drop.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ingot_config(dir: &Path, net: &Net) -> anyhow::Result<PathBuf> {
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initramfs.cpio.zst");
    std::fs::write(&kernel, b"kernel")?;
    std::fs::write(&initrd, b"initramfs")?;
    let config = format!(
        r#"database = "sqlite://{db}"
state_dir = "{state}"
api_listen = "127.0.0.1:6385"
auth_strategy = "noauth"

[netboot]
mode = "full"
interfaces = ["{iface}"]
server_ip = "{SERVER_IP}"
http_listen = "{SERVER_IP}:8080"
tftp = false
pool_start = "{start}"
pool_end = "{end}"
netmask = "{NETMASK}"
lease_secs = {LEASE_SECS}
agent_kernel = "{kernel}"
agent_initramfs = "{initrd}"

[discovery]
enabled = true
"#,
        db = dir.join("ingot.db").display(),
        state = dir.join("state").display(),
        iface = net.server_if,
        start = POOL.0,
        end = POOL.1,
        kernel = kernel.display(),
        initrd = initrd.display(),
    );
    let path = dir.join("ingot.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

fn start_ingot(ingot: &Path, dir: &Path, net: &Net) -> anyhow::Result<Started> {
    let config = ingot_config(dir, net)?;
    let log = std::fs::File::create(dir.join("ingot.log"))?;
    let child = net
        .exec(&net.server, ingot)
        .args(["serve", "--config"])
        .arg(&config)
        .env("INGOT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting ingot serve")?;
    Ok(Started(child))
}

fn start_dnsmasq(dir: &Path, net: &Net) -> anyhow::Result<Started> {
    let log = std::fs::File::create(dir.join("dnsmasq.log"))?;
    let range = format!("--dhcp-range={},{},{NETMASK},{LEASE_SECS}s", POOL.0, POOL.1);
    let child = net
        .exec(&net.server, Path::new("dnsmasq"))
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--pid-file=",
            "--bind-interfaces",
            "--quiet-dhcp",
            "--no-ping",
            "--dhcp-authoritative",
            "--dhcp-lease-max=4096",
            "--dhcp-match=set:ipxe,175",
            "--dhcp-match=set:efi,option:client-arch,7",
            "--dhcp-boot=tag:ipxe,http://10.78.0.1:8080/boot/ipxe",
            "--dhcp-boot=tag:!ipxe,tag:efi,snponly.efi",
            "--dhcp-boot=tag:!ipxe,tag:!efi,undionly.kpxe",
        ])
        .arg(format!("--interface={}", net.server_if))
        .arg(range)
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.join("dnsmasq.leases").display()
        ))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting dnsmasq")?;
    Ok(Started(child))
}

/// Runs the load generator in the client namespace; its figures.
fn storm(net: &Net, clients: usize) -> anyhow::Result<Figures> {
    let me = std::env::current_exe().context("locating xtask")?;
    let out = net
        .exec(&net.client, &me)
        .args(["bench", "dhcp-load", "--iface", &net.client_if])
        .args(["--clients", &clients.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("running the load generator")?;
    ensure!(out.status.success(), "the load generator failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .last()
        .context("no figures from the load generator")?;
    serde_json::from_str(line).with_context(|| format!("figures {line:?}"))
}

/// One server under the storm: its figures and CPU seconds.
fn measure(
    name: &str,
    server: &Started,
    net: &Net,
    clients: usize,
    dir: &Path,
) -> anyhow::Result<(Figures, f64)> {
    let ticks = clock_ticks();
    let before = sample_tree(server.0.id(), ticks)?;
    let figures = storm(net, clients).with_context(|| {
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        format!("{name} under the storm; its log:\n{log}")
    })?;
    let after = sample_tree(server.0.id(), ticks)?;
    Ok((figures, after.cpu_secs - before.cpu_secs))
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
    Ok(target_dir().join(profile).join("ingot"))
}

fn row(name: &str, f: &Figures, cpu: f64) {
    println!(
        "{name:<8} {:>6} {:>9} {:>6} {:>6} {:>6} {:>9.0} {:>9.0} {:>9.0} {:>7.2}",
        f.clients,
        f.offered_first_try,
        f.clients - f.offered_first_try,
        f.bound,
        f.addresses_given_twice,
        f.offers_per_sec,
        f.bound_p50_ms,
        f.bound_p99_ms,
        cpu
    );
}

/// `cargo xtask bench dhcp`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    for program in ["ip", "dnsmasq"] {
        ensure!(
            Command::new("which")
                .arg(program)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "bench dhcp needs `{program}` (.ci/setup installs it) and root"
        );
    }
    let ingot = build_ingot(&args)?;
    let net = Net::create().context("creating the namespaces (root is needed)")?;
    let dir = tempfile_dir()?;
    let mut results = Vec::new();
    {
        let server = start_ingot(&ingot, &dir, &net)?;
        results.push((
            "ingot",
            measure("ingot", &server, &net, args.clients, &dir)?,
        ));
    }
    {
        let server = start_dnsmasq(&dir, &net)?;
        results.push((
            "dnsmasq",
            measure("dnsmasq", &server, &net, args.clients, &dir)?,
        ));
    }
    println!(
        "\nPXE storm: {} machines, DISCOVER all at once, one retransmission after 4 s, ingot {} build",
        args.clients,
        if args.release { "release" } else { "debug" }
    );
    println!(
        "{:<8} {:>6} {:>9} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>7}",
        "server",
        "sent",
        "1st-offer",
        "drops",
        "bound",
        "twice",
        "offers/s",
        "bind p50",
        "bind p99",
        "cpu s"
    );
    for (name, (f, cpu)) in &results {
        row(name, f, *cpu);
    }
    if let [(_, (i, _)), (_, (d, _))] = results.as_slice()
        && d.offers_per_sec > 0.0
    {
        println!(
            "ingot/dnsmasq offers/s: {:.2}; answered on the first try: {} vs {}",
            i.offers_per_sec / d.offers_per_sec,
            i.offered_first_try,
            d.offered_first_try
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = target_dir().join(format!("bench-dhcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
