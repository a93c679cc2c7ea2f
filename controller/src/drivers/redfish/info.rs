//! Redfish `driver_info` parsing and the mappings between our power/boot vocabulary and
//! Redfish's (pure, no IO).

use std::path::PathBuf;
use std::time::Duration;

use crate::drivers::ipmi::info::{get_str, get_u64, parse_bool};
use crate::drivers::{BootDevice, BootMode, DriverError, PowerState, PowerTarget};
use crate::model::Node;

/// `driver_info` keys of the `redfish` type, with descriptions.
pub const PROPERTIES: &[(&str, &str)] = &[
    (
        "redfish_address",
        "The URL of the Redfish service, e.g. https://bmc.example.com. Required.",
    ),
    (
        "redfish_system_id",
        "The system's path, e.g. /redfish/v1/Systems/1. Optional when the BMC has one system.",
    ),
    ("redfish_username", "User name for the Redfish service."),
    ("redfish_password", "Password for the Redfish service."),
    (
        "redfish_verify_ca",
        "true (default), false, or the path of a CA bundle to verify the BMC certificate with.",
    ),
    (
        "redfish_auth_type",
        "basic, session, or auto (default: a session, else basic authentication).",
    ),
    (
        "redfish_timeout",
        "Seconds to wait for each Redfish request. Default 30.",
    ),
];

/// How the BMC's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Against the system's trust store.
    System,
    /// Against the CA certificates in this PEM file only.
    CaFile(PathBuf),
    /// Not at all (`redfish_verify_ca: false`).
    Off,
}

/// How requests authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Basic,
    Session,
    /// A session when the service offers one, else basic.
    Auto,
}

/// Parsed Redfish `driver_info`.
#[derive(Clone)]
pub struct RedfishInfo {
    /// `scheme://host[:port]`, without a trailing slash or credentials.
    pub base: String,
    pub system_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub verify: Verify,
    pub auth: AuthType,
    pub timeout: Duration,
}

impl std::fmt::Debug for RedfishInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedfishInfo")
            .field("base", &self.base)
            .field("system_id", &self.system_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "******"))
            .field("verify", &self.verify)
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedfishInfo {
    pub fn parse(node: &Node) -> Result<Self, DriverError> {
        let info = &node.driver_info;
        let Some(address) = get_str(info, "redfish_address")?.filter(|a| !a.trim().is_empty())
        else {
            return Err(DriverError::InvalidParameter(
                "Missing the following Redfish properties in node's driver_info: \
                 ['redfish_address']"
                    .to_owned(),
            ));
        };
        let base = normalize_address(address.trim())?;
        let system_id = get_str(info, "redfish_system_id")?
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let verify = match get_str(info, "redfish_verify_ca")? {
            None => Verify::System,
            Some(v) => match parse_bool(&v) {
                Some(true) => Verify::System,
                Some(false) => Verify::Off,
                None => {
                    let path = PathBuf::from(v.trim());
                    if !path.is_file() {
                        return Err(DriverError::InvalidParameter(format!(
                            "Invalid value for redfish_verify_ca: {v} is neither a boolean nor \
                             an existing CA file"
                        )));
                    }
                    Verify::CaFile(path)
                }
            },
        };
        let auth = match get_str(info, "redfish_auth_type")?
            .as_deref()
            .map(str::trim)
        {
            None | Some("auto") => AuthType::Auto,
            Some("basic") => AuthType::Basic,
            Some("session") => AuthType::Session,
            Some(other) => {
                return Err(DriverError::InvalidParameter(format!(
                    "Invalid value \"{other}\" for redfish_auth_type; valid values are basic, \
                     session and auto"
                )));
            }
        };
        let timeout = get_u64(info, "redfish_timeout")?.unwrap_or(30).max(1);
        Ok(Self {
            base,
            system_id,
            username: get_str(info, "redfish_username")?,
            password: get_str(info, "redfish_password")?,
            verify,
            auth,
            timeout: Duration::from_secs(timeout),
        })
    }

    /// The system's path, when configured.
    pub fn system_path(&self) -> Option<String> {
        self.system_id.as_ref().map(|id| {
            if id.starts_with('/') {
                id.trim_end_matches('/').to_owned()
            } else {
                format!("/redfish/v1/Systems/{id}")
            }
        })
    }
}

/// `scheme://host[:port]` from an address; no scheme means HTTPS (as Ironic). Credentials
/// in the URL are refused, so no password can end up in a URL or an error message.
fn normalize_address(address: &str) -> Result<String, DriverError> {
    let with_scheme = if address.contains("://") {
        address.to_owned()
    } else {
        format!("https://{address}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| {
        DriverError::InvalidParameter(format!("Invalid Redfish address {address}: {e}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(DriverError::InvalidParameter(format!(
            "Invalid Redfish address {address}: use http:// or https:// and a host"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DriverError::InvalidParameter(
            "redfish_address must not contain credentials; use redfish_username and \
             redfish_password"
                .to_owned(),
        ));
    }
    let mut base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        base.push_str(&format!(":{port}"));
    }
    // Ironic allows a path prefix in front of /redfish/v1.
    let path = url.path().trim_end_matches('/');
    if !path.is_empty() && path != "/redfish/v1" {
        base.push_str(path);
    }
    Ok(base)
}

/// A Redfish `PowerState` as ours (transitions count as their destination).
pub fn power_state_from_redfish(s: &str) -> Option<PowerState> {
    match s {
        "On" | "PoweringOn" => Some(PowerState::On),
        "Off" | "PoweringOff" => Some(PowerState::Off),
        _ => None,
    }
}

/// The `ResetType` for a power target, given the current state; `None`: nothing to do.
pub fn reset_type(target: PowerTarget, current: Option<PowerState>) -> Option<&'static str> {
    let on = current == Some(PowerState::On);
    match target {
        PowerTarget::On if on => None,
        PowerTarget::On => Some("On"),
        PowerTarget::Off | PowerTarget::SoftOff if current == Some(PowerState::Off) => None,
        PowerTarget::Off => Some("ForceOff"),
        PowerTarget::SoftOff => Some("GracefulShutdown"),
        PowerTarget::Reboot if on => Some("ForceRestart"),
        PowerTarget::SoftReboot if on => Some("GracefulRestart"),
        PowerTarget::Reboot | PowerTarget::SoftReboot => Some("On"),
    }
}

/// Alternatives when the BMC does not allow a reset type.
pub fn reset_fallbacks(reset: &str) -> &'static [&'static str] {
    match reset {
        "On" => &["ForceOn"],
        "ForceOff" => &["GracefulShutdown"],
        "ForceRestart" => &["PowerCycle", "GracefulRestart"],
        "GracefulRestart" => &["ForceRestart"],
        _ => &[],
    }
}

pub fn boot_target(device: BootDevice) -> Option<&'static str> {
    match device {
        BootDevice::Pxe => Some("Pxe"),
        BootDevice::Disk => Some("Hdd"),
        BootDevice::Cdrom => Some("Cd"),
        BootDevice::Bios => Some("BiosSetup"),
        BootDevice::Safe | BootDevice::Wanboot => None,
    }
}

pub fn boot_device_from_target(target: &str) -> Option<BootDevice> {
    match target {
        "Pxe" => Some(BootDevice::Pxe),
        "Hdd" => Some(BootDevice::Disk),
        "Cd" => Some(BootDevice::Cdrom),
        "BiosSetup" => Some(BootDevice::Bios),
        _ => None,
    }
}

pub fn boot_mode_redfish(mode: BootMode) -> &'static str {
    match mode {
        BootMode::Bios => "Legacy",
        BootMode::Uefi => "UEFI",
    }
}

pub fn boot_mode_from_redfish(mode: &str) -> Option<BootMode> {
    match mode {
        "Legacy" => Some(BootMode::Bios),
        "UEFI" => Some(BootMode::Uefi),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn node(info: serde_json::Value) -> Node {
        let mut n = Node::new(Uuid::new_v4(), "redfish", Utc::now());
        n.driver_info = info.as_object().cloned().unwrap_or_default();
        n
    }

    #[test]
    fn parses_addresses_and_options() {
        let i = RedfishInfo::parse(&node(json!({"redfish_address": "bmc.example.com",
            "redfish_password": "pw", "redfish_system_id": "1"})))
        .expect("parse");
        assert_eq!(i.base, "https://bmc.example.com");
        assert_eq!(i.system_path().as_deref(), Some("/redfish/v1/Systems/1"));
        assert_eq!((i.verify.clone(), i.auth), (Verify::System, AuthType::Auto));
        assert!(!format!("{i:?}").contains("\"pw\""));
        let i = RedfishInfo::parse(&node(json!({"redfish_address": "http://127.0.0.1:8000/",
            "redfish_verify_ca": "False", "redfish_auth_type": "basic"})))
        .expect("parse");
        assert_eq!(i.base, "http://127.0.0.1:8000");
        assert_eq!((i.verify, i.auth), (Verify::Off, AuthType::Basic));
        for (info, needle) in [
            (json!({}), "redfish_address"),
            (json!({"redfish_address": "https://u:p@h"}), "credentials"),
            (json!({"redfish_address": "ftp://h"}), "http"),
            (
                json!({"redfish_address": "h", "redfish_verify_ca": "/nonexistent"}),
                "CA file",
            ),
            (
                json!({"redfish_address": "h", "redfish_auth_type": "x"}),
                "auth_type",
            ),
        ] {
            let e = RedfishInfo::parse(&node(info)).expect_err("must fail");
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn reset_types_follow_ironic() {
        use PowerState::{Off, On};
        assert_eq!(reset_type(PowerTarget::On, Some(Off)), Some("On"));
        assert_eq!(reset_type(PowerTarget::On, Some(On)), None);
        assert_eq!(reset_type(PowerTarget::Off, Some(On)), Some("ForceOff"));
        assert_eq!(
            reset_type(PowerTarget::SoftOff, Some(On)),
            Some("GracefulShutdown")
        );
        assert_eq!(
            reset_type(PowerTarget::Reboot, Some(On)),
            Some("ForceRestart")
        );
        assert_eq!(reset_type(PowerTarget::Reboot, Some(Off)), Some("On"));
        assert_eq!(
            reset_type(PowerTarget::SoftReboot, Some(On)),
            Some("GracefulRestart")
        );
        assert_eq!(
            boot_device_from_target(boot_target(BootDevice::Disk).expect("hdd")),
            Some(BootDevice::Disk)
        );
    }
}
