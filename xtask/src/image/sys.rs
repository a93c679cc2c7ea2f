//! The host side of an image build: running commands, loop devices and mounts that are
//! undone (in reverse order) when the build ends, however it ends.

use std::borrow::BorrowMut;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// Runs a command, inheriting stdout/stderr; fails with the command line.
pub fn run(mut cmd: impl BorrowMut<Command>) -> anyhow::Result<()> {
    let cmd = cmd.borrow_mut();
    let st = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// Runs a command and returns its stdout; fails with its stderr.
pub fn output(mut cmd: impl BorrowMut<Command>) -> anyhow::Result<String> {
    let cmd = cmd.borrow_mut();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Shorthand for a `Command` with arguments.
pub fn cmd<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

#[derive(Debug)]
enum Undo {
    Unmount(PathBuf),
    Detach(String),
}

/// Loop devices and mounts of one build, released in reverse order on drop.
#[derive(Debug, Default)]
pub struct Cleanup {
    stack: Vec<Undo>,
}

impl Cleanup {
    /// Attaches `file` as a loop device with partition scanning; returns `/dev/loopN`.
    pub fn attach(&mut self, file: &Path) -> anyhow::Result<String> {
        let dev = output(cmd("losetup", &["--find", "--show", "--partscan"]).arg(file))?
            .trim()
            .to_owned();
        if !dev.starts_with("/dev/loop") {
            bail!("losetup printed {dev:?}");
        }
        self.stack.push(Undo::Detach(dev.clone()));
        Ok(dev)
    }

    /// `mount [args] SRC DST`.
    pub fn mount(&mut self, args: &[&str], src: &str, dst: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
        run(cmd("mount", args).arg(src).arg(dst))?;
        self.stack.push(Undo::Unmount(dst.to_path_buf()));
        Ok(())
    }

    /// Releases everything now, reporting the first failure.
    pub fn release(&mut self) -> anyhow::Result<()> {
        let mut first: Option<anyhow::Error> = None;
        while let Some(u) = self.stack.pop() {
            let r = match &u {
                Undo::Unmount(p) => unmount(p),
                Undo::Detach(d) => output(&mut cmd("losetup", &["-d", d])).map(drop),
            };
            if let Err(e) = r {
                eprintln!("image: cleanup: {e:#}");
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn unmount(p: &Path) -> anyhow::Result<()> {
    for _ in 0..10 {
        if output(cmd("umount", &[p])).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // Something still holds it: detach lazily so the loop device can go.
    output(cmd("umount", &[Path::new("-l"), p])).map(drop)
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// Waits for the partition node `part` of loop device `dev`. A kernel without GPT support
/// (some sandboxes) never scans the table itself; `partx -a` then adds the partitions from
/// user space.
pub fn wait_for_partition(dev: &str, part: &str) -> anyhow::Result<()> {
    for i in 0..100 {
        if Path::new(part).exists() {
            return Ok(());
        }
        if i == 10 {
            let _ = output(cmd("partx", &["-a", dev]));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{part} did not appear (neither the kernel nor partx -a added the partitions)")
}

/// Set in the environment of the build once it runs in its own mount namespace.
const PRIVATE_NS_ENV: &str = "INGOT_IMAGE_PRIVATE_MOUNTS";

/// Runs the rest of the build in a private mount namespace: re-executes this program under
/// `unshare --mount --propagation private` (returns `Some(result)` of that run), or returns
/// `None` when already inside one.
///
/// Other processes that enter a network namespace (`ip netns exec`, as the lab tests do)
/// copy the mount table they start from; a file system mounted in the host's namespace at
/// that moment stays alive in their copy after our `umount`, half-written (its journal
/// never closed) and pinning the loop device. Mounts made in a private namespace are never
/// copied.
pub fn reexec_in_private_mount_ns(args: &[String]) -> Option<anyhow::Result<()>> {
    if std::env::var_os(PRIVATE_NS_ENV).is_some() {
        return None;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Some(Err(anyhow::Error::new(e).context("finding our own binary"))),
    };
    let mut c = cmd("unshare", &["--mount", "--propagation", "private", "--"]);
    c.arg(exe).arg("image").args(args).env(PRIVATE_NS_ENV, "1");
    Some(run(c))
}

/// Fails unless running as root.
pub fn require_root() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading own status")?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("");
    if uid != "0" {
        bail!("building a disk image needs root (loop devices, mounts, chroot)");
    }
    Ok(())
}

/// Fails with the package to install when a tool is missing.
pub fn require_tools(tools: &[(&str, &str)]) -> anyhow::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut missing = Vec::new();
    for (tool, package) in tools {
        let found = std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|d| d.join(tool).is_file());
        if !found {
            missing.push(format!("{tool} ({package})"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing tools: {} (apt-get install the packages, see .ci/packages.txt)",
            missing.join(", ")
        );
    }
    Ok(())
}
