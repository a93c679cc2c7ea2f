//! Where the `qemu` type may touch files: one VM directory under the operator's
//! `[qemu] allowed_dir`, resolved from `qemu_qmp_socket` with every symlink followed
//! (`canonicalize`), and files in it opened with `O_NOFOLLOW`, so neither `..`, a symlinked
//! directory nor a symlinked file reaches anything outside.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::drivers::DriverError;

/// The argv file in a VM directory (written by the operator, never by the driver).
pub const COMMAND_FILE: &str = "qemu.json";
/// The boot device file in a VM directory (the only file the driver writes).
pub const BOOT_FILE: &str = "bootdev";
/// Largest argv or boot file read.
const MAX_FILE: u64 = 1 << 20;

/// The `qemu` type's settings (`[qemu]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuSettings {
    /// Canonical directory that holds every VM directory.
    pub allowed_dir: PathBuf,
}

impl QemuSettings {
    /// Resolves `dir` (it must exist, be absolute and not be `/`).
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_absolute() {
            bail!(
                "[qemu] allowed_dir {} must be an absolute path",
                dir.display()
            );
        }
        let allowed_dir = std::fs::canonicalize(dir)
            .with_context(|| format!("resolving [qemu] allowed_dir {}", dir.display()))?;
        if allowed_dir == Path::new("/") {
            bail!("[qemu] allowed_dir must not be / (the qemu type would reach every file)");
        }
        if !allowed_dir.is_dir() {
            bail!("[qemu] allowed_dir {} is not a directory", dir.display());
        }
        Ok(Self { allowed_dir })
    }
}

fn invalid(msg: String) -> DriverError {
    DriverError::InvalidParameter(msg)
}

/// The canonical VM directory and socket path of `socket` (absolute), or why it is refused.
pub fn resolve_socket(
    settings: &QemuSettings,
    socket: &Path,
) -> Result<(PathBuf, PathBuf), DriverError> {
    let shown = socket.display();
    if socket
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(invalid(format!(
            "qemu_qmp_socket {shown} must not contain . or .. components"
        )));
    }
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return Err(invalid(format!("qemu_qmp_socket {shown} names no file")));
    };
    let dir = std::fs::canonicalize(dir).map_err(|e| {
        invalid(format!(
            "qemu_qmp_socket {shown}: its directory cannot be resolved: {e}"
        ))
    })?;
    if !dir.starts_with(&settings.allowed_dir) {
        return Err(invalid(format!(
            "qemu_qmp_socket {shown} is outside [qemu] allowed_dir {}: the qemu hardware type \
             only touches files under that directory",
            settings.allowed_dir.display()
        )));
    }
    let socket = dir.join(name);
    if std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(invalid(format!(
            "qemu_qmp_socket {shown} is a symbolic link, which the qemu hardware type does \
             not follow"
        )));
    }
    Ok((dir, socket))
}

fn open_nofollow(path: &Path, write: bool) -> std::io::Result<File> {
    let mut o = File::options();
    if write {
        // No O_TRUNC at open: the file is checked to be a regular one before it is cut.
        o.write(true).create(true).mode(0o644);
    } else {
        o.read(true);
    }
    o.custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
}

/// Reads a regular file (not through a symlink) of at most 1 MiB.
pub fn read_regular(path: &Path) -> std::io::Result<String> {
    let f = open_nofollow(path, false)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    f.take(MAX_FILE).read_to_string(&mut text)?;
    Ok(text)
}

/// Replaces the content of a regular file (created if missing, never through a symlink).
pub fn write_regular(path: &Path, content: &str) -> std::io::Result<()> {
    let mut f = open_nofollow(path, true)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    f.set_len(0)?;
    f.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_resolve_only_inside_the_allowed_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let allowed = tmp.path().join("vms");
        std::fs::create_dir_all(allowed.join("vm1")).expect("mkdir");
        std::fs::create_dir_all(tmp.path().join("outside")).expect("mkdir");
        std::os::unix::fs::symlink(tmp.path().join("outside"), allowed.join("link"))
            .expect("symlink");
        std::os::unix::fs::symlink("/etc/passwd", allowed.join("vm1/evil.sock")).expect("symlink");
        let s = QemuSettings::new(&allowed).expect("settings");
        let (dir, sock) = resolve_socket(&s, &allowed.join("vm1/qmp.sock")).expect("inside");
        assert!(dir.ends_with("vms/vm1") && sock.ends_with("vm1/qmp.sock"));
        for (bad, want) in [
            (allowed.join("vm1/../../outside/qmp.sock"), ". or .."),
            (
                tmp.path().join("outside/qmp.sock"),
                "outside [qemu] allowed_dir",
            ),
            (allowed.join("link/qmp.sock"), "outside [qemu] allowed_dir"),
            (allowed.join("vm1/evil.sock"), "symbolic link"),
            (allowed.join("nope/qmp.sock"), "cannot be resolved"),
        ] {
            let err = resolve_socket(&s, &bad).expect_err("refused").to_string();
            assert!(err.contains(want), "{}: {err}", bad.display());
        }
        assert!(QemuSettings::new(Path::new("/")).is_err());
        assert!(QemuSettings::new(Path::new("relative")).is_err());
    }

    #[test]
    fn files_are_never_written_through_a_symlink() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("target");
        std::fs::write(&target, "precious").expect("write");
        let link = tmp.path().join(BOOT_FILE);
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(write_regular(&link, "pxe\n").is_err());
        assert!(read_regular(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "precious");
        let plain = tmp.path().join("plain");
        write_regular(&plain, "disk\nlonger\n").expect("write");
        write_regular(&plain, "pxe\n").expect("rewrite");
        assert_eq!(read_regular(&plain).expect("read"), "pxe\n");
        assert!(write_regular(tmp.path(), "x").is_err());
    }
}
