//! LLDP (IEEE 802.1AB): what the switch at the other end of each cable says about itself.
//!
//! [`parse_frame`] is PURE: one Ethernet frame (optionally 802.1Q-tagged) carrying an
//! LLDPDU in, a [`LldpNeighbor`] or the reason it is not one out. It reads what Ironic's
//! `local-link-connection` hook and an operator need: chassis ID, port ID, TTL, port and
//! system description, system name, IPv4/IPv6 management addresses, and the IEEE 802.1
//! Port VLAN ID and VLAN Name TLVs. Everything is bounded: a frame is at most
//! [`MAX_FRAME`] bytes, a TLV at most 511 by its 9-bit length, strings are cut to
//! [`MAX_TEXT`] characters (VLAN names to [`MAX_VLAN_NAME`]), at most [`MAX_ADDRESSES`] addresses and [`MAX_VLANS`] VLANs are
//! kept. Hand-written (~200 lines): no maintained crate parses LLDP without pulling in a
//! packet-capture stack, and the format is a flat list of type-length-value records.
//!
//! [`listen`] is the IO: one raw `AF_PACKET` socket per NIC with a carrier (bound to the
//! LLDP ethertype, joined to the nearest-bridge multicast group), each read until its first
//! valid frame or the shared deadline.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use proto::{LldpNeighbor, LldpVlan};

/// The LLDP ethertype.
pub const ETHERTYPE_LLDP: u16 = 0x88cc;
/// The nearest-bridge group address LLDP frames are sent to.
pub const NEAREST_BRIDGE: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];
/// Largest frame read (a 1500-byte payload, a VLAN tag and the header).
pub const MAX_FRAME: usize = 1522;
/// Longest string kept from a TLV, in characters.
pub const MAX_TEXT: usize = 255;
/// Management addresses kept.
pub const MAX_ADDRESSES: usize = 8;
/// VLANs kept.
pub const MAX_VLANS: usize = 64;
/// Longest VLAN name kept (802.1Q allows 32 octets).
pub const MAX_VLAN_NAME: usize = 32;

const ETHERTYPE_VLAN: u16 = 0x8100;
const OUI_8021: [u8; 3] = [0x00, 0x80, 0xc2];

/// Why a frame is not an LLDPDU we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LldpError {
    #[error("frame of {0} bytes is too short or too long")]
    Size(usize),
    #[error("ethertype {0:#06x} is not LLDP")]
    NotLldp(u16),
    #[error("TLV type {kind} at byte {at} runs past the end of the frame")]
    Truncated { kind: u8, at: usize },
    #[error("the LLDPDU does not start with chassis ID, port ID and TTL")]
    MissingMandatory,
    #[error("{0} TLV is malformed")]
    Malformed(&'static str),
}

/// PURE: the neighbour an Ethernet frame describes.
pub fn parse_frame(frame: &[u8]) -> Result<LldpNeighbor, LldpError> {
    if frame.len() < 14 || frame.len() > MAX_FRAME {
        return Err(LldpError::Size(frame.len()));
    }
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([frame[at], frame[at + 1]]);
    if ethertype == ETHERTYPE_VLAN {
        at += 4;
        let t = frame.get(at..at + 2).ok_or(LldpError::Size(frame.len()))?;
        ethertype = u16::from_be_bytes([t[0], t[1]]);
    }
    if ethertype != ETHERTYPE_LLDP {
        return Err(LldpError::NotLldp(ethertype));
    }
    parse_lldpdu(&frame[at + 2..])
}

/// PURE: the neighbour an LLDPDU (the frame's payload) describes.
pub fn parse_lldpdu(pdu: &[u8]) -> Result<LldpNeighbor, LldpError> {
    let mut n = LldpNeighbor::default();
    let mut at = 0;
    let mut index = 0;
    let mut seen_mandatory = [false; 3];
    while at < pdu.len() {
        let head = pdu
            .get(at..at + 2)
            .ok_or(LldpError::Truncated { kind: 0, at })?;
        let kind = head[0] >> 1;
        let len = (usize::from(head[0] & 1) << 8) | usize::from(head[1]);
        let value = pdu
            .get(at + 2..at + 2 + len)
            .ok_or(LldpError::Truncated { kind, at })?;
        // The first three TLVs are chassis ID, port ID and TTL, in that order.
        if index < 3 && usize::from(kind) != index + 1 {
            return Err(LldpError::MissingMandatory);
        }
        match kind {
            0 => break,
            1 => {
                let (sub, id) = value
                    .split_first()
                    .ok_or(LldpError::Malformed("chassis ID"))?;
                n.chassis_id_subtype = *sub;
                n.chassis_id =
                    render_id(*sub, 4, 5, id).ok_or(LldpError::Malformed("chassis ID"))?;
                seen_mandatory[0] = true;
            }
            2 => {
                let (sub, id) = value.split_first().ok_or(LldpError::Malformed("port ID"))?;
                n.port_id_subtype = *sub;
                n.port_id = render_id(*sub, 3, 4, id).ok_or(LldpError::Malformed("port ID"))?;
                seen_mandatory[1] = true;
            }
            3 => {
                let ttl: [u8; 2] = value.try_into().map_err(|_| LldpError::Malformed("TTL"))?;
                n.ttl = u16::from_be_bytes(ttl);
                seen_mandatory[2] = true;
            }
            4 => n.port_description = Some(text(value)),
            5 => n.system_name = Some(text(value)),
            6 => n.system_description = Some(text(value)),
            8 => {
                if let Some(addr) = management_address(value)
                    && n.management_addresses.len() < MAX_ADDRESSES
                    && !n.management_addresses.contains(&addr)
                {
                    n.management_addresses.push(addr);
                }
            }
            127 => org_specific(value, &mut n),
            _ => {}
        }
        at += 2 + len;
        index += 1;
    }
    if seen_mandatory != [true; 3] {
        return Err(LldpError::MissingMandatory);
    }
    Ok(n)
}

/// A chassis or port ID by its subtype: the MAC subtype as `aa:bb:..`, the network-address
/// subtype (an IANA family byte, then the address) as IP text, the rest as text. `None`
/// for an empty ID, one with nothing printable, or a MAC that is not 6 bytes.
fn render_id(subtype: u8, mac_subtype: u8, net_subtype: u8, id: &[u8]) -> Option<String> {
    if id.is_empty() {
        return None;
    }
    if subtype == mac_subtype {
        return (id.len() == 6).then(|| mac(id));
    }
    if subtype == net_subtype
        && let Some(ip) = ip_of(id)
    {
        return Some(ip);
    }
    // An ID that is nothing but control characters renders empty: not an ID.
    Some(text(id)).filter(|t| !t.is_empty())
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An IANA address family byte (1 IPv4, 2 IPv6) and the address, as text.
fn ip_of(b: &[u8]) -> Option<String> {
    match b {
        [1, a @ ..] => <[u8; 4]>::try_from(a)
            .ok()
            .map(|a| Ipv4Addr::from(a).to_string()),
        [2, a @ ..] => <[u8; 16]>::try_from(a)
            .ok()
            .map(|a| Ipv6Addr::from(a).to_string()),
        _ => None,
    }
}

/// Bytes as text: UTF-8 (lossy), control characters dropped, trimmed, at most
/// [`MAX_TEXT`] characters.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// TLV 8: address string length (family byte included), family, address, then interface
/// numbering and an OID that are not kept.
fn management_address(v: &[u8]) -> Option<String> {
    let len = usize::from(*v.first()?);
    ip_of(v.get(1..1 + len)?)
}

/// TLV 127: IEEE 802.1 Port VLAN ID (subtype 1) and VLAN Name (subtype 3); other
/// organisations' TLVs are skipped.
fn org_specific(v: &[u8], n: &mut LldpNeighbor) {
    let Some((oui, rest)) = v.split_at_checked(3) else {
        return;
    };
    if oui != OUI_8021 {
        return;
    }
    match rest {
        [1, hi, lo] => {
            let id = u16::from_be_bytes([*hi, *lo]);
            if id != 0 {
                n.port_vlan_id = Some(id);
            }
        }
        [3, hi, lo, len, name @ ..] if usize::from(*len) <= name.len() => {
            let id = u16::from_be_bytes([*hi, *lo]) & 0x0fff;
            if n.vlans.len() < MAX_VLANS && !n.vlans.iter().any(|x| x.id == id) {
                n.vlans.push(LldpVlan {
                    id,
                    name: text(&name[..usize::from(*len)])
                        .chars()
                        .take(MAX_VLAN_NAME)
                        .collect(),
                });
            }
        }
        _ => {}
    }
}

/// Listens on each named NIC (with its ifindex) until its first valid LLDP frame or
/// `timeout` after the call, all NICs at once; returns the neighbour heard per NIC name.
/// A NIC whose socket cannot be opened is logged and skipped. Frames that do not parse are
/// dropped and counted in the log.
pub fn listen(nics: &[String], timeout: Duration) -> BTreeMap<String, LldpNeighbor> {
    let deadline = Instant::now() + timeout;
    let handles: Vec<_> = nics
        .iter()
        .map(|name| {
            let name = name.clone();
            std::thread::Builder::new()
                .name(format!("lldp-{name}"))
                .spawn(move || {
                    let heard = listen_one(&name, deadline);
                    (name, heard)
                })
        })
        .collect();
    let mut out = BTreeMap::new();
    for h in handles {
        match h.map(|h| h.join()) {
            Ok(Ok((name, Some(n)))) => {
                out.insert(name, n);
            }
            Ok(Ok((_, None))) => {}
            Ok(Err(_)) => tracing::warn!("an LLDP listener panicked"),
            Err(e) => tracing::warn!(error = %e, "no thread for an LLDP listener"),
        }
    }
    out
}

fn listen_one(name: &str, deadline: Instant) -> Option<LldpNeighbor> {
    let socket = match crate::host::packet::PacketSocket::open(name, ETHERTYPE_LLDP, NEAREST_BRIDGE)
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(nic = name, error = %format!("{e:#}"), "cannot listen for LLDP");
            return None;
        }
    };
    let mut buf = [0u8; MAX_FRAME];
    let mut dropped = 0u32;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match socket.recv(&mut buf, left) {
            Ok(Some(0)) => {}
            Ok(Some(len)) => match parse_frame(&buf[..len]) {
                Ok(n) => {
                    tracing::info!(nic = name, switch = %n.chassis_id, port = %n.port_id, system = ?n.system_name, "LLDP neighbour");
                    return Some(n);
                }
                Err(e) => {
                    dropped += 1;
                    tracing::debug!(nic = name, error = %e, dropped, "LLDP frame dropped");
                }
            },
            Ok(None) => {
                tracing::info!(nic = name, dropped, "no LLDP frame heard");
                return None;
            }
            Err(e) => {
                tracing::warn!(nic = name, error = %e, "LLDP read failed");
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests;
