//! `tftp`: one datagram to the controller's TFTP server (`netboot::tftp::serve`: async-tftp's
//! request parser, then [`IpxeFilesHandler`](controller::netboot::tftp::IpxeFilesHandler)),
//! which runs once per process on 127.0.0.1 on a thread of its own, plus the pure name
//! check (`TftpFiles::resolve`) on the file name the datagram carries.
//!
//! After each datagram a sentinel request from another socket must be answered: the server
//! handles datagrams in order, so the answer proves the fuzzed one was taken without the
//! server dying. The served directory does not exist, so no transfer is ever started and no
//! file is read. Invariant: only the three iPXE names (with an optional leading `/`) resolve.

use std::ffi::OsStr;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use controller::netboot::tftp::{TftpFiles, bind_socket, serve};
use tokio_util::sync::CancellationToken;

const NAMES: [&str; 3] = ["undionly.kpxe", "snponly.efi", "ipxe.efi"];
const MISSING_DIR: &str = "/nonexistent/ingot-fuzz-tftp";

/// The address of the server thread's socket, started on first use.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let socket = bind_socket(([127, 0, 0, 1], 0).into(), None).expect("binding 127.0.0.1");
        let addr = socket.local_addr().expect("local address");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let files = TftpFiles::ipxe_binaries(Path::new(MISSING_DIR));
            // Nobody cancels: the server lives as long as the process.
            let r = rt.block_on(serve(
                socket,
                files,
                Default::default(),
                CancellationToken::new(),
            ));
            panic!("the TFTP server ended: {r:?}");
        });
        addr
    })
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s
}

/// The file name of a read or write request, if the datagram looks like one.
fn requested_name(data: &[u8]) -> Option<&[u8]> {
    let rest = data.get(2..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    Some(&rest[..end])
}

/// Entry point.
pub fn run(data: &[u8]) {
    let files = TftpFiles::ipxe_binaries(Path::new(MISSING_DIR));
    if let Some(name) = requested_name(data) {
        let resolved = files.resolve(Path::new(OsStr::from_bytes(name)));
        let plain = name.strip_prefix(b"/").unwrap_or(name);
        let known = NAMES.iter().any(|n| n.as_bytes() == plain);
        assert_eq!(
            resolved.is_ok(),
            known,
            "resolve({:?})",
            String::from_utf8_lossy(name)
        );
        if let Ok(path) = resolved {
            assert!(
                path.starts_with(MISSING_DIR),
                "resolved outside the directory"
            );
        }
    }

    let addr = server();
    let fuzzed = client();
    fuzzed.send_to(data, addr).expect("sending to 127.0.0.1");
    let sentinel = client();
    sentinel
        .send_to(b"\x00\x01ingot-fuzz-sentinel\x00octet\x00", addr)
        .expect("sending to 127.0.0.1");
    let mut buf = [0u8; 1024];
    // libFuzzer's timer signal interrupts a blocking receive now and then.
    let n = loop {
        match sentinel.recv_from(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.expect("the TFTP server stopped answering").0,
        }
    };
    // ERROR (5), file not found (1).
    assert_eq!(
        buf.get(..4),
        Some(&[0, 5, 0, 1][..]),
        "answer {:?}",
        &buf[..n]
    );
}
