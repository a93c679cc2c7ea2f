//! One `ingot serve` per SQLite database, and private state files.
//!
//! `ingot serve` takes an exclusive `flock` on `<database>.lock` (beside the SQLite file)
//! before it opens the database: a second instance on the same file would run start-up
//! recovery and fail the first one's in-flight nodes. The lock file holds the owner's pid
//! for the message the second instance prints; the kernel drops the lock when the owner
//! exits, however it exits, so a stale file never blocks a restart. The file descriptor is
//! close-on-exec, so QEMU processes the controller starts do not inherit the lock.
//!
//! This guard is SQLite-only: several replicas on one PostgreSQL are the scale-out design's
//! business (node leases), and PostgreSQL is left as it is.
//!
//! The state directory is created 0700 and the SQLite file 0600 (SQLite gives its `-wal`
//! and `-shm` files the database's mode): the database holds BMC passwords and config
//! drives.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use anyhow::{Context as _, bail};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Mode of directories `ingot serve` creates for its state.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the SQLite database (and, through SQLite, its `-wal`/`-shm`) and the lock file.
pub const FILE_MODE: u32 = 0o600;

/// PURE-ish: the database file of a SQLite URL; `None` for PostgreSQL and in-memory SQLite.
pub fn sqlite_file(url: &str) -> anyhow::Result<Option<PathBuf>> {
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(None);
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .context("parsing the SQLite database URL")?;
    Ok(Some(options.get_filename().to_path_buf()))
}

/// Creates `dir` (and missing parents) with mode 0700 unless it exists.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// The state dir: created 0700, or a warning when an existing one is open to group or
/// others (it is left as the operator made it).
pub fn create_state_dir(dir: &Path) -> anyhow::Result<()> {
    create_private_dir(dir).context("creating the state dir")?;
    warn_if_open(dir);
    Ok(())
}

/// Creates the SQLite file empty with mode 0600 unless it exists (SQLite would create it
/// 0644); an empty file is an empty database to SQLite.
pub fn create_private_db(db: &Path) -> anyhow::Result<()> {
    match File::options()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(db)
    {
        Ok(_) => Ok(()),
        // Left as it is: an operator may have chosen its mode; a warning says if it is open.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_open(db);
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("creating database {}", db.display())),
    }
}

fn warn_if_open(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o7777),
            "state is readable by group or others (it holds BMC credentials): chmod go-rwx"
        );
    }
}

/// The held lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl InstanceLock {
    /// The lock file beside a database file.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        db.with_file_name(name)
    }

    /// Takes the lock of `db` at once, or fails naming the database and the holder's pid.
    pub fn acquire(db: &Path) -> anyhow::Result<InstanceLock> {
        let path = Self::path_for(db);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "another process".to_owned(),
                };
                bail!(
                    "database {} is in use by another ingot serve ({holder}, lock {}): one \
                     ingot serve per SQLite database (this lock guards SQLite only); stop \
                     the other one first",
                    db.display(),
                    path.display()
                );
            }
            Err((_, e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        };
        let pid = std::process::id();
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| writeln!(*lock, "{pid}"))
            .with_context(|| format!("writing the pid to {}", path.display()))?;
        Ok(InstanceLock { _lock: lock, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        let f = |u: &str| sqlite_file(u).expect("parse");
        assert_eq!(
            f("sqlite:///var/lib/ingot/ingot.db"),
            Some(PathBuf::from("/var/lib/ingot/ingot.db"))
        );
        assert_eq!(
            f("sqlite:///x/a.db?mode=rwc"),
            Some(PathBuf::from("/x/a.db"))
        );
        assert_eq!(f("sqlite::memory:"), None);
        assert_eq!(f("postgres://u:p@h/db"), None);
    }

    #[test]
    fn a_second_lock_fails_with_the_holders_pid_and_a_released_one_is_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("ingot.db");
        let first = InstanceLock::acquire(&db).expect("first");
        assert_eq!(first.path(), dir.path().join("ingot.db.lock"));
        let err = format!("{:#}", InstanceLock::acquire(&db).expect_err("second"));
        assert!(err.contains(&db.display().to_string()), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("SQLite only"), "{err}");
        let mode = std::fs::metadata(first.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, FILE_MODE);
        drop(first);
        InstanceLock::acquire(&db).expect("free again");
    }

    #[test]
    fn children_do_not_inherit_the_lock() {
        // QEMU processes the controller starts outlive a killed controller: they must not
        // keep its database locked.
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("ingot.db");
        let lock = InstanceLock::acquire(&db).expect("lock");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        drop(lock);
        let again = InstanceLock::acquire(&db);
        let _ = child.kill();
        let _ = child.wait();
        again.expect("free while the child runs");
    }

    #[test]
    fn state_dir_and_database_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("a/state");
        create_state_dir(&state).expect("dir");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&state), DIR_MODE);
        let db = state.join("ingot.db");
        create_private_db(&db).expect("db");
        assert_eq!(mode(&db), FILE_MODE);
        std::fs::write(&db, b"kept").expect("write");
        create_private_db(&db).expect("existing db");
        assert_eq!(std::fs::read(&db).expect("read"), b"kept");
    }
}
