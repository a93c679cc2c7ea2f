//! A server process started by an xtask: readiness probing, cold start, clean stop.
//!
//! Probing uses a plain HTTP/1.0 request over a std `TcpStream` (through a blocking rustls
//! session trusting one CA for an HTTPS server), so it needs no runtime and adds almost
//! nothing but the handshake to a cold-start measurement.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running server child process.
#[derive(Debug)]
pub struct ServerProcess {
    /// Short label used in reports ("ingot", "ironic").
    pub name: String,
    /// `http://127.0.0.1:PORT` (`https://` for an HTTPS server).
    pub base_url: String,
    /// Where the server writes its log.
    pub log_path: PathBuf,
    /// Time from spawn to the first `GET /v1` answered with 200.
    pub cold_start: Duration,
    child: Option<Child>,
}

/// A free TCP port on 127.0.0.1 (bound and released; a small race is accepted).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener
        .local_addr()
        .context("reading bound address")?
        .port())
}

/// Sends `GET path` and returns the HTTP status code, or `None` if nothing answered.
pub fn probe(addr: SocketAddr, path: &str) -> Option<u16> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    status_of_get(stream, addr, path)
}

/// A client config that trusts only the CA certificates in `ca` (PEM).
pub fn tls_client_config(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots
            .add(cert.with_context(|| format!("reading {}", ca.display()))?)
            .with_context(|| format!("trusting {}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// [`probe`] over TLS with `config` (a new session each time, as a new client's).
pub fn probe_tls(addr: SocketAddr, path: &str, config: &Arc<rustls::ClientConfig>) -> Option<u16> {
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(config.clone(), name).ok()?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    status_of_get(rustls::StreamOwned::new(conn, tcp), addr, path)
}

fn status_of_get(mut stream: impl Read + Write, addr: SocketAddr, path: &str) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = stream.read(&mut buf[got..]).ok()?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = std::str::from_utf8(&buf[..got]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

impl ServerProcess {
    /// Spawns `cmd` (which must listen on `port`) and waits until `GET /v1` answers 200.
    pub fn spawn(
        name: &str,
        cmd: Command,
        port: u16,
        log_path: PathBuf,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Self::spawn_with(name, cmd, port, log_path, timeout, None)
    }

    /// [`ServerProcess::spawn`] for a server that answers over HTTPS with a certificate the
    /// CA in `ca` (PEM) signed for 127.0.0.1, when `ca` is given.
    pub fn spawn_with(
        name: &str,
        mut cmd: Command,
        port: u16,
        log_path: PathBuf,
        timeout: Duration,
        ca: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let tls = ca.map(tls_client_config).transpose()?;
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log.try_clone().context("cloning log handle")?;
        cmd.stdout(log)
            .stderr(log_err)
            .stdin(std::process::Stdio::null());
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut server = Self {
            name: name.to_owned(),
            base_url: format!("{scheme}://{addr}"),
            log_path,
            cold_start: Duration::ZERO,
            child: Some(child),
        };
        loop {
            let status = match &tls {
                Some(config) => probe_tls(addr, "/v1", config),
                None => probe(addr, "/v1"),
            };
            if status == Some(200) {
                server.cold_start = started.elapsed();
                return Ok(server);
            }
            if let Some(child) = server.child.as_mut()
                && let Some(status) = child.try_wait().context("polling server process")?
            {
                server.child = None;
                bail!(
                    "{name} exited with {status} before answering; log:\n{}",
                    server.log_tail(40)
                );
            }
            if started.elapsed() > timeout {
                bail!(
                    "{name} did not answer GET /v1 within {timeout:?}; log:\n{}",
                    server.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Process id of the server's main process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until the server exits by itself (or is stopped from outside).
    pub fn wait(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("server already stopped")?;
        child.wait().context("waiting for server")
    }

    /// Sends SIGTERM and waits up to `grace`; kills the process tree if it is still running.
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("server already stopped")?;
        match terminate(&mut child, grace)? {
            Ok(status) => Ok(status),
            Err(status) => bail!(
                "{} ignored SIGTERM for {grace:?} and was killed ({status})",
                self.name
            ),
        }
    }
}

/// SIGTERM, then SIGKILL for the whole tree after `grace`. `Ok(Err(_))` means it was killed.
fn terminate(
    child: &mut Child,
    grace: Duration,
) -> anyhow::Result<Result<std::process::ExitStatus, std::process::ExitStatus>> {
    let pid = child.id();
    let tree = crate::proc_stats::tree_pids(pid);
    // `kill` by our own child's PID: std has no portable SIGTERM.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait().context("waiting for server")? {
            kill_leftovers(&tree[1..]);
            return Ok(Ok(status));
        }
        if Instant::now() > deadline {
            child.kill().context("killing server")?;
            let status = child.wait().context("reaping server")?;
            kill_leftovers(&tree[1..]);
            return Ok(Err(status));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills descendants (forked workers) that outlived their parent, by the PIDs we saw under it.
fn kill_leftovers(pids: &[u32]) {
    for pid in pids {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = terminate(&mut child, Duration::from_secs(5));
        }
    }
}
