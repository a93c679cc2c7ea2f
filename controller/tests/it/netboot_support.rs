//! Test harness shared by the netboot network-namespace tests: throwaway namespaces joined
//! by a veth pair (deleted on drop, even when a test fails), and running code inside them.

use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by one veth pair; deleted on drop, even when the test fails.
pub struct Lab {
    pub server_ns: String,
    pub client_ns: String,
    pub server_if: String,
    pub client_if: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Lab {
    pub fn new(client_has_ip: bool) -> Lab {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            server_ns: format!("ingot-nbs-{id}"),
            client_ns: format!("ingot-nbc-{id}"),
            server_if: format!("nbs{id}"),
            client_if: format!("nbc{id}"),
        };
        sh(&["ip", "netns", "add", &lab.server_ns]);
        sh(&["ip", "netns", "add", &lab.client_ns]);
        for ns in [&lab.server_ns, &lab.client_ns] {
            // Link-local addresses usable at once (no DAD), for the RA test.
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.accept_dad=0",
            ]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // The pair is created straight inside the two namespaces: nothing in the root one.
        sh(&[
            "ip",
            "link",
            "add",
            "name",
            &lab.server_if,
            "netns",
            &lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
            "netns",
            &lab.client_ns,
        ]);
        sh(&[
            "ip",
            "-n",
            &lab.server_ns,
            "addr",
            "add",
            "10.77.0.1/24",
            "dev",
            &lab.server_if,
        ]);
        sh(&[
            "ip",
            "-n",
            &lab.server_ns,
            "link",
            "set",
            &lab.server_if,
            "up",
        ]);
        if client_has_ip {
            sh(&[
                "ip",
                "-n",
                &lab.client_ns,
                "addr",
                "add",
                "10.77.0.150/24",
                "dev",
                &lab.client_if,
            ]);
        }
        sh(&[
            "ip",
            "-n",
            &lab.client_ns,
            "link",
            "set",
            &lab.client_if,
            "up",
        ]);
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Move the calling thread into network namespace `ns`.
pub fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open namespace descriptor for the duration of the call; setns only
    // changes this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({ns}): {}", std::io::Error::last_os_error());
}

/// Run `f` on a thread inside `ns`; a panic in it fails the test.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    match std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Services running on their own thread (and runtime) inside the server namespace: every
/// socket, including the per-transfer ones async-tftp opens, lives there. Stopped on drop.
pub struct Running {
    cancel: CancellationToken,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub fn start<F, Fut>(ns: &str, f: F) -> Running
    where
        F: FnOnce(CancellationToken, mpsc::Sender<()>) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let cancel = CancellationToken::new();
        let (ready_tx, ready_rx) = mpsc::channel();
        let ns = ns.to_owned();
        let c = cancel.clone();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(f(c, ready_tx))
        });
        let mut running = Running {
            cancel,
            thread: Some(thread),
        };
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let err = running.thread.take().map(|t| t.join());
            panic!("services did not start: {err:?}");
        }
        running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) if !std::thread::panicking() => panic!("services failed: {e:#}"),
                _ => {}
            }
        }
    }
}
