//! HTTPS for the operator API and the provisioning listener (one home for both): a rustls
//! server config from PEM files (on the `ring` provider) and a [`TlsListener`] that
//! `axum::serve` takes like a `TcpListener`.
//!
//! Why hand-written (about 60 lines) rather than `axum-server`: `axum::serve` already takes
//! any [`axum::serve::Listener`], so graceful shutdown and `ConnectInfo<SocketAddr>` work as on
//! the plain listener; only the handshake is ours. Handshakes run in their own tasks (with a
//! timeout), so a client that stalls its handshake never holds up the accept loop. A client
//! that speaks plain HTTP to the listener gets a `400` that says to use `https://` instead of
//! a connection closed without a word.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server config from `cert_file` (the server certificate, then its chain) and
/// `key_file` (PKCS#8, SEC1 or PKCS#1 PEM). Errors name the file, never the key.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .with_context(|| format!("reading certificates from {}", cert_file.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("reading the private key from {}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "using {} with the key in {}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    // HTTP/1.1 only: axum is built without `http2` (deny.toml bans `h2`), so offering h2
    // would let a client (curl does) pick a protocol this server cannot speak.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A TCP listener whose connections come out TLS-terminated.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    _accept: tokio_util::sync::DropGuard,
}

impl TlsListener {
    /// Starts accepting on `tcp`; the accept task stops when the listener is dropped.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    () = stopped.cancelled() => return,
                    r = tcp.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "accepting a TLS connection");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                // No Nagle: after the handshake the server writes its TLS 1.3 session tickets
                // and then the answer, two small writes; with Nagle the answer waits for the
                // client's delayed ACK of the tickets, ~40 ms on every new connection
                // (`cargo xtask bench tls`: p90 43 ms before, as the plain listener after).
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "setting TCP_NODELAY");
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake = async {
                        if speaks_plain_http(&stream).await {
                            refuse_plain_http(stream, peer).await;
                            return None;
                        }
                        Some(acceptor.accept(stream).await)
                    };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Some(Ok(tls))) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Some(Err(e))) => {
                            tracing::info!(%peer, error = %e, "TLS handshake failed");
                        }
                        Ok(None) => {}
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            local,
            ready,
            _accept: stop.drop_guard(),
        })
    }
}

/// PURE: whether the first byte a client sent starts a plain HTTP request (a method name)
/// rather than a TLS record (a handshake record is 0x16).
pub fn is_plain_http_start(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// Peeks at the first byte without consuming it.
async fn speaks_plain_http(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if is_plain_http_start(first[0]))
}

/// The answer to plain HTTP on the HTTPS listener.
const PLAIN_HTTP_ANSWER: &str =
    "This is an HTTPS listener: use https:// (the client sent plain HTTP).\n";

/// Reads the request head (so that closing does not reset the connection before the client
/// reads the answer), answers 400 and closes.
async fn refuse_plain_http(mut stream: TcpStream, peer: SocketAddr) {
    tracing::info!(%peer, "plain HTTP on the HTTPS listener: answered 400");
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
            _ => break,
        }
    }
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_HTTP_ANSWER}",
        PLAIN_HTTP_ANSWER.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Whether the server certificate (the first of `cert_file`) names `ip`, so that a client
/// dialling that address accepts it. Errors only when the file cannot be read or parsed.
pub fn certificate_names(cert_file: &Path, ip: std::net::IpAddr) -> anyhow::Result<bool> {
    let first = CertificateDer::pem_file_iter(cert_file)
        .and_then(|mut it| it.next().transpose())
        .with_context(|| format!("reading certificates from {}", cert_file.display()))?
        .with_context(|| format!("no certificate in {}", cert_file.display()))?;
    let parsed = rustls::server::ParsedCertificate::try_from(&first)
        .with_context(|| format!("parsing the certificate in {}", cert_file.display()))?;
    let name = ServerName::IpAddress(ip.into());
    Ok(rustls::client::verify_server_name(&parsed, &name).is_ok())
}

/// A [`TlsListener`] ready for `axum::serve(..).into_make_service_with_connect_info::
/// <SocketAddr>()`: axum gives `ConnectInfo<SocketAddr>` to any listener through `TapIo`
/// (the no-op tap), not to a foreign listener type directly.
pub type ServedTls = axum::serve::TapIo<TlsListener, fn(&mut TlsStream<TcpStream>)>;

/// Binds nothing: wraps the bound `tcp` as an HTTPS listener for `axum::serve`.
pub fn listener(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<ServedTls> {
    use axum::serve::ListenerExt;
    fn no_tap(_: &mut TlsStream<TcpStream>) {}
    Ok(TlsListener::new(tcp, config)?.tap_io(no_tap as fn(&mut TlsStream<TcpStream>)))
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task only ends when we are dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::is_plain_http_start;

    #[test]
    fn plain_http_is_told_from_a_tls_record() {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
            assert!(is_plain_http_start(method.as_bytes()[0]), "{method}");
        }
        // A TLS handshake record, and an SSLv2-style hello.
        assert!(!is_plain_http_start(0x16));
        assert!(!is_plain_http_start(0x80));
    }
}
