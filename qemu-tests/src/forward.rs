//! A TCP port on the host's loopback forwarded into the lab namespace, so a browser on the
//! host reaches the rack's API (and its web console): each connection accepted on the host
//! is joined to a connection made from a thread inside the lab (a socket belongs to the
//! namespace it was created in), and bytes are copied both ways (TLS passes through).
//! Traffic stays on the host's loopback and inside the lab.

use std::fs::File;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;

use anyhow::Context;

/// Forwards `listen` (a host loopback address; port 0 picks one) to `target` inside the
/// namespace `netns`; returns the address bound. The threads live as long as the process.
pub fn forward_into_lab(
    netns: &str,
    listen: SocketAddr,
    target: SocketAddr,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)
        .or_else(|_| TcpListener::bind(SocketAddr::new(listen.ip(), 0)))
        .with_context(|| format!("binding {listen}"))?;
    let bound = listener.local_addr().context("forward address")?;
    let path = format!("/run/netns/{netns}");
    let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
    let (tx, rx) = mpsc::channel::<TcpStream>();
    std::thread::Builder::new()
        .name("lab-forward".into())
        .spawn(move || {
            if let Err(e) = crate::bmc::enter(&ns) {
                eprintln!("forwarding into the lab: {e:#}");
                return;
            }
            for client in rx {
                match TcpStream::connect(target) {
                    Ok(upstream) => pipe(client, upstream),
                    Err(e) => eprintln!("forwarding into the lab: {target}: {e}"),
                }
            }
        })
        .context("forward thread")?;
    std::thread::Builder::new()
        .name("lab-accept".into())
        .spawn(move || {
            for client in listener.incoming().flatten() {
                if tx.send(client).is_err() {
                    return;
                }
            }
        })
        .context("accept thread")?;
    Ok(bound)
}

/// Copies both directions on threads of their own; each side's end closes the other.
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let one_way = |mut from: TcpStream, mut to: TcpStream| {
        move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        }
    };
    std::thread::spawn(one_way(a, b2));
    std::thread::spawn(one_way(b, a2));
}
