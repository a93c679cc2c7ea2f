//! A BMC with channels and a user table, answering the commands [`super::enroll_with`] and
//! [`super::lan_channel`] send as the IPMI 2.0 specification says (stricter than
//! `ipmi_sim`: lengths, user ids and privilege levels are checked, Test Password compares).
//! [`FakeBmc::login`] says what a LAN session with a name and password would get, so a test
//! proves credentials the way ipmitool would use them. Fault injection: a completion code
//! for one command, IPMI 1.5 (16-byte passwords only), no answer at all.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;

use super::Bmc;
use super::wire::{self, Request};

/// One channel of the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeChannel {
    pub medium: u8,
    pub address: Ipv4Addr,
    pub mac: [u8; 6],
}

/// A user's access on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FakeAccess {
    pub callback_only: bool,
    pub link_auth: bool,
    pub ipmi_messaging: bool,
    /// 0 (none set) or 1 to 4, 0x0f for no access.
    pub privilege: u8,
}

/// One slot of the user table.
#[derive(Clone, Default)]
pub struct FakeUser {
    pub name: Vec<u8>,
    /// Stored as the 20-byte field, NUL padded.
    pub password: [u8; 20],
    pub enabled: bool,
    pub access: BTreeMap<u8, FakeAccess>,
}

/// The fake BMC; see the module doc.
pub struct FakeBmc {
    /// The IPMI version byte of Get Device ID (`0x02`: 2.0, `0x51`: 1.5).
    pub ipmi_version: u8,
    pub channels: BTreeMap<u8, FakeChannel>,
    /// Indexed by user id; `users.len() - 1` is the table's size.
    pub users: Vec<FakeUser>,
    /// Commands answered with a completion code instead (command byte, code).
    pub refuse: Vec<(u8, u8)>,
    /// Every request times out.
    pub silent: bool,
    /// Each request's command and data, in order.
    pub calls: Vec<(u8, Vec<u8>)>,
}

impl std::fmt::Debug for FakeBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Passwords stay out of test output.
        f.debug_struct("FakeBmc")
            .field("channels", &self.channels.len())
            .field("users", &self.users.len())
            .field("calls", &self.calls.len())
            .finish()
    }
}

/// The fake's default LAN channel's MAC.
pub const FAKE_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xbe, 0xef, 0x01];

impl FakeBmc {
    /// IPMI 2.0, LAN channel 1 at 192.0.2.10, the system interface on 15, `max_users`
    /// users: user 1 the null user (fixed name, disabled), the others empty.
    pub fn new(max_users: u8) -> FakeBmc {
        let mut channels = BTreeMap::new();
        channels.insert(
            1,
            FakeChannel {
                medium: wire::MEDIUM_LAN,
                address: Ipv4Addr::new(192, 0, 2, 10),
                mac: FAKE_MAC,
            },
        );
        channels.insert(
            15,
            FakeChannel {
                medium: 0x0c,
                address: Ipv4Addr::UNSPECIFIED,
                mac: [0; 6],
            },
        );
        FakeBmc {
            ipmi_version: 0x02,
            channels,
            users: vec![FakeUser::default(); usize::from(max_users.min(63)) + 1],
            refuse: Vec::new(),
            silent: false,
            calls: Vec::new(),
        }
    }

    /// Puts an enabled administrator `name` with `password` on channel 1 into slot `id`.
    pub fn with_user(mut self, id: u8, name: &str, password: &str) -> FakeBmc {
        if let Some(u) = self.users.get_mut(usize::from(id)) {
            u.name = name.as_bytes().to_vec();
            u.password = field(password.as_bytes());
            u.enabled = true;
            u.access.insert(
                1,
                FakeAccess {
                    link_auth: true,
                    ipmi_messaging: true,
                    privilege: wire::PRIV_ADMINISTRATOR,
                    ..FakeAccess::default()
                },
            );
        }
        self
    }

    /// The privilege a LAN session on `channel` as `name` with `password` gets (`None`:
    /// refused): the user is enabled, has IPMI messaging there and the password matches.
    pub fn login(&self, channel: u8, name: &str, password: &str) -> Option<u8> {
        self.users.iter().skip(1).find_map(|u| {
            let access = u.access.get(&channel)?;
            (u.enabled
                && access.ipmi_messaging
                && u.name == name.as_bytes()
                && u.password == field(password.as_bytes()))
            .then_some(access.privilege)
        })
    }

    fn user(&mut self, id: u8) -> Option<&mut FakeUser> {
        if id == 0 {
            return None;
        }
        self.users.get_mut(usize::from(id))
    }

    fn max_users(&self) -> u8 {
        u8::try_from(self.users.len().saturating_sub(1)).unwrap_or(63)
    }

    fn answer(&mut self, req: &Request) -> Vec<u8> {
        let d = req.data.as_slice();
        match (req.netfn, req.cmd) {
            (wire::NETFN_APP, wire::CMD_GET_DEVICE_ID) => {
                vec![
                    0,
                    0x20,
                    0x01,
                    0x01,
                    0x00,
                    self.ipmi_version,
                    0x9f,
                    0x57,
                    0x01,
                    0,
                    0x01,
                    0,
                ]
            }
            (wire::NETFN_APP, wire::CMD_GET_CHANNEL_INFO) => {
                let Some(&ch) = d.first() else {
                    return vec![0xc7];
                };
                match self.channels.get(&(ch & 0x0f)) {
                    Some(c) => vec![0, ch & 0x0f, c.medium, 0x01, 0x80, 0xf2, 0x1b, 0, 0, 0],
                    None => vec![0xcc],
                }
            }
            (wire::NETFN_TRANSPORT, wire::CMD_GET_LAN_CONFIG) => {
                let (Some(&ch), Some(&param)) = (d.first(), d.get(1)) else {
                    return vec![0xc7];
                };
                match self.channels.get(&(ch & 0x0f)) {
                    Some(c) if c.medium == wire::MEDIUM_LAN => match param {
                        wire::PARAM_IP_ADDRESS => [&[0, 0x11][..], &c.address.octets()].concat(),
                        wire::PARAM_MAC_ADDRESS => [&[0, 0x11][..], &c.mac].concat(),
                        _ => vec![0x80],
                    },
                    _ => vec![0xcc],
                }
            }
            (wire::NETFN_APP, wire::CMD_GET_USER_ACCESS) => {
                let (Some(&ch), Some(&id)) = (d.first(), d.get(1)) else {
                    return vec![0xc7];
                };
                let max = self.max_users();
                let enabled = self.users.iter().filter(|u| u.enabled).count();
                let Some(u) = self.user(id & 0x3f) else {
                    return vec![0xcc];
                };
                let a = u.access.get(&(ch & 0x0f)).copied().unwrap_or_default();
                let bits = (u8::from(a.callback_only) << 6)
                    | (u8::from(a.link_auth) << 5)
                    | (u8::from(a.ipmi_messaging) << 4)
                    | (a.privilege & 0x0f);
                vec![0, max, 0x40 | (enabled as u8 & 0x3f), 1, bits]
            }
            (wire::NETFN_APP, wire::CMD_GET_USER_NAME) => {
                let Some(&id) = d.first() else {
                    return vec![0xc7];
                };
                let Some(u) = self.user(id & 0x3f) else {
                    return vec![0xcc];
                };
                let mut r = vec![0u8; 17];
                r[1..=u.name.len().min(16)].copy_from_slice(&u.name[..u.name.len().min(16)]);
                r
            }
            (wire::NETFN_APP, wire::CMD_SET_USER_NAME) => {
                if d.len() != 17 {
                    return vec![0xc7];
                }
                // User 1's name is fixed.
                if d[0] & 0x3f == 1 {
                    return vec![0xcc];
                }
                let Some(u) = self.user(d[0] & 0x3f) else {
                    return vec![0xcc];
                };
                let end = d[1..].iter().position(|&c| c == 0).unwrap_or(16);
                u.name = d[1..=end].to_vec();
                vec![0]
            }
            (wire::NETFN_APP, wire::CMD_SET_USER_PASSWORD) => self.set_user_password(d),
            (wire::NETFN_APP, wire::CMD_SET_USER_ACCESS) => {
                if d.len() < 3 {
                    return vec![0xc7];
                }
                let privilege = d[2] & 0x0f;
                if privilege == 0 || (5..=0x0e).contains(&privilege) {
                    return vec![0xcc];
                }
                let Some(u) = self.user(d[1] & 0x3f) else {
                    return vec![0xcc];
                };
                let a = u.access.entry(d[0] & 0x0f).or_default();
                if d[0] & 0x80 != 0 {
                    a.callback_only = d[0] & 0x40 != 0;
                    a.link_auth = d[0] & 0x20 != 0;
                    a.ipmi_messaging = d[0] & 0x10 != 0;
                }
                a.privilege = privilege;
                vec![0]
            }
            _ => vec![0xc1],
        }
    }

    fn set_user_password(&mut self, d: &[u8]) -> Vec<u8> {
        if d.len() < 2 {
            return vec![0xc7];
        }
        let twenty = d[0] & 0x80 != 0;
        let takes_20 = wire::takes_20_byte_passwords((self.ipmi_version & 0x0f, 0));
        let Some(u) = self.user(d[0] & 0x3f) else {
            return vec![0xcc];
        };
        match d[1] & 0x03 {
            0 => u.enabled = false,
            1 => u.enabled = true,
            op => {
                let want = if twenty { 22 } else { 18 };
                if d.len() != want || (twenty && !takes_20) {
                    return vec![0xc7];
                }
                let given = field(&d[2..]);
                if op == 2 {
                    u.password = given;
                } else if u.password != given {
                    return vec![0x80];
                }
            }
        }
        vec![0]
    }
}

/// A password as the 20-byte field (longer input is cut).
fn field(b: &[u8]) -> [u8; 20] {
    let mut f = [0u8; 20];
    let n = b.len().min(20);
    f[..n].copy_from_slice(&b[..n]);
    f
}

impl Bmc for FakeBmc {
    fn call(&mut self, req: &Request) -> io::Result<Vec<u8>> {
        self.calls.push((req.cmd, req.data.clone()));
        if self.silent {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer from the BMC",
            ));
        }
        if let Some(&(_, cc)) = self.refuse.iter().find(|(cmd, _)| *cmd == req.cmd) {
            return Ok(vec![cc]);
        }
        Ok(self.answer(req))
    }
}
