//! IPMI requests to the local BMC over the system interface and what their answers say
//! (IPMI 2.0 specification, chapters 22 and 23): network function App (`0x06`) for the
//! device, channel and user commands, Transport (`0x0c`) for the LAN configuration.
//!
//! Pure: builders return a [`Request`], parsers take the response data as the kernel hands
//! it over (completion code first) and never panic on any input (fuzz target
//! `ipmi_inband`). A [`Request`] may hold a password: its `Debug` shows no data.

use std::net::Ipv4Addr;

use super::password::Password;

/// Network function "application".
pub const NETFN_APP: u8 = 0x06;
/// Network function "transport".
pub const NETFN_TRANSPORT: u8 = 0x0c;

/// Get Device ID (App).
pub const CMD_GET_DEVICE_ID: u8 = 0x01;
/// Get Channel Info (App).
pub const CMD_GET_CHANNEL_INFO: u8 = 0x42;
/// Set User Access (App).
pub const CMD_SET_USER_ACCESS: u8 = 0x43;
/// Get User Access (App).
pub const CMD_GET_USER_ACCESS: u8 = 0x44;
/// Set User Name (App).
pub const CMD_SET_USER_NAME: u8 = 0x45;
/// Get User Name (App).
pub const CMD_GET_USER_NAME: u8 = 0x46;
/// Set User Password (App): disable, enable, set or test, by operation.
pub const CMD_SET_USER_PASSWORD: u8 = 0x47;
/// Get LAN Configuration Parameters (Transport).
pub const CMD_GET_LAN_CONFIG: u8 = 0x02;

/// LAN configuration parameter 3: IP address.
pub const PARAM_IP_ADDRESS: u8 = 3;
/// LAN configuration parameter 5: MAC address.
pub const PARAM_MAC_ADDRESS: u8 = 5;

/// Channel medium type 802.3 LAN (table 6-3).
pub const MEDIUM_LAN: u8 = 0x04;
/// Privilege level Administrator (table 6-1).
pub const PRIV_ADMINISTRATOR: u8 = 0x04;
/// User names are 16 bytes, NUL padded.
pub const USER_NAME_LEN: usize = 16;
/// The highest user id a BMC can have (6 bits).
pub const MAX_USER_ID: u8 = 63;

/// One request: network function, command and data, and what to call it in an error.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    pub netfn: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
    /// The command's name and arguments for messages, e.g. `Set User Name (user 3)`.
    pub what: String,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The data of Set User Password is the password: never shown.
        f.debug_struct("Request")
            .field("what", &self.what)
            .field("netfn", &self.netfn)
            .field("cmd", &self.cmd)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Why an answer says nothing usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The BMC refused: a non-zero completion code.
    #[error("completion code {0:#04x} ({meaning})", meaning = completion_meaning(*.0))]
    Completion(u8),
    /// Fewer data bytes than the command's answer has.
    #[error("an answer of {got} bytes, {want} expected")]
    Short { want: usize, got: usize },
}

/// The generic completion codes (table 5-2); 0x80 to 0xbe are the command's own.
pub fn completion_meaning(cc: u8) -> &'static str {
    match cc {
        0x00 => "ok",
        0x80..=0xbe => "command-specific",
        0xc0 => "node busy",
        0xc1 => "invalid command",
        0xc2 => "invalid command for the LUN",
        0xc3 => "timeout while processing",
        0xc4 => "out of space",
        0xc5 => "reservation cancelled or invalid",
        0xc6 => "request data truncated",
        0xc7 => "request data length invalid",
        0xc8 => "request data field length limit exceeded",
        0xc9 => "parameter out of range",
        0xca => "cannot return the number of requested data bytes",
        0xcb => "requested sensor, data or record not present",
        0xcc => "invalid data field in request",
        0xcd => "command illegal for the sensor or record type",
        0xce => "command response could not be provided",
        0xcf => "duplicated request",
        0xd0 => "SDR repository in update mode",
        0xd1 => "device in firmware update mode",
        0xd2 => "BMC initialization in progress",
        0xd3 => "destination unavailable",
        0xd4 => "insufficient privilege level",
        0xd5 => "not supported in the present state",
        0xd6 => "sub-function disabled or unavailable",
        0xff => "unspecified error",
        _ => "reserved",
    }
}

/// The data after a zero completion code, at least `want` bytes of it.
fn body(resp: &[u8], want: usize) -> Result<&[u8], AnswerError> {
    let Some((&cc, rest)) = resp.split_first() else {
        return Err(AnswerError::Short { want: 1, got: 0 });
    };
    if cc != 0 {
        return Err(AnswerError::Completion(cc));
    }
    if rest.len() < want {
        return Err(AnswerError::Short {
            want: want + 1,
            got: resp.len(),
        });
    }
    Ok(rest)
}

/// A set command's answer: completion code 0.
pub fn check_ok(resp: &[u8]) -> Result<(), AnswerError> {
    body(resp, 0).map(|_| ())
}

/// Get Device ID.
pub fn get_device_id() -> Request {
    Request {
        netfn: NETFN_APP,
        cmd: CMD_GET_DEVICE_ID,
        data: vec![],
        what: "Get Device ID".into(),
    }
}

/// The IPMI version a Get Device ID answer states, as (major, minor): `0x51` is 1.5,
/// `0x02` is 2.0 (BCD, the minor digit in the high nibble).
pub fn parse_device_id(resp: &[u8]) -> Result<(u8, u8), AnswerError> {
    let b = body(resp, 5)?;
    Ok((b[4] & 0x0f, b[4] >> 4))
}

/// Whether a BMC of this IPMI version takes 20-byte passwords (IPMI 2.0 and later).
pub fn takes_20_byte_passwords(version: (u8, u8)) -> bool {
    version.0 >= 2
}

/// Get Channel Info for `channel`.
pub fn get_channel_info(channel: u8) -> Request {
    Request {
        netfn: NETFN_APP,
        cmd: CMD_GET_CHANNEL_INFO,
        data: vec![channel & 0x0f],
        what: format!("Get Channel Info (channel {})", channel & 0x0f),
    }
}

/// What Get Channel Info says about a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelInfo {
    pub channel: u8,
    /// Medium type ([`MEDIUM_LAN`] for 802.3 LAN).
    pub medium: u8,
    pub protocol: u8,
}

impl ChannelInfo {
    /// An 802.3 LAN channel.
    pub fn is_lan(&self) -> bool {
        self.medium == MEDIUM_LAN
    }
}

/// A Get Channel Info answer.
pub fn parse_channel_info(resp: &[u8]) -> Result<ChannelInfo, AnswerError> {
    let b = body(resp, 3)?;
    Ok(ChannelInfo {
        channel: b[0] & 0x0f,
        medium: b[1] & 0x7f,
        protocol: b[2] & 0x1f,
    })
}

/// Get LAN Configuration Parameters: `param` of `channel` (bit 7 of the channel byte clear:
/// the value, not only the revision; set and block selectors 0).
pub fn get_lan_config(channel: u8, param: u8) -> Request {
    Request {
        netfn: NETFN_TRANSPORT,
        cmd: CMD_GET_LAN_CONFIG,
        data: vec![channel & 0x0f, param, 0, 0],
        what: format!(
            "Get LAN Configuration Parameters (channel {}, parameter {param})",
            channel & 0x0f
        ),
    }
}

/// The address in a Get LAN Configuration Parameters answer for parameter 3 (completion
/// code, parameter revision, four address bytes); `None` on an error completion code, a
/// short answer or 0.0.0.0 (no address configured on that channel).
pub fn parse_lan_ip(resp: &[u8]) -> Option<Ipv4Addr> {
    let b = body(resp, 5).ok()?;
    let ip = Ipv4Addr::new(b[1], b[2], b[3], b[4]);
    (!ip.is_unspecified()).then_some(ip)
}

/// The MAC address in an answer for parameter 5 (revision, six bytes), lower case and
/// colon separated; `None` on an error, a short answer or 00:00:00:00:00:00.
pub fn parse_lan_mac(resp: &[u8]) -> Option<String> {
    let b = body(resp, 7).ok()?;
    let mac = &b[1..7];
    if mac.iter().all(|&x| x == 0) {
        return None;
    }
    Some(
        mac.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// Get User Access for `user_id` on `channel`.
pub fn get_user_access(channel: u8, user_id: u8) -> Request {
    Request {
        netfn: NETFN_APP,
        cmd: CMD_GET_USER_ACCESS,
        data: vec![channel & 0x0f, user_id & 0x3f],
        what: format!(
            "Get User Access (channel {}, user {})",
            channel & 0x0f,
            user_id & 0x3f
        ),
    }
}

/// What Get User Access says: the BMC's user table and one user's access on the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserAccess {
    /// The highest user id (1 to 63).
    pub max_users: u8,
    /// Users enabled now.
    pub enabled: u8,
    /// Users with fixed names (user 1, the null user, on most BMCs).
    pub fixed_names: u8,
    pub callback_only: bool,
    pub link_auth: bool,
    pub ipmi_messaging: bool,
    /// Privilege limit on the channel (0x0f: no access).
    pub privilege: u8,
}

/// A Get User Access answer.
pub fn parse_user_access(resp: &[u8]) -> Result<UserAccess, AnswerError> {
    let b = body(resp, 4)?;
    Ok(UserAccess {
        max_users: b[0] & 0x3f,
        enabled: b[1] & 0x3f,
        fixed_names: b[2] & 0x3f,
        callback_only: b[3] & 0x40 != 0,
        link_auth: b[3] & 0x20 != 0,
        ipmi_messaging: b[3] & 0x10 != 0,
        privilege: b[3] & 0x0f,
    })
}

/// Get User Name of `user_id`.
pub fn get_user_name(user_id: u8) -> Request {
    Request {
        netfn: NETFN_APP,
        cmd: CMD_GET_USER_NAME,
        data: vec![user_id & 0x3f],
        what: format!("Get User Name (user {})", user_id & 0x3f),
    }
}

/// The name in a Get User Name answer, up to its first NUL (empty: an unused slot).
pub fn parse_user_name(resp: &[u8]) -> Result<Vec<u8>, AnswerError> {
    let b = body(resp, USER_NAME_LEN)?;
    let name = &b[..USER_NAME_LEN];
    let end = name.iter().position(|&c| c == 0).unwrap_or(USER_NAME_LEN);
    Ok(name[..end].to_vec())
}

/// `bytes` in a field of `len` bytes: cut to it, NUL padded (user names and passwords).
fn padded(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut field = vec![0u8; len];
    let n = bytes.len().min(len);
    field[..n].copy_from_slice(&bytes[..n]);
    field
}

/// Set User Name of `user_id` to `name` (at most 16 bytes, NUL padded).
pub fn set_user_name(user_id: u8, name: &[u8]) -> Request {
    let mut data = vec![user_id & 0x3f];
    data.extend_from_slice(&padded(name, USER_NAME_LEN));
    Request {
        netfn: NETFN_APP,
        cmd: CMD_SET_USER_NAME,
        data,
        what: format!("Set User Name (user {})", user_id & 0x3f),
    }
}

/// How long a password field is: 16 bytes (IPMI 1.5) or 20 (IPMI 2.0, bit 7 of the user id
/// byte set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSize {
    Sixteen,
    Twenty,
}

impl PasswordSize {
    fn len(self) -> usize {
        match self {
            PasswordSize::Sixteen => 16,
            PasswordSize::Twenty => 20,
        }
    }
}

fn user_password(
    user_id: u8,
    op: u8,
    what: &str,
    pw: Option<(&Password, PasswordSize)>,
) -> Request {
    let mut data = vec![user_id & 0x3f, op];
    if let Some((pw, size)) = pw {
        if size == PasswordSize::Twenty {
            data[0] |= 0x80;
        }
        data.extend_from_slice(&padded(pw.expose().as_bytes(), size.len()));
    }
    Request {
        netfn: NETFN_APP,
        cmd: CMD_SET_USER_PASSWORD,
        data,
        what: format!("Set User Password ({what}, user {})", user_id & 0x3f),
    }
}

/// Set User Password, operation "set password".
pub fn set_password(user_id: u8, pw: &Password, size: PasswordSize) -> Request {
    user_password(user_id, 0x02, "set password", Some((pw, size)))
}

/// Set User Password, operation "test password": completion code 0 when `pw` is the
/// user's password.
pub fn test_password(user_id: u8, pw: &Password, size: PasswordSize) -> Request {
    user_password(user_id, 0x03, "test password", Some((pw, size)))
}

/// Set User Password, operation "enable user".
pub fn enable_user(user_id: u8) -> Request {
    user_password(user_id, 0x01, "enable user", None)
}

/// Set User Password, operation "disable user".
pub fn disable_user(user_id: u8) -> Request {
    user_password(user_id, 0x00, "disable user", None)
}

/// Set User Access: on `channel`, `user_id` gets IPMI messaging and link authentication
/// (callback-only off) and the privilege limit `privilege`; the "change bits" flag (bit 7)
/// makes the BMC take those bits; the session limit is left alone.
pub fn set_user_access(channel: u8, user_id: u8, privilege: u8) -> Request {
    Request {
        netfn: NETFN_APP,
        cmd: CMD_SET_USER_ACCESS,
        data: vec![
            0x80 | 0x20 | 0x10 | (channel & 0x0f),
            user_id & 0x3f,
            privilege & 0x0f,
        ],
        what: format!(
            "Set User Access (channel {}, user {})",
            channel & 0x0f,
            user_id & 0x3f
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw() -> Password {
        Password::parse("Abcdefgh12345678").expect("a valid password")
    }

    #[test]
    fn requests_have_the_spec_layout() {
        let table: Vec<(Request, u8, u8, Vec<u8>)> = vec![
            (get_device_id(), 0x06, 0x01, vec![]),
            (get_channel_info(1), 0x06, 0x42, vec![0x01]),
            (get_channel_info(0x8e), 0x06, 0x42, vec![0x0e]),
            (get_lan_config(1, 3), 0x0c, 0x02, vec![0x01, 0x03, 0, 0]),
            (get_lan_config(0x8e, 5), 0x0c, 0x02, vec![0x0e, 0x05, 0, 0]),
            (get_user_access(1, 3), 0x06, 0x44, vec![0x01, 0x03]),
            (get_user_access(2, 0xff), 0x06, 0x44, vec![0x02, 0x3f]),
            (get_user_name(5), 0x06, 0x46, vec![0x05]),
            (
                set_user_name(3, b"ingot"),
                0x06,
                0x45,
                [&[3u8, b'i', b'n', b'g', b'o', b't'][..], &[0u8; 11]].concat(),
            ),
            (
                set_user_name(4, b"0123456789abcdefXX"),
                0x06,
                0x45,
                [&[4u8][..], b"0123456789abcdef"].concat(),
            ),
            (enable_user(3), 0x06, 0x47, vec![0x03, 0x01]),
            (disable_user(3), 0x06, 0x47, vec![0x03, 0x00]),
            (
                set_password(3, &pw(), PasswordSize::Sixteen),
                0x06,
                0x47,
                [&[0x03u8, 0x02][..], b"Abcdefgh12345678"].concat(),
            ),
            (
                set_password(3, &pw(), PasswordSize::Twenty),
                0x06,
                0x47,
                [&[0x83u8, 0x02][..], b"Abcdefgh12345678", &[0; 4]].concat(),
            ),
            (
                test_password(9, &pw(), PasswordSize::Twenty),
                0x06,
                0x47,
                [&[0x89u8, 0x03][..], b"Abcdefgh12345678", &[0; 4]].concat(),
            ),
            (set_user_access(1, 3, 4), 0x06, 0x43, vec![0xb1, 0x03, 0x04]),
            (
                set_user_access(0x12, 0x43, 0x14),
                0x06,
                0x43,
                vec![0xb2, 0x03, 0x04],
            ),
        ];
        for (req, netfn, cmd, data) in table {
            assert_eq!((req.netfn, req.cmd), (netfn, cmd), "{}", req.what);
            assert_eq!(req.data, data, "{}", req.what);
        }
    }

    #[test]
    fn a_request_never_shows_its_data() {
        let req = set_password(3, &pw(), PasswordSize::Twenty);
        let shown = format!("{req:?}");
        assert!(!shown.contains("Abcdefgh"), "{shown}");
        assert!(!shown.contains("65, 98"), "{shown}");
        assert!(
            shown.contains("Set User Password (set password, user 3)"),
            "{shown}"
        );
    }

    #[test]
    fn parses_device_ids() {
        // ipmi_sim 2.0.33: device 0, revision 3, firmware 9.08, IPMI 2.0.
        let sim = [
            0x00, 0x00, 0x03, 0x09, 0x08, 0x02, 0x9f, 0x91, 0x12, 0x00, 0x02, 0x0f,
        ];
        assert_eq!(parse_device_id(&sim), Ok((2, 0)));
        assert!(takes_20_byte_passwords((2, 0)));
        assert_eq!(
            parse_device_id(&[0, 0x20, 0x01, 0x02, 0x00, 0x51]),
            Ok((1, 5))
        );
        assert!(!takes_20_byte_passwords((1, 5)));
        assert_eq!(parse_device_id(&[0xc1]), Err(AnswerError::Completion(0xc1)));
        assert_eq!(
            parse_device_id(&[0, 1, 2]),
            Err(AnswerError::Short { want: 6, got: 3 })
        );
        assert_eq!(
            parse_device_id(&[]),
            Err(AnswerError::Short { want: 1, got: 0 })
        );
    }

    #[test]
    fn parses_channel_info() {
        // ipmi_sim's LAN channel 1: 802.3 LAN, IPMB-1.0 protocol, multi-session.
        let lan = [0x00, 0x01, 0x04, 0x01, 0x81, 0xf2, 0x1b, 0x00, 0x00, 0x00];
        let info = parse_channel_info(&lan).expect("lan");
        assert_eq!(
            info,
            ChannelInfo {
                channel: 1,
                medium: MEDIUM_LAN,
                protocol: 1
            }
        );
        assert!(info.is_lan());
        // A system interface (medium 0x0c, KCS protocol 0x05).
        let si =
            parse_channel_info(&[0x00, 0x0f, 0x0c, 0x05, 0x00, 0xf2, 0x1b, 0, 0, 0]).expect("si");
        assert!(!si.is_lan());
        // Not present (0xcb, ipmi_sim's answer for a channel it lacks), short.
        assert_eq!(
            parse_channel_info(&[0xcb]),
            Err(AnswerError::Completion(0xcb))
        );
        assert!(parse_channel_info(&[0x00, 0x01, 0x04]).is_err());
    }

    #[test]
    fn parses_lan_ip_answers() {
        // A Dell iDRAC-style answer: completion code 0, revision 0x11, 10.20.30.40.
        assert_eq!(
            parse_lan_ip(&[0x00, 0x11, 10, 20, 30, 40]),
            Some(Ipv4Addr::new(10, 20, 30, 40))
        );
        // Extra trailing bytes are ignored.
        assert_eq!(
            parse_lan_ip(&[0x00, 0x11, 192, 0, 2, 7, 0xff]),
            Some(Ipv4Addr::new(192, 0, 2, 7))
        );
        assert_eq!(parse_lan_ip(&[0x00, 0x11, 0, 0, 0, 0]), None, "unset");
        assert_eq!(parse_lan_ip(&[0xcc]), None, "invalid data field");
        assert_eq!(
            parse_lan_ip(&[0x80, 0x11, 10, 0, 0, 1]),
            None,
            "param unsupported"
        );
        assert_eq!(parse_lan_ip(&[0x00, 0x11, 10, 0]), None, "short");
        assert_eq!(parse_lan_ip(&[]), None);
    }

    #[test]
    fn parses_lan_mac_answers() {
        let table: Vec<(&[u8], Option<&str>)> = vec![
            (
                &[0x00, 0x11, 0x52, 0x54, 0x00, 0xAA, 0xbb, 0x0c],
                Some("52:54:00:aa:bb:0c"),
            ),
            (
                &[0x00, 0x11, 0x52, 0x54, 0x00, 0xaa, 0xbb, 0x0c, 0xff],
                Some("52:54:00:aa:bb:0c"),
            ),
            (&[0x00, 0x11, 0, 0, 0, 0, 0, 0], None),
            (&[0x00, 0x11, 0x52, 0x54, 0x00, 0xaa, 0xbb], None),
            (&[0x80], None),
            (&[], None),
        ];
        for (resp, want) in table {
            assert_eq!(parse_lan_mac(resp).as_deref(), want, "{resp:02x?}");
        }
    }

    #[test]
    fn parses_user_access() {
        // ipmi_sim: 63 users, 1 enabled; user 2 "admin" with messaging and admin.
        let admin = parse_user_access(&[0x00, 0x3f, 0x01, 0x00, 0x14]).expect("admin");
        assert_eq!(
            admin,
            UserAccess {
                max_users: 63,
                enabled: 1,
                fixed_names: 0,
                callback_only: false,
                link_auth: false,
                ipmi_messaging: true,
                privilege: PRIV_ADMINISTRATOR,
            }
        );
        // A Supermicro-style table: 10 users, enable status bits 7:6 set, 1 fixed name, an
        // unused slot with "no access".
        let unused = parse_user_access(&[0x00, 0x0a, 0x42, 0x01, 0x0f]).expect("unused");
        assert_eq!((unused.max_users, unused.enabled), (10, 2));
        assert_eq!(unused.fixed_names, 1);
        assert!(!unused.ipmi_messaging && !unused.link_auth);
        assert_eq!(unused.privilege, 0x0f);
        let all = parse_user_access(&[0x00, 0xff, 0xff, 0xff, 0x74]).expect("all bits");
        assert!(all.callback_only && all.link_auth && all.ipmi_messaging);
        assert_eq!((all.max_users, all.privilege), (63, 4));
        assert_eq!(
            parse_user_access(&[0xcc]),
            Err(AnswerError::Completion(0xcc))
        );
        assert!(parse_user_access(&[0x00, 0x3f, 0x01, 0x00]).is_err());
    }

    #[test]
    fn parses_user_names() {
        let name = |s: &[u8]| {
            let mut r = vec![0u8];
            let mut b = [0u8; 16];
            b[..s.len()].copy_from_slice(s);
            r.extend_from_slice(&b);
            r
        };
        assert_eq!(parse_user_name(&name(b"admin")), Ok(b"admin".to_vec()));
        assert_eq!(parse_user_name(&name(b"")), Ok(vec![]));
        assert_eq!(
            parse_user_name(&name(b"0123456789abcdef")),
            Ok(b"0123456789abcdef".to_vec())
        );
        // Bytes after the first NUL are not part of the name.
        let mut odd = name(b"ab");
        odd[5] = b'x';
        assert_eq!(parse_user_name(&odd), Ok(b"ab".to_vec()));
        // ipmi_sim refuses user 1 (fixed name) with 0xcc.
        assert_eq!(parse_user_name(&[0xcc]), Err(AnswerError::Completion(0xcc)));
        assert_eq!(
            parse_user_name(&[0x00, b'a', b'b']),
            Err(AnswerError::Short { want: 17, got: 3 })
        );
    }

    #[test]
    fn set_answers_are_checked() {
        assert_eq!(check_ok(&[0x00]), Ok(()));
        assert_eq!(check_ok(&[0x00, 0x01]), Ok(()));
        assert_eq!(check_ok(&[0x80]), Err(AnswerError::Completion(0x80)));
        assert_eq!(check_ok(&[]), Err(AnswerError::Short { want: 1, got: 0 }));
    }

    #[test]
    fn completion_codes_are_named() {
        let e = AnswerError::Completion(0xcc);
        assert_eq!(
            e.to_string(),
            "completion code 0xcc (invalid data field in request)"
        );
        assert_eq!(completion_meaning(0x81), "command-specific");
        assert_eq!(completion_meaning(0xd4), "insufficient privilege level");
        assert_eq!(completion_meaning(0xe0), "reserved");
    }
}
