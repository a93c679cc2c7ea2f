//! RAID: the one home of Ironic's `target_raid_config` rules and of the RAID interfaces
//! (`agent`, `no-raid`, `fake`). Pure: no IO, no clock (the time is an argument).
//!
//! - [`validate`]: Ironic's schema (`ironic/drivers/raid_config_schema.json`) and its
//!   one-root-volume rule, with Ironic's messages (`RAID config validation error: ...`).
//! - [`software_raid`]: the `agent` RAID interface's reduction of a valid document to the
//!   agent's [`SoftwareRaid`] plan (every logical disk `"controller": "software"`, levels
//!   `"1"` then `"0"`/`"1"`, member disks as root device hints), checked by
//!   [`SoftwareRaid::check`].
//! - [`validate_for`]: what `PUT /v1/nodes/{node}/states/raid` and `validate` ask of the
//!   node's RAID interface.
//! - [`raid_config_of`]: what the agent built ([`RaidReport`]), as the node's `raid_config`.
//! - [`config_after`]: which agent results change `raid_config`.
//!
//! It must not read the store or queue commands: `agent.rs` and the conductor do.

use proto::protocol::Command;
use proto::{RaidLevel, RaidReport, RaidVolume, RootDeviceHints, SoftwareRaid};
use serde_json::{Map, Value, json};

use super::agent_command::parse_hints;
use super::{CleanStep, DriverError};
use crate::model::{JsonMap, Node};

/// The RAID interface that builds software RAID in the agent.
pub const AGENT: &str = "agent";

/// Ironic's `raid_level` enum.
pub const RAID_LEVELS: [&str; 9] = ["JBOD", "0", "1", "2", "5", "6", "1+0", "5+0", "6+0"];

/// The keys a logical disk may have (Ironic's schema).
const LOGICAL_DISK_KEYS: [&str; 10] = [
    "raid_level",
    "size_gb",
    "volume_name",
    "is_root_volume",
    "share_physical_disks",
    "disk_type",
    "interface_type",
    "number_of_physical_disks",
    "controller",
    "physical_disks",
];

/// The agent's RAID steps (offered by the agent at lookup, `clean_priority` 0).
pub const CREATE_STEP: &str = "create_configuration";
pub const DELETE_STEP: &str = "delete_configuration";

/// Why a RAID interface refused a target document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The interface has no RAID (Ironic's `UnsupportedDriverExtension`, a 404 there).
    Unsupported(String),
    /// The document is wrong (Ironic's `InvalidParameterValue`, a 400).
    Invalid(String),
}

/// True when the node's RAID interface is `agent`. Only the node's own `raid_interface`
/// can say so: no hardware type defaults to it (as Ironic, whose `AgentRAID` needs RAID
/// support in the ramdisk; the registry's tests hold every type to that).
pub fn uses_agent_raid(node: &Node) -> bool {
    node.interfaces.get("raid_interface").map(String::as_str) == Some(AGENT)
}

/// What the node's RAID interface `iface` (of hardware type `driver`) says of a target
/// document. `{}` clears the target and is taken by every interface (as Ironic, which
/// validates only a non-empty document).
pub fn validate_for(iface: &str, driver: &str, doc: &JsonMap) -> Result<(), Refusal> {
    if doc.is_empty() {
        return Ok(());
    }
    match iface {
        AGENT => {
            validate(doc).map_err(Refusal::Invalid)?;
            software_raid(doc).map(|_| ()).map_err(Refusal::Invalid)
        }
        "fake" => validate(doc).map_err(Refusal::Invalid),
        _ => Err(Refusal::Unsupported(format!(
            "Driver {driver} does not support raid (disabled or not implemented)."
        ))),
    }
}

/// A Python-like rendering of a value in schema messages (`'x'`, `True`, `[]`).
fn repr(v: &Value) -> String {
    match v {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::String(s) => format!("'{s}'"),
        Value::Array(a) if a.is_empty() => "[]".to_owned(),
        Value::Object(o) if o.is_empty() => "{}".to_owned(),
        other => other.to_string(),
    }
}

fn one_of(v: &Value, allowed: &[&str]) -> Result<(), String> {
    if v.as_str().is_some_and(|s| allowed.contains(&s)) {
        Ok(())
    } else {
        Err(format!("{} is not one of {allowed:?}", repr(v)).replace('"', "'"))
    }
}

fn of_type(v: &Value, ok: bool, ty: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{} is not of type '{ty}'", repr(v)))
    }
}

fn any_of(ok: bool, v: &Value) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not valid under any of the given schemas",
            repr(v)
        ))
    }
}

/// Ironic's JSON schema of one logical disk.
fn check_logical_disk(disk: &Value) -> Result<(), String> {
    let obj = disk
        .as_object()
        .ok_or_else(|| format!("{} is not of type 'object'", repr(disk)))?;
    if let Some(extra) = obj
        .keys()
        .find(|k| !LOGICAL_DISK_KEYS.contains(&k.as_str()))
    {
        return Err(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)"
        ));
    }
    for key in ["raid_level", "size_gb"] {
        if !obj.contains_key(key) {
            return Err(format!("'{key}' is a required property"));
        }
    }
    if obj.contains_key("physical_disks") && !obj.contains_key("controller") {
        return Err("'controller' is a dependency of 'physical_disks'".to_owned());
    }
    for (key, v) in obj {
        match key.as_str() {
            "raid_level" => one_of(v, &RAID_LEVELS)?,
            "size_gb" => any_of(v.is_u64() || v.as_str() == Some("MAX"), v)?,
            "volume_name" | "controller" => of_type(v, v.is_string(), "string")?,
            "is_root_volume" | "share_physical_disks" => of_type(v, v.is_boolean(), "boolean")?,
            "disk_type" => one_of(v, &["hdd", "ssd"])?,
            "interface_type" => one_of(v, &["sata", "scsi", "sas"])?,
            "number_of_physical_disks" => match v.as_i64() {
                Some(n) if n > 0 => {}
                Some(n) => return Err(format!("{n} is less than or equal to the minimum of 0")),
                None => return Err(format!("{} is not of type 'integer'", repr(v))),
            },
            "physical_disks" => any_of(
                v.as_array().is_some_and(|a| {
                    a.iter().all(Value::is_string)
                        || (a.len() >= 2 && a.iter().all(Value::is_object))
                }),
                v,
            )?,
            _ => {}
        }
    }
    Ok(())
}

/// Ironic's validation of a target RAID document (its schema, then at most one root
/// volume); the error is the whole message (`RAID config validation error: ...`).
pub fn validate(doc: &JsonMap) -> Result<(), String> {
    let schema = |why: String| format!("RAID config validation error: {why}");
    if let Some(extra) = doc.keys().find(|k| k.as_str() != "logical_disks") {
        return Err(schema(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let disks = doc
        .get("logical_disks")
        .ok_or_else(|| schema("'logical_disks' is a required property".to_owned()))?;
    let list = disks
        .as_array()
        .ok_or_else(|| schema(format!("{} is not of type 'array'", repr(disks))))?;
    if list.is_empty() {
        return Err(schema("[] is too short".to_owned()));
    }
    for disk in list {
        check_logical_disk(disk).map_err(schema)?;
    }
    let roots = list
        .iter()
        .filter(|d| d.get("is_root_volume").and_then(Value::as_bool) == Some(true))
        .count();
    if roots > 1 {
        return Err(format!(
            "Raid config cannot have more than one root volume. {roots} root volumes were specified"
        ));
    }
    Ok(())
}

/// PURE: the `agent` RAID interface's plan from a document [`validate`] accepted: software
/// RAID only, levels `"1"` (the first, root volume) and `"0"`/`"1"`, one list of member
/// disks (root device hints) for every volume, no size 0. `disk_type`, `interface_type`,
/// `share_physical_disks` and `number_of_physical_disks` choose hardware controller disks
/// and are ignored here (as IPA's software RAID).
pub fn software_raid(doc: &JsonMap) -> Result<SoftwareRaid, String> {
    let list = doc
        .get("logical_disks")
        .and_then(Value::as_array)
        .ok_or_else(|| "the target RAID configuration has no logical_disks".to_owned())?;
    let mut volumes = Vec::with_capacity(list.len());
    let mut members: Option<Vec<RootDeviceHints>> = None;
    for (i, disk) in list.iter().enumerate() {
        let field = |k: &str| disk.get(k).filter(|v| !v.is_null());
        match field("controller").and_then(Value::as_str) {
            Some("software") => {}
            other => {
                return Err(format!(
                    "logical disk {i} has controller {}: the agent RAID interface builds software \
                     RAID only, so every logical disk needs \"controller\": \"software\"",
                    other.map_or_else(|| "unset".to_owned(), |c| format!("{c:?}"))
                ));
            }
        }
        let raw = field("raid_level")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let level = RaidLevel::parse(raw).ok_or_else(|| {
            format!(
                "logical disk {i}: RAID level {raw:?} is not supported by Ingot's software RAID \
                 (only \"1\" for the first volume and \"0\" or \"1\" for a second; Ironic also \
                 takes \"1+0\", \"5\" and \"6\" for a second volume, Ingot does not)"
            )
        })?;
        let size_gb = match field("size_gb") {
            Some(Value::String(s)) if s == "MAX" => None,
            Some(v) => match v.as_u64() {
                Some(0) | None => {
                    return Err(format!(
                        "logical disk {i}: size_gb {v} is refused: a software RAID volume is at \
                         least 1 GiB (or \"MAX\")"
                    ));
                }
                Some(n) => Some(n),
            },
            None => return Err(format!("logical disk {i} has no size_gb")),
        };
        if i > 0 && field("is_root_volume").and_then(Value::as_bool) == Some(true) {
            return Err(format!(
                "logical disk {i} has is_root_volume: the root volume of software RAID is the \
                 first logical disk"
            ));
        }
        let disks = match field("physical_disks") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|h| match h {
                    Value::Object(_) => {
                        parse_hints(h).map_err(|e| format!("logical disk {i}: physical_disks: {e}"))
                    }
                    other => Err(format!(
                        "logical disk {i}: physical_disks of software RAID are root device hints \
                         (objects such as {{\"name\": \"/dev/sda\"}}), not {other}"
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(format!(
                    "logical disk {i}: physical_disks {other} is not a list"
                ));
            }
        };
        match &members {
            None => members = Some(disks),
            Some(first) if *first == disks => {}
            Some(_) => {
                return Err(format!(
                    "logical disk {i}: every software RAID volume spans the same member disks, so \
                     physical_disks must be the same list on every logical disk"
                ));
            }
        }
        volumes.push(RaidVolume {
            level,
            size_gb,
            name: field("volume_name")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }
    let plan = SoftwareRaid {
        disks: members.unwrap_or_default(),
        volumes,
    };
    plan.check()?;
    Ok(plan)
}

/// The software RAID a deploy builds: the node's target, when its RAID interface is
/// `agent` and the target is not empty (Ingot applies `target_raid_config` at every deploy,
/// as Ironic's `raid.apply_configuration` deploy step with `delete_existing`).
pub fn deploy_plan(node: &Node) -> Result<Option<SoftwareRaid>, DriverError> {
    if !uses_agent_raid(node) || node.target_raid_config.is_empty() {
        return Ok(None);
    }
    plan_of(node).map(Some)
}

/// The node's target as the agent's plan; a node without one is refused with Ironic's
/// words (`MissingParameterValue`).
pub fn plan_of(node: &Node) -> Result<SoftwareRaid, DriverError> {
    if node.target_raid_config.is_empty() {
        return Err(DriverError::InvalidParameter(format!(
            "Node {} has no target RAID configuration.",
            node.uuid
        )));
    }
    validate(&node.target_raid_config)
        .and_then(|()| software_raid(&node.target_raid_config))
        .map_err(|e| {
            DriverError::InvalidParameter(format!(
                "Node {} has an invalid target RAID configuration: {e}",
                node.uuid
            ))
        })
}

/// True for the agent's `raid.create_configuration`.
pub fn is_create(step: &CleanStep) -> bool {
    step.interface == "raid" && step.step == CREATE_STEP
}

/// `raid.create_configuration` with its `raid` argument: the plan from the node's target
/// (an operator's own `raid` argument is refused: the target is the one source).
pub fn with_plan(node: &Node, step: &CleanStep) -> Result<CleanStep, DriverError> {
    if step.args.contains_key("raid") {
        return Err(DriverError::InvalidParameter(
            "raid.create_configuration takes its arrays from the node's target_raid_config \
             (PUT /v1/nodes/{node}/states/raid), not from a \"raid\" argument"
                .to_owned(),
        ));
    }
    let plan = plan_of(node)?;
    let mut step = step.clone();
    let value = serde_json::to_value(&plan)
        .map_err(|e| DriverError::Failed(format!("encoding the RAID plan: {e}")))?;
    step.args.insert("raid".into(), value);
    Ok(step)
}

/// PURE: a [`RaidReport`] as Ironic's `raid_config` (the shape Ironic's agent RAID
/// interface stores: the logical disks built, plus `last_updated`, `now` as Python's
/// `str(datetime)`). `size_gb` is the usable size rounded down to whole GiB;
/// `physical_disks` are the member disks (not their partitions).
pub fn raid_config_of(report: &RaidReport, now: &str) -> JsonMap {
    let disks: Vec<Value> = report
        .arrays
        .iter()
        .map(|a| {
            json!({
                "raid_level": a.level.as_str(),
                "size_gb": a.size_bytes >> 30,
                "controller": "software",
                "is_root_volume": a.root,
                "volume_name": a.name,
                "physical_disks": a.members.iter().map(|m| m.disk.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut out = Map::new();
    out.insert("logical_disks".into(), Value::Array(disks));
    out.insert("last_updated".into(), Value::String(now.to_owned()));
    out
}

/// PURE: the node's new `raid_config` after an agent command succeeded with `detail`:
/// `raid.create_configuration` and a deploy that built arrays store what was built,
/// `raid.delete_configuration` and a whole-machine erase clear it; `None` when the command does not touch RAID;
/// `Some(Err)` when the agent's report cannot be read (the step fails: a RAID nobody can
/// see is not a success).
pub fn config_after(
    command: &Command,
    detail: Option<&Value>,
    now: &str,
) -> Option<Result<JsonMap, String>> {
    let report = |v: &Value| {
        serde_json::from_value::<RaidReport>(v.clone())
            .map(|r| raid_config_of(&r, now))
            .map_err(|e| format!("the agent's RAID report cannot be read: {e}"))
    };
    match command {
        Command::RunStep {
            interface, step, ..
        } if interface == "raid" && step == CREATE_STEP => Some(match detail {
            Some(d) => report(d),
            None => Err("the agent reported no RAID arrays for raid.create_configuration".into()),
        }),
        Command::RunStep {
            interface, step, ..
        } if interface == "raid" && step == DELETE_STEP => Some(Ok(JsonMap::new())),
        // A whole-machine erase (cleaning's metadata or secure erase) destroys the md
        // superblocks with the partition tables: no array is left.
        Command::Wipe { devices, .. } if devices.is_empty() => Some(Ok(JsonMap::new())),
        Command::Deploy(cmd) if cmd.software_raid.is_some() => Some(
            match detail.and_then(|d| d.get("raid")).filter(|r| !r.is_null()) {
                Some(r) => report(r),
                None => {
                    Err("the agent deployed without reporting the software RAID it built".into())
                }
            },
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

/// PURE: what a deploy result says it wrote, for `driver_internal_info.instance_device`: the
/// member disks of its arrays (a list) when it built software RAID, else its `device`.
pub fn written_disks(detail: &serde_json::Value) -> Option<serde_json::Value> {
    let members: Vec<serde_json::Value> = detail["raid"]["arrays"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["members"].as_array().into_iter().flatten())
        .filter_map(|m| m["disk"].as_str())
        .fold(Vec::new(), |mut acc: Vec<&str>, d| {
            if !acc.contains(&d) {
                acc.push(d);
            }
            acc
        })
        .into_iter()
        .map(|d| serde_json::Value::String(d.to_owned()))
        .collect();
    if members.is_empty() {
        detail.get("device").cloned()
    } else {
        Some(serde_json::Value::Array(members))
    }
}
