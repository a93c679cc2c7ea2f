//! Parsing and checking `driver_info` for IPMI (no IO), and small `driver_info` readers the
//! other BMC drivers share.

use std::time::Duration;

use serde_json::Value;

use super::crypto::CipherSuite;
use super::parse_privilege;
use super::session::{PRIV_ADMINISTRATOR, SessionConfig};
use crate::drivers::{BootMode, DriverError};
use crate::model::{JsonMap, Node};

/// `driver_info` keys of the `ipmi` type, with descriptions.
pub const PROPERTIES: &[(&str, &str)] = &[
    (
        "ipmi_address",
        "IP address or hostname of the node's BMC. Required.",
    ),
    ("ipmi_port", "UDP port of the BMC. Optional, default 623."),
    (
        "ipmi_username",
        "BMC user name. Optional (the null user when missing).",
    ),
    ("ipmi_password", "BMC password. Optional."),
    (
        "ipmi_cipher_suite",
        "RMCP+ cipher suite, 3 or 17. Optional: the best the BMC accepts.",
    ),
    (
        "ipmi_priv_level",
        "Privilege level: ADMINISTRATOR (default), OPERATOR, USER or CALLBACK.",
    ),
    ("ipmi_hex_kg_key", "BMC key Kg in hexadecimal. Optional."),
    (
        "ipmi_disable_boot_timeout",
        "Disable the BMC's 60 s boot flag timeout before setting a boot device. Default true.",
    ),
    (
        "ipmi_timeout",
        "Seconds to wait for each BMC reply. Default 2.",
    ),
    (
        "ipmi_retries",
        "Resends after a reply timed out. Default 2.",
    ),
];

/// Parsed IPMI `driver_info`.
#[derive(Debug, Clone)]
pub struct IpmiInfo {
    pub session: SessionConfig,
    pub disable_boot_timeout: bool,
}

/// A string value; numbers are accepted too, as operators often give ports as numbers.
pub(crate) fn get_str(info: &JsonMap, key: &str) -> Result<Option<String>, DriverError> {
    match info.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(DriverError::InvalidParameter(format!(
            "{key} in driver_info must be a string"
        ))),
    }
}

/// An unsigned number given as a JSON number or a numeric string.
pub(crate) fn get_u64(info: &JsonMap, key: &str) -> Result<Option<u64>, DriverError> {
    let Some(s) = get_str(info, key)? else {
        return Ok(None);
    };
    s.trim().parse::<u64>().map(Some).map_err(|_| {
        DriverError::InvalidParameter(format!(
            "{key} in driver_info must be a non-negative integer, not \"{s}\""
        ))
    })
}

/// A boolean given as JSON or as Ironic's strings (`true`, `yes`, `1`, ...).
pub(crate) fn get_bool(info: &JsonMap, key: &str) -> Result<Option<bool>, DriverError> {
    let Some(s) = get_str(info, key)? else {
        return Ok(None);
    };
    parse_bool(&s).map(Some).ok_or_else(|| {
        DriverError::InvalidParameter(format!(
            "{key} in driver_info must be a boolean, not \"{s}\""
        ))
    })
}

pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" | "y" | "t" => Some(true),
        "false" | "no" | "0" | "off" | "n" | "f" => Some(false),
        _ => None,
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl IpmiInfo {
    pub fn parse(node: &Node) -> Result<Self, DriverError> {
        let info = &node.driver_info;
        let Some(host) = get_str(info, "ipmi_address")?.filter(|s| !s.trim().is_empty()) else {
            return Err(DriverError::InvalidParameter(
                "Missing the following IPMI credentials in node's driver_info: \
                 ['ipmi_address']."
                    .to_owned(),
            ));
        };
        let port = get_u64(info, "ipmi_port")?.unwrap_or(623);
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                DriverError::InvalidParameter(format!("ipmi_port {port} is not a valid port"))
            })?;
        let username = get_str(info, "ipmi_username")?.unwrap_or_default();
        if username.len() > 16 {
            return Err(DriverError::InvalidParameter(
                "ipmi_username is longer than the 16 bytes IPMI allows".to_owned(),
            ));
        }
        let password = get_str(info, "ipmi_password")?.unwrap_or_default();
        if password.len() > 20 {
            return Err(DriverError::InvalidParameter(
                "ipmi_password is longer than the 20 bytes IPMI 2.0 allows".to_owned(),
            ));
        }
        let suite = match get_u64(info, "ipmi_cipher_suite")? {
            None => None,
            Some(id) => Some(
                u8::try_from(id)
                    .ok()
                    .and_then(CipherSuite::from_id)
                    .ok_or_else(|| {
                        DriverError::InvalidParameter(format!(
                            "ipmi_cipher_suite {id} is not supported; use 3 or 17"
                        ))
                    })?,
            ),
        };
        let privilege = match get_str(info, "ipmi_priv_level")? {
            None => PRIV_ADMINISTRATOR,
            Some(p) => parse_privilege(&p).ok_or_else(|| {
                DriverError::InvalidParameter(format!(
                    "Invalid privilege level value:{p}, the valid value can be one of \
                     ['ADMINISTRATOR', 'CALLBACK', 'OPERATOR', 'USER']"
                ))
            })?,
        };
        let kg = match get_str(info, "ipmi_hex_kg_key")? {
            None => None,
            Some(k) => {
                let bytes = decode_hex(k.trim())
                    .filter(|b| b.len() <= 20)
                    .ok_or_else(|| {
                        DriverError::InvalidParameter(
                            "ipmi_hex_kg_key must be at most 40 hexadecimal digits".to_owned(),
                        )
                    })?;
                Some(bytes)
            }
        };
        let timeout = get_u64(info, "ipmi_timeout")?.unwrap_or(2).max(1);
        let retries = get_u64(info, "ipmi_retries")?.unwrap_or(2).min(10);
        Ok(Self {
            session: SessionConfig {
                host: host.trim().to_owned(),
                port,
                username: username.into_bytes(),
                password: password.into_bytes(),
                kg,
                privilege,
                suite,
                timeout: Duration::from_secs(timeout),
                attempts: retries as u32 + 1,
            },
            disable_boot_timeout: get_bool(info, "ipmi_disable_boot_timeout")?.unwrap_or(true),
        })
    }
}

/// The boot mode a node deploys in: `instance_info.deploy_boot_mode`, else the
/// `boot_mode` capability in `properties`, else UEFI (Ironic's default).
pub fn node_boot_mode(node: &Node) -> BootMode {
    let from = |s: &str| match s.trim().to_ascii_lowercase().as_str() {
        "bios" | "legacy" => Some(BootMode::Bios),
        "uefi" => Some(BootMode::Uefi),
        _ => None,
    };
    if let Some(m) = node
        .instance_info
        .get("deploy_boot_mode")
        .and_then(Value::as_str)
        .and_then(from)
    {
        return m;
    }
    let caps = node.properties.get("capabilities");
    let cap = match caps {
        Some(Value::String(s)) => s
            .split(',')
            .filter_map(|kv| kv.split_once(':'))
            .find(|(k, _)| k.trim() == "boot_mode")
            .and_then(|(_, v)| from(v)),
        Some(Value::Object(o)) => o.get("boot_mode").and_then(Value::as_str).and_then(from),
        _ => None,
    };
    cap.unwrap_or(BootMode::Uefi)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn node(info: Value) -> Node {
        let mut n = Node::new(Uuid::new_v4(), "ipmi", Utc::now());
        n.driver_info = info.as_object().cloned().unwrap_or_default();
        n
    }

    #[test]
    fn parses_ironic_keys_with_defaults() {
        let i = IpmiInfo::parse(&node(json!({
            "ipmi_address": "10.0.0.5", "ipmi_username": "admin", "ipmi_password": "pw"
        })))
        .expect("parse");
        assert_eq!(i.session.port, 623);
        assert_eq!(i.session.suite, None);
        assert_eq!(i.session.privilege, PRIV_ADMINISTRATOR);
        assert_eq!(i.session.attempts, 3);
        assert!(i.disable_boot_timeout);
        assert!(!format!("{i:?}").contains("\"pw\""));

        let i = IpmiInfo::parse(&node(json!({
            "ipmi_address": "bmc", "ipmi_port": "6230", "ipmi_cipher_suite": "17",
            "ipmi_priv_level": "operator", "ipmi_hex_kg_key": "00ff", "ipmi_timeout": 1,
            "ipmi_retries": "0", "ipmi_disable_boot_timeout": "false"
        })))
        .expect("parse");
        assert_eq!(i.session.port, 6230);
        assert_eq!(i.session.suite, Some(CipherSuite::Suite17));
        assert_eq!(i.session.kg, Some(vec![0, 0xff]));
        assert_eq!(i.session.attempts, 1);
        assert!(!i.disable_boot_timeout);
    }

    #[test]
    fn rejects_bad_values() {
        for (info, needle) in [
            (json!({}), "ipmi_address"),
            (
                json!({"ipmi_address": "a", "ipmi_port": 70000}),
                "ipmi_port",
            ),
            (
                json!({"ipmi_address": "a", "ipmi_cipher_suite": 1}),
                "3 or 17",
            ),
            (
                json!({"ipmi_address": "a", "ipmi_priv_level": "god"}),
                "privilege",
            ),
            (
                json!({"ipmi_address": "a", "ipmi_hex_kg_key": "xyz"}),
                "hex",
            ),
            (
                json!({"ipmi_address": "a", "ipmi_password": "x".repeat(21)}),
                "20 bytes",
            ),
        ] {
            let e = IpmiInfo::parse(&node(info)).expect_err("must fail");
            assert!(e.to_string().contains(needle), "{e} lacks {needle}");
        }
    }

    #[test]
    fn boot_mode_comes_from_instance_info_then_capabilities() {
        let mut n = node(json!({}));
        assert_eq!(node_boot_mode(&n), BootMode::Uefi);
        n.properties
            .insert("capabilities".into(), json!("boot_mode:bios,x:y"));
        assert_eq!(node_boot_mode(&n), BootMode::Bios);
        n.instance_info
            .insert("deploy_boot_mode".into(), json!("uefi"));
        assert_eq!(node_boot_mode(&n), BootMode::Uefi);
    }
}
