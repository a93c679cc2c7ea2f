//! The real OpenStack clients against a running `ingot serve` (DESIGN.md §9).
//!
//! Gets (built once by `python/venv`, cached under the target directory) the Python venv with
//! the pinned python-ironicclient and openstacksdk that `ironic-api-contract.md` was captured
//! with, starts the `ingot` binary on a free 127.0.0.1 port with a fresh SQLite database, and runs
//! `tests/clients/cli_session.py` (the `baremetal` CLI) and `tests/clients/sdk_session.py`
//! (openstacksdk). Each script asserts every step and ends with `N passed, M failed`.
//! Each session runs twice: against `noauth` on plain HTTP, and against `http_basic` over
//! HTTPS (`[tls]` from `ingot certs init`, the clients trusting its CA through `OS_CACERT`).
//! A last test checks that the HTTPS API refuses plain HTTP and clients that trust another
//! CA, with the real `baremetal` CLI and `ingot node list`.
//!
//! Needs `python3` with the venv module (Debian: python3-venv) and access to PyPI the first
//! time. Set `INGOT_CLIENTS_ENDPOINT=http://127.0.0.1:PORT` (and `CLIENTS_PEER=ironic`) to run
//! the same scripts against a server that is already running, such as real Ironic
//! (`cargo xtask ironic serve`).

use crate::support::free_port;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
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

/// Status and start of the answer to a plain HTTP `GET /v1`, or `None` if nothing answered.
fn probe(addr: SocketAddr) -> Option<(u16, String)> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    get_v1(stream, addr)
}

/// Status of `GET /v1` over TLS, trusting only the CA in `ca`.
fn probe_tls(addr: SocketAddr, ca: &Path) -> Option<u16> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).ok()? {
        roots.add(cert.ok()?).ok()?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    get_v1(rustls::StreamOwned::new(conn, tcp), addr).map(|(status, _)| status)
}

fn get_v1(mut stream: impl Read + Write, addr: SocketAddr) -> Option<(u16, String)> {
    let req = format!("GET /v1 HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut answer = Vec::new();
    // A TLS peer may end without close_notify; what was read is enough.
    let _ = stream.take(4096).read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// How a test server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// `noauth` on plain HTTP (the lab default).
    Open,
    /// `http_basic` with an htpasswd file holding [`USER`], the API over HTTPS with
    /// `ingot certs init`'s certificate for 127.0.0.1.
    BasicOverTls,
}

/// `ingot serve` on a free loopback port with a fresh database, killed on drop.
struct Ingot {
    child: Option<Child>,
    base_url: String,
    addr: SocketAddr,
    /// The CA clients trust (with [`Security::BasicOverTls`]).
    ca: Option<PathBuf>,
    log: PathBuf,
    dir: tempfile::TempDir,
}

/// The user of the http_basic sessions.
const USER: &str = "operator";
const PASSWORD: &str = "S3ss10n-Pa55";

/// `ingot certs init --dir DIR --ip 127.0.0.1` with the real binary; returns `DIR/ca.pem`.
fn certs_init(dir: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_ingot"))
        .args(["certs", "init", "--ip", "127.0.0.1", "--dir"])
        .arg(dir)
        .output()
        .expect("ingot certs init runs");
    assert!(
        out.status.success(),
        "ingot certs init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("ca.pem")
}

impl Ingot {
    /// `ingot serve` secured as `security` says.
    fn start(security: Security) -> Self {
        let mut failures = Vec::new();
        // The free port can be taken between probing and binding, so try a few times.
        for _ in 0..3 {
            match Self::try_start(security) {
                Ok(server) => return server,
                Err(why) => failures.push(why),
            }
        }
        panic!("ingot serve failed to start:\n{}", failures.join("\n---\n"));
    }

    fn try_start(security: Security) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("ingot.log");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log_file = fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingot"));
        cmd.arg("serve");
        let mut ca = None;
        if security == Security::BasicOverTls {
            let file = dir.path().join("htpasswd");
            let hash = bcrypt::hash(PASSWORD, 6).expect("bcrypt");
            fs::write(&file, format!("{USER}:{hash}\n")).expect("htpasswd");
            cmd.args([
                "--auth-strategy",
                "http_basic",
                "--http-basic-auth-user-file",
            ])
            .arg(&file);
            let tls = dir.path().join("tls");
            ca = Some(certs_init(&tls));
            cmd.arg("--tls-cert-file")
                .arg(tls.join("server.pem"))
                .arg("--tls-key-file")
                .arg(tls.join("server.key"));
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
            .env("INGOT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .spawn()
            .expect("the ingot binary starts");
        let scheme = if ca.is_some() { "https" } else { "http" };
        let mut server = Self {
            child: Some(child),
            base_url: format!("{scheme}://{addr}"),
            addr,
            ca,
            log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = match &server.ca {
                Some(ca) => probe_tls(addr, ca) == Some(200),
                None => probe(addr).is_some_and(|(status, _)| status == 200),
            };
            if up {
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

/// What a client process is told through its environment, as the `baremetal` CLI reads it.
struct ClientEnv<'a> {
    endpoint: &'a str,
    /// `OS_AUTH_TYPE=http_basic` with these, else `none`.
    credentials: Option<(&'a str, &'a str)>,
    /// `OS_CACERT`.
    ca: Option<&'a Path>,
}

impl ClientEnv<'_> {
    /// Sets the client's `OS_*` variables (and removes any the caller's shell has).
    fn apply(&self, cmd: &mut Command, home: &Path) {
        match self.credentials {
            Some((user, password)) => cmd
                .env("OS_AUTH_TYPE", "http_basic")
                .env("OS_USERNAME", user)
                .env("OS_PASSWORD", password),
            None => cmd
                .env("OS_AUTH_TYPE", "none")
                .env_remove("OS_USERNAME")
                .env_remove("OS_PASSWORD"),
        };
        match self.ca {
            Some(ca) => cmd.env("OS_CACERT", ca),
            None => cmd.env_remove("OS_CACERT"),
        };
        cmd.env("OS_ENDPOINT", self.endpoint)
            // The CLI writes a version cache under ~/.cache; keep it out of the real home.
            .env("HOME", home)
            .env_remove("OS_CLOUD")
            .env_remove("OS_BAREMETAL_API_VERSION")
            .env_remove("INGOT_URL")
            .env_remove("INGOT_CACERT")
            .env_remove("INGOT_USERNAME")
            .env_remove("INGOT_PASSWORD")
            .stdin(Stdio::null());
    }
}

/// Runs a session script; panics with its whole output unless every check passed.
fn run_session(script: &str, client: &ClientEnv<'_>, peer: &str, server_log: &dyn Fn() -> String) {
    let venv = clients_venv();
    let home = tempfile::tempdir().expect("temp HOME");
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let mut cmd = Command::new(venv.join("bin").join("python"));
    client.apply(&mut cmd, home.path());
    let out = cmd
        .arg(&script_path)
        .env("CLIENTS_PEER", peer)
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
/// `ingot serve` secured as `security` says.
fn session_against_server(script: &str, security: Security) {
    if let Ok(endpoint) = std::env::var("INGOT_CLIENTS_ENDPOINT") {
        if security != Security::Open {
            println!("{script} with {security:?}: skipped against an external server");
            return;
        }
        let peer = std::env::var("CLIENTS_PEER").unwrap_or_else(|_| "ingot".to_owned());
        let client = ClientEnv {
            endpoint: &endpoint,
            credentials: None,
            ca: None,
        };
        run_session(script, &client, &peer, &|| {
            String::from("(external server)")
        });
        return;
    }
    let server = Ingot::start(security);
    let client = ClientEnv {
        endpoint: &server.base_url,
        credentials: (security == Security::BasicOverTls).then_some((USER, PASSWORD)),
        ca: server.ca.as_deref(),
    };
    run_session(script, &client, "ingot", &|| server.log_text());
    let log = server.log_text();
    assert!(!log.contains(PASSWORD), "the password is in the server log");
    let status = server.stop();
    assert!(
        status.success(),
        "ingot serve did not exit cleanly on SIGTERM: {status}\n{log}"
    );
}

#[test]
fn baremetal_cli_session_passes() {
    test_needs::need!(test_needs::Need::Program("python3"));
    session_against_server("cli_session.py", Security::Open);
}

#[test]
fn openstacksdk_session_passes() {
    test_needs::need!(test_needs::Need::Program("python3"));
    session_against_server("sdk_session.py", Security::Open);
}

/// The same sessions against `ingot serve` with `auth_strategy = http_basic` over HTTPS,
/// the clients logging in as `baremetal --os-auth-type http_basic --os-cacert ca.pem` does.
#[test]
fn baremetal_cli_session_passes_with_http_basic_over_tls() {
    test_needs::need!(test_needs::Need::Program("python3"));
    session_against_server("cli_session.py", Security::BasicOverTls);
}

#[test]
fn openstacksdk_session_passes_with_http_basic_over_tls() {
    test_needs::need!(test_needs::Need::Program("python3"));
    session_against_server("sdk_session.py", Security::BasicOverTls);
}

/// Runs the venv's `baremetal` (or, with `ingot`, our CLI) with `args` and `client`'s
/// environment.
fn run_client(program: &Path, args: &[&str], client: &ClientEnv<'_>) -> Output {
    let home = tempfile::tempdir().expect("temp HOME");
    let mut cmd = Command::new(program);
    client.apply(&mut cmd, home.path());
    cmd.args(args).output().expect("the client runs")
}

fn text(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The HTTPS API with http_basic: plain HTTP gets a 400 that says to use https://; a client
/// that trusts another CA (same subject, another key) is refused, with the `baremetal` CLI
/// and with `ingot node list` (whose error says which flag fixes it); the right CA with the
/// right password works, a wrong password is 401; no password reaches an error or the log.
#[test]
fn tls_api_refuses_plain_http_and_other_cas() {
    test_needs::need!(test_needs::Need::Program("python3"));
    if std::env::var_os("INGOT_CLIENTS_ENDPOINT").is_some() {
        println!("skipped against an external server");
        return;
    }
    let server = Ingot::start(Security::BasicOverTls);
    let ca = server.ca.clone().expect("the server has a CA");
    let rogue = certs_init(&server.dir.path().join("rogue"));
    let https = server.base_url.clone();
    let plain = format!("http://{}", server.addr);

    let (status, answer) = probe(server.addr).expect("plain HTTP is answered");
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("use https://"), "{answer}");

    let baremetal = clients_venv().join("bin/baremetal");
    let ingot = Path::new(env!("CARGO_BIN_EXE_ingot"));
    // ((scheme, password, CA), must `node list` succeed?)
    let cases = [
        (("https", PASSWORD, "ours"), true),
        (("https", PASSWORD, "rogue"), false),
        (("http", PASSWORD, "ours"), false),
        (("https", "not-the-password", "ours"), false),
    ];
    for ((scheme, password, which), should_pass) in cases {
        let endpoint = if scheme == "https" { &https } else { &plain };
        let client = ClientEnv {
            endpoint,
            credentials: Some((USER, password)),
            ca: Some(if which == "ours" { &ca } else { &rogue }),
        };
        for (name, program, args) in [
            ("baremetal", baremetal.as_path(), ["node", "list"]),
            ("ingot", ingot, ["node", "list"]),
        ] {
            let out = run_client(program, &args, &client);
            let what = format!(
                "{name} node list, {scheme}, CA {which}, password ok: {}",
                password == PASSWORD
            );
            assert_eq!(out.status.success(), should_pass, "{what}\n{}", text(&out));
            assert!(
                !text(&out).contains(PASSWORD),
                "{what}: the password is shown"
            );
            if name == "ingot" && !should_pass {
                let err = String::from_utf8_lossy(&out.stderr);
                let said = match (scheme, which) {
                    ("https", "rogue") => "--cacert",
                    ("http", _) => "use https://",
                    _ => "HTTP 401",
                };
                assert!(
                    err.contains(said),
                    "{what}: expected {said:?}\n{}",
                    text(&out)
                );
            }
        }
    }
    let log = server.log_text();
    assert!(!log.contains(PASSWORD), "the password is in the server log");
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert!(log.contains("plain HTTP on the HTTPS listener"), "{log}");
    assert!(server.stop().success());
}
