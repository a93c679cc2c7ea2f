//! TLS on the provisioning listener of an `ingot serve` that a test starts: `ingot certs
//! init` for the lab bridge's address and the `[tls]` lines of its config, so the agent API
//! and the images go over HTTPS with the CA the agent pins (`ingot.ca=` in the iPXE script).
//!
//! On by default, as on a real network. `QEMU_TESTS_TLS=off` turns it off, for measuring
//! what the handshakes cost only ([`enabled_by_env`]).

use std::path::Path;

use anyhow::{Context, bail};

use crate::netns::BRIDGE_ADDR;

/// False only when `QEMU_TESTS_TLS` is `off` (or `0`, `false`, `no`).
pub fn enabled_by_env() -> bool {
    !matches!(
        std::env::var("QEMU_TESTS_TLS").as_deref(),
        Ok("off" | "0" | "false" | "no")
    )
}

/// Runs `ingot certs init` into `dir`: a CA (`dir/ca.pem`, the one clients trust) and a
/// server certificate for [`BRIDGE_ADDR`] and 127.0.0.1, where a lab's operator API listens
/// (one `[tls]` serves the provisioning side and the API).
pub fn certs_init(ingot: &Path, dir: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new(ingot)
        .args([
            "certs",
            "init",
            "--ip",
            BRIDGE_ADDR,
            "--ip",
            "127.0.0.1",
            "--dir",
        ])
        .arg(dir)
        .output()
        .context("running ingot certs init")?;
    if !out.status.success() {
        bail!("ingot certs init: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// [`certs_init`] into `dir`, and the `[tls]` table to append to the config.
pub fn provisioning_tls(ingot: &Path, dir: &Path) -> anyhow::Result<String> {
    certs_init(ingot, dir)?;
    Ok(format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.join("server.pem").display(),
        dir.join("server.key").display(),
    ))
}
