//! The agent as PID 1 of the deploy ramdisk.
//!
//! PID 1 mounts the pseudo filesystems, reads the kernel command line and forks: the child
//! is the agent (coldplug beside the network bring-up, then the protocol loop); each boot
//! stage is timed ([`timeline`]); PID 1 itself only reaps zombies (orphans
//! are re-parented to it) so that it never steals the exit status of a command the agent
//! runs. PID 1 never returns (gotcha G5): when the agent child ends, or on any fatal error,
//! it logs to the console, waits `ingot.fatal_delay` and reboots or powers off.

pub mod coldplug;
pub mod dhcp;
pub mod lease;
pub mod net;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use nix::mount::{MsFlags, mount};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use tracing_subscriber::layer::SubscriberExt as _;

use self::coldplug::Lookup as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cmdline::{AgentConfig, OnFatal};
use crate::run::machine::Halt;

pub use crate::boot::uptime;

/// Mounts /proc, /sys, /dev (devtmpfs), /run and /tmp; returns the failures.
pub fn mount_pseudo_filesystems() -> Vec<String> {
    let table: [(&str, &str, &str, MsFlags, Option<&str>); 6] = [
        (
            "proc",
            "/proc",
            "proc",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "efivarfs",
            "/sys/firmware/efi/efivars",
            "efivarfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
    ];
    let mut errors = Vec::new();
    for (src, target, fstype, flags, data) in table {
        if target.contains("efivars") && !Path::new("/sys/firmware/efi").exists() {
            continue;
        }
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(Some(src), target, Some(fstype), flags, data) {
            // EBUSY: the kernel (devtmpfs.mount=1) or someone else mounted it already.
            if e != nix::errno::Errno::EBUSY {
                errors.push(format!("mount {fstype} on {target}: {e}"));
            }
        }
    }
    errors
}

fn console(msg: &str) {
    use std::io::Write;
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "ingot-agent: [{:.3}] {msg}", uptime().as_secs_f64());
}

/// Syncs, then reboots or powers off; never returns.
pub fn halt(h: Halt) -> ! {
    nix::unistd::sync();
    let mode = match h {
        Halt::Reboot => RebootMode::RB_AUTOBOOT,
        Halt::PowerOff => RebootMode::RB_POWER_OFF,
    };
    console(&format!("{h:?} now"));
    let Err(e) = reboot(mode);
    console(&format!("reboot(2) failed: {e}"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Logs a fatal error, waits, then reboots or powers off as the command line says.
pub fn fatal(cfg: &AgentConfig, msg: &str) -> ! {
    let h = match cfg.on_fatal {
        OnFatal::Reboot => Halt::Reboot,
        OnFatal::PowerOff => Halt::PowerOff,
    };
    console(&format!(
        "FATAL: {msg}; {h:?} in {} s",
        cfg.fatal_delay.as_secs()
    ));
    std::thread::sleep(cfg.fatal_delay);
    halt(h)
}

/// Entry point when the process is PID 1 (or `/init`). Never returns.
pub fn pid1_main() -> ! {
    let t0 = uptime();
    let mount_errors = mount_pseudo_filesystems();
    let mounted = uptime();
    let (cfg, cfg_error) = match crate::cmdline::read() {
        Ok(c) => (c, None),
        Err(e) => (AgentConfig::default(), Some(format!("{e:#}"))),
    };
    console(&format!("PID 1 start at uptime {:.3} s", t0.as_secs_f64()));
    crate::boot::start(t0);
    // SAFETY: no other thread exists yet (nothing above spawns one), so the child may run
    // any code.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = std::panic::catch_unwind(|| {
                agent_main(&cfg, cfg_error, mount_errors, (t0, mounted))
            });
            let Err(p) = code;
            console(&format!("agent panicked: {p:?}"));
            std::process::exit(1)
        }
        Ok(ForkResult::Parent { child }) => reap(&cfg, child),
        Err(e) => {
            console(&format!(
                "fork failed ({e}): running the agent in PID 1 without reaping"
            ));
            agent_main(&cfg, cfg_error, mount_errors, (t0, mounted))
        }
    }
}

/// PID 1 after the fork: reap every child; when the agent ends, it is fatal.
fn reap(cfg: &AgentConfig, agent: Pid) -> ! {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => {
                fatal(cfg, &format!("the agent exited with status {code}"))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == agent => {
                fatal(cfg, &format!("the agent was killed by {sig}"))
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                console(&format!("waitpid: {e}"));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn init_console_logging(filter: Option<&str>) {
    struct Uptime;
    impl tracing_subscriber::fmt::time::FormatTime for Uptime {
        fn format_time(
            &self,
            w: &mut tracing_subscriber::fmt::format::Writer<'_>,
        ) -> std::fmt::Result {
            write!(w, "[{:9.3}]", uptime().as_secs_f64())
        }
    }
    let (targets, bad) = crate::cli::log_targets(filter);
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_timer(Uptime)
        .with_ansi(false)
        // The builder's own default is INFO; the targets decide.
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .finish()
        .with(targets)
        .try_init();
    if let Some(bad) = bad {
        tracing::warn!("ingot.log: {bad}; logging at info");
    }
}

/// Loads the modules of the present devices on a thread of its own; `done` turns true
/// when the loads are over. The report is logged and recorded as the `coldplug` stage.
fn start_coldplug(done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = uptime();
        // The NICs' PCI enabling (ACPI _PRT) runs beside the NIC driver's load.
        let enabling = std::thread::spawn(|| {
            let t = uptime();
            let n = coldplug::enable_nics(Path::new("/sys"));
            (n, t, uptime())
        });
        let kver = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let mdir = Path::new("/lib/modules").join(&kver);
        match coldplug::ModuleIndex::load(&mdir) {
            Ok(idx) => {
                let loader = coldplug::FinitLoader { dir: mdir.clone() };
                let mut r = coldplug::coldplug(
                    Path::new("/sys"),
                    &idx,
                    &loader,
                    10,
                    coldplug::NIC_FIRST_MAX,
                );
                // /dev/ipmi0 (the BMC address in the inventory) needs ipmi_devintf, which no
                // device alias names: load it when a system interface driver came in.
                if r.loaded
                    .iter()
                    .any(|p| coldplug::module_name(p) == "ipmi_si")
                {
                    for p in idx.load_order("ipmi_devintf") {
                        match coldplug::ModuleLoader::load(&loader, &p, false) {
                            Ok(()) => r.loaded.push(p),
                            Err(e) => r.failed.push((p, e.to_string())),
                        }
                    }
                }
                // Software RAID (`md/`): the md driver and its personalities, which no device
                // alias names either; loaded here so that steps and deploys never load modules.
                for m in crate::md::host::MODULES {
                    for p in idx.load_order(m) {
                        match coldplug::ModuleLoader::load(&loader, &p, false) {
                            Ok(()) => r.loaded.push(p),
                            Err(e) => r.failed.push((p, e.to_string())),
                        }
                    }
                }
                for (m, e) in &r.failed {
                    tracing::warn!(module = %m, error = %e, "module not loaded");
                }
                let slowest: Vec<String> = r
                    .timings
                    .iter()
                    .take(3)
                    .map(|(p, d)| format!("{}={}ms", coldplug::module_name(p), d.as_millis()))
                    .collect();
                let detail = format!(
                    "{} modules loaded, {} failed, {} scans; slowest: {}",
                    r.loaded.len(),
                    r.failed.len(),
                    r.passes,
                    slowest.join(" ")
                );
                if let Some(tl) = crate::boot::boot() {
                    tl.stage("coldplug", start, uptime(), detail);
                }
            }
            Err(e) => {
                tracing::warn!(dir = %mdir.display(), error = %e, "no module index: skipping coldplug")
            }
        }
        if let Ok((n, t, end)) = enabling.join()
            && n > 0
            && let Some(tl) = crate::boot::boot()
        {
            tl.stage("enable", t, end, format!("{n} PCI NICs enabled"));
        }
        done.store(true, Ordering::SeqCst);
    })
}

/// The ramdisk agent: modules, network, protocol loop. Never returns.
fn agent_main(
    cfg: &AgentConfig,
    cfg_error: Option<String>,
    mount_errors: Vec<String>,
    (init, mounted): (Duration, Duration),
) -> ! {
    // The module loads go first: everything else waits for drivers. The loader thread logs
    // only when it is done, after the console logging below is set up.
    let loads_done = Arc::new(AtomicBool::new(false));
    let loads = start_coldplug(loads_done.clone());
    init_console_logging(cfg.log.as_deref());
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        uptime_ms = uptime().as_millis() as u64,
        "ingot-agent ramdisk starting"
    );
    let tl = crate::boot::start(init);
    tl.stage("mounts", init, mounted, "pseudo filesystems".into());
    for e in &mount_errors {
        tracing::warn!("{e}");
    }
    if let Some(e) = cfg_error {
        fatal(cfg, &format!("bad kernel command line: {e}"));
    }
    if cfg.urls.is_empty() {
        fatal(cfg, "no ingot.url= on the kernel command line");
    }

    // An IPv4 controller needs no IPv6 on the NICs. Without it no IPv6 multicast join
    // follows the carrier: each join rewrites the NIC's receive filter, and QEMU's e1000
    // holds received frames for 1 s after every RCTL write (a join that comes late, with
    // the storage probes busy, delayed the DHCP offer by 0.5 s).
    if cfg.urls.iter().all(|u| ipv4_literal_host(u)) {
        for f in ["all", "default"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{f}/disable_ipv6"), "1");
        }
    }
    // The runtime and the HTTP client are built on a thread of their own while the NIC
    // comes up: off the path from the lease to the lookup.
    let opts = crate::run::RunOptions {
        urls: cfg.urls.clone(),
        ca_sha256: cfg.ca_sha256,
        boot_mac: cfg.boot_mac.clone(),
        lldp_timeout: cfg.lldp_timeout,
    };
    let (u, pin) = (opts.urls.clone(), opts.ca_sha256);
    let client = std::thread::spawn(move || -> anyhow::Result<_> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok((
            rt,
            crate::run::client::HttpController::with_replicas(&u, pin)?,
        ))
    });
    // The inventory (all but the addresses) is collected as soon as the loads are over,
    // while DHCP may still wait for its answer.
    let early = std::thread::spawn(move || {
        if loads.join().is_err() {
            tracing::warn!("the module loader thread panicked");
        }
        Some(crate::inventory::collect_live())
    });

    // The network bring-up runs beside the module loads: a NIC gets DHCP as soon as its
    // driver is in and it has carrier, while storage drivers are still probing.
    let mut tries = 0;
    loop {
        tries += 1;
        let t = std::time::Instant::now();
        let timeouts = net::NetTimeouts {
            carrier: Duration::from_secs(10),
            dhcp: Duration::from_secs(20),
            settle: Duration::from_secs(2),
        };
        let done = || loads_done.load(Ordering::SeqCst);
        match net::bring_up(
            Path::new("/sys"),
            Path::new("/etc"),
            cfg.boot_mac.as_deref(),
            timeouts,
            &done,
            Some(tl),
        ) {
            Ok(r) if !r.leases.is_empty() => {
                tracing::info!(
                    ms = t.elapsed().as_millis() as u64,
                    nic = %r.leases[0].0,
                    "network up"
                );
                break;
            }
            Ok(r) => {
                tracing::warn!(nics = ?r.nics, no_carrier = ?r.no_carrier, "no DHCP lease on any NIC")
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "network bring-up failed"),
        }
        if tries >= 3 {
            fatal(cfg, "no network after 3 attempts");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    // The lookup's inventory must see every disk: wait for the loads (and the inventory
    // collected after them) to end.
    let settle = uptime();
    let early = early.join().unwrap_or_else(|_| {
        tracing::warn!("the module loader or inventory thread panicked");
        None
    });
    let settled = uptime();
    if settled > settle + Duration::from_millis(1) {
        tl.stage(
            "settle",
            settle,
            settled,
            "waiting for module loads and the inventory".into(),
        );
    }

    let (rt, ctl) = match client.join() {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => fatal(cfg, &format!("{e:#}")),
        Err(_) => fatal(cfg, "the thread building the HTTP client panicked"),
    };
    let h = rt.block_on(crate::run::run_with(&ctl, &opts, early));
    halt(h)
}

/// Whether the URL's host is an IPv4 literal (`http://10.0.2.2:6385`). Pure.
pub fn ipv4_literal_host(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    host.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_literal_hosts() {
        assert!(ipv4_literal_host("http://10.0.2.2:6385"));
        assert!(ipv4_literal_host("https://192.0.2.1/x"));
        assert!(ipv4_literal_host("http://192.0.2.1"));
        assert!(!ipv4_literal_host("http://[fd00::1]:6385"));
        assert!(!ipv4_literal_host("http://ingot.lab:6385"));
        assert!(!ipv4_literal_host("http://10.0.2.2.example:80"));
    }
}
