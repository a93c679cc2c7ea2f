//! The machine's own BMC, reached in-band through the kernel's IPMI device (`/dev/ipmi0`):
//! its LAN channel and address (for the inventory, [`address`]) and the enrolment of a
//! dedicated BMC user (`enroll_bmc`, [`enroll`]), as MAAS's `bmc_config` does.
//!
//! Enrolment: Get Device ID (IPMI 2.0 takes 20-byte passwords), the LAN channel (the first
//! of channels 1 to 11 whose Get Channel Info says 802.3 LAN and that has an address, else
//! the first LAN channel), the user table (Get User Access: its size; Get User Name of
//! users 2 and up), then the slot: the user already named `user` (a reset), else the first
//! slot with no name and IPMI messaging off. User 1 (the null user) and every other named
//! user are never written to. Then Set User Name (a new slot only), Set User Password (set
//! a new random [`Password`], enable the user), Set User Access (IPMI messaging, link
//! authentication, privilege limit Administrator on the LAN channel) and Test Password.
//! A failure after a new slot was named disables it and clears its name again.
//!
//! The password never goes into a log line or an error: [`Password`] prints `REDACTED`,
//! [`wire::Request`] hides its data, errors name commands and completion codes only.
//! [`wire`] holds the pure request builders and answer parsers; [`fake::FakeBmc`] is a BMC
//! with a user table behind the same [`Bmc`] trait as the device.

pub mod fake;
pub mod password;
pub mod wire;

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::host::ipmi::IpmiDevice;
pub use password::Password;
use wire::{AnswerError, PasswordSize, Request, UserAccess};

/// Where the kernel's IPMI device is.
pub const IPMI_DEVICE: &str = "/dev/ipmi0";

/// How long one request may take: user writes go to the BMC's flash on some machines.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// LAN channels are searched among these (0 is IPMB, 12 to 15 are reserved or the system
/// interface), as Ironic's agent and `ipmitool lan print` do.
pub const LAN_CHANNELS: std::ops::RangeInclusive<u8> = 1..=11;

/// A BMC reached through its system interface.
pub trait Bmc {
    /// Sends `req` and returns the answer's data, completion code first. An `Err` is the
    /// transport's (no answer in time, the device went away), never the BMC's refusal.
    fn call(&mut self, req: &Request) -> io::Result<Vec<u8>>;
}

impl Bmc for IpmiDevice {
    fn call(&mut self, req: &Request) -> io::Result<Vec<u8>> {
        self.request(req.netfn, req.cmd, &req.data, REQUEST_TIMEOUT)
    }
}

/// Why an enrolment failed. No variant holds the password.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "BMC user name {name:?} refused: it must be 1 to 16 printable ASCII characters \
         without spaces"
    )]
    InvalidUser { name: String },
    #[error("no IPMI device at {} (no BMC, or ipmi_si/ipmi_devintf did not load)", path.display())]
    NoDevice {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no LAN channel: none of channels 1 to 11 is an 802.3 LAN channel")]
    NoLanChannel,
    #[error(
        "no free BMC user slot: no user is named {user:?} and every one of users 2 to \
         {max_users} has a name or IPMI messaging enabled"
    )]
    NoFreeSlot { user: String, max_users: u8 },
    /// The BMC answered with an error completion code or a short answer.
    #[error("{what}")]
    Refused {
        what: String,
        #[source]
        source: AnswerError,
    },
    /// No answer (the device or the BMC).
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("drawing a random password")]
    Random(#[source] io::Error),
}

/// The BMC user an enrolment created or reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub channel: u8,
    pub user_id: u8,
    pub username: String,
    pub password: Password,
    /// The LAN channel's IPv4 address, if it has one.
    pub address: Option<Ipv4Addr>,
    /// The LAN channel's MAC address, if the BMC says.
    pub mac: Option<String>,
    /// True when the user existed and only got a new password and access.
    pub reset: bool,
}

impl Enrolled {
    /// The result document for the controller (it carries the password).
    pub fn document(&self) -> proto::protocol::BmcEnrolled {
        proto::protocol::BmcEnrolled {
            bmc_address: self.address.map(|a| a.to_string()),
            bmc_mac: self.mac.clone(),
            channel: self.channel,
            user_id: self.user_id,
            username: self.username.clone(),
            password: self.password.expose().to_owned(),
        }
    }
}

/// `user` as the BMC stores it: the protocol's rule (`proto::protocol::check_bmc_user`: 1
/// to 16 printable ASCII characters, no spaces), which the controller's configuration
/// checks too.
pub fn check_user_name(user: &str) -> Result<&[u8], EnrollError> {
    match proto::protocol::check_bmc_user(user) {
        Ok(()) => Ok(user.as_bytes()),
        Err(_) => Err(EnrollError::InvalidUser {
            name: user.chars().take(40).collect(),
        }),
    }
}

/// Where the user goes, from the names of users 2 and up (`None`: Get User Name failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotPlan {
    /// The user exists in this slot: reset it.
    Reset(u8),
    /// The user does not exist; these unnamed slots, in order, may be free.
    Candidates(Vec<u8>),
}

/// The slot rule (pure): the first slot named `name`, else every unnamed slot. Slots 0 and
/// 1 are never chosen.
pub fn plan_slot(name: &[u8], names: &[(u8, Option<Vec<u8>>)]) -> SlotPlan {
    let usable = || names.iter().filter(|(id, _)| *id >= 2);
    if let Some((id, _)) = usable().find(|(_, n)| n.as_deref() == Some(name)) {
        return SlotPlan::Reset(*id);
    }
    SlotPlan::Candidates(
        usable()
            .filter(|(_, n)| n.as_deref().is_some_and(<[u8]>::is_empty))
            .map(|(id, _)| *id)
            .collect(),
    )
}

/// An unnamed slot is free when nobody can use it on the channel: IPMI messaging off.
pub fn slot_is_free(access: &UserAccess) -> bool {
    !access.ipmi_messaging
}

/// The BMC's LAN channel and its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanChannel {
    pub channel: u8,
    pub address: Option<Ipv4Addr>,
}

fn call(bmc: &mut dyn Bmc, req: &Request) -> Result<Vec<u8>, EnrollError> {
    bmc.call(req).map_err(|source| EnrollError::Io {
        what: req.what.clone(),
        source,
    })
}

fn ask<T>(
    bmc: &mut dyn Bmc,
    req: &Request,
    parse: fn(&[u8]) -> Result<T, AnswerError>,
) -> Result<T, EnrollError> {
    let resp = call(bmc, req)?;
    parse(&resp).map_err(|source| EnrollError::Refused {
        what: req.what.clone(),
        source,
    })
}

fn set(bmc: &mut dyn Bmc, req: &Request) -> Result<(), EnrollError> {
    tracing::debug!(request = %req.what, "BMC");
    ask(bmc, req, wire::check_ok)
}

/// The LAN channel: the first of [`LAN_CHANNELS`] that is 802.3 LAN and has an address,
/// else the first LAN channel. A channel the BMC refuses is skipped; no answer at all ends
/// the search with the error.
pub fn lan_channel(bmc: &mut dyn Bmc) -> Result<LanChannel, EnrollError> {
    let mut first = None;
    for channel in LAN_CHANNELS {
        let info = match ask(
            bmc,
            &wire::get_channel_info(channel),
            wire::parse_channel_info,
        ) {
            Ok(info) => info,
            Err(EnrollError::Refused { .. }) => continue,
            Err(e) => return Err(e),
        };
        if !info.is_lan() {
            continue;
        }
        let resp = call(bmc, &wire::get_lan_config(channel, wire::PARAM_IP_ADDRESS))?;
        let address = wire::parse_lan_ip(&resp);
        let found = LanChannel { channel, address };
        if address.is_some() {
            return Ok(found);
        }
        first.get_or_insert(found);
    }
    first.ok_or(EnrollError::NoLanChannel)
}

/// The BMC's IPv4 address, or `None` when there is no IPMI device, no LAN channel or no
/// address (every VM without an IPMI device returns at once).
pub fn address(dev_path: &Path) -> Option<String> {
    let mut dev = IpmiDevice::open(dev_path).ok()?;
    match lan_channel(&mut dev) {
        Ok(lan) => lan.address.map(|a| a.to_string()),
        Err(e) => {
            tracing::debug!(error = %crate::error_chain(&e), "no in-band BMC address");
            None
        }
    }
}

/// Creates or resets the BMC user `user` through the IPMI device at `dev_path` with a new
/// random password; see the module doc.
pub fn enroll(dev_path: &Path, user: &str) -> Result<Enrolled, EnrollError> {
    check_user_name(user)?;
    let mut dev = IpmiDevice::open(dev_path).map_err(|source| EnrollError::NoDevice {
        path: dev_path.to_owned(),
        source,
    })?;
    let password = Password::generate().map_err(EnrollError::Random)?;
    enroll_with(&mut dev, user, password)
}

/// [`enroll`] on any [`Bmc`] with the password given.
pub fn enroll_with(
    bmc: &mut dyn Bmc,
    user: &str,
    password: Password,
) -> Result<Enrolled, EnrollError> {
    let name = check_user_name(user)?;
    let version = ask(bmc, &wire::get_device_id(), wire::parse_device_id)?;
    let size = if wire::takes_20_byte_passwords(version) {
        PasswordSize::Twenty
    } else {
        PasswordSize::Sixteen
    };
    let lan = lan_channel(bmc)?;
    // Any valid user id gives the table's size; user 1 always exists.
    let table = ask(
        bmc,
        &wire::get_user_access(lan.channel, 1),
        wire::parse_user_access,
    )?;
    let max_users = table.max_users.min(wire::MAX_USER_ID);
    let mut names = Vec::new();
    for id in 2..=max_users {
        let req = wire::get_user_name(id);
        let resp = call(bmc, &req)?;
        let n = match wire::parse_user_name(&resp) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::debug!(user_id = id, error = %e, "Get User Name");
                None
            }
        };
        let mine = n.as_deref() == Some(name);
        names.push((id, n));
        if mine {
            break;
        }
    }
    let (user_id, reset) = match plan_slot(name, &names) {
        SlotPlan::Reset(id) => (id, true),
        SlotPlan::Candidates(ids) => {
            let mut free = None;
            for id in ids {
                let access = ask(
                    bmc,
                    &wire::get_user_access(lan.channel, id),
                    wire::parse_user_access,
                )?;
                if slot_is_free(&access) {
                    free = Some(id);
                    break;
                }
            }
            let Some(id) = free else {
                return Err(EnrollError::NoFreeSlot {
                    user: user.to_owned(),
                    max_users,
                });
            };
            set(bmc, &wire::set_user_name(id, name))?;
            (id, false)
        }
    };
    if let Err(e) = configure(bmc, lan.channel, user_id, &password, size) {
        if !reset {
            // Leave the slot as it was found: disabled and unnamed (best effort).
            let _ = set(bmc, &wire::disable_user(user_id));
            let _ = set(bmc, &wire::set_user_name(user_id, b""));
        }
        return Err(e);
    }
    let mac = call(
        bmc,
        &wire::get_lan_config(lan.channel, wire::PARAM_MAC_ADDRESS),
    )
    .ok()
    .and_then(|r| wire::parse_lan_mac(&r));
    tracing::info!(
        channel = lan.channel,
        user_id,
        username = user,
        reset,
        address = ?lan.address,
        mac = ?mac,
        "BMC user enrolled"
    );
    Ok(Enrolled {
        channel: lan.channel,
        user_id,
        username: user.to_owned(),
        password,
        address: lan.address,
        mac,
        reset,
    })
}

/// Password, enable, access, then a test of the password the BMC now holds.
fn configure(
    bmc: &mut dyn Bmc,
    channel: u8,
    user_id: u8,
    password: &Password,
    size: PasswordSize,
) -> Result<(), EnrollError> {
    let size = match set(bmc, &wire::set_password(user_id, password, size)) {
        Ok(()) => size,
        // Some IPMI 2.0 BMCs take only the 16-byte form; our passwords fit it.
        Err(EnrollError::Refused {
            source: AnswerError::Completion(0xc7 | 0xcc),
            ..
        }) if size == PasswordSize::Twenty => {
            set(
                bmc,
                &wire::set_password(user_id, password, PasswordSize::Sixteen),
            )?;
            PasswordSize::Sixteen
        }
        Err(e) => return Err(e),
    };
    set(bmc, &wire::enable_user(user_id))?;
    set(
        bmc,
        &wire::set_user_access(channel, user_id, wire::PRIV_ADMINISTRATOR),
    )?;
    set(bmc, &wire::test_password(user_id, password, size))
}

#[cfg(test)]
mod tests;
