//! A small DHCPv4 client for the ramdisk. Without an address it talks through an `AF_PACKET`
//! socket bound to one interface (the kernel's IP stack would drop a unicast OFFER to an
//! address it does not own); with one (renewing, rebinding) through a UDP socket on port 68
//! bound to the interface. The client itself is the pure state machine of [`machine`];
//! [`edge`] runs it over the sockets.
//!
//! Packet framing and lease parsing here are pure; [`PacketSocket`] and [`UdpPort`] are the IO.

pub mod edge;
pub mod machine;

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::Context;
use dhcproto::v4::{DhcpOption, Message, OptionCode};
use dhcproto::{Decodable, Decoder};

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
    /// T1 (option 58), if the server sent it.
    pub renewal_secs: Option<u32>,
    /// T2 (option 59), if the server sent it.
    pub rebinding_secs: Option<u32>,
}

/// An empty BOOTREQUEST from `mac` with transaction id `xid`, made by decoding a fixed
/// header. dhcproto's constructors (`Message::new`, `new_with_id`, `default`) all call
/// `rand::random()`, whose thread RNG is seeded by a blocking getrandom(2): in a ramdisk on
/// a CPU without RDRAND (QEMU's default `qemu64` under TCG) and without a virtio-rng, the
/// kernel's CRNG is not ready until enough interrupts came in, and on a network where
/// nobody speaks first that is never: the DHCP client blocked before its first DISCOVER.
/// Decoding builds the message field by field and draws no randomness.
pub fn blank_message(xid: u32, mac: [u8; 6]) -> Message {
    let mut b = [0u8; 241];
    // op BOOTREQUEST, htype Ethernet, hlen 6, hops 0.
    b[..4].copy_from_slice(&[1, 1, 6, 0]);
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[28..34].copy_from_slice(&mac);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b[240] = 255;
    // The header above is well formed (a unit test decodes it), so the fallback, which
    // would draw randomness, is never taken.
    Message::decode(&mut Decoder::new(&b)).unwrap_or_else(|_| {
        let z = Ipv4Addr::UNSPECIFIED;
        Message::new_with_id(xid, z, z, z, z, &mac)
    })
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
        renewal_secs: match o.get(OptionCode::Renewal) {
            Some(DhcpOption::Renewal(t)) => Some(*t),
            _ => None,
        },
        rebinding_secs: match o.get(OptionCode::Rebinding) {
            Some(DhcpOption::Rebinding(t)) => Some(*t),
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

/// A DHCP message from its payload bytes, if it decodes. Options whose length would trip
/// dhcproto are refused first ([`option_lengths_ok`]).
pub fn decode(payload: &[u8]) -> Option<Message> {
    if !option_lengths_ok(payload.get(OPTIONS_AT..).unwrap_or_default()) {
        return None;
    }
    Message::decode(&mut Decoder::new(payload)).ok()
}

/// Where the options start: the fixed BOOTP header (236 bytes) and the magic cookie.
const OPTIONS_AT: usize = 240;

/// Whether no option (consecutive ones with the same code concatenated, RFC 3396, as
/// dhcproto joins them) has a length dhcproto 0.15 asserts against: it `debug_assert!`s the
/// length of options 80, 81, 94, 151 and 152-155, so a server's (or anyone's on the
/// provisioning network) ClientFQDN with fewer than 3 bytes panicked the agent's DHCP thread
/// in builds with debug assertions, and was read with a wrapped length in the others (found
/// by the `agent_dhcp` fuzz target). The controller's DHCP server has the same guard
/// (`controller::netboot::dhcp::client`); the agent does not depend on the controller.
pub fn option_lengths_ok(opts: &[u8]) -> bool {
    let fits = |code: u8, len: usize| match code {
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        151 => len >= 1,
        152..=155 => len == 4,
        _ => true,
    };
    let mut run: Option<(u8, usize)> = None;
    let mut i = 0;
    while let Some(&code) = opts.get(i) {
        if code == 0 || code == 255 {
            if let Some((c, l)) = run.take()
                && !fits(c, l)
            {
                return false;
            }
            if code == 255 {
                return true;
            }
            i += 1;
            continue;
        }
        let Some(&len) = opts.get(i + 1) else { break };
        let len = usize::from(len);
        run = match run {
            Some((c, l)) if c == code => Some((c, l + len)),
            Some((c, l)) if !fits(c, l) => return false,
            _ => Some((code, len)),
        };
        i += 2 + len;
    }
    run.is_none_or(|(c, l)| fits(c, l))
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
        if !readable(&self.fd, timeout)? {
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

/// Waits up to `timeout` for `fd` to be readable.
fn readable(fd: impl AsFd, timeout: Duration) -> anyhow::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Round up: a wait of 0.4 ms must not become a busy loop of zero-timeout polls.
    let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, and the count says one.
    let r = unsafe { libc::poll(&raw mut pfd, 1, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e).context("polling the DHCP socket");
    }
    Ok(r > 0)
}

/// A UDP socket on port 68 bound to one interface (`SO_BINDTODEVICE`), for the client
/// once it has an address: the kernel picks the source address, routes, and resolves the
/// server's MAC, and a unicast ACK finds a socket on port 68.
#[derive(Debug)]
pub struct UdpPort {
    sock: std::net::UdpSocket,
}

impl UdpPort {
    pub fn open(ifname: &str) -> anyhow::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("opening a UDP socket");
        }
        // SAFETY: raw is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        for (opt, what) in [
            (libc::SO_REUSEADDR, "SO_REUSEADDR"),
            (libc::SO_BROADCAST, "SO_BROADCAST"),
        ] {
            // SAFETY: the option value is a c_int of the given size.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const one).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error()).context(what);
            }
        }
        let name = ifname.as_bytes();
        // SAFETY: name is valid for reads of its length; the kernel copies at most that.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                u32::try_from(name.len()).context("interface name length")?,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("binding the DHCP socket to {ifname}"));
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 68u16.to_be(),
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
        // SAFETY: sin is a valid sockaddr_in and the length matches it.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sin).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("binding UDP port 68");
        }
        Ok(UdpPort {
            sock: std::net::UdpSocket::from(fd),
        })
    }

    /// Sends a DHCP payload to `to` port 67.
    pub fn send(&self, payload: &[u8], to: Ipv4Addr) -> anyhow::Result<()> {
        self.sock
            .send_to(payload, (to, 67))
            .with_context(|| format!("sending a DHCP message to {to}"))?;
        Ok(())
    }

    /// Receives one DHCP payload, or None after `timeout`.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> anyhow::Result<Option<usize>> {
        if !readable(&self.sock, timeout)? {
            return Ok(None);
        }
        let (n, _) = self
            .sock
            .recv_from(buf)
            .context("receiving a DHCP message")?;
        Ok(Some(n))
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

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::Encodable;
    use dhcproto::v4::MessageType;

    #[test]
    fn blank_message_is_decoded_from_its_header() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let b = [0u8; 241];
        let m = blank_message(0xdead_beef, mac);
        assert_eq!(m.xid(), 0xdead_beef);
        assert_eq!(m.chaddr().get(..6), Some(&mac[..]));
        assert_eq!(m.opcode(), dhcproto::v4::Opcode::BootRequest);
        assert!(m.opts().is_empty());
        // The same header decodes on its own: the fallback is dead code.
        let mut h = b;
        h[..4].copy_from_slice(&[1, 1, 6, 0]);
        h[236..240].copy_from_slice(&[99, 130, 83, 99]);
        h[240] = 255;
        assert!(Message::decode(&mut Decoder::new(&h)).is_ok());
        // It encodes like a message from dhcproto's constructor.
        let z = Ipv4Addr::UNSPECIFIED;
        let reference = Message::new_with_id(0xdead_beef, z, z, z, z, &mac);
        assert_eq!(
            m.to_vec().expect("encode"),
            reference.to_vec().expect("encode")
        );
    }

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
        let d = machine::client_message(
            7,
            mac,
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            None,
            None,
        );
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
        let m = decode(p).expect("decodes");
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
        let l = lease_of(&m);
        assert_eq!(l.addr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(l.prefix, 24);
        assert_eq!(l.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(l.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
    }

    #[test]
    fn options_dhcproto_asserts_against_are_refused() {
        let mut m = blank_message(7, [2, 0, 0, 0, 0, 1]);
        m.set_opcode(dhcproto::v4::Opcode::BootReply);
        let mut b = dhcproto::Encodable::to_vec(&m).expect("encodes");
        assert!(decode(&b).is_some());
        // A ClientFQDN (81) of 0 bytes: the agent_dhcp fuzz finding.
        b.truncate(OPTIONS_AT);
        b.extend([81, 0, 255]);
        assert_eq!(decode(&b), None);
        assert!(option_lengths_ok(&[81, 3, 0, 0, 0, 255]));
        // Split over two options (RFC 3396): 1 + 2 bytes is a whole one.
        assert!(option_lengths_ok(&[81, 1, 0, 81, 2, 0, 0, 255]));
        assert!(!option_lengths_ok(&[81, 1, 0, 0, 81, 1, 0, 255]));
        assert!(!option_lengths_ok(&[94, 2, 1, 2]));
        assert!(option_lengths_ok(&[1, 4, 255, 255, 255, 0, 255]));
    }
}
