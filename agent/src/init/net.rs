//! Network bring-up for the ramdisk, beside the module loads: each physical NIC is brought up
//! as soon as its driver created it, and a worker per NIC waits for carrier and runs DHCP
//! (in parallel). The first usable lease (the boot NIC's when known, see [`choose`]) gives
//! the default route, `/etc/resolv.conf` and `/etc/hosts`; the other NICs keep going in the
//! background.
//!
//! Each NIC's worker keeps its lease afterwards ([`super::lease`]). IPv4 configuration goes
//! through [`crate::host::ifconfig`]. [`resolv_conf`] and [`hosts`] are pure.

use std::net::Ipv4Addr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::dhcp::Lease;
use super::dhcp::edge::Port;
use super::lease;
use super::uptime;
use crate::boot::Timeline;
use crate::host::ifconfig::Ioctl;

/// A physical NIC.
#[derive(Debug, Clone)]
pub struct Nic {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    v.try_into().ok()
}

/// Physical NICs ([`crate::inventory::net::is_physical`]) of Ethernet type, sorted by name.
pub fn physical_nics(sys: &Path) -> Vec<Nic> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(sys.join("class/net")) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        // ARPHRD_ETHER: DHCP over AF_PACKET here speaks Ethernet (no InfiniBand).
        if !crate::inventory::net::is_physical(&p) || read("type").trim() != "1" {
            continue;
        }
        let (Some(mac), Ok(ifindex)) =
            (parse_mac(&read("address")), read("ifindex").trim().parse())
        else {
            continue;
        };
        out.push(Nic {
            name: e.file_name().to_string_lossy().into_owned(),
            ifindex,
            mac,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `/etc/resolv.conf` for the leases.
pub fn resolv_conf(leases: &[Lease]) -> String {
    let mut s = String::new();
    if let Some(d) = leases.iter().find_map(|l| l.domain.as_deref()) {
        s.push_str(&format!("search {d}\n"));
    }
    let mut seen = Vec::new();
    for ns in leases.iter().flat_map(|l| &l.dns) {
        if !seen.contains(ns) {
            seen.push(*ns);
            s.push_str(&format!("nameserver {ns}\n"));
        }
    }
    s
}

/// `/etc/hosts`: localhost plus our own name and first address.
pub fn hosts(hostname: &str, addr: Option<Ipv4Addr>) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(a) = addr {
        s.push_str(&format!("{a}\t{hostname}\n"));
    }
    s
}

fn carrier(sys: &Path, name: &str) -> bool {
    std::fs::read_to_string(sys.join("class/net").join(name).join("carrier"))
        .is_ok_and(|s| s.trim() == "1")
}

fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How long the bring-up waits for each step.
#[derive(Debug, Clone, Copy)]
pub struct NetTimeouts {
    /// From a NIC being up to its carrier.
    pub carrier: Duration,
    /// From the first DISCOVER to the ACK, per NIC.
    pub dhcp: Duration,
    /// For the first NIC to appear once the module loads are over.
    pub settle: Duration,
}

/// How often the PHY link and the carrier are polled.
const POLL: Duration = Duration::from_millis(3);

const BMCR_POWER_DOWN: u16 = 0x0800;
const BMCR_AUTONEG: u16 = 0x1000;
const BMSR_LINK: u16 = 0x0004;

/// Whether to wait for the PHY before bringing a NIC up, from its MII control and status
/// registers: yes while it is powered, negotiating and without link. A driver that checks
/// the link once at open and then only every few seconds (e1000: 2 s) would otherwise
/// report carrier seconds after the link came up; a powered-down PHY (brought up by open)
/// is not waited for. Pure.
pub fn wait_for_phy(bmcr: u16, bmsr: u16) -> bool {
    bmcr & BMCR_AUTONEG != 0 && bmcr & BMCR_POWER_DOWN == 0 && bmsr & BMSR_LINK == 0
}

/// Waits (at most `max`) for a negotiating PHY to get link before the NIC goes up; returns
/// how long it waited. Drivers without MII ioctls are not waited for.
fn phy_wait(io: &Ioctl, name: &str, max: Duration) -> Duration {
    let started = Instant::now();
    let Ok(bmcr) = io.mii_read(name, 0) else {
        return Duration::ZERO;
    };
    let mut waited = false;
    loop {
        // BMSR's link bit latches low: the second read tells the present state.
        let _ = io.mii_read(name, 1);
        let Ok(bmsr) = io.mii_read(name, 1) else {
            break;
        };
        if !wait_for_phy(bmcr, bmsr) || started.elapsed() >= max {
            break;
        }
        waited = true;
        // The link-up moment starts the receive hold of QEMU's e1000 (see `nic_worker`):
        // look often.
        std::thread::sleep(POLL);
    }
    if waited {
        started.elapsed()
    } else {
        Duration::ZERO
    }
}

/// What a NIC worker tells the bring-up.
#[derive(Debug)]
pub enum NicEvent {
    /// Ready to send at `at`, after the NIC appeared at `appeared` and went up at `up`
    /// (after waiting for its PHY's link when `phy_waited`).
    Carrier {
        nic: String,
        appeared: Duration,
        up: Duration,
        at: Duration,
        phy_waited: bool,
    },
    /// DHCP started at `start`; its outcome. On success the address is already set.
    Dhcp {
        nic: String,
        start: Duration,
        end: Duration,
        result: Result<Lease, String>,
    },
    /// No carrier within the wait.
    NoCarrier { nic: String },
}

/// One NIC's bring-up, on its own thread: up, wait for carrier, DHCP, set the address, then
/// keep the lease for the life of the agent. Leases that come after the bring-up returned
/// are still configured (address only).
fn nic_worker(sys: PathBuf, nic: Nic, t: NetTimeouts, tx: mpsc::Sender<NicEvent>) {
    let io = match Ioctl::new() {
        Ok(io) => io,
        Err(e) => {
            let _ = tx.send(NicEvent::Dhcp {
                nic: nic.name,
                start: uptime(),
                end: uptime(),
                result: Err(format!("{e:#}")),
            });
            return;
        }
    };
    let appeared = uptime();
    let waited = phy_wait(&io, &nic.name, t.carrier.min(Duration::from_secs(3)));
    if !waited.is_zero() {
        tracing::debug!(nic = %nic.name, ms = waited.as_millis() as u64, "waited for the PHY");
    }
    if let Err(e) = io.up(&nic.name) {
        tracing::warn!(nic = %nic.name, error = %format!("{e:#}"), "cannot bring NIC up");
    }
    let up = uptime();
    let started = Instant::now();
    while !carrier(&sys, &nic.name) {
        if started.elapsed() >= t.carrier {
            let _ = tx.send(NicEvent::NoCarrier { nic: nic.name });
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = tx.send(NicEvent::Carrier {
        nic: nic.name.clone(),
        appeared,
        up,
        at: uptime(),
        phy_waited: !waited.is_zero(),
    });
    let start = uptime();
    let port = Port {
        name: nic.name.clone(),
        ifindex: nic.ifindex,
    };
    let result = lease::obtain(&port, nic.mac, t.dhcp);
    let (client, result) = match result {
        Ok((c, l)) => {
            tracing::info!(nic = %nic.name, addr = %l.addr, prefix = l.prefix, router = ?l.router, dns = ?l.dns, lease_secs = ?l.lease_secs, "dhcp lease");
            (Some(c), Ok(l))
        }
        Err(e) => {
            let e = format!("{e:#}");
            tracing::warn!(nic = %nic.name, error = %e, "no DHCP lease");
            (None, Err(e))
        }
    };
    let _ = tx.send(NicEvent::Dhcp {
        nic: nic.name.clone(),
        start,
        end: uptime(),
        result,
    });
    // The lease is kept for the life of the agent, on this thread (RFC 2131 §4.4.5).
    if let Some(mut client) = client
        && let Err(e) = lease::keep(&port, &mut client, &mut |_, _| ControlFlow::Continue(()))
    {
        tracing::warn!(nic = %nic.name, error = %format!("{e:#}"), "DHCP lease keeping stopped");
    }
}

/// What the bring-up achieved.
#[derive(Debug, Default)]
pub struct NetReport {
    /// (interface, lease) of the NIC the agent uses (default route, resolv.conf).
    pub leases: Vec<(String, Lease)>,
    /// NICs without carrier so far.
    pub no_carrier: Vec<String>,
    /// NICs seen.
    pub nics: Vec<String>,
}

/// What [`choose`] decides from what is known so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// Use the lease of this NIC.
    Use(String),
    /// Keep waiting.
    Wait,
    /// Nothing more can come.
    GiveUp,
}

/// Which lease to use: the boot NIC's as soon as it has one; any other NIC's once the boot
/// NIC cannot give one (absent after the module loads, no carrier, DHCP failed) or when no
/// boot MAC is known. Gives up when every NIC is finished without a lease and no new NIC can
/// appear. Pure.
pub fn choose(
    nics: &[(String, String)],
    boot_mac: Option<&str>,
    leased: &[String],
    finished: &[String],
    more_nics_possible: bool,
) -> Choice {
    let boot = boot_mac.and_then(|b| nics.iter().find(|(_, m)| m == b).map(|(n, _)| n));
    if let Some(b) = boot
        && leased.contains(b)
    {
        return Choice::Use(b.clone());
    }
    let boot_hopeless = match (boot_mac, boot) {
        (None, _) => true,
        (Some(_), None) => !more_nics_possible,
        (Some(_), Some(b)) => finished.contains(b),
    };
    if boot_hopeless && let Some((n, _)) = nics.iter().find(|(n, _)| leased.contains(n)) {
        return Choice::Use(n.clone());
    }
    let all_done = nics
        .iter()
        .all(|(n, _)| finished.contains(n) || leased.contains(n));
    if all_done && !more_nics_possible && leased.is_empty() {
        return Choice::GiveUp;
    }
    Choice::Wait
}

/// Brings the network up while the module loads may still run (`loads_done` says when they
/// are over): every NIC is brought up as soon as it appears and gets DHCP as soon as it has
/// carrier; returns with the first usable lease (the boot NIC's when `boot_mac` is given,
/// see [`choose`]), which supplies the default route and resolv.conf. Other NICs keep
/// trying in the background.
pub fn bring_up(
    sys: &Path,
    etc: &Path,
    boot_mac: Option<&str>,
    t: NetTimeouts,
    loads_done: &dyn Fn() -> bool,
    timeline: Option<&Timeline>,
) -> anyhow::Result<NetReport> {
    let io = Ioctl::new()?;
    if let Err(e) = io.up("lo") {
        tracing::warn!(error = %format!("{e:#}"), "loopback");
    }
    let began = uptime();
    let (tx, rx) = mpsc::channel::<NicEvent>();
    let mut report = NetReport::default();
    let mut nics: Vec<(String, String)> = Vec::new();
    let mut leases: Vec<(String, Lease, Duration, Duration)> = Vec::new();
    let mut finished: Vec<String> = Vec::new();
    let mut carriers: Vec<(String, Duration, Duration, Duration)> = Vec::new();
    let mut waited_phy: Vec<String> = Vec::new();
    let mut settle_since: Option<Instant> = None;
    let hard_deadline = Instant::now() + t.settle + t.carrier + t.dhcp + Duration::from_secs(60);
    let chosen = loop {
        for n in physical_nics(sys) {
            if nics.iter().any(|(name, _)| *name == n.name) {
                continue;
            }
            if nics.is_empty()
                && let Some(tl) = timeline
            {
                tl.stage("nic", began, uptime(), format!("first NIC {}", n.name));
            }
            nics.push((n.name.clone(), mac_text(&n.mac)));
            let (sys, tx) = (sys.to_path_buf(), tx.clone());
            std::thread::spawn(move || nic_worker(sys, n, t, tx));
        }
        // Up to 10 ms for an event, then whatever else is already there: a lease is acted
        // on at once.
        let first = rx.recv_timeout(Duration::from_millis(10)).ok();
        for ev in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match ev {
                NicEvent::Carrier {
                    nic,
                    appeared,
                    up,
                    at,
                    phy_waited,
                } => {
                    if phy_waited {
                        waited_phy.push(nic.clone());
                    }
                    carriers.push((nic, appeared, up, at))
                }
                NicEvent::NoCarrier { nic } => {
                    report.no_carrier.push(nic.clone());
                    finished.push(nic);
                }
                NicEvent::Dhcp {
                    nic,
                    start,
                    end,
                    result,
                } => match result {
                    Ok(l) => leases.push((nic, l, start, end)),
                    Err(_) => finished.push(nic),
                },
            }
        }
        // Once the loads are over, a NIC that has not shown up within `settle` never will.
        let loads_over = loads_done();
        if loads_over && settle_since.is_none() {
            settle_since = Some(Instant::now());
        }
        let more = !loads_over
            || (nics.is_empty() && settle_since.is_some_and(|s| s.elapsed() < t.settle));
        let leased: Vec<String> = leases.iter().map(|(n, ..)| n.clone()).collect();
        match choose(&nics, boot_mac, &leased, &finished, more) {
            Choice::Use(n) => break Some(n),
            Choice::GiveUp => break None,
            Choice::Wait if Instant::now() > hard_deadline => break None,
            Choice::Wait => {}
        }
    };
    report.nics = nics.iter().map(|(n, _)| n.clone()).collect();
    let Some(chosen) = chosen else {
        return Ok(report);
    };
    let Some((_, lease, dhcp_start, dhcp_end)) = leases.into_iter().find(|(n, ..)| *n == chosen)
    else {
        return Ok(report);
    };
    if let Some(tl) = timeline {
        if let Some((_, appeared, up, at)) = carriers.iter().find(|(n, ..)| *n == chosen) {
            if waited_phy.contains(&chosen) {
                tl.stage("phy", *appeared, *up, format!("PHY link on {chosen}"));
            }
            tl.stage("link", *up, *at, format!("carrier on {chosen}"));
        }
        tl.stage(
            "dhcp",
            dhcp_start,
            dhcp_end,
            format!("lease {} on {chosen}", lease.addr),
        );
    }
    lease::set_route_nic(&chosen);
    if let Some(gw) = lease.router
        && let Err(e) = io.default_route(&chosen, gw)
    {
        tracing::warn!(nic = %chosen, error = %format!("{e:#}"), "default route");
    }
    let _ = std::fs::create_dir_all(etc);
    std::fs::write(
        etc.join("resolv.conf"),
        resolv_conf(std::slice::from_ref(&lease)),
    )
    .context("writing resolv.conf")?;
    let hostname = lease
        .hostname
        .clone()
        .unwrap_or_else(|| "ingot-agent".into());
    std::fs::write(etc.join("hosts"), hosts(&hostname, Some(lease.addr)))
        .context("writing /etc/hosts")?;
    let _ = std::fs::write("/proc/sys/kernel/hostname", &hostname);
    report.leases.push((chosen, lease));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(dns: &[[u8; 4]], domain: Option<&str>) -> Lease {
        Lease {
            addr: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            router: None,
            dns: dns.iter().map(|&d| Ipv4Addr::from(d)).collect(),
            domain: domain.map(str::to_owned),
            hostname: None,
            server: None,
            lease_secs: None,
            renewal_secs: None,
            rebinding_secs: None,
        }
    }

    #[test]
    fn resolv_conf_merges_leases() {
        let s = resolv_conf(&[
            lease(&[[10, 0, 2, 3]], Some("lab")),
            lease(&[[10, 0, 2, 3], [192, 0, 2, 53]], None),
        ]);
        assert_eq!(
            s,
            "search lab\nnameserver 10.0.2.3\nnameserver 192.0.2.53\n"
        );
        assert_eq!(resolv_conf(&[]), "");
        assert!(hosts("n1", Some(Ipv4Addr::new(10, 0, 2, 15))).ends_with("10.0.2.15\tn1\n"));
        assert!(hosts("n1", None).starts_with("127.0.0.1\tlocalhost\n"));
    }

    #[test]
    fn physical_nics_skip_virtual_ones() {
        let d = tempfile::tempdir().expect("tempdir");
        let net = d.path().join("class/net");
        for (n, dev, typ, mac, idx) in [
            ("eth0", true, "1", "52:54:00:12:34:56", "2"),
            ("lo", false, "772", "00:00:00:00:00:00", "1"),
            ("ib0", true, "32", "52:54:00:12:34:57", "3"),
        ] {
            let p = net.join(n);
            std::fs::create_dir_all(&p).expect("mkdir");
            if dev {
                std::fs::create_dir_all(p.join("device")).expect("mkdir");
            }
            std::fs::write(p.join("type"), format!("{typ}\n")).expect("w");
            std::fs::write(p.join("address"), format!("{mac}\n")).expect("w");
            std::fs::write(p.join("ifindex"), format!("{idx}\n")).expect("w");
        }
        let v = physical_nics(d.path());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "eth0");
        assert_eq!(v[0].ifindex, 2);
        assert_eq!(v[0].mac, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn phy_wait_only_for_a_powered_negotiating_phy_without_link() {
        // QEMU's e1000 right after the driver restarted auto-negotiation, then done.
        assert!(wait_for_phy(0x1140, 0x7949));
        assert!(!wait_for_phy(0x1140, 0x796d));
        // Powered down (the driver powers it at open), or fixed speed: go at once.
        assert!(!wait_for_phy(0x1940, 0x7949));
        assert!(!wait_for_phy(0x0140, 0x7949));
    }

    #[test]
    fn choose_prefers_the_boot_nic_and_gives_up_only_when_nothing_can_come() {
        let nics = |v: &[&str]| -> Vec<(String, String)> {
            v.iter()
                .map(|n| (n.to_string(), format!("mac-{n}")))
                .collect()
        };
        let s = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };
        let use_ = |n: &str| Choice::Use(n.to_owned());
        // (nics, boot mac, leased, finished, more NICs possible, want)
        type Case<'a> = (
            Vec<(String, String)>,
            Option<&'a str>,
            Vec<String>,
            Vec<String>,
            bool,
            Choice,
        );
        let cases: Vec<Case<'_>> = vec![
            (nics(&[]), None, s(&[]), s(&[]), true, Choice::Wait),
            (nics(&[]), None, s(&[]), s(&[]), false, Choice::GiveUp),
            (
                nics(&["eth0", "eth1"]),
                None,
                s(&["eth1"]),
                s(&[]),
                true,
                use_("eth1"),
            ),
            (
                nics(&["eth0", "eth1"]),
                None,
                s(&[]),
                s(&["eth0"]),
                false,
                Choice::Wait,
            ),
            (
                nics(&["eth0", "eth1"]),
                None,
                s(&[]),
                s(&["eth0", "eth1"]),
                false,
                Choice::GiveUp,
            ),
            (
                nics(&["eth0", "eth1"]),
                None,
                s(&[]),
                s(&["eth0", "eth1"]),
                true,
                Choice::Wait,
            ),
            // The boot NIC wins as soon as it has a lease, and is waited for while it may.
            (
                nics(&["eth0", "eth1"]),
                Some("mac-eth1"),
                s(&["eth0", "eth1"]),
                s(&[]),
                false,
                use_("eth1"),
            ),
            (
                nics(&["eth0", "eth1"]),
                Some("mac-eth1"),
                s(&["eth0"]),
                s(&[]),
                false,
                Choice::Wait,
            ),
            (
                nics(&["eth0", "eth1"]),
                Some("mac-eth1"),
                s(&["eth0"]),
                s(&["eth1"]),
                false,
                use_("eth0"),
            ),
            // A boot NIC that has not appeared yet is waited for until the loads are over.
            (
                nics(&["eth0"]),
                Some("mac-eth9"),
                s(&["eth0"]),
                s(&[]),
                true,
                Choice::Wait,
            ),
            (
                nics(&["eth0"]),
                Some("mac-eth9"),
                s(&["eth0"]),
                s(&[]),
                false,
                use_("eth0"),
            ),
        ];
        for (i, (n, b, l, f, more, want)) in cases.into_iter().enumerate() {
            assert_eq!(choose(&n, b, &l, &f, more), want, "case {i}");
        }
    }
}
