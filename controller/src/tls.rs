//! HTTPS for the provisioning listener: a rustls server config from PEM files (on the `ring`
//! provider) and a [`TlsListener`] that `axum::serve` takes like a `TcpListener`.
//!
//! Why hand-written (about 60 lines) rather than `axum-server`: `axum::serve` already takes
//! any [`axum::serve::Listener`], so graceful shutdown and `ConnectInfo<SocketAddr>` work as on
//! the plain listener; only the handshake is ours. Handshakes run in their own tasks (with a
//! timeout), so a client that stalls its handshake never holds up the accept loop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
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
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
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
