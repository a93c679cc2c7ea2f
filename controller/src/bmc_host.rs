//! Which BMC a node's `driver_info` points at, as one comparable key: the host of
//! `ipmi_address` or of `redfish_address`, an IP address in its canonical text form or a
//! host name in lower case. The store keeps it in the indexed `bmc_host` column, so "which
//! nodes use this BMC" is an index lookup (the in-band enrolment refuses a BMC another node
//! already uses: two nodes on one BMC would power each other's machine).

use std::net::IpAddr;

use crate::model::JsonMap;

/// The IPMI port a node uses when `ipmi_port` is not set (as the IPMI driver).
pub const IPMI_DEFAULT_PORT: u16 = 623;

/// The host of the node's BMC, `None` without a usable `ipmi_address` or `redfish_address`.
pub fn bmc_host(info: &JsonMap) -> Option<String> {
    if let Some(address) = text(info, "ipmi_address") {
        return Some(canonical_host(address));
    }
    let address = text(info, "redfish_address")?;
    let with_scheme = if address.contains("://") {
        address.to_owned()
    } else {
        format!("https://{address}")
    };
    let url = reqwest::Url::parse(&with_scheme).ok()?;
    url.host_str().map(canonical_host)
}

/// Whether `info` points at the IPMI endpoint `host`:`port` (`host` canonical, as
/// [`bmc_host`] gives it): the same host and, for an IPMI node, the same port (simulated
/// BMCs share one address on several ports); a Redfish node on that host is the same BMC.
pub fn uses_ipmi_endpoint(info: &JsonMap, host: &str, port: u16) -> bool {
    if bmc_host(info).as_deref() != Some(host) {
        return false;
    }
    if text(info, "ipmi_address").is_none() {
        return true;
    }
    let node_port = match info.get("ipmi_port") {
        None | Some(serde_json::Value::Null) => Some(IPMI_DEFAULT_PORT),
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    // A port the driver could not use either is not another endpoint: count it as this one.
    node_port.is_none_or(|p| p == port)
}

fn text<'a>(info: &'a JsonMap, key: &str) -> Option<&'a str> {
    info.get(key)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// An IP address (with or without brackets) in its canonical form, else the name in lower
/// case without a trailing dot.
fn canonical_host(host: &str) -> String {
    let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => bare.trim_end_matches('.').to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(v: serde_json::Value) -> JsonMap {
        v.as_object().cloned().expect("an object")
    }

    #[test]
    fn host_of_each_address_form() {
        let cases = [
            (json!({"ipmi_address": "10.0.0.5"}), Some("10.0.0.5")),
            (
                json!({"ipmi_address": " BMC-7.Example.com. "}),
                Some("bmc-7.example.com"),
            ),
            (json!({"ipmi_address": "fd00:0:0::0005"}), Some("fd00::5")),
            (json!({"ipmi_address": "[FD00::5]"}), Some("fd00::5")),
            (
                json!({"redfish_address": "https://10.0.0.9:8000/"}),
                Some("10.0.0.9"),
            ),
            (
                json!({"redfish_address": "bmc.example.com"}),
                Some("bmc.example.com"),
            ),
            (
                json!({"redfish_address": "http://[fd00::9]:8000"}),
                Some("fd00::9"),
            ),
            (
                json!({"ipmi_address": "10.0.0.5", "redfish_address": "https://10.0.0.9"}),
                Some("10.0.0.5"),
            ),
            (json!({"ipmi_address": ""}), None),
            (json!({"ipmi_address": 5}), None),
            (json!({"redfish_address": "https://"}), None),
            (json!({"deploy_kernel": "x"}), None),
        ];
        for (i, want) in cases {
            assert_eq!(bmc_host(&info(i.clone())).as_deref(), want, "{i}");
        }
    }

    #[test]
    fn same_endpoint_needs_the_same_ipmi_port() {
        let cases = [
            (json!({"ipmi_address": "10.0.0.5"}), true),
            (json!({"ipmi_address": "10.0.0.5", "ipmi_port": 623}), true),
            (
                json!({"ipmi_address": "10.0.0.5", "ipmi_port": "623"}),
                true,
            ),
            (
                json!({"ipmi_address": "10.0.0.5", "ipmi_port": 9001}),
                false,
            ),
            (
                json!({"ipmi_address": "10.0.0.5", "ipmi_port": "junk"}),
                true,
            ),
            (json!({"ipmi_address": "10.0.0.6"}), false),
            (json!({"redfish_address": "https://10.0.0.5:8000"}), true),
            (json!({}), false),
        ];
        for (i, want) in cases {
            assert_eq!(
                uses_ipmi_endpoint(&info(i.clone()), "10.0.0.5", 623),
                want,
                "{i}"
            );
        }
    }
}
