//! A small DHCPv4 client for the ramdisk: DISCOVER, OFFER, REQUEST, ACK over an `AF_PACKET`
//! socket bound to one interface, so it works before the interface has any address (the
//! kernel's IP stack would drop the unicast OFFER to an address it does not own).
//!
//! Packet building and lease parsing are pure; [`PacketSocket`] is the only IO.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

const ETH_P_IP: u16 = 0x0800;

/// What the server gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub server: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
}

/// A DHCP request message (DISCOVER, or REQUEST for `offer` from `server`).
pub fn request(
    xid: u32,
    mac: [u8; 6],
    kind: MessageType,
    offer: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, z, &mac);
    // Ask for broadcast replies: we have no address to receive a unicast on.
    m.set_flags(Flags::default().set_broadcast());
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
    ]));
    if let Some((addr, server)) = offer {
        o.insert(DhcpOption::RequestedIpAddress(addr));
        o.insert(DhcpOption::ServerIdentifier(server));
    }
    m
}

/// The lease in an OFFER or ACK.
pub fn lease_of(m: &Message) -> Lease {
    let o = m.opts();
    let prefix = match o.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => u32::from(*mask).leading_ones() as u8,
        _ => 24,
    };
    Lease {
        addr: m.yiaddr(),
        prefix,
        router: match o.get(OptionCode::Router) {
            Some(DhcpOption::Router(r)) => r.first().copied(),
            _ => None,
        },
        dns: match o.get(OptionCode::DomainNameServer) {
            Some(DhcpOption::DomainNameServer(d)) => d.clone(),
            _ => vec![],
        },
        domain: match o.get(OptionCode::DomainName) {
            Some(DhcpOption::DomainName(d)) => Some(d.clone()),
            _ => None,
        },
        hostname: match o.get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => Some(h.clone()),
            _ => None,
        },
        server: match o.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
            _ => None,
        },
        lease_secs: match o.get(OptionCode::AddressLeaseTime) {
            Some(DhcpOption::AddressLeaseTime(t)) => Some(*t),
            _ => None,
        },
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 + UDP headers around `payload`, from 0.0.0.0:68 to 255.255.255.255:67.
pub fn ip_udp(payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0x10]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&[0, 0, 0, 0, 255, 255, 255, 255]);
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&68u16.to_be_bytes());
    p.extend_from_slice(&67u16.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    // A zero UDP checksum means "none" over IPv4.
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// The DHCP payload of an IPv4/UDP packet to port 68, if it is one.
pub fn dhcp_payload(pkt: &[u8]) -> Option<&[u8]> {
    if pkt.len() < 28 || pkt[0] >> 4 != 4 || pkt[9] != 17 {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0xf) * 4;
    let udp = pkt.get(ihl..)?;
    if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != 68 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    udp.get(8..len.min(udp.len()))
}

/// A reply for us: our xid and MAC, of the wanted type.
pub fn parse_reply(payload: &[u8], xid: u32, mac: [u8; 6], want: MessageType) -> Option<Message> {
    let m = Message::decode(&mut Decoder::new(payload)).ok()?;
    if m.xid() != xid || m.chaddr().get(..6) != Some(&mac[..]) {
        return None;
    }
    if m.opts().msg_type() == Some(want) {
        Some(m)
    } else {
        None
    }
}

/// An `AF_PACKET` datagram socket for IPv4 on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    pub fn open(ifindex: u32) -> anyhow::Result<Self> {
        let proto = ETH_P_IP.to_be();
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("opening an AF_PACKET socket");
        }
        // SAFETY: raw is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ifindex = i32::try_from(ifindex).context("interface index")?;
        let sa = sockaddr_ll(ifindex, [0; 6]);
        // SAFETY: sa is a valid sockaddr_ll and the length matches it.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sa).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("binding the AF_PACKET socket");
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends an IPv4 packet to the Ethernet broadcast address.
    pub fn send_broadcast(&self, pkt: &[u8]) -> anyhow::Result<()> {
        let sa = sockaddr_ll(self.ifindex, [0xff; 6]);
        // SAFETY: pkt is a valid buffer of its length; sa is a valid sockaddr_ll.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&raw const sa).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("sending a DHCP packet");
        }
        Ok(())
    }

    /// Receives one packet, or None after `timeout`.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> anyhow::Result<Option<usize>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(e).context("polling the DHCP socket");
        }
        if r == 0 {
            return Ok(None);
        }
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("receiving a DHCP packet");
        }
        Ok(Some(n as usize))
    }
}

fn sockaddr_ll(ifindex: i32, addr: [u8; 6]) -> libc::sockaddr_ll {
    let mut a = [0u8; 8];
    a[..6].copy_from_slice(&addr);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_IP.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: a,
    }
}

/// How long to wait for a reply after the `attempt`-th transmission (0-based): 250 ms, then
/// doubling up to 4 s. The first retransmission is quick because a NIC whose link just came
/// up can drop the first frame (QEMU's e1000 while it finishes auto-negotiation), and a
/// server answers a repeat with the same transaction id just the same.
pub fn retransmit_wait(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.min(4))
}

fn exchange(
    sock: &PacketSocket,
    msg: &Message,
    xid: u32,
    mac: [u8; 6],
    want: MessageType,
    deadline: Instant,
) -> anyhow::Result<Message> {
    let payload = msg.to_vec().context("encoding DHCP")?;
    let pkt = ip_udp(&payload);
    let mut buf = vec![0u8; 2048];
    let started = Instant::now();
    for attempt in 0u32.. {
        sock.send_broadcast(&pkt)?;
        tracing::debug!(
            ?want,
            attempt,
            ms = started.elapsed().as_millis() as u64,
            "dhcp sent"
        );
        let until = (Instant::now() + retransmit_wait(attempt)).min(deadline);
        while Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            if let Some(n) = sock.recv(&mut buf, left)?
                && let Some(p) = dhcp_payload(&buf[..n])
                && let Some(m) = parse_reply(p, xid, mac, want)
            {
                tracing::debug!(
                    ?want,
                    attempt,
                    ms = started.elapsed().as_millis() as u64,
                    "dhcp reply"
                );
                return Ok(m);
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    bail!("no DHCP {want:?} before the deadline")
}

/// Gets a lease on `ifindex` (MAC `mac`) within `timeout`.
pub fn obtain(ifindex: u32, mac: [u8; 6], timeout: Duration) -> anyhow::Result<Lease> {
    let sock = PacketSocket::open(ifindex)?;
    let deadline = Instant::now() + timeout;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let xid = nanos ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
    let offer = exchange(
        &sock,
        &request(xid, mac, MessageType::Discover, None),
        xid,
        mac,
        MessageType::Offer,
        deadline,
    )?;
    let l = lease_of(&offer);
    let server = l.server.unwrap_or(offer.siaddr());
    let ack = exchange(
        &sock,
        &request(xid, mac, MessageType::Request, Some((l.addr, server))),
        xid,
        mac,
        MessageType::Ack,
        deadline,
    )?;
    Ok(lease_of(&ack))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_start_fast_and_back_off() {
        let w: Vec<u64> = (0..7)
            .map(|a| retransmit_wait(a).as_millis() as u64)
            .collect();
        assert_eq!(w, vec![250, 500, 1000, 2000, 4000, 4000, 4000]);
    }

    #[test]
    fn discover_and_ack_round_trip() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let d = request(7, mac, MessageType::Discover, None);
        let pkt = ip_udp(&d.to_vec().expect("encode"));
        assert_eq!(checksum(&pkt[..20]), 0, "IP header checksum verifies");
        // A reply built as a server would: swap in yiaddr and options.
        let mut ack = Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        ack.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Ack));
        ack.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        ack.opts_mut()
            .insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        ack.opts_mut()
            .insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
                10, 0, 2, 3,
            )]));
        let mut raw = ip_udp(&ack.to_vec().expect("encode"));
        raw[22..24].copy_from_slice(&68u16.to_be_bytes()); // to the client port
        let p = dhcp_payload(&raw).expect("dhcp payload");
        assert!(
            parse_reply(p, 8, mac, MessageType::Ack).is_none(),
            "other xid"
        );
        assert!(
            parse_reply(p, 7, mac, MessageType::Offer).is_none(),
            "other type"
        );
        let m = parse_reply(p, 7, mac, MessageType::Ack).expect("ours");
        let l = lease_of(&m);
        assert_eq!(l.addr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(l.prefix, 24);
        assert_eq!(l.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(l.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
    }
}
