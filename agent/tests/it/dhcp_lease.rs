//! The agent's DHCP lease keeping (`agent::init::lease`) on a veth pair between two network
//! namespaces the test creates (no route out of either): dnsmasq (a real server, lease
//! 120 s, T1 3 s, T2 6 s) grants the lease and two renewals by unicast at T1 keep the same
//! address; with the server's MAC poisoned in the client's neighbour table the unicast
//! renewal is lost and the broadcast rebind at T2 is answered; then a scripted responder
//! (dhcproto) replaces dnsmasq and NAKs the next renewal: the address must leave the NIC and
//! a fresh DISCOVER, asking for the same address, gets it back. Needs root (namespaces);
//! skipped with a printed reason otherwise.

use std::net::{Ipv4Addr, UdpSocket};
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent::host::ifconfig::Ioctl;
use agent::init::dhcp::edge::Port;
use agent::init::dhcp::machine::{Action, Loss, Via};
use agent::init::lease;
use anyhow::{Context, bail, ensure};
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0x77, 0, 2];

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Two namespaces joined by a veth pair; deleted on drop.
struct Net {
    srv: String,
    cli: String,
    dnsmasq: Option<Child>,
}

impl Net {
    fn new() -> anyhow::Result<Net> {
        let pid = std::process::id();
        let net = Net {
            srv: format!("ingot-lease-s-{pid}"),
            cli: format!("ingot-lease-c-{pid}"),
            dnsmasq: None,
        };
        ip(&["netns", "add", &net.srv])?;
        ip(&["netns", "add", &net.cli])?;
        for ns in [&net.srv, &net.cli] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ])?;
            ip(&[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])?;
        }
        ip(&[
            "-n",
            &net.srv,
            "link",
            "add",
            "veth-s",
            "type",
            "veth",
            "peer",
            "name",
            "veth-c",
            "netns",
            &net.cli,
            "address",
            "02:00:00:77:00:02",
        ])?;
        ip(&[
            "-n",
            &net.srv,
            "addr",
            "add",
            "10.77.0.1/24",
            "dev",
            "veth-s",
        ])?;
        ip(&["-n", &net.srv, "link", "set", "veth-s", "up"])?;
        ip(&["-n", &net.cli, "link", "set", "veth-c", "up"])?;
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(c) = &mut self.dnsmasq {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = ip(&["netns", "del", &self.srv]);
        let _ = ip(&["netns", "del", &self.cli]);
    }
}

/// Moves the calling thread into the named network namespace.
fn enter(ns: &str) -> anyhow::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).context("opening the netns")?;
    // SAFETY: f is an open namespace file; setns changes only this thread's namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(r == 0, "setns: {}", std::io::Error::last_os_error());
    Ok(())
}

/// What the client thread reports: each action with the NIC's address right after it.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a few dozen test messages; boxing would only make the matches harder to read"
)]
enum Seen {
    Bound(Ipv4Addr),
    Act(Action, Option<Ipv4Addr>),
    Failed(String),
}

fn run_client(ns: String, tx: mpsc::Sender<Seen>) {
    let go = || -> anyhow::Result<()> {
        enter(&ns)?;
        let name = std::ffi::CString::new("veth-c")?;
        // SAFETY: name is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        ensure!(ifindex != 0, "no veth-c");
        let port = Port {
            name: "veth-c".into(),
            ifindex,
        };
        let io = Ioctl::new()?;
        let (mut client, l) = lease::obtain(&port, CLIENT_MAC, Duration::from_secs(10))?;
        ensure!(io.addr("veth-c")? == Some(l.addr), "address not set");
        let _ = tx.send(Seen::Bound(l.addr));
        let mut lost = false;
        lease::keep(&port, &mut client, &mut |_, a| {
            let now = io.addr("veth-c").ok().flatten();
            let _ = tx.send(Seen::Act(a.clone(), now));
            lost |= matches!(a, Action::Deconfigure { .. });
            // The scenario ends with the address back after the NAK.
            if lost && matches!(a, Action::Configure { .. }) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
    };
    if let Err(e) = go() {
        let _ = tx.send(Seen::Failed(format!("{e:#}")));
    }
}

/// The next report, within `wait`.
fn next(rx: &mpsc::Receiver<Seen>, until: Instant) -> anyhow::Result<Seen> {
    let left = until.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left) {
        Ok(Seen::Failed(e)) => bail!("client failed: {e}"),
        Ok(s) => Ok(s),
        Err(_) => bail!("nothing from the client in time"),
    }
}

/// Waits for an `Extended` action; returns it with the sends seen before it.
fn extended(rx: &mpsc::Receiver<Seen>, secs: u64) -> anyhow::Result<(bool, Ipv4Addr, Vec<Via>)> {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut vias = Vec::new();
    loop {
        match next(rx, until)? {
            Seen::Act(Action::Send { via, .. }, _) => vias.push(via),
            Seen::Act(Action::Extended { lease, rebound }, now) => {
                ensure!(now == Some(lease.addr), "address on the NIC {now:?}");
                return Ok((rebound, lease.addr, vias));
            }
            other => bail!("unexpected {other:?}"),
        }
    }
}

/// A responder that NAKs any REQUEST with ciaddr, offers the requested address (else
/// 10.77.0.99) and ACKs a REQUEST for it; returns the DISCOVERs' requested addresses.
fn scripted_responder(ns: String, stop: Instant) -> anyhow::Result<Vec<Option<Ipv4Addr>>> {
    enter(&ns)?;
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 67)).context("binding port 67")?;
    s.set_broadcast(true)?;
    let dev = b"veth-s";
    // SAFETY: dev is valid for its length; the option only reads it. Bound to the device,
    // the broadcast replies leave through veth-s (the namespace has no route for them).
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr().cast(),
            6,
        )
    };
    ensure!(
        r == 0,
        "SO_BINDTODEVICE: {}",
        std::io::Error::last_os_error()
    );
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut discovers = Vec::new();
    let mut buf = [0u8; 1500];
    while Instant::now() < stop {
        let Ok((n, _)) = s.recv_from(&mut buf) else {
            continue;
        };
        let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else {
            continue;
        };
        let requested = match m.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(a)) => Some(*a),
            _ => None,
        };
        let (kind, yiaddr) = match m.opts().msg_type() {
            Some(MessageType::Request) if !m.ciaddr().is_unspecified() => {
                (MessageType::Nak, Ipv4Addr::UNSPECIFIED)
            }
            Some(MessageType::Discover) => {
                discovers.push(requested);
                (
                    MessageType::Offer,
                    requested.unwrap_or(Ipv4Addr::new(10, 77, 0, 99)),
                )
            }
            Some(MessageType::Request) => match requested {
                Some(a) => (MessageType::Ack, a),
                None => continue,
            },
            _ => continue,
        };
        let z = Ipv4Addr::UNSPECIFIED;
        let mut r = Message::new_with_id(m.xid(), z, yiaddr, z, z, &m.chaddr()[..6]);
        r.set_opcode(Opcode::BootReply);
        r.opts_mut().insert(DhcpOption::MessageType(kind));
        r.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        if kind != MessageType::Nak {
            r.opts_mut()
                .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
            r.opts_mut().insert(DhcpOption::AddressLeaseTime(3600));
        }
        s.send_to(&r.to_vec()?, (Ipv4Addr::BROADCAST, 68))?;
        if kind == MessageType::Ack {
            break;
        }
    }
    Ok(discovers)
}

#[test]
fn lease_is_renewed_rebound_and_recovered_after_a_nak() -> anyhow::Result<()> {
    test_needs::need!(test_needs::NETNS, test_needs::Need::Program("dnsmasq"));
    let mut net = Net::new()?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("dnsmasq.log");
    let dnsmasq = Command::new("ip")
        .args(["netns", "exec", &net.srv, "dnsmasq", "--keep-in-foreground"])
        .args([
            "--conf-file=/dev/null",
            "--port=0",
            "--no-resolv",
            "--no-hosts",
        ])
        .args(["--interface=veth-s", "--bind-interfaces", "--user=root"])
        .args(["--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m"])
        // dnsmasq's shortest lease is 2 minutes; T1 and T2 are set short instead.
        .args([
            "--dhcp-option=58,3",
            "--dhcp-option=59,6",
            "--log-dhcp",
            "--no-ping",
        ])
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.path().join("leases").display()
        ))
        .arg(format!("--log-facility={}", log.display()))
        .arg(format!("--pid-file={}", dir.path().join("pid").display()))
        .stdin(Stdio::null())
        .spawn()
        .context("starting dnsmasq (package dnsmasq-base)")?;
    net.dnsmasq = Some(dnsmasq);
    std::thread::sleep(Duration::from_millis(300));

    let (tx, rx) = mpsc::channel();
    let cli = net.cli.clone();
    std::thread::spawn(move || run_client(cli, tx));
    let started = Instant::now();
    let addr = match next(&rx, started + Duration::from_secs(15))? {
        Seen::Bound(a) => a,
        other => bail!("unexpected {other:?}"),
    };
    println!("bound to {addr} after {:?}", started.elapsed());

    // Two renewals at T1, unicast to the server, the same address each time.
    for i in 0..2 {
        let (rebound, a, vias) = extended(&rx, 10)?;
        println!("renewal {i} at {:?}: {a} via {vias:?}", started.elapsed());
        ensure!(!rebound && a == addr, "renewal {i}: rebound {rebound}, {a}");
        ensure!(
            vias == vec![Via::Unicast(SERVER)],
            "renewal {i} sent {vias:?}"
        );
    }

    // The server's MAC poisoned: the unicast renewal is lost, the broadcast at T2 is not.
    ip(&[
        "-n",
        &net.cli,
        "neigh",
        "replace",
        "10.77.0.1",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "veth-c",
        "nud",
        "permanent",
    ])?;
    let (rebound, a, vias) = extended(&rx, 15)?;
    println!("rebind at {:?}: {a} via {vias:?}", started.elapsed());
    ensure!(rebound && a == addr, "rebind: rebound {rebound}, {a}");
    ensure!(
        vias.first() == Some(&Via::Unicast(SERVER)) && vias.last() == Some(&Via::Broadcast),
        "rebind sent {vias:?}"
    );
    ip(&["-n", &net.cli, "neigh", "del", "10.77.0.1", "dev", "veth-c"])?;

    // dnsmasq's own record: the first grant, two renewals and the rebind, all for `addr`.
    if let Some(mut c) = net.dnsmasq.take() {
        c.kill()?;
        c.wait()?;
    }
    let text = std::fs::read_to_string(&log)?;
    let acks = text
        .lines()
        .filter(|l| l.contains(&format!("DHCPACK(veth-s) {addr}")))
        .count();
    ensure!(acks >= 4, "dnsmasq acked {addr} {acks} times:\n{text}");

    // A NAK to the next renewal: the address goes, a DISCOVER asks for it, it comes back.
    let srv = net.srv.clone();
    let stop = Instant::now() + Duration::from_secs(20);
    let responder = std::thread::spawn(move || scripted_responder(srv, stop));
    let until = Instant::now() + Duration::from_secs(15);
    let mut saw_nak = false;
    loop {
        match next(&rx, until)? {
            Seen::Act(Action::Send { .. }, _) => {}
            Seen::Act(Action::Deconfigure { addr: a, why }, now) => {
                ensure!(a == addr && why == Loss::Nak, "lost {a} for {why:?}");
                ensure!(
                    now.is_none(),
                    "address still on the NIC after the NAK: {now:?}"
                );
                saw_nak = true;
            }
            Seen::Act(Action::Configure { lease, .. }, now) => {
                ensure!(saw_nak, "configured before the NAK");
                ensure!(
                    lease.addr == addr && now == Some(addr),
                    "got {} ({now:?})",
                    lease.addr
                );
                break;
            }
            other => bail!("unexpected {other:?}"),
        }
    }
    println!("NAK handled, {addr} back at {:?}", started.elapsed());
    let discovers = responder
        .join()
        .map_err(|_| anyhow::anyhow!("responder panicked"))??;
    ensure!(
        discovers.first() == Some(&Some(addr)),
        "the DISCOVER after the NAK asked for {discovers:?}, not {addr}"
    );
    Ok(())
}
