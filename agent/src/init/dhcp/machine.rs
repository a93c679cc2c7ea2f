//! The DHCPv4 client as a pure state machine (RFC 2131 §4.4): time and received messages
//! in, [`Action`]s out (what to send and by which path, address changes). No sockets, no
//! clock: `now` is a [`Duration`] on any monotonic clock, passed in.
//!
//! ```text
//!          +------+ DISCOVER  +-----------+  OFFER   +------------+  ACK   +-------+
//!  new --> | INIT | --------> | SELECTING | -------> | REQUESTING | -----> | BOUND |
//!          +------+  (raw,    +-----------+ REQUEST  +------------+        +-------+
//!            ^  ^    bcast)                 (raw, bcast)  | NAK, no ACK     |  ^ T1
//!            |  +-----------------------------------------+                 v  | ACK
//!            |        NAK or expiry: address removed,                 +----------+
//!            +------- DISCOVER asks for the old address    <--------  | RENEWING | REQUEST
//!            |                                                        +----------+ unicast
//!            |                                                          | T2   ^ ACK
//!            |                                                          v      |
//!            +-------------------------------------------------- +-----------+
//!                                                                 | REBINDING | REQUEST bcast
//!                                                                 +-----------+
//! ```
//!
//! Without an address (INIT, SELECTING, REQUESTING) messages go through the `AF_PACKET`
//! socket ([`Via::Raw`]); with one (RENEWING, REBINDING) through a UDP socket from port 68
//! ([`Via::Unicast`] to the server, [`Via::Broadcast`]), so the kernel routes, resolves the
//! server's MAC and owns port 68 (no ICMP port-unreachable for the unicast ACK).

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};

use super::{Lease, blank_message, lease_of, retransmit_wait};

/// The client states of RFC 2131 figure 5 (INIT-REBOOT and REBOOTING are not used: the
/// ramdisk never starts with an address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Init,
    Selecting,
    Requesting,
    Bound,
    Renewing,
    Rebinding,
}

/// How a message leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `AF_PACKET`, from 0.0.0.0 to the Ethernet and IP broadcast addresses.
    Raw,
    /// UDP from the leased address to the server's port 67.
    Unicast(Ipv4Addr),
    /// UDP from the leased address to 255.255.255.255:67.
    Broadcast,
}

/// Why a lease was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The server answered the renewal or rebinding with a NAK.
    Nak,
    /// Neither renewal nor rebinding got an answer before the lease ran out.
    Expired,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send {
        msg: Message,
        via: Via,
    },
    /// Put the lease's address (and route) on the NIC. `previous` is the lease it replaces
    /// when the server changed address, mask or router during a renewal.
    Configure {
        lease: Lease,
        previous: Option<Lease>,
    },
    /// The lease was extended as it was (`rebound`: by another server's broadcast answer).
    Extended {
        lease: Lease,
        rebound: bool,
    },
    /// Remove the address: the lease is gone.
    Deconfigure {
        addr: Ipv4Addr,
        why: Loss,
    },
}

/// Absolute times of a lease (on the caller's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub expiry: Duration,
    /// The lease duration, for the retransmission floor.
    pub length: Duration,
}

/// The lease times counted from `start` (when the REQUEST that got the ACK was first sent,
/// RFC 2131 §4.4.1): T1 from option 58 (default 0.5 × lease), T2 from option 59 (default
/// 0.875 × lease); values out of order (T1 > T2 or T2 > lease) fall back to the defaults.
/// No lease time, or 0xffffffff, is an infinite lease: `None`. Pure.
pub fn timers(lease: &Lease, start: Duration) -> Option<Timers> {
    let secs = lease.lease_secs.filter(|s| *s != u32::MAX)?;
    let length = Duration::from_secs(u64::from(secs));
    let d1 = length / 2;
    let d2 = length * 7 / 8;
    let t1 = lease
        .renewal_secs
        .map_or(d1, |s| Duration::from_secs(u64::from(s)));
    let t2 = lease
        .rebinding_secs
        .map_or(d2, |s| Duration::from_secs(u64::from(s)));
    let (t1, t2) = if t1 <= t2 && t2 <= length {
        (t1, t2)
    } else {
        (d1, d2)
    };
    Some(Timers {
        t1: start + t1,
        t2: start + t2,
        expiry: start + length,
        length,
    })
}

/// The least wait between retransmissions in RENEWING and REBINDING: RFC 2131 §4.4.5 says
/// 60 s, which is kept for leases of 10 minutes or more; a shorter lease gets a tenth of
/// its length (at least 1 s), or a lease of 2 minutes would get no retransmission at all
/// between T1 and T2. Pure.
pub fn retransmit_floor(length: Duration) -> Duration {
    (length / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// When to retransmit in RENEWING (`until` = T2) or REBINDING (`until` = expiry): after half
/// the time left, at least the floor. Pure.
pub fn next_retransmit(now: Duration, until: Duration, floor: Duration) -> Duration {
    now + (until.saturating_sub(now) / 2).max(floor)
}

/// A REQUEST is sent this many times in REQUESTING before the client starts over.
const REQUEST_TRIES: u32 = 6;
/// The wait before a new DISCOVER after a NAK in REQUESTING (a server that offers and then
/// refuses would otherwise make a tight loop).
const NAK_BACKOFF: Duration = Duration::from_secs(1);

/// A DHCP client message with our client identifier and parameter list.
pub fn client_message(
    xid: u32,
    mac: [u8; 6],
    kind: MessageType,
    ciaddr: Ipv4Addr,
    requested: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
) -> Message {
    let mut m = blank_message(xid, mac);
    m.set_ciaddr(ciaddr);
    if ciaddr.is_unspecified() {
        // Ask for broadcast replies: without an address nothing can receive a unicast.
        m.set_flags(Flags::default().set_broadcast());
    }
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    let mut id = vec![1u8];
    id.extend_from_slice(&mac);
    o.insert(DhcpOption::ClientIdentifier(id));
    o.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::Hostname,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ]));
    if let Some(a) = requested {
        o.insert(DhcpOption::RequestedIpAddress(a));
    }
    if let Some(s) = server {
        o.insert(DhcpOption::ServerIdentifier(s));
    }
    m
}

/// The client of one NIC.
#[derive(Debug, Clone)]
pub struct Client {
    mac: [u8; 6],
    state: State,
    xid: u32,
    /// xorshift state for the next transaction id.
    rng: u32,
    /// Transmissions of the current message so far.
    attempt: u32,
    /// When to (re)transmit; `None` when nothing is pending.
    next_send: Option<Duration>,
    /// First transmission of the current REQUEST: the lease starts there.
    request_start: Duration,
    /// (address, server) of the OFFER taken.
    offer: Option<(Ipv4Addr, Ipv4Addr)>,
    /// The configured lease and its times.
    lease: Option<(Lease, Option<Timers>)>,
    /// The address to ask for in DISCOVER (the one just lost).
    want: Option<Ipv4Addr>,
}

impl Client {
    /// A client in INIT whose first DISCOVER is due at once. `seed` seeds the transaction
    /// ids (any value; zero is replaced).
    pub fn new(mac: [u8; 6], seed: u32) -> Self {
        Client {
            mac,
            state: State::Init,
            xid: 0,
            rng: if seed == 0 { 0x9e37_79b9 } else { seed },
            attempt: 0,
            next_send: Some(Duration::ZERO),
            request_start: Duration::ZERO,
            offer: None,
            lease: None,
            want: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The current transaction id.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// The configured lease, if any.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref().map(|(l, _)| l)
    }

    /// The times of the configured lease (`None` for none or an infinite one).
    pub fn timers(&self) -> Option<Timers> {
        self.lease.as_ref().and_then(|(_, t)| *t)
    }

    /// The earliest time at which [`Client::tick`] has something to do, if any.
    pub fn next_event(&self) -> Option<Duration> {
        let timer = match (self.state, self.timers()) {
            (State::Bound, Some(t)) => Some(t.t1.min(t.expiry)),
            (State::Renewing, Some(t)) => Some(t.t2.min(t.expiry)),
            (State::Rebinding, Some(t)) => Some(t.expiry),
            _ => None,
        };
        match (self.next_send, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn new_xid(&mut self) {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        self.xid = x;
        self.attempt = 0;
    }

    fn due(&self, now: Duration) -> bool {
        self.next_send.is_some_and(|t| now >= t)
    }

    fn leased_addr(&self) -> Ipv4Addr {
        self.lease
            .as_ref()
            .map_or(Ipv4Addr::UNSPECIFIED, |(l, _)| l.addr)
    }

    fn discover(&self) -> Action {
        Action::Send {
            msg: client_message(
                self.xid,
                self.mac,
                MessageType::Discover,
                Ipv4Addr::UNSPECIFIED,
                self.want,
                None,
            ),
            via: Via::Raw,
        }
    }

    fn request_offer(&self) -> Action {
        let (addr, server) = self.offer.map_or((None, None), |(a, s)| (Some(a), Some(s)));
        Action::Send {
            msg: client_message(
                self.xid,
                self.mac,
                MessageType::Request,
                Ipv4Addr::UNSPECIFIED,
                addr,
                server,
            ),
            via: Via::Raw,
        }
    }

    /// RENEWING and REBINDING: ciaddr set, no requested address and no server identifier
    /// (RFC 2131 §4.3.2, table 5).
    fn request_extend(&self) -> Action {
        let via = match (self.state, self.lease().and_then(|l| l.server)) {
            (State::Renewing, Some(s)) => Via::Unicast(s),
            _ => Via::Broadcast,
        };
        Action::Send {
            msg: client_message(
                self.xid,
                self.mac,
                MessageType::Request,
                self.leased_addr(),
                None,
                None,
            ),
            via,
        }
    }

    /// Drops the lease (the caller removes the address) and starts over from INIT, asking
    /// for the same address.
    fn lose(&mut self, now: Duration, why: Loss) -> Vec<Action> {
        let addr = self.leased_addr();
        self.lease = None;
        self.want = Some(addr);
        self.state = State::Init;
        self.next_send = Some(now);
        let mut out = vec![Action::Deconfigure { addr, why }];
        out.extend(self.tick(now));
        out
    }

    /// Acts on the passage of time: (re)transmissions and the T1, T2 and expiry moves.
    pub fn tick(&mut self, now: Duration) -> Vec<Action> {
        match self.state {
            State::Init => {
                if !self.due(now) {
                    return vec![];
                }
                self.new_xid();
                self.state = State::Selecting;
                self.next_send = Some(now + retransmit_wait(0));
                self.attempt = 1;
                vec![self.discover()]
            }
            State::Selecting => {
                if !self.due(now) {
                    return vec![];
                }
                self.next_send = Some(now + retransmit_wait(self.attempt));
                self.attempt += 1;
                vec![self.discover()]
            }
            State::Requesting => {
                if !self.due(now) {
                    return vec![];
                }
                if self.attempt >= REQUEST_TRIES {
                    // No ACK: start over (RFC 2131 §4.4.1).
                    self.state = State::Init;
                    self.next_send = Some(now);
                    return self.tick(now);
                }
                self.next_send = Some(now + retransmit_wait(self.attempt));
                self.attempt += 1;
                vec![self.request_offer()]
            }
            State::Bound | State::Renewing | State::Rebinding => {
                let Some(t) = self.timers() else {
                    return vec![];
                };
                let floor = retransmit_floor(t.length);
                if now >= t.expiry {
                    return self.lose(now, Loss::Expired);
                }
                if now >= t.t2 && self.state != State::Rebinding {
                    self.new_xid();
                    self.state = State::Rebinding;
                    self.request_start = now;
                    self.next_send = Some(next_retransmit(now, t.expiry, floor));
                    return vec![self.request_extend()];
                }
                if now >= t.t1 && self.state == State::Bound {
                    self.new_xid();
                    self.state = State::Renewing;
                    self.request_start = now;
                    self.next_send = Some(next_retransmit(now, t.t2, floor));
                    return vec![self.request_extend()];
                }
                if self.state != State::Bound && self.due(now) {
                    let until = if self.state == State::Renewing {
                        t.t2
                    } else {
                        t.expiry
                    };
                    self.next_send = Some(next_retransmit(now, until, floor));
                    return vec![self.request_extend()];
                }
                vec![]
            }
        }
    }

    /// Acts on a received message (anything not a reply to our current transaction is
    /// ignored).
    pub fn receive(&mut self, now: Duration, m: &Message) -> Vec<Action> {
        // hlen first: dhcproto's `chaddr()` slices the 16-byte field by the hlen from the
        // wire and panics past 16 (found by the `agent_dhcp` fuzz target).
        if m.opcode() != Opcode::BootReply
            || m.xid() != self.xid
            || usize::from(m.hlen()) != self.mac.len()
            || m.chaddr().get(..6) != Some(&self.mac[..])
        {
            return vec![];
        }
        let Some(kind) = m.opts().msg_type() else {
            return vec![];
        };
        match (self.state, kind) {
            (State::Selecting, MessageType::Offer) => {
                let l = lease_of(m);
                let server = l.server.unwrap_or(m.siaddr());
                self.offer = Some((l.addr, server));
                self.state = State::Requesting;
                self.request_start = now;
                self.attempt = 0;
                self.next_send = Some(now);
                self.tick(now)
            }
            (State::Requesting, MessageType::Ack) => {
                let lease = lease_of(m);
                let t = timers(&lease, self.request_start);
                self.lease = Some((lease.clone(), t));
                self.want = None;
                self.offer = None;
                self.state = State::Bound;
                self.next_send = None;
                vec![Action::Configure {
                    lease,
                    previous: None,
                }]
            }
            (State::Requesting, MessageType::Nak) => {
                self.offer = None;
                self.state = State::Init;
                self.next_send = Some(now + NAK_BACKOFF);
                vec![]
            }
            (State::Renewing | State::Rebinding, MessageType::Ack) => {
                let rebound = self.state == State::Rebinding;
                let lease = lease_of(m);
                let t = timers(&lease, self.request_start);
                let previous = self.lease.replace((lease.clone(), t)).map(|(l, _)| l);
                self.state = State::Bound;
                self.next_send = None;
                let same = previous.as_ref().is_some_and(|p| {
                    p.addr == lease.addr && p.prefix == lease.prefix && p.router == lease.router
                });
                if same {
                    vec![Action::Extended { lease, rebound }]
                } else {
                    vec![Action::Configure { lease, previous }]
                }
            }
            (State::Renewing | State::Rebinding, MessageType::Nak) => self.lose(now, Loss::Nak),
            _ => vec![],
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
