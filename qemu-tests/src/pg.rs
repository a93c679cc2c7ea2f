//! A throw-away PostgreSQL server for the store tests, the replica tests and `cargo xtask
//! bench rack --replicas 3`.
//!
//! The server is started from the local binaries (`initdb`, `postgres` on `PATH` or under
//! `/usr/lib/postgresql/*/bin`), in a temporary directory, listening on 127.0.0.1 at a free
//! port. As root it runs as the `postgres` user (or `nobody`) through `setpriv`, since
//! PostgreSQL refuses to run as root. Tests share one server while any of them holds it and
//! each gets its own database; the last one out stops the server by its PID.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

static SERVER: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());

/// A running PostgreSQL server, stopped on drop.
pub struct PgServer {
    child: Child,
    port: u16,
    bin: PathBuf,
    next_db: AtomicU32,
    log: PathBuf,
    /// The data directory's parent and the server's Unix socket. Dropped last: removes the
    /// data once the server is gone.
    dir: tempfile::TempDir,
}

impl PgServer {
    /// The shared server, started if none is running. `None` (after a loud message) when
    /// PostgreSQL is not installed and `CI` is unset; with `CI` set that is a failure.
    pub fn shared() -> Option<Arc<PgServer>> {
        let mut slot = SERVER.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some(server) = slot.upgrade() {
            return Some(server);
        }
        let Some(bin) = find_bin_dir() else {
            let message = "PostgreSQL binaries (initdb, postgres) not found on PATH or under \
                           /usr/lib/postgresql/*/bin; install the `postgresql` package";
            if test_needs::under_ci() {
                panic!("{message} (CI is set, so this is a failure)");
            }
            eprintln!("\n!!!!!!!! SKIPPING POSTGRESQL STORE TEST: {message} !!!!!!!!\n");
            return None;
        };
        let server = Arc::new(PgServer::start(&bin));
        *slot = Arc::downgrade(&server);
        Some(server)
    }

    fn start(bin: &Path) -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("ingot-pg-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let user = run_as_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown tempdir");
        }
        let status = command(bin.join("initdb"), user)
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "ingot",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed: {status}");
        let port = free_port();
        let log_file = std::fs::File::create(&log).expect("create postgres log");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid)).expect("chown log");
        }
        let child = command(bin.join("postgres"), user)
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-F",
                "-c",
                "max_connections=600",
                "-c",
                "full_page_writes=off",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn postgres");
        let mut server = PgServer {
            child,
            port,
            bin: bin.to_path_buf(),
            next_db: AtomicU32::new(0),
            log,
            dir,
        };
        server.wait_ready(&data);
        server
    }

    /// Waits until `postmaster.pid` says `ready` (PostgreSQL 10+ writes it there).
    fn wait_ready(&mut self, data: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("postgres exited early ({status}): {}", self.log_text());
            }
            let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
            if pid_file.lines().any(|line| line.trim() == "ready") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres not ready in 60 s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's process id (its backends are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://ingot@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a fresh, empty database (`createdb`) and returns its URL.
    pub fn create_database(&self) -> String {
        self.url(&self.new_database())
    }

    /// Creates a fresh database; returns its URL through the server's Unix socket, which
    /// reaches it from every network namespace (a lab's `ingot serve`, whose loopback is not
    /// the host's).
    pub fn create_socket_database(&self) -> String {
        let name = self.new_database();
        format!(
            "postgres://ingot@localhost/{name}?host={}&port={}",
            self.dir.path().display(),
            self.port
        )
    }

    fn new_database(&self) -> String {
        let name = format!("t{}", self.next_db.fetch_add(1, Ordering::SeqCst));
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "ingot",
                &name,
            ])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        name
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's "fast shutdown"; fall back to SIGKILL. The shell's builtin
        // `kill` is used because procps (`/bin/kill`) is not always installed.
        let pid = self.child.id();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -INT {pid}"))
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command run as `user` (via `setpriv`) or as ourselves.
fn command(program: PathBuf, user: Option<(u32, u32)>) -> Command {
    match user {
        Some((uid, gid)) => {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// The unprivileged user to run PostgreSQL as when we are root.
fn run_as_user() -> Option<(u32, u32)> {
    // `/proc/self` is owned by the effective user of this process.
    let euid = std::fs::metadata("/proc/self")
        .expect("stat /proc/self")
        .uid();
    if euid != 0 {
        return None;
    }
    for name in ["postgres", "nobody"] {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, name]).output().ok()?;
            if !out.status.success() {
                return None;
            }
            String::from_utf8(out.stdout).ok()?.trim().parse().ok()
        };
        if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
            return Some((uid, gid));
        }
    }
    panic!("running as root and neither the postgres nor the nobody user exists");
}

/// Where `initdb` and `postgres` are: `$INGOT_PG_BIN` alone when set, else `PATH`, else the
/// newest `/usr/lib/postgresql/<version>/bin`.
fn find_bin_dir() -> Option<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "postgres", "createdb"]
            .iter()
            .all(|bin| dir.join(bin).is_file())
    };
    if let Some(dir) = std::env::var_os("INGOT_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|dir| has_all(dir));
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|dir| has_all(dir))
    {
        return Some(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|dir| has_all(dir))
        .collect();
    versions.sort_by_key(|dir| {
        dir.parent()
            .and_then(|version| version.file_name())
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}
