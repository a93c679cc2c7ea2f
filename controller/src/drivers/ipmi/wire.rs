//! IPMI-over-LAN wire formats: RMCP, the IPMI 1.5 and 2.0 (RMCP+) session wrappers, IPMI
//! request/response messages, and the Open Session / RAKP payloads. Pure encode/decode.

use super::crypto::{CipherSuite, SessionKeys};

/// RMCP version 1.0, reserved, sequence 0xFF (no RMCP ACK), class IPMI.
pub const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xFF, 0x07];
/// Our software id as requester (remote console software id 0x40, shifted).
pub const CONSOLE_ADDR: u8 = 0x81;
/// The BMC's slave address.
pub const BMC_ADDR: u8 = 0x20;

pub const PAYLOAD_IPMI: u8 = 0x00;
pub const PAYLOAD_OPEN_SESSION_REQ: u8 = 0x10;
pub const PAYLOAD_OPEN_SESSION_RESP: u8 = 0x11;
pub const PAYLOAD_RAKP1: u8 = 0x12;
pub const PAYLOAD_RAKP2: u8 = 0x13;
pub const PAYLOAD_RAKP3: u8 = 0x14;
pub const PAYLOAD_RAKP4: u8 = 0x15;

const FLAG_ENCRYPTED: u8 = 0x80;
const FLAG_AUTHENTICATED: u8 = 0x40;

/// A malformed or unverifiable packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("packet too short")]
    Short,
    #[error("not an RMCP IPMI packet")]
    NotIpmi,
    #[error("unsupported session format {0:#04x}")]
    AuthType(u8),
    #[error("integrity check failed")]
    Integrity,
    #[error("payload could not be decrypted")]
    Decrypt,
    #[error("bad IPMI message checksum")]
    Checksum,
}

/// A decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub payload_type: u8,
    pub session_id: u32,
    pub seq: u32,
    pub payload: Vec<u8>,
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// An IPMI 1.5 packet with no session (used before RMCP+ is set up).
pub fn encode_v15(msg: &[u8]) -> Vec<u8> {
    let mut out = RMCP_HEADER.to_vec();
    out.push(0x00); // auth type none
    out.extend_from_slice(&0u32.to_le_bytes()); // session sequence
    out.extend_from_slice(&0u32.to_le_bytes()); // session id
    // IPMI messages in this client are far below 255 bytes.
    out.push(msg.len() as u8);
    out.extend_from_slice(msg);
    out
}

/// An RMCP+ packet; with `keys` the payload is encrypted and the packet authenticated.
pub fn encode_v20(
    payload_type: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    keys: Option<(&SessionKeys, [u8; 16])>,
) -> Vec<u8> {
    let body = match keys {
        Some((k, iv)) => k.encrypt(iv, payload),
        None => payload.to_vec(),
    };
    let flags = if keys.is_some() {
        FLAG_ENCRYPTED | FLAG_AUTHENTICATED
    } else {
        0
    };
    let mut out = RMCP_HEADER.to_vec();
    out.push(0x06); // RMCP+
    out.push(payload_type | flags);
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    // Payloads here are a few dozen bytes.
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    if let Some((k, _)) = keys {
        // Pad so that the session part through "next header" is a multiple of 4.
        let session_len = out.len() - RMCP_HEADER.len();
        let pad = (4 - (session_len + 2) % 4) % 4;
        out.extend(std::iter::repeat_n(0xFF, pad));
        out.push(pad as u8);
        out.push(0x07);
        let code = k.auth_code(&out[RMCP_HEADER.len()..]);
        out.extend_from_slice(&code);
    }
    out
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes an IPMI 1.5 (no authentication) or 2.0 packet; authenticated 2.0 packets are
/// checked and decrypted with `keys`.
pub fn decode(packet: &[u8], keys: Option<&SessionKeys>) -> Result<Packet, WireError> {
    if packet.len() < 5 {
        return Err(WireError::Short);
    }
    if packet[..4] != RMCP_HEADER {
        return Err(WireError::NotIpmi);
    }
    let session = &packet[4..];
    match session[0] {
        0x00 => {
            if session.len() < 10 {
                return Err(WireError::Short);
            }
            let len = usize::from(session[9]);
            let msg = session.get(10..10 + len).ok_or(WireError::Short)?;
            Ok(Packet {
                payload_type: PAYLOAD_IPMI,
                session_id: le32(&session[5..9]),
                seq: le32(&session[1..5]),
                payload: msg.to_vec(),
            })
        }
        0x06 => {
            if session.len() < 12 {
                return Err(WireError::Short);
            }
            let ptype = session[1];
            let len = usize::from(u16::from_le_bytes([session[10], session[11]]));
            let body = session.get(12..12 + len).ok_or(WireError::Short)?;
            let authenticated = ptype & FLAG_AUTHENTICATED != 0;
            let encrypted = ptype & FLAG_ENCRYPTED != 0;
            if authenticated {
                let k = keys.ok_or(WireError::Integrity)?;
                let icv = k.suite.icv_len();
                if session.len() < 12 + len + 2 + icv {
                    return Err(WireError::Short);
                }
                let (signed, code) = session.split_at(session.len() - icv);
                if k.auth_code(signed) != code {
                    return Err(WireError::Integrity);
                }
            } else if keys.is_some() && (ptype & 0x3F) == PAYLOAD_IPMI {
                // Inside a session every IPMI message must be authenticated.
                return Err(WireError::Integrity);
            }
            let payload = if encrypted {
                keys.and_then(|k| k.decrypt(body))
                    .ok_or(WireError::Decrypt)?
            } else {
                body.to_vec()
            };
            Ok(Packet {
                payload_type: ptype & 0x3F,
                session_id: le32(&session[2..6]),
                seq: le32(&session[6..10]),
                payload,
            })
        }
        other => Err(WireError::AuthType(other)),
    }
}

/// An IPMI request message from us to the BMC.
pub fn encode_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![BMC_ADDR, netfn << 2];
    m.push(checksum(&m));
    m.extend_from_slice(&[CONSOLE_ADDR, (rq_seq & 0x3F) << 2, cmd]);
    m.extend_from_slice(data);
    m.push(checksum(&m[3..]));
    m
}

/// A decoded IPMI response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
    pub completion: u8,
    pub data: Vec<u8>,
}

pub fn decode_response(m: &[u8]) -> Result<Response, WireError> {
    if m.len() < 8 {
        return Err(WireError::Short);
    }
    if checksum(&m[..2]) != m[2] || checksum(&m[3..m.len() - 1]) != m[m.len() - 1] {
        return Err(WireError::Checksum);
    }
    Ok(Response {
        netfn: m[1] >> 2,
        cmd: m[5],
        rq_seq: m[4] >> 2,
        completion: m[6],
        data: m[7..m.len() - 1].to_vec(),
    })
}

/// Open Session Request payload.
pub fn open_session_request(
    tag: u8,
    max_priv: u8,
    console_sid: u32,
    suite: CipherSuite,
) -> Vec<u8> {
    let mut p = vec![tag, max_priv, 0, 0];
    p.extend_from_slice(&console_sid.to_le_bytes());
    for (kind, alg) in [
        (0u8, suite.auth_alg()),
        (1, suite.integrity_alg()),
        (2, suite.confidentiality_alg()),
    ] {
        p.extend_from_slice(&[kind, 0, 0, 8, alg, 0, 0, 0]);
    }
    p
}

/// The fields of an Open Session Response we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionResponse {
    pub tag: u8,
    pub status: u8,
    pub console_sid: u32,
    pub bmc_sid: u32,
}

pub fn parse_open_session_response(p: &[u8]) -> Result<OpenSessionResponse, WireError> {
    if p.len() < 2 {
        return Err(WireError::Short);
    }
    // On error the BMC may send only tag, status and our session id.
    let status = p[1];
    if status != 0 {
        return Ok(OpenSessionResponse {
            tag: p[0],
            status,
            console_sid: p.get(4..8).map(le32).unwrap_or(0),
            bmc_sid: 0,
        });
    }
    if p.len() < 12 {
        return Err(WireError::Short);
    }
    Ok(OpenSessionResponse {
        tag: p[0],
        status,
        console_sid: le32(&p[4..8]),
        bmc_sid: le32(&p[8..12]),
    })
}

/// RAKP Message 1.
pub fn rakp1(tag: u8, bmc_sid: u32, console_rand: &[u8; 16], role: u8, username: &[u8]) -> Vec<u8> {
    let mut p = vec![tag, 0, 0, 0];
    p.extend_from_slice(&bmc_sid.to_le_bytes());
    p.extend_from_slice(console_rand);
    p.extend_from_slice(&[role, 0, 0, username.len() as u8]);
    p.extend_from_slice(username);
    p
}

/// RAKP Message 2 (or 4): tag, status, our session id, the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RakpReply {
    pub tag: u8,
    pub status: u8,
    pub console_sid: u32,
    pub rest: Vec<u8>,
}

pub fn parse_rakp_reply(p: &[u8]) -> Result<RakpReply, WireError> {
    if p.len() < 2 {
        return Err(WireError::Short);
    }
    Ok(RakpReply {
        tag: p[0],
        status: p[1],
        console_sid: p.get(4..8).map(le32).unwrap_or(0),
        rest: p.get(8..).unwrap_or_default().to_vec(),
    })
}

/// RAKP Message 3.
pub fn rakp3(tag: u8, status: u8, bmc_sid: u32, code: &[u8]) -> Vec<u8> {
    let mut p = vec![tag, status, 0, 0];
    p.extend_from_slice(&bmc_sid.to_le_bytes());
    p.extend_from_slice(code);
    p
}

/// Text for an RMCP+ status code (IPMI 2.0 table 13-15).
pub fn rmcp_status_text(code: u8) -> &'static str {
    match code {
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session id",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session id",
        0x09 => "invalid role",
        0x0A => "unauthorized role or privilege level requested",
        0x0B => "insufficient resources to create a session at the requested role",
        0x0C => "invalid name length",
        0x0D => "unauthorized name",
        0x0E => "unauthorized GUID",
        0x0F => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "unknown error",
    }
}

/// Text for an IPMI completion code.
pub fn completion_text(code: u8) -> &'static str {
    match code {
        0xC0 => "node busy",
        0xC1 => "invalid command",
        0xC2 => "invalid command for this LUN",
        0xC3 => "timeout while processing",
        0xC4 => "out of space",
        0xC5 => "reservation cancelled",
        0xC6 => "request data truncated",
        0xC7 => "request data length invalid",
        0xC8 => "request data field length limit exceeded",
        0xC9 => "parameter out of range",
        0xCA => "cannot return requested number of bytes",
        0xCB => "requested sensor, data or record not present",
        0xCC => "invalid data field in request",
        0xCD => "command illegal for this sensor or record type",
        0xCE => "command response could not be provided",
        0xCF => "cannot execute duplicated request",
        0xD0 => "SDR repository in update mode",
        0xD1 => "device in firmware update mode",
        0xD2 => "BMC initialization in progress",
        0xD3 => "destination unavailable",
        0xD4 => "insufficient privilege level",
        0xD5 => "command not supported in present state",
        0xD6 => "command sub-function disabled or unavailable",
        _ => "unspecified error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_checksums() {
        // Get Chassis Status, as ipmitool sends it: 20 00 e0 81 04 01 7a.
        let m = encode_request(0x00, 0x01, 1, &[]);
        assert_eq!(m, vec![0x20, 0x00, 0xE0, 0x81, 0x04, 0x01, 0x7A]);
        let resp = [0x81, 0x04, 0x7B, 0x20, 0x04, 0x01, 0x00, 0x01, 0x00];
        let mut resp = resp.to_vec();
        let c = checksum(&resp[3..]);
        resp.push(c);
        let r = decode_response(&resp).expect("decode");
        assert_eq!((r.netfn, r.cmd, r.rq_seq, r.completion), (1, 1, 1, 0));
        assert_eq!(r.data, vec![0x01, 0x00]);
        resp[7] ^= 1;
        assert_eq!(decode_response(&resp), Err(WireError::Checksum));
    }

    #[test]
    fn authenticated_packets_round_trip_and_detect_tampering() {
        for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
            let keys = SessionKeys::derive(suite, &[5u8; 20]);
            let pkt = encode_v20(PAYLOAD_IPMI, 0x1234, 7, b"abc", Some((&keys, [3u8; 16])));
            assert_eq!((pkt.len() - 4 - suite.icv_len()) % 4, 0);
            let d = decode(&pkt, Some(&keys)).expect("decode");
            assert_eq!(d.payload, b"abc");
            assert_eq!((d.session_id, d.seq), (0x1234, 7));
            let mut bad = pkt.clone();
            bad[20] ^= 1;
            assert_eq!(decode(&bad, Some(&keys)), Err(WireError::Integrity));
            assert_eq!(decode(&pkt, None), Err(WireError::Integrity));
        }
    }
}
