//! Python virtual environments, built by the workspace's one venv builder, `python/venv`.
//!
//! A venv `NAME` is `python/NAME.txt` installed under `python/NAME.constraints.txt` (every
//! package pinned) into `<target>/pyvenv/NAME`; the script rebuilds it only when one of the
//! two files changes and serialises builders with a lock file. The tests
//! (`controller/tests/it/ironic_clients.rs`, `qemu-tests`) call the same script.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::paths::{target_dir, workspace_root};

/// A ready virtual environment.
#[derive(Debug, Clone)]
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// The venv `name` (`clients`, `ironic`, `sushy`), built first if needed.
    pub fn ensure(name: &str) -> anyhow::Result<Self> {
        let script = workspace_root().join("python/venv");
        let out = Command::new(&script)
            .arg(name)
            .env("CARGO_TARGET_DIR", target_dir())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!("{} {name} failed: {}", script.display(), out.status);
        }
        let dir = String::from_utf8(out.stdout).context("venv path is not UTF-8")?;
        Ok(Self {
            dir: PathBuf::from(dir.trim_end()),
        })
    }

    /// Path of a program in the venv's `bin/`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    /// The venv's Python interpreter.
    pub fn python(&self) -> PathBuf {
        self.bin("python")
    }
}
