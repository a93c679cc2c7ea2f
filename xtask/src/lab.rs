//! `cargo xtask lab [--keep]`: builds and runs the virtual rack demo
//! (`qemu-tests/src/bin/ingot-lab.rs`): unknown machines behind IPMI and Redfish BMCs are
//! discovered, deployed and released by `ingot serve`. Needs root (network namespaces) and
//! the packages `.ci/setup` installs.

use anyhow::{Context as _, bail};

use crate::paths::{cargo, workspace_root};

/// Builds every binary the rack runs and runs `ingot-lab` with `args`, streaming its output.
///
/// `ingot-lab` runs `lab-chassis` (each `ipmi_sim`'s chassis control program) from the same
/// directory, so all of `qemu-tests`' binaries are built here; `ingot-lab` builds `ingot`
/// and the agent ramdisk itself. A fresh clone therefore needs nothing built beforehand.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let st = cargo()
        .args(["build", "-p", "qemu-tests", "--bins"])
        .status()
        .context("building the lab binaries (ingot-lab, lab-chassis)")?;
    if !st.success() {
        bail!("building the lab binaries (cargo build -p qemu-tests --bins) failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let st = std::process::Command::new(target.join("debug/ingot-lab"))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .context("running ingot-lab")?;
    if !st.success() {
        bail!("the virtual rack run failed ({st})");
    }
    Ok(())
}
