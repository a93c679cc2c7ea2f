//! The `agent` deploy, clean and inspect interfaces: work handed to the ingot agent.
//!
//! Each call turns the node's request into a [`Command`] queued in the shared
//! [`AgentHub`]; the agent's next heartbeat takes it, and its result report completes the
//! wait through `Conductor::agent_finished`. Any hardware type can use these interfaces: give
//! them the hub (and, for inspection, the type's power and management interfaces, used to
//! boot the agent when none is heartbeating).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proto::protocol::{Command, ConfigDrive, DeployCommand};
use proto::{RootDeviceHints, WipeMode};
use serde_json::Value;

use super::manual::ManualHardware;
use super::{
    BootDevice, CleanStep, DeployInterface, DriverError, InspectInterface, ManagementInterface,
    PowerInterface, PowerState, PowerTarget, StepOutcome,
};
use crate::agent_api::hub::AgentHub;
use crate::model::Node;

/// How recently an agent must have been heard to count as running (fast track).
pub const FAST_TRACK_WINDOW: Duration = Duration::from_secs(90);

/// Builds the deploy command from `instance_info` (and `properties.root_device`).
pub fn deploy_command(node: &Node) -> Result<DeployCommand, DriverError> {
    let ii = &node.instance_info;
    let image_url = ii
        .get("image_source")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("image_source"))?;
    if !(image_url.starts_with("http://") || image_url.starts_with("https://")) {
        return Err(DriverError::InvalidParameter(format!(
            "image_source {image_url} is not an http(s) URL"
        )));
    }
    let raw = ii
        .get("image_checksum")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("image_checksum"))?;
    let checksum = normalize_checksum(raw)?;
    let hints_value = ii
        .get("root_device")
        .or_else(|| node.properties.get("root_device"))
        .cloned();
    let root_device_hints = match hints_value {
        None | Some(Value::Null) => RootDeviceHints::default(),
        Some(v) => serde_json::from_value(v).map_err(|e| {
            DriverError::InvalidParameter(format!("invalid root device hints: {e}"))
        })?,
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
        image_url: image_url.to_owned(),
        checksum,
        root_device_hints,
        configdrive,
    })
}

fn missing(key: &str) -> DriverError {
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

/// Agent-driven deploy and cleaning.
#[derive(Debug)]
pub struct AgentDeploy {
    hub: Arc<AgentHub>,
    operator_log: Option<Arc<ManualHardware>>,
}

impl AgentDeploy {
    pub fn new(hub: Arc<AgentHub>) -> Self {
        Self {
            hub,
            operator_log: None,
        }
    }

    /// Also records each hand-over as a `manual` instruction (the `manual` type shows them).
    pub fn with_operator_log(mut self, hw: Arc<ManualHardware>) -> Self {
        self.operator_log = Some(hw);
        self
    }

    fn note(&self, node: &Node, text: &str) {
        if let Some(hw) = &self.operator_log {
            hw.instruct(node.uuid, text.to_owned());
        }
    }
}

#[async_trait]
impl DeployInterface for AgentDeploy {
    fn name(&self) -> &'static str {
        "direct"
    }

    fn validate(&self, node: &Node) -> Result<(), DriverError> {
        match node
            .instance_info
            .get("image_source")
            .and_then(|v| v.as_str())
        {
            Some(s) if !s.is_empty() => Ok(()),
            _ => Err(missing("image_source")),
        }
    }

    fn needs_ramdisk(&self) -> bool {
        true
    }

    fn fast_track(&self, node: &Node) -> bool {
        self.hub.alive(node.uuid, FAST_TRACK_WINDOW)
    }

    async fn deploy(&self, node: &Node) -> Result<StepOutcome, DriverError> {
        let cmd = deploy_command(node)?;
        self.note(node, "agent: deploy the instance image");
        self.hub.enqueue(node.uuid, Command::Deploy(Box::new(cmd)));
        Ok(StepOutcome::Wait)
    }

    async fn tear_down(&self, node: &Node) -> Result<(), DriverError> {
        self.hub.clear(node.uuid);
        self.hub.gone(node.uuid);
        Ok(())
    }

    fn clean_steps(&self, _node: &Node) -> Vec<CleanStep> {
        vec![
            CleanStep::new("deploy", "erase_devices_metadata", 99),
            CleanStep::new("deploy", "erase_devices", 0),
        ]
    }

    async fn execute_clean_step(
        &self,
        node: &Node,
        step: &CleanStep,
    ) -> Result<StepOutcome, DriverError> {
        let mode = match step.step.as_str() {
            "erase_devices_metadata" => WipeMode::Metadata,
            "erase_devices" => WipeMode::Full,
            other => {
                return Err(DriverError::Unsupported(format!(
                    "agent does not support clean step {other}"
                )));
            }
        };
        self.note(node, &format!("agent: run clean step {}", step.step));
        self.hub.enqueue(
            node.uuid,
            Command::Wipe {
                mode,
                devices: vec![],
            },
        );
        Ok(StepOutcome::Wait)
    }
}

/// Agent-driven inspection: boots the agent (PXE + power on or reboot) unless one is
/// already heartbeating, and asks it for a fresh inventory.
#[derive(Debug)]
pub struct AgentInspect {
    hub: Arc<AgentHub>,
    power: Arc<dyn PowerInterface>,
    management: Arc<dyn ManagementInterface>,
}

impl AgentInspect {
    pub fn new(
        hub: Arc<AgentHub>,
        power: Arc<dyn PowerInterface>,
        management: Arc<dyn ManagementInterface>,
    ) -> Self {
        Self {
            hub,
            power,
            management,
        }
    }
}

#[async_trait]
impl InspectInterface for AgentInspect {
    fn name(&self) -> &'static str {
        "agent"
    }

    fn validate(&self, _node: &Node) -> Result<(), DriverError> {
        Ok(())
    }

    async fn inspect(&self, node: &Node) -> Result<StepOutcome, DriverError> {
        self.hub.enqueue(node.uuid, Command::Inspect);
        if !self.hub.alive(node.uuid, FAST_TRACK_WINDOW) {
            if self
                .management
                .supported_boot_devices(node)
                .contains(&BootDevice::Pxe)
            {
                self.management
                    .set_boot_device(node, BootDevice::Pxe, false)
                    .await?;
            }
            let on = self.power.get_power_state(node).await? == Some(PowerState::On);
            let target = if on {
                PowerTarget::Reboot
            } else {
                PowerTarget::On
            };
            self.power.set_power_state(node, target, None).await?;
        }
        Ok(StepOutcome::Wait)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn checksums_are_normalized() {
        let h64 = "a".repeat(64);
        let cases: Vec<(String, Option<String>)> = vec![
            (h64.clone(), Some(format!("sha256:{h64}"))),
            ("B".repeat(32), Some(format!("md5:{}", "b".repeat(32)))),
            ("c".repeat(128), Some(format!("sha512:{}", "c".repeat(128)))),
            (format!("SHA256:{h64}"), Some(format!("sha256:{h64}"))),
            (format!("sha512:{h64}"), None),
            ("abc".into(), None),
            (format!("crc:{h64}"), None),
            ("z".repeat(64), None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_checksum(&input).ok(), want, "{input}");
        }
    }

    #[test]
    fn deploy_command_from_instance_info() {
        let mut node = Node::new(Uuid::new_v4(), "manual", Utc::now());
        assert!(deploy_command(&node).is_err());
        node.instance_info
            .insert("image_source".into(), json!("http://127.0.0.1/i.zst"));
        assert!(deploy_command(&node).is_err(), "no checksum");
        node.instance_info
            .insert("image_checksum".into(), json!("d".repeat(64)));
        node.properties
            .insert("root_device".into(), json!({"serial": "S1"}));
        node.instance_info.insert(
            "configdrive".into(),
            json!({"meta_data": {"uuid": "x"}, "user_data": "#cloud-config\n"}),
        );
        let cmd = deploy_command(&node).expect("cmd");
        assert_eq!(cmd.checksum, format!("sha256:{}", "d".repeat(64)));
        assert_eq!(cmd.root_device_hints.serial.as_deref(), Some("S1"));
        assert!(
            matches!(cmd.configdrive, Some(ConfigDrive::Parts { ref user_data, .. }) if user_data.as_deref() == Some("#cloud-config\n"))
        );
        node.instance_info
            .insert("configdrive".into(), json!("H4sIAAAA"));
        let cmd = deploy_command(&node).expect("cmd");
        assert_eq!(
            cmd.configdrive,
            Some(ConfigDrive::GzipBase64 {
                data: "H4sIAAAA".into()
            })
        );
    }
}
