//! The PXE storm's load generator (`cargo xtask bench dhcp-load`, run by `bench dhcp` inside
//! the client namespace): `clients` firmware-like machines with distinct MACs send their
//! DISCOVERs at once, as fast as the socket takes them, each answers its OFFER with a
//! REQUEST at once, and a machine that heard nothing retransmits once after 4 s, as PXE
//! ROMs do. Prints one JSON line of [`Figures`].
//!
//! The per-client bookkeeping ([`Storm`]) is pure; [`run`] only sends and receives.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use dhcproto::v4::{Architecture, DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

/// How long a client waits for an answer before its one retransmission (PXE: 4 s).
pub const RETRANSMIT_AFTER: Duration = Duration::from_secs(4);
/// How long the storm lasts at most.
pub const STORM_LIMIT: Duration = Duration::from_secs(12);
/// The first transaction id; client `i` uses `XID_BASE + i`.
const XID_BASE: u32 = 0x1b00_0000;

/// What one run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub clients: usize,
    /// Clients whose first DISCOVER got an OFFER.
    pub offered_first_try: usize,
    /// Clients that got an OFFER at all (after the retransmission too).
    pub offered: usize,
    /// Clients that ended with an ACK.
    pub bound: usize,
    pub naks: usize,
    /// Addresses acknowledged to more than one MAC (must be 0).
    pub addresses_given_twice: usize,
    pub retransmits: usize,
    /// First-try OFFERs per second, from the first DISCOVER to the last such OFFER.
    pub offers_per_sec: f64,
    /// Time from the first DISCOVER to each client's ACK.
    pub bound_p50_ms: f64,
    pub bound_p99_ms: f64,
    pub elapsed_ms: f64,
}

/// Where one client is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Discovering {
        retried: bool,
    },
    Requesting {
        offer: Ipv4Addr,
        server: Ipv4Addr,
        retried: bool,
    },
    Bound(Ipv4Addr),
}

#[derive(Debug, Clone)]
struct Client {
    phase: Phase,
    last_sent: Duration,
    offered_first_try: bool,
    bound_after: Option<Duration>,
}

/// What the storm asks the socket to send next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Send {
    Discover(usize),
    Request {
        client: usize,
        offer: Ipv4Addr,
        server: Ipv4Addr,
    },
}

/// The pure bookkeeping of every client of one storm. Times are offsets from its start.
#[derive(Debug)]
pub struct Storm {
    clients: Vec<Client>,
    naks: usize,
    retransmits: usize,
    last_first_offer: Duration,
}

impl Storm {
    /// `n` clients, every one about to send its DISCOVER.
    pub fn new(n: usize) -> Self {
        let c = Client {
            phase: Phase::Discovering { retried: false },
            last_sent: Duration::ZERO,
            offered_first_try: false,
            bound_after: None,
        };
        Storm {
            clients: vec![c; n],
            naks: 0,
            retransmits: 0,
            last_first_offer: Duration::ZERO,
        }
    }

    /// The client of a reply's transaction id.
    pub fn client_of(&self, xid: u32) -> Option<usize> {
        let i = xid.checked_sub(XID_BASE)? as usize;
        (i < self.clients.len()).then_some(i)
    }

    /// A reply of `kind` for `client` arrived at `at`; what to send in answer.
    pub fn reply(
        &mut self,
        client: usize,
        kind: MessageType,
        yiaddr: Ipv4Addr,
        server: Ipv4Addr,
        at: Duration,
    ) -> Option<Send> {
        let c = self.clients.get_mut(client)?;
        match (kind, c.phase) {
            (MessageType::Offer, Phase::Discovering { retried }) => {
                if !retried {
                    c.offered_first_try = true;
                    self.last_first_offer = self.last_first_offer.max(at);
                }
                c.phase = Phase::Requesting {
                    offer: yiaddr,
                    server,
                    retried: false,
                };
                c.last_sent = at;
                Some(Send::Request {
                    client,
                    offer: yiaddr,
                    server,
                })
            }
            (MessageType::Ack, Phase::Requesting { offer, .. }) if offer == yiaddr => {
                c.phase = Phase::Bound(yiaddr);
                c.bound_after = Some(at);
                None
            }
            (MessageType::Nak, Phase::Requesting { .. }) => {
                self.naks += 1;
                c.phase = Phase::Discovering { retried: true };
                c.last_sent = at;
                Some(Send::Discover(client))
            }
            // Duplicates and late answers change nothing.
            _ => None,
        }
    }

    /// The retransmissions due at `now`: one per client that heard nothing for
    /// [`RETRANSMIT_AFTER`] and has not retransmitted yet.
    pub fn due(&mut self, now: Duration) -> Vec<Send> {
        let mut out = Vec::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            if now.saturating_sub(c.last_sent) < RETRANSMIT_AFTER {
                continue;
            }
            match c.phase {
                Phase::Discovering { retried: false } => {
                    c.phase = Phase::Discovering { retried: true };
                    out.push(Send::Discover(i));
                }
                Phase::Requesting {
                    offer,
                    server,
                    retried: false,
                } => {
                    c.phase = Phase::Requesting {
                        offer,
                        server,
                        retried: true,
                    };
                    out.push(Send::Request {
                        client: i,
                        offer,
                        server,
                    });
                }
                _ => continue,
            }
            c.last_sent = now;
            self.retransmits += 1;
        }
        out
    }

    /// Whether every client is bound.
    pub fn done(&self) -> bool {
        self.clients
            .iter()
            .all(|c| matches!(c.phase, Phase::Bound(_)))
    }

    /// The figures after `elapsed`.
    pub fn figures(&self, elapsed: Duration) -> Figures {
        let mut bound: Vec<f64> = self
            .clients
            .iter()
            .filter_map(|c| c.bound_after)
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        bound.sort_by(f64::total_cmp);
        let pct = |p: f64| -> f64 {
            if bound.is_empty() {
                return 0.0;
            }
            let i = ((bound.len() as f64 * p).ceil() as usize).clamp(1, bound.len()) - 1;
            bound[i]
        };
        let mut owners: HashMap<Ipv4Addr, HashSet<usize>> = HashMap::new();
        for (i, c) in self.clients.iter().enumerate() {
            if let Phase::Bound(a) = c.phase {
                owners.entry(a).or_default().insert(i);
            }
        }
        let first = self.clients.iter().filter(|c| c.offered_first_try).count();
        let offered = self
            .clients
            .iter()
            .filter(|c| !matches!(c.phase, Phase::Discovering { .. }))
            .count();
        let window = self.last_first_offer.as_secs_f64();
        Figures {
            clients: self.clients.len(),
            offered_first_try: first,
            offered,
            bound: bound.len(),
            naks: self.naks,
            addresses_given_twice: owners.values().filter(|o| o.len() > 1).count(),
            retransmits: self.retransmits,
            offers_per_sec: if window > 0.0 {
                first as f64 / window
            } else {
                0.0
            },
            bound_p50_ms: pct(0.50),
            bound_p99_ms: pct(0.99),
            elapsed_ms: elapsed.as_secs_f64() * 1000.0,
        }
    }
}

/// Client `i`'s MAC: locally administered, unique per client.
pub fn mac(i: usize) -> [u8; 6] {
    let b = (i as u32).to_be_bytes();
    [0x02, 0x1b, b[0], b[1], b[2], b[3]]
}

/// A firmware-like request: PXE options of a BIOS (even clients) or UEFI (odd) ROM, the
/// broadcast flag (no address yet), and for a REQUEST the offer and the server chosen.
pub fn request(client: usize, kind: MessageType, offer: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let chaddr = mac(client);
    let mut msg = Message::new_with_id(
        XID_BASE + client as u32,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &chaddr,
    );
    msg.set_flags(Flags::default().set_broadcast());
    let arch: u16 = if client.is_multiple_of(2) { 0 } else { 7 };
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClassIdentifier(
        format!("PXEClient:Arch:{arch:05}:UNDI:003000").into_bytes(),
    ));
    opts.insert(DhcpOption::ClientSystemArchitecture(Architecture(arch)));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::BootfileName,
        OptionCode::TFTPServerName,
    ]));
    if let Some((yiaddr, server)) = offer {
        opts.insert(DhcpOption::RequestedIpAddress(yiaddr));
        opts.insert(DhcpOption::ServerIdentifier(server));
    }
    msg.to_vec().unwrap_or_default()
}

/// A reply's (xid, type, yiaddr, server identifier), or `None` for anything else.
pub fn parse_reply(bytes: &[u8]) -> Option<(u32, MessageType, Ipv4Addr, Ipv4Addr)> {
    let msg = Message::decode(&mut Decoder::new(bytes)).ok()?;
    let kind = match msg.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(k)) => *k,
        _ => return None,
    };
    let server = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => msg.siaddr(),
    };
    Some((msg.xid(), kind, msg.yiaddr(), server))
}

/// Command line of `bench dhcp-load`.
#[derive(Debug)]
struct Args {
    iface: String,
    clients: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let (mut iface, mut clients) = (None, 1000);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--iface" => iface = it.next().cloned(),
            "--clients" => {
                clients = it.next().context("--clients needs a value")?.parse()?;
            }
            other => bail!("bench dhcp-load: unknown argument {other:?}"),
        }
    }
    Ok(Args {
        iface: iface.context("--iface is required")?,
        clients,
    })
}

fn socket(iface: &str) -> anyhow::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    // Room for every answer at once, so that what is lost is lost by the server.
    s.set_recv_buffer_size(16 << 20)?;
    s.set_send_buffer_size(16 << 20)?;
    s.bind_device(Some(iface.as_bytes()))
        .with_context(|| format!("binding to {iface}"))?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())
        .context("binding port 68")?;
    s.set_read_timeout(Some(Duration::from_millis(20)))?;
    Ok(s.into())
}

const SERVER_PORT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);

/// Waits until a server answers a DISCOVER of a client outside the storm (30 s at most).
fn wait_for_server(sock: &UdpSocket, probe: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut buf = vec![0u8; 1500];
    while started.elapsed() < Duration::from_secs(30) {
        sock.send_to(&request(probe, MessageType::Discover, None), SERVER_PORT)?;
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && let Some((xid, MessageType::Offer, ..)) = parse_reply(&buf[..n])
                && xid == XID_BASE + probe as u32
            {
                return Ok(started.elapsed());
            }
        }
    }
    bail!("no DHCP server answered within 30 s")
}

/// `bench dhcp-load --iface IF --clients N`, inside the client namespace.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let sock = socket(&args.iface)?;
    // The probe is the client after the storm's last, so its address is not one of theirs.
    let ready = wait_for_server(&sock, args.clients)?;
    eprintln!("dhcp-load: server answered after {ready:?}");
    // Let the probe's OFFER settle; its REQUEST is never sent.
    std::thread::sleep(Duration::from_millis(200));
    let mut buf = vec![0u8; 1500];
    while sock.recv_from(&mut buf).is_ok() {}

    let mut storm = Storm::new(args.clients);
    let start = Instant::now();
    let send = |s: Send| -> anyhow::Result<()> {
        let bytes = match s {
            Send::Discover(i) => request(i, MessageType::Discover, None),
            Send::Request {
                client,
                offer,
                server,
            } => request(client, MessageType::Request, Some((offer, server))),
        };
        sock.send_to(&bytes, SERVER_PORT)?;
        Ok(())
    };
    for i in 0..args.clients {
        send(Send::Discover(i))?;
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    while !storm.done() && start.elapsed() < STORM_LIMIT {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                if let Some((xid, kind, yiaddr, server)) = parse_reply(&buf[..n])
                    && let Some(c) = storm.client_of(xid)
                {
                    *kinds.entry(format!("{kind:?}")).or_default() += 1;
                    if let Some(s) = storm.reply(c, kind, yiaddr, server, start.elapsed()) {
                        send(s)?;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("receiving"),
        }
        for s in storm.due(start.elapsed()) {
            send(s)?;
        }
    }
    eprintln!("dhcp-load: replies by type {kinds:?}");
    println!(
        "{}",
        serde_json::to_string(&storm.figures(start.elapsed()))?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRV: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn offer_request_ack_binds_and_counts_the_first_try() {
        let mut s = Storm::new(2);
        let a = Ipv4Addr::new(10, 78, 0, 10);
        assert_eq!(
            s.reply(0, MessageType::Offer, a, SRV, ms(5)),
            Some(Send::Request {
                client: 0,
                offer: a,
                server: SRV
            })
        );
        // A duplicate OFFER is ignored; an ACK for another address does not bind.
        assert_eq!(s.reply(0, MessageType::Offer, a, SRV, ms(6)), None);
        assert_eq!(
            s.reply(
                0,
                MessageType::Ack,
                Ipv4Addr::new(10, 78, 0, 11),
                SRV,
                ms(7)
            ),
            None
        );
        assert_eq!(s.reply(0, MessageType::Ack, a, SRV, ms(8)), None);
        assert!(!s.done());
        let f = s.figures(ms(100));
        assert_eq!((f.offered_first_try, f.offered, f.bound), (1, 1, 1));
        assert_eq!(f.offers_per_sec, 200.0);
        assert_eq!(f.bound_p50_ms, 8.0);
    }

    #[test]
    fn silence_is_retransmitted_once_and_a_late_offer_is_not_a_first_try() {
        let mut s = Storm::new(1);
        assert!(s.due(ms(3999)).is_empty());
        assert_eq!(s.due(RETRANSMIT_AFTER), vec![Send::Discover(0)]);
        assert!(s.due(ms(20_000)).is_empty(), "only one retransmission");
        let a = Ipv4Addr::new(10, 78, 0, 10);
        assert!(s.reply(0, MessageType::Offer, a, SRV, ms(4100)).is_some());
        assert!(s.reply(0, MessageType::Ack, a, SRV, ms(4101)).is_none());
        let f = s.figures(ms(5000));
        assert_eq!((f.offered_first_try, f.offered, f.bound), (0, 1, 1));
        assert_eq!(f.retransmits, 1);
        assert!(s.done());
    }

    #[test]
    fn a_nak_starts_over_and_an_address_acked_twice_is_counted() {
        let mut s = Storm::new(2);
        let a = Ipv4Addr::new(10, 78, 0, 10);
        s.reply(0, MessageType::Offer, a, SRV, ms(1));
        assert_eq!(
            s.reply(0, MessageType::Nak, Ipv4Addr::UNSPECIFIED, SRV, ms(2)),
            Some(Send::Discover(0))
        );
        s.reply(0, MessageType::Offer, a, SRV, ms(3));
        s.reply(0, MessageType::Ack, a, SRV, ms(4));
        s.reply(1, MessageType::Offer, a, SRV, ms(5));
        s.reply(1, MessageType::Ack, a, SRV, ms(6));
        let f = s.figures(ms(10));
        assert_eq!(f.naks, 1);
        assert_eq!(f.addresses_given_twice, 1);
    }

    #[test]
    fn requests_round_trip_through_the_parser() {
        let bytes = request(3, MessageType::Discover, None);
        let msg = Message::decode(&mut Decoder::new(&bytes)).expect("decodes");
        assert_eq!(msg.chaddr()[..6], mac(3));
        assert!(msg.flags().broadcast());
        assert_eq!(Storm::new(5).client_of(msg.xid()), Some(3));
        assert_eq!(Storm::new(3).client_of(msg.xid()), None);
        assert_eq!(Storm::new(3).client_of(7), None);
        assert_eq!(
            parse_reply(&bytes).map(|r| r.1),
            Some(MessageType::Discover)
        );
        assert_eq!(parse_reply(b"not dhcp"), None);
    }
}
