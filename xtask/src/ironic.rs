//! Real OpenStack Ironic 39.0.0, run standalone as the peer for benches and client checks.
//!
//! Ironic is installed from PyPI into a cached venv under the target directory and runs as one
//! process (`ironic`, API and conductor together) with SQLite, noauth, only the fake-hardware
//! interfaces and `rpc_transport = none`, listening on 127.0.0.1 only.
//! `cargo xtask ironic serve` runs it in the foreground; `cargo xtask ironic clients` runs the
//! client session scripts (`controller/tests/clients/`) against it, which is how those scripts
//! were validated.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::paths::{target_dir, workspace_root};
use crate::pyvenv::Venv;
use crate::server::{ServerProcess, free_port};

/// The cached venv holding Ironic (the peer version DESIGN.md §7 compares against, pinned in
/// `python/ironic.txt`).
pub fn venv() -> anyhow::Result<Venv> {
    Venv::ensure("ironic")
}

/// The cached venv holding the pinned clients (shared with the tests).
pub fn clients_venv() -> anyhow::Result<Venv> {
    Venv::ensure("clients")
}

fn config(dir: &Path, port: u16) -> String {
    let db = dir.join("ironic.db");
    let locks = dir.join("locks");
    format!(
        "[DEFAULT]\n\
         auth_strategy = noauth\n\
         rpc_transport = none\n\
         host = ironic-peer\n\
         use_stderr = true\n\
         enabled_hardware_types = fake-hardware\n\
         enabled_bios_interfaces = fake,no-bios\n\
         enabled_boot_interfaces = fake\n\
         enabled_console_interfaces = fake,no-console\n\
         enabled_deploy_interfaces = fake\n\
         enabled_firmware_interfaces = fake,no-firmware\n\
         enabled_inspect_interfaces = fake,no-inspect\n\
         enabled_management_interfaces = fake\n\
         enabled_network_interfaces = noop\n\
         default_network_interface = noop\n\
         enabled_power_interfaces = fake\n\
         enabled_raid_interfaces = fake,no-raid,agent\n\
         enabled_rescue_interfaces = fake,no-rescue\n\
         enabled_storage_interfaces = noop\n\
         enabled_vendor_interfaces = fake,no-vendor\n\
         [api]\n\
         host_ip = 127.0.0.1\n\
         port = {port}\n\
         [database]\n\
         connection = sqlite:///{db}\n\
         [dhcp]\n\
         dhcp_provider = none\n\
         [oslo_concurrency]\n\
         lock_path = {locks}\n",
        db = db.display(),
        locks = locks.display(),
    )
}

/// A fresh working directory for one Ironic run.
pub fn fresh_dir(label: &str) -> anyhow::Result<PathBuf> {
    let dir = target_dir()
        .join("peer-ironic")
        .join(format!("{label}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Writes the config, creates the schema and starts Ironic on `port` (0: a free port).
///
/// The schema is created before the clock starts, so `cold_start` is process start to API up.
pub fn start(venv: &Venv, dir: &Path, port: u16) -> anyhow::Result<ServerProcess> {
    let port = if port == 0 { free_port()? } else { port };
    let conf = dir.join("ironic.conf");
    std::fs::write(&conf, config(dir, port))
        .with_context(|| format!("writing {}", conf.display()))?;
    let out = Command::new(venv.bin("ironic-dbsync"))
        .arg("--config-file")
        .arg(&conf)
        .arg("create_schema")
        .output()
        .context("running ironic-dbsync")?;
    if !out.status.success() {
        bail!(
            "ironic-dbsync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut cmd = Command::new(venv.bin("ironic"));
    cmd.arg("--config-file").arg(&conf).current_dir(dir);
    ServerProcess::spawn(
        "ironic",
        cmd,
        port,
        dir.join("ironic.log"),
        Duration::from_secs(120),
    )
}

/// `cargo xtask ironic serve [--port N]` and `cargo xtask ironic clients`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("serve") => {
            let port = match args.get(1).map(String::as_str) {
                Some("--port") => args.get(2).context("--port needs a value")?.parse()?,
                Some(other) => bail!("unknown argument {other}"),
                None => 6385,
            };
            let venv = venv()?;
            let dir = fresh_dir("serve")?;
            let server = start(&venv, &dir, port)?;
            println!(
                "Ironic 39.0.0 on {} (pid {}, log {}); stop with Ctrl-C or by SIGTERM to that pid",
                server.base_url,
                server.pid(),
                server.log_path.display()
            );
            let status = server.wait()?;
            println!("Ironic exited: {status}");
            Ok(())
        }
        Some("clients") => clients(),
        _ => bail!("usage: cargo xtask ironic serve [--port N] | clients"),
    }
}

/// Runs both client session scripts against a fresh real Ironic.
fn clients() -> anyhow::Result<()> {
    let clients = clients_venv()?;
    let venv = venv()?;
    let dir = fresh_dir("clients")?;
    let server = start(&venv, &dir, 0)?;
    println!(
        "Ironic on {} (log {})",
        server.base_url,
        server.log_path.display()
    );
    let scripts = workspace_root().join("controller/tests/clients");
    let mut failed = Vec::new();
    for script in ["cli_session.py", "sdk_session.py"] {
        let status = Command::new(clients.python())
            .arg(scripts.join(script))
            .env("OS_ENDPOINT", &server.base_url)
            .env("OS_AUTH_TYPE", "none")
            .env("CLIENTS_PEER", "ironic")
            .env("HOME", &dir)
            .status()
            .with_context(|| format!("running {script}"))?;
        if !status.success() {
            failed.push(script);
        }
    }
    server.stop(Duration::from_secs(20))?;
    if !failed.is_empty() {
        bail!(
            "against real Ironic, these scripts failed: {}",
            failed.join(", ")
        );
    }
    println!("both client sessions passed against real Ironic 39.0.0");
    Ok(())
}
