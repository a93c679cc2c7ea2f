//! TFTP for the iPXE binaries only (`undionly.kpxe`, `snponly.efi`, `ipxe.efi`), on
//! async-tftp.
//!
//! Read-only, and no path from the wire ever reaches the file system: a request names one of
//! a fixed set of files (a leading `/` is tolerated), anything else is "file not found".
//! Block size (RFC 2348) is capped at 1468 so a block plus headers fits a 1500-byte MTU
//! without IP fragmentation; window size (RFC 7440) is honoured. Everything larger than the
//! iPXE binaries goes over HTTP.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

/// Largest TFTP block: 1500 (MTU) - 20 (IPv4) - 8 (UDP) - 4 (TFTP header).
pub const BLOCK_SIZE_LIMIT: u16 = 1468;

/// Where Debian's `ipxe` package installs its binaries.
pub const DEBIAN_IPXE_DIR: &str = "/usr/lib/ipxe";

/// The files TFTP serves, by the name clients ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpFiles {
    files: BTreeMap<String, PathBuf>,
}

/// Error building [`TftpFiles`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("TFTP file name {0:?} must be a plain file name (no '/', '\\', '..' or NUL)")]
pub struct TftpNameError(String);

impl TftpFiles {
    /// Serve exactly `files` (name clients ask for -> path on disk).
    pub fn new<I, S, P>(files: I) -> Result<Self, TftpNameError>
    where
        I: IntoIterator<Item = (S, P)>,
        S: Into<String>,
        P: Into<PathBuf>,
    {
        let mut map = BTreeMap::new();
        for (name, path) in files {
            let name = name.into();
            let plain = !name.is_empty()
                && name != "."
                && name != ".."
                && !name.contains(['/', '\\', '\0']);
            if !plain {
                return Err(TftpNameError(name));
            }
            map.insert(name, path.into());
        }
        Ok(TftpFiles { files: map })
    }

    /// The three iPXE binaries from Debian's `ipxe` package under `dir`.
    pub fn ipxe_binaries(dir: &Path) -> Self {
        let files = ["undionly.kpxe", "snponly.efi", "ipxe.efi"]
            .into_iter()
            .map(|n| (n.to_owned(), dir.join(n)))
            .collect();
        TftpFiles { files }
    }

    /// PURE: map a requested name to the file to serve, or the TFTP error to answer.
    pub fn resolve(&self, requested: &Path) -> Result<&Path, packet::Error> {
        let Some(name) = requested.to_str() else {
            return Err(packet::Error::FileNotFound);
        };
        // PXE ROMs and iPXE send the bare name; some firmwares prefix a '/'.
        let name = name.strip_prefix('/').unwrap_or(name);
        self.files
            .get(name)
            .map(PathBuf::as_path)
            .ok_or(packet::Error::FileNotFound)
    }
}

/// What the TFTP server did (read by `/metrics`).
#[derive(Debug, Default)]
pub struct TftpCounters {
    /// Read requests answered with a file (a transfer started).
    pub transfers: AtomicU64,
    /// Bytes of the files those transfers send.
    pub bytes: AtomicU64,
    /// Requests for a name outside the served set, and every write request.
    pub refused: AtomicU64,
    /// Served names whose file could not be read.
    pub unreadable: AtomicU64,
}

/// The async-tftp handler over [`TftpFiles`].
#[derive(Debug, Clone)]
pub struct IpxeFilesHandler {
    files: Arc<TftpFiles>,
    counters: Arc<TftpCounters>,
}

impl IpxeFilesHandler {
    pub fn new(files: TftpFiles, counters: Arc<TftpCounters>) -> Self {
        IpxeFilesHandler {
            files: Arc::new(files),
            counters,
        }
    }
}

impl Handler for IpxeFilesHandler {
    type Reader = futures_util::io::Cursor<Vec<u8>>;
    type Writer = futures_util::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let file = match self.files.resolve(path) {
            Ok(f) => f.to_owned(),
            Err(e) => {
                tracing::warn!(%client, path = %path.display(), "tftp request refused");
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        // The iPXE binaries are 100 KiB to 1 MiB: read whole, so a transfer never holds an
        // open file and `tsize` is exact.
        let data = std::fs::read(&file).map_err(|e| {
            self.counters.unreadable.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%client, file = %file.display(), error = %e, "tftp file unreadable");
            match e.kind() {
                std::io::ErrorKind::NotFound => packet::Error::FileNotFound,
                std::io::ErrorKind::PermissionDenied => packet::Error::PermissionDenied,
                _ => packet::Error::UnknownError,
            }
        })?;
        tracing::info!(%client, file = %file.display(), bytes = data.len(), "tftp transfer");
        let len = u64::try_from(data.len()).ok();
        self.counters.transfers.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(len.unwrap_or(0), Ordering::Relaxed);
        Ok((futures_util::io::Cursor::new(data), len))
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        tracing::warn!(%client, path = %path.display(), "tftp write refused");
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        Err(packet::Error::PermissionDenied)
    }
}

/// Bind the TFTP listening socket, on `device` when given (SO_BINDTODEVICE).
///
/// Bind to the server's address, not 0.0.0.0: async-tftp opens each transfer's socket on the
/// listener's IP, and a concrete IP makes replies leave from the address the client asked.
pub fn bind_socket(addr: SocketAddr, device: Option<&str>) -> anyhow::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .context("creating tftp socket")?;
    socket
        .set_reuse_address(true)
        .context("setting SO_REUSEADDR on tftp socket")?;
    if let Some(dev) = device {
        socket
            .bind_device(Some(dev.as_bytes()))
            .with_context(|| format!("binding tftp socket to interface {dev}"))?;
    }
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding tftp socket to {addr}"))?;
    Ok(socket.into())
}

/// Serve TFTP on `socket` until `cancel` fires, counting into `counters`.
///
/// Transfers run on async-tftp's own executor inside this future; dropping it on
/// cancellation ends them. Each transfer's socket is created on the thread that polls this
/// future, so it must run in the same network namespace as `socket`.
pub async fn serve(
    socket: UdpSocket,
    files: TftpFiles,
    counters: Arc<TftpCounters>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let local = socket.local_addr().context("reading tftp socket address")?;
    let server = TftpServerBuilder::with_handler(IpxeFilesHandler::new(files, counters))
        .std_socket(socket)
        .context("registering tftp socket")?
        .block_size_limit(BLOCK_SIZE_LIMIT)
        .build()
        .await
        .context("building tftp server")?;
    tracing::info!(%local, "tftp serving");
    tokio::select! {
        r = server.serve() => r.context("tftp server failed"),
        () = cancel.cancelled() => {
            tracing::info!(%local, "tftp stopped");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_only_the_configured_names() {
        let files = TftpFiles::ipxe_binaries(Path::new("/usr/lib/ipxe"));
        let ok = |p: &str| files.resolve(Path::new(p)).ok().map(Path::to_path_buf);
        assert_eq!(
            ok("undionly.kpxe"),
            Some(PathBuf::from("/usr/lib/ipxe/undionly.kpxe"))
        );
        assert_eq!(
            ok("/snponly.efi"),
            Some(PathBuf::from("/usr/lib/ipxe/snponly.efi"))
        );
        for bad in [
            "../ipxe/undionly.kpxe",
            "/usr/lib/ipxe/undionly.kpxe",
            "undionly.kpxe/..",
            "./undionly.kpxe",
            "//undionly.kpxe",
            "UNDIONLY.KPXE",
            "pxelinux.cfg/default",
            "",
            "/",
            "../../etc/passwd",
        ] {
            assert!(
                matches!(
                    files.resolve(Path::new(bad)),
                    Err(packet::Error::FileNotFound)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn configured_names_must_be_plain() {
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0"] {
            assert!(TftpFiles::new([(bad, "/x")]).is_err(), "{bad:?}");
        }
        assert!(TftpFiles::new([("ipxe.efi", "/x")]).is_ok());
    }
}
