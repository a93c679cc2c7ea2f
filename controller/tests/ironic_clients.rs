//! The real OpenStack clients against a running `ingot serve` (DESIGN.md §9).
//!
//! Gets (built once by `python/venv`, cached under the target directory) the Python venv with
//! the pinned python-ironicclient and openstacksdk that `ironic-api-contract.md` was captured
//! with, starts the `ingot` binary on a free 127.0.0.1 port with a fresh SQLite database, and runs
//! `tests/clients/cli_session.py` (the `baremetal` CLI) and `tests/clients/sdk_session.py`
//! (openstacksdk). Each script asserts every step and ends with `N passed, M failed`.
//!
//! Needs `python3` with the venv module (Debian: python3-venv) and access to PyPI the first
//! time. Set `INGOT_CLIENTS_ENDPOINT=http://127.0.0.1:PORT` (and `CLIENTS_PEER=ironic`) to run
//! the same scripts against a server that is already running, such as real Ironic
//! (`cargo xtask ironic serve`).

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The venv of the pinned clients (`python/clients.txt`, every package pinned in
/// `python/clients.constraints.txt`), built once by the workspace's venv builder
/// `python/venv` under its lock.
fn clients_venv() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("python/venv");
    let mut cmd = Command::new(&script);
    cmd.arg("clients").stderr(Stdio::inherit());
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        // The target directory this test was built into (`<target>/tmp`'s parent).
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        if let Some(target) = tmp.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} clients failed: {} (needs python3 and python3-venv)",
        script.display(),
        out.status
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim_end())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port is free");
    listener.local_addr().expect("bound address").port()
}

/// HTTP status of `GET /v1`, or `None` if nothing answered.
fn probe(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET /v1 HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut head = Vec::new();
    stream.take(64).read_to_end(&mut head).ok()?;
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `ingot serve` on a free loopback port with a fresh database, killed on drop.
struct Ingot {
    child: Option<Child>,
    base_url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The user of the http_basic sessions.
const USER: &str = "operator";
const PASSWORD: &str = "S3ss10n-Pa55";

impl Ingot {
    /// `ingot serve` with `noauth`, or with `http_basic` and an htpasswd file holding
    /// [`USER`] when `http_basic` is set.
    fn start(http_basic: bool) -> Self {
        let mut failures = Vec::new();
        // The free port can be taken between probing and binding, so try a few times.
        for _ in 0..3 {
            match Self::try_start(http_basic) {
                Ok(server) => return server,
                Err(why) => failures.push(why),
            }
        }
        panic!("ingot serve failed to start:\n{}", failures.join("\n---\n"));
    }

    fn try_start(http_basic: bool) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("ingot.log");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log_file = fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingot"));
        cmd.arg("serve");
        if http_basic {
            let file = dir.path().join("htpasswd");
            let hash = bcrypt::hash(PASSWORD, 6).expect("bcrypt");
            fs::write(&file, format!("{USER}:{hash}\n")).expect("htpasswd");
            cmd.args([
                "--auth-strategy",
                "http_basic",
                "--http-basic-auth-user-file",
            ])
            .arg(&file);
        }
        let child = cmd
            .arg("--api-listen")
            .arg(addr.to_string())
            .arg("--database")
            .arg(format!(
                "sqlite://{}",
                dir.path().join("ingot.db").display()
            ))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .spawn()
            .expect("the ingot binary starts");
        let mut server = Self {
            child: Some(child),
            base_url: format!("http://{addr}"),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if probe(addr) == Some(200) {
                return Ok(server);
            }
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                server.child = None;
                return Err(format!(
                    "ingot serve exited with {status}:\n{}",
                    server.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ingot serve did not answer GET /v1 within 30 s:\n{}",
                    server.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait up to 10 s for a clean exit.
    fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("waiting for ingot") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ingot ignored SIGTERM for 10 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ingot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a session script; panics with its whole output unless every check passed.
fn run_session(
    script: &str,
    endpoint: &str,
    peer: &str,
    http_basic: bool,
    server_log: &dyn Fn() -> String,
) {
    let venv = clients_venv();
    let home = tempfile::tempdir().expect("temp HOME");
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let mut cmd = Command::new(venv.join("bin").join("python"));
    if http_basic {
        cmd.env("OS_AUTH_TYPE", "http_basic")
            .env("OS_USERNAME", USER)
            .env("OS_PASSWORD", PASSWORD);
    } else {
        cmd.env("OS_AUTH_TYPE", "none")
            .env_remove("OS_USERNAME")
            .env_remove("OS_PASSWORD");
    }
    let out = cmd
        .arg(&script_path)
        .env("OS_ENDPOINT", endpoint)
        .env("CLIENTS_PEER", peer)
        // The CLI writes a version cache under ~/.cache; keep it out of the real home.
        .env("HOME", home.path())
        .env_remove("OS_CLOUD")
        .env_remove("OS_BAREMETAL_API_VERSION")
        .stdin(Stdio::null())
        .output()
        .expect("the venv python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed") && l.contains(" passed, "));
    let counts = summary.and_then(|l| {
        let mut words = l.split_whitespace();
        let passed: u32 = words.next()?.parse().ok()?;
        let failed: u32 = words.nth(1)?.parse().ok()?;
        Some((passed, failed))
    });
    let all_passed = matches!(counts, Some((p, 0)) if p > 0);
    if !out.status.success() || !all_passed {
        panic!(
            "{script} failed ({}; {}):\n--- script stdout\n{stdout}\n--- script stderr\n{stderr}\n--- server log\n{}",
            out.status,
            summary.unwrap_or("no summary line"),
            server_log()
        );
    }
    println!("{script}: {}", summary.unwrap_or_default());
}

/// Runs `script` against `INGOT_CLIENTS_ENDPOINT` if set (noauth), else against a fresh
/// `ingot serve` (with `http_basic` when asked).
fn session_against_server(script: &str, http_basic: bool) {
    if let Ok(endpoint) = std::env::var("INGOT_CLIENTS_ENDPOINT") {
        if http_basic {
            println!("{script} with http_basic: skipped against an external server");
            return;
        }
        let peer = std::env::var("CLIENTS_PEER").unwrap_or_else(|_| "ingot".to_owned());
        run_session(script, &endpoint, &peer, false, &|| {
            String::from("(external server)")
        });
        return;
    }
    let server = Ingot::start(http_basic);
    let base = server.base_url.clone();
    run_session(script, &base, "ingot", http_basic, &|| server.log_text());
    let log = server.log_text();
    let status = server.stop();
    assert!(
        status.success(),
        "ingot serve did not exit cleanly on SIGTERM: {status}\n{log}"
    );
}

#[test]
fn baremetal_cli_session_passes() {
    session_against_server("cli_session.py", false);
}

#[test]
fn openstacksdk_session_passes() {
    session_against_server("sdk_session.py", false);
}

/// The same sessions against `ingot serve` with `auth_strategy = http_basic`, the clients
/// logging in as `baremetal --os-auth-type http_basic` does.
#[test]
fn baremetal_cli_session_passes_with_http_basic() {
    session_against_server("cli_session.py", true);
}

#[test]
fn openstacksdk_session_passes_with_http_basic() {
    session_against_server("sdk_session.py", true);
}
