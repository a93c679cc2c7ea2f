//! Cached Python virtual environments under the target directory.
//!
//! A venv is rebuilt only when its pinned requirements change. A file lock keeps two
//! processes (two tests, or a test and an xtask) from building the same venv at once.
//! The marker format is shared with `controller/tests/ironic_clients.rs`, which keeps its own copy
//! of this logic: keep the two in step.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The clients the contract was captured with (ironic-api-contract.md, header).
pub const CLIENT_REQUIREMENTS: &[&str] = &["python-ironicclient==6.3.0", "openstacksdk==4.22.0"];

/// File inside a venv naming what was installed into it.
const MARKER: &str = "ingot-requirements.txt";

/// A ready virtual environment.
#[derive(Debug, Clone)]
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// Returns the venv at `dir`, creating it and installing `requirements` if needed.
    pub fn ensure(dir: &Path, requirements: &[&str]) -> anyhow::Result<Self> {
        let parent = dir.parent().context("venv path has no parent")?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let lock_path = dir.with_extension("lock");
        let lock = fs::File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;

        let want = marker_text(requirements);
        let venv = Self {
            dir: dir.to_path_buf(),
        };
        let marker = dir.join(MARKER);
        if venv.python().exists() && fs::read_to_string(&marker).ok().as_deref() == Some(&want) {
            return Ok(venv);
        }
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let python = std::env::var("INGOT_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        eprintln!(
            "xtask: creating venv {} with {}",
            dir.display(),
            requirements.join(" ")
        );
        run(Command::new(&python).arg("-m").arg("venv").arg(dir)).with_context(|| {
            format!("creating a venv with {python} (Debian: apt-get install python3-venv)")
        })?;
        run(Command::new(venv.bin("pip"))
            .args(["install", "--disable-pip-version-check", "--quiet"])
            .args(requirements))
        .context("installing python packages from PyPI")?;
        fs::write(&marker, want).with_context(|| format!("writing {}", marker.display()))?;
        Ok(venv)
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

fn marker_text(requirements: &[&str]) -> String {
    let mut text = requirements.join("\n");
    text.push('\n');
    text
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
