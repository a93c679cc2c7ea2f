//! Runs a [`Client`] over the sockets of one NIC: sends what it asks for, feeds it what
//! arrives and wakes it when its next timer is due. Address changes are the caller's (the
//! `on` callback), which also sees every other action.
//!
//! Only the socket the state needs is open: the `AF_PACKET` one without an address (it
//! receives a copy of every IPv4 frame on the NIC, so it must not stay open during an
//! image download), the UDP one on port 68 while there is an address.

use std::net::Ipv4Addr;
use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::{Context, bail};
use dhcproto::Encodable;

use super::machine::{Action, Client, State, Via};
use super::{PacketSocket, UdpPort, decode, dhcp_payload, ip_udp};

/// The NIC a client runs on.
#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub ifindex: u32,
}

/// How long [`drive`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Until the client is BOUND; an error at `deadline` (on `clock`).
    Bound { deadline: Duration },
    /// Until `on` breaks.
    Stopped,
}

/// The longest sleep between looks at the clock: a timer is never late by more.
const MAX_SLEEP: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Sockets {
    raw: Option<PacketSocket>,
    udp: Option<UdpPort>,
}

impl Sockets {
    fn raw(&mut self, port: &Port) -> anyhow::Result<&PacketSocket> {
        if self.raw.is_none() {
            self.raw = Some(PacketSocket::open(port.ifindex)?);
        }
        self.raw.as_ref().context("no packet socket")
    }

    fn udp(&mut self, port: &Port) -> anyhow::Result<&UdpPort> {
        if self.udp.is_none() {
            self.udp = Some(UdpPort::open(&port.name)?);
        }
        self.udp.as_ref().context("no UDP socket")
    }

    fn send(&mut self, port: &Port, payload: &[u8], via: Via) -> anyhow::Result<()> {
        match via {
            Via::Raw => self.raw(port)?.send_broadcast(&ip_udp(payload)),
            Via::Unicast(to) => self.udp(port)?.send(payload, to),
            Via::Broadcast => self.udp(port)?.send(payload, Ipv4Addr::BROADCAST),
        }
    }
}

/// Waits up to `wait` for a DHCP message on the socket of `state` (none while BOUND).
fn receive(
    socks: &mut Sockets,
    port: &Port,
    state: State,
    buf: &mut [u8],
    wait: Duration,
) -> anyhow::Result<Option<dhcproto::v4::Message>> {
    Ok(match state {
        State::Init | State::Selecting | State::Requesting => {
            match socks.raw(port)?.recv(buf, wait)? {
                Some(n) => buf.get(..n).and_then(dhcp_payload).and_then(decode),
                None => None,
            }
        }
        State::Renewing | State::Rebinding => match socks.udp(port)?.recv(buf, wait)? {
            Some(n) => buf.get(..n).and_then(decode),
            None => None,
        },
        State::Bound => {
            std::thread::sleep(wait);
            None
        }
    })
}

/// Runs `client` on `port` with the monotonic `clock` until `until`; `on` is called after
/// each action was carried out (sends) or must be carried out by it (address changes).
pub fn drive(
    client: &mut Client,
    port: &Port,
    clock: &dyn Fn() -> Duration,
    until: Until,
    on: &mut dyn FnMut(&Client, &Action) -> ControlFlow<()>,
) -> anyhow::Result<()> {
    let mut socks = Sockets::default();
    let mut buf = vec![0u8; 2048];
    let mut actions = client.tick(clock());
    loop {
        for a in actions.drain(..) {
            match &a {
                Action::Send { msg, via } => {
                    let payload = msg.to_vec().context("encoding DHCP")?;
                    // A failed send is retransmitted like a lost one.
                    if let Err(e) = socks.send(port, &payload, *via) {
                        tracing::warn!(nic = %port.name, error = %format!("{e:#}"), "dhcp send");
                    }
                    tracing::debug!(nic = %port.name, state = ?client.state(), ?via, "dhcp sent");
                }
                Action::Deconfigure { .. } => socks.udp = None,
                Action::Configure { .. } | Action::Extended { .. } => {}
            }
            if on(client, &a).is_break() {
                return Ok(());
            }
        }
        let bound = client.state() == State::Bound;
        if bound {
            // Nothing to receive until T1; an open AF_PACKET socket would copy every frame.
            socks.raw = None;
            if let Until::Bound { .. } = until {
                return Ok(());
            }
        }
        let now = clock();
        if let Until::Bound { deadline } = until
            && now >= deadline
        {
            bail!("no DHCP lease on {} before the deadline", port.name);
        }
        let mut wake = client.next_event().unwrap_or(now + MAX_SLEEP);
        if let Until::Bound { deadline } = until {
            wake = wake.min(deadline);
        }
        let wait = wake.saturating_sub(now).min(MAX_SLEEP);
        let got = match receive(&mut socks, port, client.state(), &mut buf, wait) {
            Ok(m) => m,
            Err(e) => {
                // A socket that cannot be opened or read now may work at the next look; the
                // machine's timers go on meanwhile.
                tracing::warn!(nic = %port.name, error = %format!("{e:#}"), "dhcp receive");
                std::thread::sleep(wait);
                None
            }
        };
        let now = clock();
        if let Some(m) = got {
            actions = client.receive(now, &m);
        }
        actions.extend(client.tick(now));
    }
}
