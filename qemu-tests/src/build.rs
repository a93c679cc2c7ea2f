//! Builds what the tests boot or run: the agent initramfs, the `ingot` binary, the Debian
//! image and the Python venvs (through the workspace's one builder, `python/venv`).
//!
//! nextest runs every test in its own process, so each build runs under a cross-process file
//! lock and at most once per process.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let m = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    m.parent().map(PathBuf::from).unwrap_or(m)
}

/// The target directory the builds below write to.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Removes the variables cargo sets for the process it runs (a test, a build script's
/// package): a child cargo that inherits them sees a different environment from a build
/// started in a shell, and build scripts that watch them (ring watches
/// `CARGO_MANIFEST_DIR`) run again, rebuilding half the dependency tree every time.
pub fn scrub_cargo_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_by_cargo = matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "CARGO_MANIFEST_LINKS"
        ) || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
            || key.starts_with("NEXTEST");
        if set_by_cargo {
            cmd.env_remove(key);
        }
    }
}

fn locked_cargo(lock_name: &str, args: &[&str]) -> Result<String, String> {
    // The lock guards one target directory: keep it there, so that builds into other
    // target directories (other worktrees) do not wait for each other.
    let dir = target_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let lock_path = dir.join(lock_name);
    let lock = std::fs::File::create(&lock_path)
        .and_then(|f| f.lock().map(|()| f))
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args(args);
    scrub_cargo_env(&mut cmd);
    let out = cmd
        .output()
        .map_err(|e| format!("running cargo {}: {e}", args.join(" ")))?;
    drop(lock);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "cargo {} failed: {text}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(text)
}

/// The lines of `cargo xtask image` output that the image builder printed itself
/// (`image: ...`), without debootstrap's and apt's.
fn image_summary(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("image:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Builds the `qemu` initramfs (`cargo xtask initramfs --profile qemu`); returns
/// (kernel, initramfs).
pub fn agent_initramfs() -> anyhow::Result<(PathBuf, PathBuf)> {
    static BUILT: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let text = locked_cargo(
                "ingot-qemu-tests-initramfs.lock",
                &["xtask", "initramfs", "--profile", "qemu"],
            )?;
            println!("{text}");
            let dir = target_dir().join("initramfs/qemu");
            Ok((dir.join("vmlinuz"), dir.join("initramfs.cpio.zst")))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// Builds the controller binary (debug profile); returns its path.
pub fn ingot_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            locked_cargo(
                "ingot-qemu-tests-ingot.lock",
                &["build", "-p", "controller", "--bin", "ingot"],
            )?;
            Ok(target_dir().join("debug/ingot"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// Builds the Debian 12 OS image (`cargo xtask image debian`, cached by its recipe); returns
/// the raw image.
pub fn debian_image() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let text = locked_cargo(
                "ingot-qemu-tests-debian-image.lock",
                &["xtask", "image", "debian"],
            )?;
            // debootstrap and apt print hundreds of lines: they go to a log next to the
            // image, so a failing test's output shows its own failure, not the package list.
            let log = target_dir().join("images/debian-12.build.log");
            std::fs::write(&log, &text).map_err(|e| format!("writing {}: {e}", log.display()))?;
            println!("{}", image_summary(&text));
            println!("(the whole build output: {})", log.display());
            Ok(target_dir().join("images/debian-12.raw"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// The Python venv `name` (`clients`, `sushy`): `python/NAME.txt` installed under the pins of
/// `python/NAME.constraints.txt` into `<target>/pyvenv/NAME` by `python/venv`, which builds
/// it once under its own lock. Returns the venv's directory.
pub fn python_venv(name: &str) -> anyhow::Result<PathBuf> {
    let script = workspace_root().join("python/venv");
    let out = Command::new(&script)
        .arg(name)
        .env("CARGO_TARGET_DIR", target_dir())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        anyhow::bail!("{} {name} failed: {}", script.display(), out.status);
    }
    let dir = String::from_utf8(out.stdout)
        .map_err(|_| anyhow::anyhow!("{} {name}: path is not UTF-8", script.display()))?;
    Ok(PathBuf::from(dir.trim_end()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_summary_keeps_only_the_builders_lines() {
        let out = "image: building x\nI: Retrieving apt 2.6.1\nGet:1 http://deb\nimage: built in 90 s: x\n";
        assert_eq!(
            super::image_summary(out),
            "image: building x\nimage: built in 90 s: x"
        );
    }
}
