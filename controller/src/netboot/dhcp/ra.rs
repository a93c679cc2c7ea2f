//! ICMPv6 router advertisements with router lifetime 0, so iPXE stops waiting for IPv6.
//!
//! iPXE configures IPv4 (DHCP) and IPv6 (router discovery) together and waits for both: with
//! no RA on the segment it sits about 15 s after the DHCPACK. One RA, even with router
//! lifetime 0 (which makes nothing a default router), ends the wait at once (lab measurement).
//! We answer every Router Solicitation (rate-limited) and also advertise periodically.
//! Enable this only on a provisioning interface that has IPv6 (at least a link-local address).

use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use anyhow::Context as _;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// ICMPv6 type of a Router Solicitation.
pub const ICMPV6_ROUTER_SOLICITATION: u8 = 133;
/// ICMPv6 type of a Router Advertisement.
pub const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;
/// All-nodes link-local multicast.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// All-routers link-local multicast, where Router Solicitations go.
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// RFC 4861 MIN_DELAY_BETWEEN_RAS is 3 s; one second keeps iPXE's first RS answered fast
/// while still bounding what a chatty segment can make us send.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Router advertisement settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaConfig {
    /// The provisioning interface.
    pub interface: String,
    /// Unsolicited advertisement period.
    pub interval: Duration,
    /// An on-link, autonomous prefix to advertise (the lab used `fd00:1ab::/64`), if any.
    /// Without one the RA still ends iPXE's wait.
    pub prefix: Option<(Ipv6Addr, u8)>,
}

/// PURE: the ICMPv6 RA body (the kernel fills in the checksum on raw ICMPv6 sockets).
pub fn build_ra(prefix: Option<(Ipv6Addr, u8)>) -> Vec<u8> {
    let mut p = vec![
        ICMPV6_ROUTER_ADVERTISEMENT,
        0, // code
        0,
        0,  // checksum, filled by the kernel
        64, // cur hop limit
        0,  // flags: no M (DHCPv6 addresses), no O (DHCPv6 other config)
        0,
        0, // router lifetime 0: never a default router
    ];
    p.extend_from_slice(&0u32.to_be_bytes()); // reachable time: unspecified
    p.extend_from_slice(&0u32.to_be_bytes()); // retrans timer: unspecified
    if let Some((prefix, len)) = prefix {
        // Prefix information option (RFC 4861 4.6.2): type 3, length 4 (x 8 bytes).
        p.extend_from_slice(&[3, 4, len, 0xc0]); // L (on-link) and A (autonomous)
        p.extend_from_slice(&3600u32.to_be_bytes()); // valid lifetime
        p.extend_from_slice(&1800u32.to_be_bytes()); // preferred lifetime
        p.extend_from_slice(&0u32.to_be_bytes()); // reserved
        p.extend_from_slice(&prefix.octets());
    }
    p
}

/// A raw ICMPv6 socket bound to the provisioning interface.
#[derive(Debug)]
pub struct RaSocket {
    interface: String,
    socket: Socket,
}

/// Open the raw ICMPv6 socket (needs CAP_NET_RAW) on `interface`.
pub fn bind_socket(interface: &str) -> anyhow::Result<RaSocket> {
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        .context("creating raw icmpv6 socket")?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .with_context(|| format!("binding icmpv6 socket to interface {interface}"))?;
    // Router Solicitations go to all-routers, which a host that does not forward has not
    // joined: join it on this interface, or solicitations never reach us.
    let index = socket
        .device_index_v6()
        .context("reading the interface index")?
        .map_or(0, |i| i.get());
    socket
        .join_multicast_v6(&ALL_ROUTERS, index)
        .with_context(|| format!("joining ff02::2 on {interface}"))?;
    // RFC 4861 6.1.2: hosts drop RAs whose hop limit is not 255.
    socket
        .set_multicast_hops_v6(255)
        .context("setting multicast hop limit")?;
    socket
        .set_unicast_hops_v6(255)
        .context("setting unicast hop limit")?;
    socket
        .set_multicast_loop_v6(false)
        .context("disabling multicast loop")?;
    socket.set_nonblocking(true).context("setting O_NONBLOCK")?;
    Ok(RaSocket {
        interface: interface.to_owned(),
        socket,
    })
}

fn send_ra(fd: &AsyncFd<Socket>, packet: &[u8]) -> std::io::Result<usize> {
    // Scope id 0: the kernel takes the interface the socket is bound to.
    let dest = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, 0));
    fd.get_ref().send_to(packet, &dest)
}

/// Advertise on `socket` every `cfg.interval`, and in answer to Router Solicitations, until
/// `cancel` fires. Returns how many advertisements were sent.
pub async fn run(
    socket: RaSocket,
    cfg: RaConfig,
    cancel: CancellationToken,
) -> anyhow::Result<u64> {
    let RaSocket { interface, socket } = socket;
    // SAFETY: `Socket` owns its descriptor, which stays open and unchanged until the
    // `AsyncFd` (which owns the `Socket`) is dropped.
    let fd = unsafe { AsyncFd::register(socket) }
        .map_err(|e| anyhow::anyhow!("registering icmpv6 socket with tokio: {e}"))?;
    let packet = build_ra(cfg.prefix);
    let mut sent = 0u64;
    let mut last: Option<Instant> = None;
    let mut ticker = tokio::time::interval(cfg.interval);
    let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
    tracing::info!(%interface, "router advertisements on");
    loop {
        let solicited = tokio::select! {
            _ = ticker.tick() => false,
            r = fd.readable() => {
                let mut guard = r.context("waiting on icmpv6 socket")?;
                match guard.try_io(|s| s.get_ref().recv_from(&mut buf)) {
                    Ok(Ok((n, _))) if n > 0 => {
                        // SAFETY: recv_from initialised the first `n` bytes of `buf`, and
                        // only the first byte (the ICMPv6 type) is read.
                        let kind = unsafe { buf[0].assume_init() };
                        kind == ICMPV6_ROUTER_SOLICITATION
                    }
                    Ok(Ok(_)) => false,
                    Ok(Err(e)) => {
                        tracing::debug!(%interface, error = %e, "icmpv6 recv error");
                        false
                    }
                    Err(_would_block) => false,
                }
            }
            () = cancel.cancelled() => {
                tracing::info!(%interface, sent, "router advertisements off");
                return Ok(sent);
            }
        };
        if solicited && last.is_some_and(|t| t.elapsed() < MIN_GAP) {
            continue;
        }
        match send_ra(&fd, &packet) {
            Ok(_) => {
                sent += 1;
                last = Some(Instant::now());
                tracing::trace!(%interface, solicited, "router advertisement sent");
            }
            // No link-local address yet (DAD) or the link is down: try again next time.
            Err(e) => tracing::debug!(%interface, error = %e, "router advertisement not sent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ra_has_lifetime_zero_and_optional_prefix() {
        let bare = build_ra(None);
        assert_eq!(bare.len(), 16);
        assert_eq!(bare[0], 134);
        assert_eq!(&bare[6..8], &[0, 0], "router lifetime 0");
        assert_eq!(bare[5], 0, "no M/O flags");
        let prefix: Ipv6Addr = "fd00:1ab::".parse().expect("valid");
        let with = build_ra(Some((prefix, 64)));
        assert_eq!(with.len(), 16 + 32);
        assert_eq!(&with[16..20], &[3, 4, 64, 0xc0]);
        assert_eq!(&with[32..48], &prefix.octets());
    }
}
