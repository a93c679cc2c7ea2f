//! PURE parsing and validation of an incoming DHCP packet into what the policy needs.
//!
//! Malformed input is never a panic: every failure is a [`DropReason`] the server counts.
//! dhcproto 0.15 has `debug_assert!`s and unchecked subtractions on a few option lengths
//! (80, 81, 94, 151-155), so those are checked on the raw bytes before decoding.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder};
use uuid::Uuid;

use crate::netboot::{MacAddr, Platform};

/// The DHCP magic cookie (RFC 2131 section 3).
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header plus the magic cookie.
const HEADER_LEN: usize = 240;
/// iPXE's encapsulated options (its presence marks an iPXE client).
pub const OPT_IPXE_ENCAP: u8 = 175;

/// Why a packet got no reply. Counted per reason by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Shorter than a BOOTP header plus magic cookie.
    TooShort,
    /// The magic cookie is not 99.130.83.99.
    BadMagic,
    /// An option has a length the decoder cannot take.
    BadOption,
    /// dhcproto refused the packet.
    Undecodable,
    /// op is not BOOTREQUEST (e.g. another server's reply).
    NotBootRequest,
    /// Hardware type is not Ethernet or its length is not 6.
    NotEthernet,
    /// chaddr is all zeros or a multicast/broadcast address.
    NoClientMac,
    /// No option 53: a plain BOOTP request, which we do not serve.
    NoMessageType,
    /// A message type a server never answers (OFFER, ACK, NAK, ...).
    UnsupportedMessageType,
    /// DHCP is configured off.
    ModeOff,
    /// Proxy mode and the client is neither a PXE nor an HTTP boot client.
    NotPxeClient,
    /// Proxy mode and a message type a proxy does not answer on this port.
    NotForProxy,
    /// The boot policy said to ignore this machine.
    PolicyIgnored,
    /// Proxy mode and nothing to boot (address-only machine, or no boot file for its arch).
    NothingToBoot,
    /// No free address in the pool.
    PoolExhausted,
    /// The REQUEST or RELEASE names another server.
    OtherServer,
    /// A REQUEST with neither option 50 nor ciaddr.
    NoRequestedAddress,
    /// RELEASE or DECLINE for an address this client does not hold.
    NotLeased,
    /// The lease store failed; nothing was sent rather than something wrong.
    StoreError,
    /// Our reply could not be encoded (a bug; never sent half a reply).
    EncodeFailed,
}

impl DropReason {
    /// Stable name for counters and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::BadMagic => "bad_magic",
            DropReason::BadOption => "bad_option",
            DropReason::Undecodable => "undecodable",
            DropReason::NotBootRequest => "not_boot_request",
            DropReason::NotEthernet => "not_ethernet",
            DropReason::NoClientMac => "no_client_mac",
            DropReason::NoMessageType => "no_message_type",
            DropReason::UnsupportedMessageType => "unsupported_message_type",
            DropReason::ModeOff => "mode_off",
            DropReason::NotPxeClient => "not_pxe_client",
            DropReason::NotForProxy => "not_for_proxy",
            DropReason::PolicyIgnored => "policy_ignored",
            DropReason::NothingToBoot => "nothing_to_boot",
            DropReason::PoolExhausted => "pool_exhausted",
            DropReason::OtherServer => "other_server",
            DropReason::NoRequestedAddress => "no_requested_address",
            DropReason::NotLeased => "not_leased",
            DropReason::StoreError => "store_error",
            DropReason::EncodeFailed => "encode_failed",
        }
    }
}

/// Check option lengths that would trip dhcproto, walking the TLVs like its decoder does
/// (consecutive options with the same code are concatenated, RFC 3396).
fn check_option_lengths(opts: &[u8]) -> Result<(), DropReason> {
    let mut i = 0;
    let mut run: Option<(u8, usize)> = None;
    let check = |code: u8, len: usize| -> Result<(), DropReason> {
        let ok = match code {
            80 => len == 0,
            81 => len >= 3,
            94 => len == 3,
            151 => len >= 1,
            152..=155 => len == 4,
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(DropReason::BadOption)
        }
    };
    while i < opts.len() {
        let code = opts[i];
        if code == 0 || code == 255 {
            if let Some((c, l)) = run.take() {
                check(c, l)?;
            }
            if code == 255 {
                return Ok(());
            }
            i += 1;
            continue;
        }
        let Some(&len) = opts.get(i + 1) else { break };
        let len = usize::from(len);
        run = match run {
            Some((c, l)) if c == code => Some((c, l + len)),
            Some((c, l)) => {
                check(c, l)?;
                Some((code, len))
            }
            None => Some((code, len)),
        };
        i += 2 + len;
    }
    if let Some((c, l)) = run {
        check(c, l)?;
    }
    Ok(())
}

/// Decode a DHCP packet, never panicking on malformed input.
pub fn parse(bytes: &[u8]) -> Result<Message, DropReason> {
    if bytes.len() < HEADER_LEN {
        return Err(DropReason::TooShort);
    }
    if bytes[236..240] != MAGIC {
        return Err(DropReason::BadMagic);
    }
    check_option_lengths(&bytes[HEADER_LEN..])?;
    Message::decode(&mut Decoder::new(bytes)).map_err(|_| DropReason::Undecodable)
}

/// What option 60 says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorClass {
    /// `PXEClient...`: PXE firmware, or iPXE.
    Pxe,
    /// `HTTPClient...`: UEFI HTTP boot.
    Http,
    /// Something else, or no option 60 (an ordinary DHCP client such as the agent).
    Other,
}

/// The facts about a client the policy decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub mac: MacAddr,
    pub xid: u32,
    pub msg_type: MessageType,
    /// Option 93 (first entry): 0 BIOS, 7/9 x64 UEFI, 16 x64 UEFI HTTP, ...
    pub arch: Option<u16>,
    pub vendor: VendorClass,
    /// Option 175 present, or user class (77) `iPXE`: the chainload already happened.
    pub is_ipxe: bool,
    /// Option 97 decoded to the SMBIOS UUID.
    pub uuid: Option<Uuid>,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
}

impl ClientInfo {
    /// The firmware platform implied by the architecture.
    pub fn platform(&self) -> Option<Platform> {
        match self.arch? {
            0 => Some(Platform::Bios),
            6 | 7 | 9 | 10 | 11 | 15 | 16 | 18 | 19 => Some(Platform::Efi),
            _ => None,
        }
    }

    /// Validate a decoded message and extract the client facts.
    pub fn from_message(msg: &Message) -> Result<Self, DropReason> {
        if msg.opcode() != Opcode::BootRequest {
            return Err(DropReason::NotBootRequest);
        }
        if msg.htype() != HType::Eth || msg.hlen() != 6 {
            return Err(DropReason::NotEthernet);
        }
        let chaddr = msg.chaddr();
        let mut mac = [0u8; 6];
        mac.copy_from_slice(chaddr.get(..6).ok_or(DropReason::NotEthernet)?);
        // All zeros, or the group bit set (multicast/broadcast): not a real NIC.
        if mac == [0; 6] || mac[0] & 1 == 1 {
            return Err(DropReason::NoClientMac);
        }
        let opts = msg.opts();
        let msg_type = opts.msg_type().ok_or(DropReason::NoMessageType)?;
        let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
            Some(DhcpOption::ClientSystemArchitecture(a)) => Some(a.0),
            _ => None,
        };
        let vendor = match opts.get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(v)) if v.starts_with(b"PXEClient") => VendorClass::Pxe,
            Some(DhcpOption::ClassIdentifier(v)) if v.starts_with(b"HTTPClient") => {
                VendorClass::Http
            }
            _ => VendorClass::Other,
        };
        let ipxe_encap = opts.contains(OptionCode::Unknown(OPT_IPXE_ENCAP));
        let ipxe_class = match opts.get(OptionCode::UserClass) {
            Some(DhcpOption::UserClass(v)) => user_class_has(v, b"iPXE"),
            _ => false,
        };
        let uuid = match opts.get(OptionCode::ClientMachineIdentifier) {
            Some(DhcpOption::ClientMachineIdentifier(v)) => decode_client_uuid(v),
            _ => None,
        };
        let requested_ip = match opts.get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        };
        let server_id = match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        Ok(ClientInfo {
            mac: MacAddr(mac),
            xid: msg.xid(),
            msg_type,
            arch,
            vendor,
            is_ipxe: ipxe_encap || ipxe_class,
            uuid,
            requested_ip,
            server_id,
        })
    }
}

/// Whether user class data (option 77) carries `class`. iPXE sends the bare string `iPXE`;
/// RFC 3004 clients send length-prefixed entries. Both forms are accepted.
fn user_class_has(data: &[u8], class: &[u8]) -> bool {
    if data == class {
        return true;
    }
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        let Some(entry) = tail.get(..len) else {
            return false;
        };
        if entry == class {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// Decode option 97 (RFC 4578): type 0 followed by a 16-byte GUID whose first three fields
/// are little-endian, as PXE firmware sends the SMBIOS UUID. A nil UUID counts as absent.
pub fn decode_client_uuid(data: &[u8]) -> Option<Uuid> {
    let (&kind, guid) = data.split_first()?;
    if kind != 0 {
        return None;
    }
    let bytes: [u8; 16] = guid.try_into().ok()?;
    let uuid = Uuid::from_bytes_le(bytes);
    (!uuid.is_nil()).then_some(uuid)
}

/// Encode a UUID as option 97 data (inverse of [`decode_client_uuid`]).
pub fn encode_client_uuid(uuid: Uuid) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&uuid.to_bytes_le());
    out
}
