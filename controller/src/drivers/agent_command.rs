//! The `agent` deploy interface's command: `instance_info` (and `properties.root_device`, or
//! the software RAID of `target_raid_config`) checked and turned into the agent's
//! [`DeployCommand`].

use proto::RootDeviceHints;
use proto::protocol::{ConfigDrive, DeployCommand};
use serde_json::Value;
use uuid::Uuid;

use super::DriverError;
use crate::images::resolve::{ImageResolver, ResolvedImage, stored_name};
use crate::model::Node;

/// Builds the deploy command from `instance_info` (and `properties.root_device`).
///
/// `image_source` is an http(s) URL with `image_checksum`, or a stored image
/// (`ingot://NAME`, or a bare `NAME`) that `images` resolves to its URL on the provisioning
/// listener and its recorded sha256; a checksum given with a stored image must match it.
pub fn deploy_command(
    node: &Node,
    images: Option<&dyn ImageResolver>,
) -> Result<DeployCommand, DriverError> {
    let ii = &node.instance_info;
    let source = ii
        .get("image_source")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("image_source"))?;
    let given_checksum = ii
        .get("image_checksum")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let (image_url, checksum) = match stored_image(source, node.uuid, images)? {
        Some(resolved) => {
            if let Some(raw) = given_checksum
                && normalize_checksum(raw)? != resolved.checksum
            {
                return Err(DriverError::InvalidParameter(format!(
                    "image_checksum {raw} does not match stored image {source} ({})",
                    resolved.checksum
                )));
            }
            (resolved.url, resolved.checksum)
        }
        None => {
            if !(source.starts_with("http://") || source.starts_with("https://")) {
                return Err(DriverError::InvalidParameter(format!(
                    "image_source {source} is not an http(s) URL"
                )));
            }
            let raw = given_checksum.ok_or_else(|| missing("image_checksum"))?;
            (source.to_owned(), normalize_checksum(raw)?)
        }
    };
    let hints_value = ii
        .get("root_device")
        .or_else(|| node.properties.get("root_device"))
        .cloned();
    let software_raid = super::raid::deploy_plan(node)?;
    let root_device_hints = match (&software_raid, hints_value) {
        // The arrays are the target: root device hints name one disk and do not apply.
        (Some(_), _) | (None, None) => RootDeviceHints::default(),
        (None, Some(v)) => parse_hints(&v).map_err(DriverError::InvalidParameter)?,
    };
    let configdrive = match ii.get("configdrive") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(ConfigDrive::GzipBase64 { data: s.clone() }),
        Some(Value::Object(o)) => Some(ConfigDrive::Parts {
            meta_data: o
                .get("meta_data")
                .cloned()
                .unwrap_or(Value::Object(Default::default())),
            user_data: match o.get("user_data") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            },
            network_data: o.get("network_data").cloned(),
            vendor_data: o.get("vendor_data").cloned(),
        }),
        Some(other) => {
            return Err(DriverError::InvalidParameter(format!(
                "configdrive must be a string or an object, got {other}"
            )));
        }
    };
    Ok(DeployCommand {
        image_url,
        checksum,
        root_device_hints,
        configdrive,
        min_disk_bytes: root_gb(node)?.map(|gb| gb << 30),
        software_raid,
    })
}

/// The one parser of root device hints (`properties.root_device`, `instance_info.root_device`
/// and each software RAID member disk): Ironic's hint names, `null` for none.
pub fn parse_hints(value: &Value) -> Result<RootDeviceHints, String> {
    match value {
        Value::Null => Ok(RootDeviceHints::default()),
        v => {
            serde_json::from_value(v.clone()).map_err(|e| format!("invalid root device hints: {e}"))
        }
    }
}

/// `instance_info.root_gb` (a whole number of GiB, as a number or a string, as Ironic
/// takes it): for a whole-disk image, the smallest target disk. Refused when the node's
/// `properties.local_gb` is known and smaller.
pub(super) fn root_gb(node: &Node) -> Result<Option<u64>, DriverError> {
    let gb = match node.instance_info.get("root_gb") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    let gb = gb.filter(|gb| (1..=1 << 20).contains(gb)).ok_or_else(|| {
        DriverError::InvalidParameter(format!(
            "instance_info.root_gb must be a whole number of GiB from 1, got {}",
            node.instance_info["root_gb"]
        ))
    })?;
    let local_gb = match node.properties.get("local_gb") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    if let Some(local) = local_gb.filter(|l| *l > 0)
        && gb > local
    {
        return Err(DriverError::InvalidParameter(format!(
            "instance_info.root_gb {gb} is larger than the node's disk (properties.local_gb {local})"
        )));
    }
    Ok(Some(gb))
}

/// The stored image `source` names, resolved; `None` for an external URL.
pub(super) fn stored_image(
    source: &str,
    node: Uuid,
    images: Option<&dyn ImageResolver>,
) -> Result<Option<ResolvedImage>, DriverError> {
    let name = match stored_name(source) {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(None),
        Err(e) => return Err(DriverError::InvalidParameter(format!("image_source: {e}"))),
    };
    let Some(images) = images else {
        return Err(DriverError::InvalidParameter(format!(
            "image_source {source} names a stored image, but this controller has no image store"
        )));
    };
    images
        .resolve(name, node)
        .map(Some)
        .map_err(|e| DriverError::InvalidParameter(format!("image_source {source}: {e}")))
}

pub(super) fn missing(key: &str) -> DriverError {
    DriverError::InvalidParameter(format!(
        "Some parameters were missing in node's instance_info. Missing are: ['{key}']"
    ))
}

/// `algo:hex`, or bare hex whose length names the algorithm (32 md5, 64 sha256, 128 sha512).
pub fn normalize_checksum(raw: &str) -> Result<String, DriverError> {
    let bad = || DriverError::InvalidParameter(format!("invalid image_checksum {raw:?}"));
    let (algo, hex) = match raw.split_once(':') {
        Some((a, h)) => (a.to_ascii_lowercase(), h),
        None => {
            let algo = match raw.len() {
                32 => "md5",
                64 => "sha256",
                128 => "sha512",
                _ => return Err(bad()),
            };
            (algo.to_owned(), raw)
        }
    };
    let want = match algo.as_str() {
        "md5" => 32,
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    if hex.len() != want || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(format!("{algo}:{}", hex.to_ascii_lowercase()))
}
