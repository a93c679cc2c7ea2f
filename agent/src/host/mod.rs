//! The only module that touches the OS directly: block devices, ioctls (interfaces in
//! `ifconfig`, disks, NVMe, SG_IO, the IPMI device, packet sockets) and
//! external commands. Everything above it takes these types or traits.

pub mod aligned;
pub mod blockdev;
pub mod ifconfig;
pub mod ipmi;
pub mod nvme;
pub mod packet;
pub mod sgio;

use std::process::Command;

use anyhow::{Context, bail};

/// Run an external command, returning its stdout; a non-zero exit is an error
/// that names the full command and its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
