//! PURE DHCP decision: one validated request in, one [`Decision`] out.
//!
//! No sockets, no clock (`now` is passed in), no store (the server reads a [`LeaseContext`]
//! and applies the returned [`LeaseOp`]). Transactions are keyed on (chaddr, xid): two OVMF
//! machines were seen sending the same xid, so nothing here is looked up by xid alone.
//!
//! ```text
//!  full:   DISCOVER -> OFFER (+hold)   REQUEST -> ACK (+bind) | NAK | drop (other server)
//!          INFORM -> ACK (no address)  RELEASE -> (release)   DECLINE -> (quarantine)
//!  proxy:  :67   DISCOVER from PXE/HTTP client -> OFFER without address, option 60
//!          :4011 REQUEST/INFORM -> ACK with the boot file, unicast to the source port
//!  off:    everything dropped
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use dhcproto::v4::{
    DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, UnknownOption,
};

use super::client::{ClientInfo, DropReason, OPT_IPXE_ENCAP, VendorClass};
use super::leases::{LeaseContext, LeaseOp, LeaseState};
use super::{BootTarget, DhcpConfig, DhcpMode, Pool};

/// The DHCP server port.
pub const SERVER_PORT: u16 = 67;
/// The DHCP client port.
pub const CLIENT_PORT: u16 = 68;
/// The PXE boot server (proxyDHCP) port.
pub const PXE_PORT: u16 = 4011;
/// RFC 1542 minimum BOOTP message size; some PXE ROMs drop shorter replies.
const MIN_REPLY_LEN: usize = 300;

/// One packet as received.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub msg: &'a Message,
    pub info: &'a ClientInfo,
    /// Where it came from (0.0.0.0:68 for a client without an address).
    pub src: SocketAddrV4,
    /// The local port it arrived on: 67, or 4011 in proxy mode.
    pub local_port: u16,
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255 on the receiving interface, to `port`.
    Broadcast { port: u16 },
    /// A unicast address (a relay, a renewing client, a 4011 client's source).
    Unicast(SocketAddrV4),
}

/// What to do with the packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Send `message` to `dest`, from the socket the request came in on.
    Reply { message: Message, dest: Destination },
    /// Processed, and the protocol wants no reply (RELEASE, DECLINE).
    Handled,
    /// Not answered.
    Drop(DropReason),
}

/// The policy's answer: what to send and what to change in the lease store.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub lease_op: Option<LeaseOp>,
}

impl Decision {
    fn drop(reason: DropReason) -> Self {
        Decision {
            outcome: Outcome::Drop(reason),
            lease_op: None,
        }
    }
}

/// What the server should read from the lease store before calling [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseLookups {
    /// Whether leases matter at all (full mode).
    pub needed: bool,
    /// The address whose holder to look up (option 50, else ciaddr).
    pub requested: Option<Ipv4Addr>,
    /// Whether to search the pool for a free address.
    pub want_free: bool,
}

/// Which lease lookups [`decide`] needs for this packet.
pub fn lease_lookups(cfg: &DhcpConfig, inc: &Incoming<'_>) -> LeaseLookups {
    let needed = cfg.mode == DhcpMode::Full;
    let ciaddr = Some(inc.msg.ciaddr()).filter(|a| !a.is_unspecified());
    LeaseLookups {
        needed,
        requested: inc.info.requested_ip.or(ciaddr),
        want_free: needed
            && inc.info.msg_type == MessageType::Discover
            && !cfg.reservations.contains_key(&inc.info.mac),
    }
}

/// Decide the reply for one validated packet.
pub fn decide(
    cfg: &DhcpConfig,
    inc: &Incoming<'_>,
    target: BootTarget,
    leases: &LeaseContext,
    now: SystemTime,
) -> Decision {
    if target == BootTarget::Ignore {
        return Decision::drop(DropReason::PolicyIgnored);
    }
    match cfg.mode {
        DhcpMode::Off => Decision::drop(DropReason::ModeOff),
        DhcpMode::Proxy => decide_proxy(cfg, inc, target),
        DhcpMode::Full => match &cfg.pool {
            Some(pool) => decide_full(cfg, pool, inc, target, leases, now),
            // validate() forbids this; answer nothing rather than something wrong.
            None => Decision::drop(DropReason::PoolExhausted),
        },
    }
}

/// The boot options for one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BootOptions {
    file: String,
    /// Option 60 to put in the reply, if any.
    vendor_class: Option<&'static [u8]>,
    /// Add iPXE's 175.176 = 1 (`ipxe.no-pxedhcp`).
    no_pxedhcp: bool,
}

/// Arches (RFC 4578 / IANA) that mean UEFI HTTP boot.
fn is_http_arch(arch: u16) -> bool {
    (15..=20).contains(&arch)
}

/// The boot file for a client, or `None` for an ordinary DHCP client (the agent, an OS) or
/// one whose architecture has no configured file.
fn boot_options(cfg: &DhcpConfig, info: &ClientInfo, target: BootTarget) -> Option<BootOptions> {
    if target != BootTarget::Netboot {
        return None;
    }
    let full = cfg.mode == DhcpMode::Full;
    if info.is_ipxe {
        // The chainload already happened: hand over the script URL, which breaks the
        // iPXE -> DHCP -> iPXE loop. Values are rendered here, not left to iPXE expansion.
        let mut url = format!("{}{}?mac={}", cfg.http_base, cfg.script_path, info.mac);
        if let Some(p) = info.platform() {
            url.push_str("&platform=");
            url.push_str(p.as_str());
        }
        if let Some(uuid) = info.uuid {
            url.push_str(&format!("&uuid={uuid}"));
        }
        return Some(BootOptions {
            file: url,
            vendor_class: None,
            // Without it iPXE waits up to 3 s for ProxyDHCP offers before its REQUEST.
            no_pxedhcp: full,
        });
    }
    if info.vendor == VendorClass::Http || info.arch.is_some_and(is_http_arch) {
        // UEFI HTTP boot requires option 60 `HTTPClient` in the offer, or it ignores it.
        return Some(BootOptions {
            file: format!("{}{}", cfg.http_base, cfg.http_boot_path),
            vendor_class: Some(b"HTTPClient"),
            no_pxedhcp: false,
        });
    }
    if info.vendor != VendorClass::Pxe {
        return None;
    }
    // RFC 4578 makes option 93 mandatory for PXE; a PXE client without it is an old BIOS ROM.
    let arch = info.arch.unwrap_or(0);
    let file = cfg.boot_files.by_arch.get(&arch)?.clone();
    Some(BootOptions {
        file,
        vendor_class: None,
        no_pxedhcp: false,
    })
}

/// A reply skeleton: same xid, chaddr, flags and giaddr as the request.
fn reply_base(cfg: &DhcpConfig, msg: &Message, kind: MessageType) -> Message {
    let chaddr = msg.chaddr().get(..6).unwrap_or(&[0; 6]);
    let mut r = Message::new_with_id(
        msg.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        msg.giaddr(),
        chaddr,
    );
    r.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(msg.flags());
    r.opts_mut().insert(DhcpOption::MessageType(kind));
    r.opts_mut()
        .insert(DhcpOption::ServerIdentifier(cfg.server_ip));
    r
}

fn add_boot(cfg: &DhcpConfig, r: &mut Message, boot: &BootOptions) {
    // Next-server for TFTP; harmless for URLs.
    r.set_siaddr(cfg.server_ip);
    // Both the BOOTP `file` field (what PXE ROMs read) and option 67 (what iPXE prefers).
    if boot.file.len() < 128 {
        r.set_fname_str(&boot.file);
    }
    r.opts_mut()
        .insert(DhcpOption::BootfileName(boot.file.as_bytes().to_vec()));
    if let Some(vc) = boot.vendor_class {
        r.opts_mut()
            .insert(DhcpOption::ClassIdentifier(vc.to_vec()));
    }
    if boot.no_pxedhcp {
        r.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::Unknown(OPT_IPXE_ENCAP),
            vec![176, 1, 1],
        )));
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn add_address(r: &mut Message, pool: &Pool, ip: Ipv4Addr) {
    r.set_yiaddr(ip);
    let lease = secs(pool.lease_time);
    let o = r.opts_mut();
    o.insert(DhcpOption::SubnetMask(pool.netmask));
    o.insert(DhcpOption::AddressLeaseTime(lease));
    o.insert(DhcpOption::Renewal(lease / 2));
    // 7/8 of the lease, rounded down once (lease / 8 * 7 gave T2 = 0 below 8 s).
    o.insert(DhcpOption::Rebinding(
        u32::try_from(u64::from(lease) * 7 / 8).unwrap_or(u32::MAX),
    ));
    // No router and no DNS unless configured: the provisioning network goes nowhere.
    if !pool.routers.is_empty() {
        o.insert(DhcpOption::Router(pool.routers.clone()));
    }
    if !pool.dns.is_empty() {
        o.insert(DhcpOption::DomainNameServer(pool.dns.clone()));
    }
}

/// RFC 2131 4.1: to the relay, else to a configured client, else broadcast. Unicast to
/// yiaddr would need an ARP entry we cannot add from a UDP socket, so it is broadcast too.
fn full_destination(msg: &Message, allow_ciaddr: bool) -> Destination {
    if !msg.giaddr().is_unspecified() {
        return Destination::Unicast(SocketAddrV4::new(msg.giaddr(), SERVER_PORT));
    }
    if allow_ciaddr && !msg.ciaddr().is_unspecified() {
        return Destination::Unicast(SocketAddrV4::new(msg.ciaddr(), CLIENT_PORT));
    }
    Destination::Broadcast { port: CLIENT_PORT }
}

fn reply(message: Message, dest: Destination, lease_op: Option<LeaseOp>) -> Decision {
    Decision {
        outcome: Outcome::Reply { message, dest },
        lease_op,
    }
}

/// The fixed address of the client: from the configuration, else its reservation row in
/// the lease store (a port's `extra.dhcp_address`), if that one is usable on this network
/// (on the pool's subnet, not ours, not configured for another MAC).
fn reservation_of(
    cfg: &DhcpConfig,
    pool: &Pool,
    info: &ClientInfo,
    leases: &LeaseContext,
) -> Option<Ipv4Addr> {
    if let Some(ip) = cfg.reservations.get(&info.mac) {
        return Some(*ip);
    }
    leases
        .by_mac
        .as_ref()
        .filter(|l| l.state == LeaseState::Reserved && l.mac == info.mac)
        .map(|l| l.ip)
        .filter(|ip| pool.on_subnet(*ip) && *ip != cfg.server_ip && cfg.reserved_for(*ip).is_none())
}

/// Whether `ip` may be bound to the client in full mode. `reserved` is the client's own
/// fixed address ([`reservation_of`]).
fn may_hold(
    cfg: &DhcpConfig,
    pool: &Pool,
    info: &ClientInfo,
    reserved: Option<Ipv4Addr>,
    holder: Option<&super::leases::Lease>,
    ip: Ipv4Addr,
    now: SystemTime,
) -> bool {
    if let Some(reserved) = reserved {
        return reserved == ip;
    }
    if cfg.reserved_for(ip).is_some() || !pool.contains(ip) || ip == cfg.server_ip {
        return false;
    }
    match holder {
        None => true,
        Some(l) if l.ip != ip => true,
        Some(l) if l.state == LeaseState::Reserved => false,
        Some(l) if l.state == LeaseState::Declined => !l.is_active(now),
        Some(l) => l.mac == info.mac || !l.is_active(now),
    }
}

/// Whether the client's lease row at `ip` is its reservation row (which no op changes).
fn is_reserved_row(leases: &LeaseContext, ip: Ipv4Addr) -> bool {
    leases
        .by_mac
        .as_ref()
        .is_some_and(|l| l.ip == ip && l.state == LeaseState::Reserved)
}

fn decide_full(
    cfg: &DhcpConfig,
    pool: &Pool,
    inc: &Incoming<'_>,
    target: BootTarget,
    leases: &LeaseContext,
    now: SystemTime,
) -> Decision {
    let info = inc.info;
    let msg = inc.msg;
    let boot = boot_options(cfg, info, target);
    let ours = |sid: Option<Ipv4Addr>| sid.is_none_or(|s| s == cfg.server_ip);
    let reserved = reservation_of(cfg, pool, info, leases);
    match info.msg_type {
        MessageType::Discover => {
            let own = leases
                .by_mac
                .as_ref()
                .filter(|l| may_hold(cfg, pool, info, reserved, Some(l), l.ip, now));
            let requested = info.requested_ip.filter(|ip| {
                may_hold(
                    cfg,
                    pool,
                    info,
                    reserved,
                    leases.requested_holder.as_ref(),
                    *ip,
                    now,
                )
            });
            let ip = reserved.or(own.map(|l| l.ip)).or(requested).or(leases.free);
            let Some(ip) = ip else {
                return Decision::drop(DropReason::PoolExhausted);
            };
            let mut r = reply_base(cfg, msg, MessageType::Offer);
            add_address(&mut r, pool, ip);
            if let Some(b) = &boot {
                add_boot(cfg, &mut r, b);
            }
            // A bound, still-valid lease is not downgraded to a short offer hold.
            // Nor is a reservation row touched.
            let keep = is_reserved_row(leases, ip)
                || own.is_some_and(|l| {
                    l.ip == ip && l.state == LeaseState::Bound && l.is_active(now)
                });
            let op = (!keep).then_some(LeaseOp::Offer {
                ip,
                mac: info.mac,
                expires: now + pool.offer_hold,
            });
            reply(r, full_destination(msg, false), op)
        }
        MessageType::Request => {
            if !ours(info.server_id) {
                // SELECTING and the client chose another server.
                return Decision {
                    outcome: Outcome::Drop(DropReason::OtherServer),
                    lease_op: Some(LeaseOp::ForgetOffer { mac: info.mac }),
                };
            }
            let ciaddr = Some(msg.ciaddr()).filter(|a| !a.is_unspecified());
            let Some(ip) = info.requested_ip.or(ciaddr) else {
                return Decision::drop(DropReason::NoRequestedAddress);
            };
            let holder = leases
                .requested_holder
                .as_ref()
                .or(leases.by_mac.as_ref().filter(|l| l.ip == ip));
            // RFC 2131 §4.3.2: a REQUEST for an address that is not the client's gets a NAK.
            // The client's own live binding (or the offer it is answering) at another
            // address says so, whatever the state: a renewal or rebinding of a stale
            // address, an INIT-REBOOT with an old one, or a SELECTING REQUEST for an address
            // we did not offer.
            let own_elsewhere = leases.by_mac.as_ref().is_some_and(|l| {
                l.mac == info.mac
                    && l.ip != ip
                    && matches!(l.state, LeaseState::Bound | LeaseState::Offered)
                    && l.is_active(now)
            });
            if !own_elsewhere && may_hold(cfg, pool, info, reserved, holder, ip, now) {
                let mut r = reply_base(cfg, msg, MessageType::Ack);
                r.set_ciaddr(msg.ciaddr());
                add_address(&mut r, pool, ip);
                if let Some(b) = &boot {
                    add_boot(cfg, &mut r, b);
                }
                let op = (!is_reserved_row(leases, ip)).then_some(LeaseOp::Bind {
                    ip,
                    mac: info.mac,
                    expires: now + pool.lease_time,
                });
                reply(r, full_destination(msg, true), op)
            } else {
                let mut r = reply_base(cfg, msg, MessageType::Nak);
                // RFC 2131 4.3.2: a NAK through a relay carries the broadcast bit.
                if !msg.giaddr().is_unspecified() {
                    r.set_flags(Flags::default().set_broadcast());
                }
                reply(r, full_destination(msg, false), None)
            }
        }
        MessageType::Inform => {
            let mut r = reply_base(cfg, msg, MessageType::Ack);
            r.set_ciaddr(msg.ciaddr());
            if let Some(b) = &boot {
                add_boot(cfg, &mut r, b);
            }
            reply(r, full_destination(msg, true), None)
        }
        MessageType::Release => {
            if !ours(info.server_id) {
                return Decision::drop(DropReason::OtherServer);
            }
            match &leases.by_mac {
                Some(l) if l.ip == msg.ciaddr() => Decision {
                    outcome: Outcome::Handled,
                    lease_op: (l.state != LeaseState::Reserved).then_some(LeaseOp::Release {
                        ip: l.ip,
                        mac: info.mac,
                    }),
                },
                _ => Decision::drop(DropReason::NotLeased),
            }
        }
        MessageType::Decline => {
            if !ours(info.server_id) {
                return Decision::drop(DropReason::OtherServer);
            }
            match (&leases.by_mac, info.requested_ip) {
                (Some(l), Some(ip)) if l.ip == ip => Decision {
                    outcome: Outcome::Handled,
                    // A reservation stays: the operator has to fix the conflict.
                    lease_op: (l.state != LeaseState::Reserved).then_some(LeaseOp::Decline {
                        ip,
                        mac: info.mac,
                        until: now + pool.decline_hold,
                    }),
                },
                _ => Decision::drop(DropReason::NotLeased),
            }
        }
        _ => Decision::drop(DropReason::UnsupportedMessageType),
    }
}

fn decide_proxy(cfg: &DhcpConfig, inc: &Incoming<'_>, target: BootTarget) -> Decision {
    let info = inc.info;
    let msg = inc.msg;
    let pxe_like = info.vendor != VendorClass::Other || info.is_ipxe;
    if !pxe_like {
        return Decision::drop(DropReason::NotPxeClient);
    }
    let Some(boot) = boot_options(cfg, info, target) else {
        return Decision::drop(DropReason::NothingToBoot);
    };
    let class: &'static [u8] = boot.vendor_class.unwrap_or(b"PXEClient");
    let with_class = |r: &mut Message| {
        // Option 60 `PXEClient` in every proxy reply: it is what makes a PXE client treat an
        // address-less offer as proxyDHCP.
        r.opts_mut()
            .insert(DhcpOption::ClassIdentifier(class.to_vec()));
        if let Some(DhcpOption::ClientMachineIdentifier(id)) =
            msg.opts().get(OptionCode::ClientMachineIdentifier)
        {
            r.opts_mut()
                .insert(DhcpOption::ClientMachineIdentifier(id.clone()));
        }
    };
    if inc.local_port == SERVER_PORT {
        if info.msg_type != MessageType::Discover {
            // REQUESTs on 67 belong to the site DHCP server.
            return Decision::drop(DropReason::NotForProxy);
        }
        let mut r = reply_base(cfg, msg, MessageType::Offer);
        r.set_siaddr(cfg.server_ip);
        // EDK2 takes a bare proxy offer (option 60 only) as "ask the boot server on 4011",
        // which is the tested path; iPXE also asks 4011 but may use a file given here.
        if info.is_ipxe || boot.vendor_class.is_some() {
            add_boot(cfg, &mut r, &boot);
        }
        with_class(&mut r);
        return reply(r, Destination::Broadcast { port: CLIENT_PORT }, None);
    }
    // Port 4011: the boot server exchange.
    if !matches!(info.msg_type, MessageType::Request | MessageType::Inform) {
        return Decision::drop(DropReason::NotForProxy);
    }
    let mut r = reply_base(cfg, msg, MessageType::Ack);
    r.set_ciaddr(msg.ciaddr());
    add_boot(cfg, &mut r, &boot);
    with_class(&mut r);
    // Unicast to the source: EDK2 sends from 4011 and iPXE from 68, and each listens there.
    let ip = if inc.src.ip().is_unspecified() {
        msg.ciaddr()
    } else {
        *inc.src.ip()
    };
    let dest = if ip.is_unspecified() {
        Destination::Broadcast {
            port: inc.src.port(),
        }
    } else {
        Destination::Unicast(SocketAddrV4::new(ip, inc.src.port()))
    };
    reply(r, dest, None)
}

/// Encode a reply, padded to the RFC 1542 minimum of 300 bytes.
pub fn encode_reply(message: &Message) -> Result<Vec<u8>, dhcproto::error::EncodeError> {
    use dhcproto::Encodable;
    let mut out = message.to_vec()?;
    if out.len() < MIN_REPLY_LEN {
        out.resize(MIN_REPLY_LEN, 0);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "policy_tests/mod.rs"]
mod tests;
