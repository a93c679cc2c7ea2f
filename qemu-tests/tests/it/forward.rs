//! `qemu_tests::forward`: a host loopback port reaches a server inside a lab namespace
//! (what `cargo xtask lab --keep` uses to put the web console in the host's browser).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use qemu_tests::netns::Lab;

#[test]
fn host_port_reaches_a_server_in_the_lab() -> anyhow::Result<()> {
    test_needs::need!(test_needs::NETNS);
    let lab = Lab::new()?;
    // A one-shot server on the lab's loopback (nothing listens there on the host).
    let mut server = lab
        .command("python3")
        .args(["-m", "http.server", "6399", "--bind", "127.0.0.1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let target: SocketAddr = "127.0.0.1:6399".parse()?;
    let host = qemu_tests::forward::forward_into_lab(&lab.name, "127.0.0.1:0".parse()?, target)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let mut s = TcpStream::connect(host)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        if out.starts_with("HTTP/1.0 200") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = server.kill();
    let _ = server.wait();
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    Ok(())
}
