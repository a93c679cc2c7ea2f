//! Microversion negotiation and the version discovery documents (`GET /`, `GET /v1`).
//!
//! Pure parsing lives in [`negotiate`]; it never looks at anything but the request headers.
//! Rules (contract section 2.2): no header means 1.1, `latest` means the maximum, a minor
//! version outside `[1.1, 1.115]` or another major version is a 406.

use axum::http::HeaderMap;
use serde_json::{Value, json};

/// The only major version.
pub const MAJOR: u32 = 1;
/// Lowest minor version served.
pub const MIN_MINOR: u32 = 1;
/// Highest minor version served (the newest the `baremetal` CLI knows, so it never retries).
pub const MAX_MINOR: u32 = 115;

pub const LEGACY_HEADER: &str = "x-openstack-ironic-api-version";
pub const STANDARD_HEADER: &str = "openstack-api-version";
pub const MIN_HEADER: &str = "x-openstack-ironic-api-minimum-version";
pub const MAX_HEADER: &str = "x-openstack-ironic-api-maximum-version";

/// The effective API version of a request (always major 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub minor: u32,
}

impl Version {
    pub const MIN: Version = Version { minor: MIN_MINOR };
    pub const MAX: Version = Version { minor: MAX_MINOR };

    /// True when the request's version is at least `1.minor`.
    pub fn at_least(self, minor: u32) -> bool {
        self.minor >= minor
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{MAJOR}.{}", self.minor)
    }
}

/// Why a version header was refused. Every case is a 406.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionError {
    /// Not `X.Y` nor `latest`: the 406 carries no min/max headers.
    Invalid,
    /// Major version other than 1.
    WrongMajor(String),
    /// Minor version outside the supported range.
    UnsupportedMinor(String),
}

impl VersionError {
    pub fn description(&self) -> String {
        let range = format!("[{}, {}]", Version::MIN, Version::MAX);
        match self {
            Self::Invalid => "Invalid value for X-OpenStack-Ironic-API-Version header".to_owned(),
            Self::WrongMajor(v) => format!(
                "Mutually exclusive versions requested. Version {v} requested but not supported by this service. The supported version range is: {range}."
            ),
            Self::UnsupportedMinor(v) => format!(
                "Version {v} was requested but the minor version is not supported by this service. The supported version range is: {range}."
            ),
        }
    }

    /// Whether the 406 still advertises the supported range in its headers.
    pub fn with_range_headers(&self) -> bool {
        !matches!(self, Self::Invalid)
    }
}

/// Picks the requested version from `OpenStack-API-Version: baremetal X` (preferred, as
/// microversion-parse does) or `X-OpenStack-Ironic-API-Version: X`; absent means 1.1.
pub fn negotiate(headers: &HeaderMap) -> Result<Version, VersionError> {
    let standard = headers
        .get_all(STANDARD_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|item| {
            let mut parts = item.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(service), Some(ver)) if service.eq_ignore_ascii_case("baremetal") => {
                    Some(ver.to_owned())
                }
                _ => None,
            }
        });
    let raw = match standard {
        Some(v) => v,
        None => match headers.get(LEGACY_HEADER) {
            Some(v) => v
                .to_str()
                .map_err(|_| VersionError::Invalid)?
                .trim()
                .to_owned(),
            None => return Ok(Version::MIN),
        },
    };
    parse(&raw)
}

/// Parses one version string against the supported range.
pub fn parse(raw: &str) -> Result<Version, VersionError> {
    if raw.eq_ignore_ascii_case("latest") {
        return Ok(Version::MAX);
    }
    let (major, minor) = raw.split_once('.').ok_or(VersionError::Invalid)?;
    let major: u32 = parse_number(major).ok_or(VersionError::Invalid)?;
    let minor: u32 = parse_number(minor).ok_or(VersionError::Invalid)?;
    if major != MAJOR {
        return Err(VersionError::WrongMajor(raw.to_owned()));
    }
    if !(MIN_MINOR..=MAX_MINOR).contains(&minor) {
        return Err(VersionError::UnsupportedMinor(raw.to_owned()));
    }
    Ok(Version { minor })
}

fn parse_number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn version_object(base: &str) -> Value {
    json!({
        "id": "v1",
        "links": [{"href": format!("{base}/v1/"), "rel": "self"}],
        "status": "CURRENT",
        "min_version": Version::MIN.to_string(),
        "version": Version::MAX.to_string(),
    })
}

fn links(base: &str, coll: &str) -> Value {
    json!([
        {"href": format!("{base}/v1/{coll}/"), "rel": "self"},
        {"href": format!("{base}/{coll}/"), "rel": "bookmark"},
    ])
}

/// `GET /`.
pub fn root_document(base: &str) -> Value {
    let v = version_object(base);
    json!({
        "name": "OpenStack Ironic API",
        "description": "Ironic is an OpenStack project which enables the provision and management of baremetal machines. This API is served by Ingot.",
        "default_version": v.clone(),
        "versions": [v],
    })
}

/// `GET /v1` and `GET /v1/`.
pub fn v1_document(base: &str) -> Value {
    json!({
        "id": "v1",
        "links": [
            {"href": format!("{base}/v1/"), "rel": "self"},
            {"href": "https://docs.openstack.org//ironic/latest/contributor//webapi.html", "rel": "describedby", "type": "text/html"},
        ],
        "media_types": {"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"},
        "chassis": links(base, "chassis"),
        "nodes": links(base, "nodes"),
        "ports": links(base, "ports"),
        "drivers": links(base, "drivers"),
        "allocations": links(base, "allocations"),
        "version": version_object(base),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn absent_header_is_the_minimum() {
        assert_eq!(negotiate(&HeaderMap::new()), Ok(Version { minor: 1 }));
    }

    #[test]
    fn latest_and_explicit_versions() {
        assert_eq!(
            negotiate(&headers(&[(LEGACY_HEADER, "latest")])),
            Ok(Version::MAX)
        );
        assert_eq!(
            negotiate(&headers(&[(LEGACY_HEADER, "1.60")])),
            Ok(Version { minor: 60 })
        );
        assert_eq!(
            negotiate(&headers(&[
                (STANDARD_HEADER, "baremetal 1.109"),
                (LEGACY_HEADER, "1.109")
            ])),
            Ok(Version { minor: 109 })
        );
        assert_eq!(
            negotiate(&headers(&[(STANDARD_HEADER, "compute 2.1, baremetal 1.7")])),
            Ok(Version { minor: 7 })
        );
    }

    #[test]
    fn refused_versions() {
        for v in ["1.116", "1.200", "1.0"] {
            assert_eq!(parse(v), Err(VersionError::UnsupportedMinor(v.to_owned())));
        }
        assert_eq!(
            parse("2.0"),
            Err(VersionError::WrongMajor("2.0".to_owned()))
        );
        for v in ["abc", "1", "1.x", "1.-1", ""] {
            assert_eq!(parse(v), Err(VersionError::Invalid), "{v}");
        }
        assert_eq!(
            VersionError::UnsupportedMinor("1.116".into()).description(),
            "Version 1.116 was requested but the minor version is not supported by this service. The supported version range is: [1.1, 1.115]."
        );
    }
}
