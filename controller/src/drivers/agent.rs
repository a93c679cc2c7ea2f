//! The `agent` deploy, clean and inspect interfaces: work handed to the ingot agent.
//!
//! Each call turns the node's request into a [`Command`] queued in the shared
//! [`AgentHub`]; the agent's next heartbeat takes it, and its result report completes the
//! wait through `Conductor::agent_finished`. Any hardware type can use these interfaces: give
//! them the hub (and, for inspection, the type's power and management interfaces, used to
//! boot the agent when none is heartbeating).

use std::sync::Arc;

use async_trait::async_trait;
use proto::WipeMode;
use proto::protocol::Command;

pub use super::agent_command::{deploy_command, normalize_checksum};
use super::agent_command::{missing, root_gb, stored_image};
use super::agent_steps::{self, Phase};
use super::manual::ManualHardware;
use super::{
    BootDevice, CleanStep, DeployInterface, DriverError, HardwareType, InspectInterface,
    ManagementInterface, PowerInterface, PowerState, PowerTarget, StepOutcome,
};
use crate::hub::AgentHub;
use crate::model::Node;

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

    /// A step the node's agent offered (and the built-ins do not handle): `RunStep`.
    async fn run_agent_step(
        &self,
        node: &Node,
        step: &CleanStep,
        phase: Phase,
    ) -> Result<StepOutcome, DriverError> {
        // `raid.create_configuration` builds the node's target: its `raid` argument is
        // the target's plan, added before the required arguments are checked.
        let planned;
        let step = if super::raid::is_create(step) {
            planned = super::raid::with_plan(node, step)?;
            &planned
        } else {
            step
        };
        let offered = agent_steps::cached(node);
        if agent_steps::find(&offered, step, phase)?.is_none() {
            return Err(DriverError::Unsupported(format!(
                "the node's agent does not offer {} step {}.{}",
                phase.label(),
                step.interface,
                step.step
            )));
        }
        self.note(
            node,
            &format!("agent: run step {}.{}", step.interface, step.step),
        );
        self.hub
            .enqueue(
                node.uuid,
                Command::RunStep {
                    interface: step.interface.clone(),
                    step: step.step.clone(),
                    args: step.args.clone(),
                },
            )
            .await
            .map_err(hub_error)?;
        Ok(StepOutcome::Wait)
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
            Some(s) if !s.is_empty() => {
                // A stored image that does not exist is refused before the deploy starts.
                stored_image(s, node.uuid, self.hub.image_resolver().map(|r| r.as_ref()))?;
                root_gb(node)?;
                // A software RAID the deploy cannot build is refused before anything boots.
                super::raid::deploy_plan(node)?;
                Ok(())
            }
            _ => Err(missing("image_source")),
        }
    }

    fn needs_ramdisk(&self) -> bool {
        true
    }

    async fn fast_track(&self, node: &Node) -> bool {
        self.hub
            .fast_track_ready(node.uuid)
            .await
            .unwrap_or_else(|e| {
                // Without the store's word the agent is booted afresh (slower, never wrong).
                tracing::warn!(node = %node.uuid, error = %e, "fast track check failed");
                false
            })
    }

    async fn deploy(&self, node: &Node) -> Result<StepOutcome, DriverError> {
        let cmd = deploy_command(node, self.hub.image_resolver().map(|r| r.as_ref()))?;
        self.note(node, "agent: deploy the instance image");
        self.hub
            .enqueue(node.uuid, Command::Deploy(Box::new(cmd)))
            .await
            .map_err(hub_error)?;
        Ok(StepOutcome::Wait)
    }

    async fn tear_down(&self, node: &Node) -> Result<(), DriverError> {
        self.hub.clear(node.uuid).await.map_err(hub_error)
    }

    /// The built-in erases, then the steps the node's agent offers.
    fn clean_steps(&self, node: &Node) -> Vec<CleanStep> {
        agent_steps::merge(
            vec![
                CleanStep::new("deploy", "erase_devices_metadata", 99),
                CleanStep::new("deploy", "erase_devices", 0),
            ],
            &agent_steps::cached(node),
            Phase::Clean,
        )
    }

    async fn execute_clean_step(
        &self,
        node: &Node,
        step: &CleanStep,
    ) -> Result<StepOutcome, DriverError> {
        let mode = match step.step.as_str() {
            "erase_devices_metadata" => WipeMode::Metadata,
            // As IPA: the firmware erase where the disk has one, else zeroes (the agent falls back).
            "erase_devices" => WipeMode::Secure,
            _ => return self.run_agent_step(node, step, Phase::Clean).await,
        };
        self.note(node, &format!("agent: run clean step {}", step.step));
        self.hub
            .enqueue(
                node.uuid,
                Command::Wipe {
                    mode,
                    devices: vec![],
                },
            )
            .await
            .map_err(hub_error)?;
        Ok(StepOutcome::Wait)
    }

    /// `deploy.deploy`, and `deploy.erase_devices_metadata` for a deploy template (or the
    /// operator's `deploy_steps`) to run before it: stale partition tables, RAID and LVM
    /// signatures on every disk are gone before the instance is written.
    fn deploy_steps(&self, node: &Node) -> Vec<CleanStep> {
        agent_steps::merge(
            vec![
                CleanStep::new("deploy", "deploy", 100),
                CleanStep::new("deploy", "erase_devices_metadata", 0),
            ],
            &agent_steps::cached(node),
            Phase::Deploy,
        )
    }

    /// A metadata erase after the image is written would erase the instance: it must run
    /// before `deploy.deploy`.
    fn check_deploy_plan(&self, _node: &Node, plan: &[CleanStep]) -> Result<(), DriverError> {
        let at = |name: &str| {
            plan.iter()
                .position(|s| s.interface == "deploy" && s.step == name)
        };
        if let (Some(erase), Some(deploy)) = (at("erase_devices_metadata"), at("deploy"))
            && erase > deploy
        {
            return Err(DriverError::InvalidParameter(
                "deploy step deploy.erase_devices_metadata must run before deploy.deploy (give \
                 it a higher priority): after it, it would erase the instance"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    async fn execute_deploy_step(
        &self,
        node: &Node,
        step: &CleanStep,
    ) -> Result<StepOutcome, DriverError> {
        match (step.interface.as_str(), step.step.as_str()) {
            ("deploy", "deploy") => self.deploy(node).await,
            ("deploy", "erase_devices_metadata") => {
                self.note(node, "agent: run deploy step erase_devices_metadata");
                self.hub
                    .enqueue(
                        node.uuid,
                        Command::Wipe {
                            mode: WipeMode::Metadata,
                            devices: vec![],
                        },
                    )
                    .await
                    .map_err(hub_error)?;
                Ok(StepOutcome::Wait)
            }
            _ => self.run_agent_step(node, step, Phase::Deploy).await,
        }
    }

    /// On an active node, through the ramdisk: a secure erase of named disks other than
    /// the instance's, and a fresh inventory (the inspection rules run on it).
    fn service_steps(&self, node: &Node) -> Vec<CleanStep> {
        agent_steps::merge(
            vec![
                CleanStep::new("deploy", "erase_devices", 0),
                CleanStep::new("inspect", "inspect", 0),
            ],
            &agent_steps::cached(node),
            Phase::Service,
        )
    }

    fn validate_service_step(&self, node: &Node, step: &CleanStep) -> Result<(), DriverError> {
        match (step.interface.as_str(), step.step.as_str()) {
            ("deploy", "erase_devices") => service_erase_devices(node, step).map(|_| ()),
            ("inspect", "inspect") => Ok(()),
            _ => agent_steps::find(&agent_steps::cached(node), step, Phase::Service).map(|_| ()),
        }
    }

    async fn execute_service_step(
        &self,
        node: &Node,
        step: &CleanStep,
    ) -> Result<StepOutcome, DriverError> {
        let command = match (step.interface.as_str(), step.step.as_str()) {
            ("deploy", "erase_devices") => Command::Wipe {
                mode: WipeMode::Secure,
                devices: service_erase_devices(node, step)?,
            },
            ("inspect", "inspect") => Command::Inspect,
            _ => return self.run_agent_step(node, step, Phase::Service).await,
        };
        self.note(
            node,
            &format!("agent: run service step {}.{}", step.interface, step.step),
        );
        self.hub
            .enqueue(node.uuid, command)
            .await
            .map_err(hub_error)?;
        Ok(StepOutcome::Wait)
    }
}

/// Where a deploy recorded the disk it wrote (`driver_internal_info`), so that a service
/// step never erases the instance: a path, or the list of member disks of a software RAID
/// deploy.
pub const INSTANCE_DEVICE_KEY: &str = "instance_device";

/// PURE: the disks holding the instance, as the deploy recorded them; None when unknown.
pub fn instance_disks(node: &Node) -> Option<Vec<String>> {
    match node.driver_internal_info.get(INSTANCE_DEVICE_KEY)? {
        serde_json::Value::String(s) => Some(vec![s.clone()]),
        serde_json::Value::Array(a) => {
            let v: Vec<String> = a
                .iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect();
            (!v.is_empty() && v.len() == a.len()).then_some(v)
        }
        _ => None,
    }
}

/// PURE: whether `device` is `disk` or one of its partitions (`/dev/vda3` of `/dev/vda`,
/// `/dev/nvme0n1p2` of `/dev/nvme0n1`).
fn on_disk(device: &str, disk: &str) -> bool {
    let Some(rest) = device.strip_prefix(disk) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    rest.is_empty()
        || if disk.ends_with(|c: char| c.is_ascii_digit()) {
            rest.strip_prefix('p').is_some_and(digits)
        } else {
            digits(rest)
        }
}

/// PURE: the devices a service `erase_devices` may erase: `args.devices`, a non-empty list
/// of `/dev/...` paths, none of them the disk the instance was written to (which must be
/// known: without it nothing is erased).
pub fn service_erase_devices(node: &Node, step: &CleanStep) -> Result<Vec<String>, DriverError> {
    let bad = |why: &str| {
        DriverError::InvalidParameter(format!("service step deploy.erase_devices: {why}"))
    };
    let devices: Vec<String> = step
        .args
        .get("devices")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| bad("args.devices, a list of the disks to erase, is required"))?
        .iter()
        .map(|d| d.as_str().map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("args.devices holds paths (strings)"))?;
    if devices.is_empty() || devices.len() > 64 {
        return Err(bad("args.devices names 1 to 64 disks"));
    }
    if let Some(d) = devices
        .iter()
        .find(|d| !d.starts_with("/dev/") || d.len() > 128 || d.contains(".."))
    {
        return Err(bad(&format!("{d:?} is not a device path")));
    }
    let instance = instance_disks(node).ok_or_else(|| {
        bad("the disk the instance was written to is not known, so no disk is erased")
    })?;
    if let Some((d, disk)) = devices
        .iter()
        .find_map(|d| instance.iter().find(|i| on_disk(d, i)).map(|i| (d, i)))
    {
        return Err(bad(&format!(
            "{d} {} the instance; undeploy erases it with cleaning",
            if d == disk {
                "holds".to_owned()
            } else {
                format!("is on {disk}, which holds")
            }
        )));
    }
    Ok(devices)
}

/// A store error of the hub, as a step failure (the node's `last_error`).
fn hub_error(e: crate::store::StoreError) -> DriverError {
    tracing::error!(error = %e, "agent hub store access failed");
    DriverError::Failed(format!(
        "the agent's command queue could not be stored: {e}"
    ))
}

/// Agent-driven inspection: boots the agent (PXE + power on or reboot) unless fast track
/// finds one running, and asks it for a fresh inventory.
#[derive(Debug)]
pub struct AgentInspect {
    hub: Arc<AgentHub>,
    power: Arc<dyn PowerInterface>,
    management: Arc<dyn ManagementInterface>,
}

/// A hardware type whose power and boot device come from one BMC client (`hw`) and whose
/// deploy, clean and inspect go through the agent: `ipmi`, `redfish` and `qemu`.
/// `properties` are the driver_info keys it documents.
pub fn bmc_hardware_type<T>(
    name: &str,
    hw: Arc<T>,
    hub: Arc<AgentHub>,
    properties: &[(&str, &str)],
) -> HardwareType
where
    T: PowerInterface + ManagementInterface + 'static,
{
    let mut hardware = HardwareType::new(
        name,
        hw.clone(),
        hw.clone(),
        Arc::new(AgentDeploy::new(hub.clone())),
        Arc::new(AgentInspect::new(hub, hw.clone(), hw)),
        &[
            ("boot", "ipxe"),
            ("network", "noop"),
            // As Ironic's generic hardware: `agent` RAID enabled, `no-raid` the default.
            ("raid", "no-raid"),
            ("raid", super::raid::AGENT),
            ("storage", "noop"),
        ],
    );
    hardware.properties = properties
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    hardware
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
        if !self
            .hub
            .fast_track_ready(node.uuid)
            .await
            .map_err(hub_error)?
        {
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
            // A new boot: the old session ends and the next lookup starts the new one.
            self.hub
                .boot_requested(node.uuid)
                .await
                .map_err(hub_error)?;
            self.power.set_power_state(node, target, None).await?;
        }
        self.hub
            .enqueue(node.uuid, Command::Inspect)
            .await
            .map_err(hub_error)?;
        Ok(StepOutcome::Wait)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::{Value, json};
    use uuid::Uuid;

    use super::*;
    use crate::images::resolve::{ImageResolver, ResolvedImage};
    use proto::protocol::ConfigDrive;

    #[test]
    fn a_service_erase_names_disks_and_never_the_instance() {
        let mut node = Node::new(uuid::Uuid::new_v4(), "manual", Utc::now());
        let step = |args: serde_json::Value| {
            let mut s = CleanStep::new("deploy", "erase_devices", 0);
            s.args = args.as_object().cloned().unwrap_or_default();
            s
        };
        // Unknown instance disk: nothing is erased.
        let e = service_erase_devices(&node, &step(json!({"devices": ["/dev/vdb"]})));
        assert!(format!("{e:?}").contains("not known"), "{e:?}");
        node.driver_internal_info
            .insert(INSTANCE_DEVICE_KEY.into(), json!("/dev/vda"));
        let cases: Vec<(serde_json::Value, Result<Vec<&str>, &str>)> = vec![
            (json!({"devices": ["/dev/vdb"]}), Ok(vec!["/dev/vdb"])),
            (
                json!({"devices": ["/dev/vdb", "/dev/nvme0n1"]}),
                Ok(vec!["/dev/vdb", "/dev/nvme0n1"]),
            ),
            (
                json!({"devices": ["/dev/vdb", "/dev/vda"]}),
                Err("/dev/vda holds the instance"),
            ),
            (
                json!({"devices": ["/dev/vda3"]}),
                Err("/dev/vda3 is on /dev/vda, which holds the instance"),
            ),
            (json!({"devices": ["/dev/vdab"]}), Ok(vec!["/dev/vdab"])),
            (json!({}), Err("args.devices, a list")),
            (json!({"devices": []}), Err("1 to 64")),
            (json!({"devices": "/dev/vdb"}), Err("args.devices, a list")),
            (json!({"devices": [7]}), Err("paths (strings)")),
            (json!({"devices": ["vdb"]}), Err("is not a device path")),
            (
                json!({"devices": ["/dev/../etc/passwd"]}),
                Err("is not a device path"),
            ),
        ];
        for (args, want) in cases {
            let got = service_erase_devices(&node, &step(args.clone()));
            match (got, want) {
                (Ok(d), Ok(w)) => assert_eq!(d, w, "{args}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{args}: {e}"),
                (got, want) => panic!("{args}: {got:?} instead of {want:?}"),
            }
        }
    }

    #[test]
    fn a_service_erase_never_touches_a_software_raid_member() {
        let mut node = Node::new(uuid::Uuid::new_v4(), "manual", Utc::now());
        node.driver_internal_info.insert(
            INSTANCE_DEVICE_KEY.into(),
            json!(["/dev/nvme0n1", "/dev/nvme1n1"]),
        );
        let step = |d: &str| {
            let mut s = CleanStep::new("deploy", "erase_devices", 0);
            s.args = json!({"devices": [d]})
                .as_object()
                .cloned()
                .unwrap_or_default();
            s
        };
        for d in ["/dev/nvme1n1", "/dev/nvme0n1p3", "/dev/nvme1n1p1"] {
            let e = service_erase_devices(&node, &step(d)).expect_err(d);
            assert!(e.to_string().contains("the instance"), "{d}: {e}");
        }
        for d in ["/dev/nvme2n1", "/dev/nvme1n12"] {
            assert!(service_erase_devices(&node, &step(d)).is_ok(), "{d}");
        }
        node.driver_internal_info
            .insert(INSTANCE_DEVICE_KEY.into(), json!(["/dev/vda", 7]));
        assert!(
            instance_disks(&node).is_none(),
            "a list with a non-path is unknown"
        );
    }

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
        assert!(deploy_command(&node, None).is_err());
        node.instance_info
            .insert("image_source".into(), json!("http://127.0.0.1/i.zst"));
        assert!(deploy_command(&node, None).is_err(), "no checksum");
        node.instance_info
            .insert("image_checksum".into(), json!("d".repeat(64)));
        node.properties
            .insert("root_device".into(), json!({"serial": "S1"}));
        node.instance_info.insert(
            "configdrive".into(),
            json!({"meta_data": {"uuid": "x"}, "user_data": "#cloud-config\n"}),
        );
        let cmd = deploy_command(&node, None).expect("cmd");
        assert_eq!(cmd.checksum, format!("sha256:{}", "d".repeat(64)));
        assert_eq!(cmd.root_device_hints.serial.as_deref(), Some("S1"));
        assert!(
            matches!(cmd.configdrive, Some(ConfigDrive::Parts { ref user_data, .. }) if user_data.as_deref() == Some("#cloud-config\n"))
        );
        node.instance_info
            .insert("configdrive".into(), json!("H4sIAAAA"));
        let cmd = deploy_command(&node, None).expect("cmd");
        assert_eq!(
            cmd.configdrive,
            Some(ConfigDrive::GzipBase64 {
                data: "H4sIAAAA".into()
            })
        );
        assert_eq!(cmd.min_disk_bytes, None);
    }

    #[test]
    fn root_gb_sets_the_smallest_disk() {
        let mut node = Node::new(Uuid::new_v4(), "manual", Utc::now());
        node.instance_info
            .insert("image_source".into(), json!("http://127.0.0.1/i.zst"));
        node.instance_info
            .insert("image_checksum".into(), json!("d".repeat(64)));
        // (root_gb, local_gb, Ok(min bytes) or Err(substring))
        let cases: Vec<(Value, Option<Value>, Result<u64, &str>)> = vec![
            (json!(10), None, Ok(10 << 30)),
            (json!("4"), Some(json!(9)), Ok(4 << 30)),
            (json!(9), Some(json!("9")), Ok(9 << 30)),
            (
                json!(10),
                Some(json!(9)),
                Err("larger than the node's disk"),
            ),
            (json!(0), None, Err("whole number")),
            (json!(-1), None, Err("whole number")),
            (json!(1.5), None, Err("whole number")),
            (json!("ten"), None, Err("whole number")),
            (json!([1]), None, Err("whole number")),
            (json!(3), Some(json!(0)), Ok(3 << 30)),
        ];
        for (root, local, want) in cases {
            node.instance_info.insert("root_gb".into(), root.clone());
            match &local {
                Some(l) => node.properties.insert("local_gb".into(), l.clone()),
                None => node.properties.remove("local_gb"),
            };
            let got = deploy_command(&node, None);
            match want {
                Ok(bytes) => assert_eq!(
                    got.expect("accepted").min_disk_bytes,
                    Some(bytes),
                    "{root} {local:?}"
                ),
                Err(part) => {
                    let err = got.expect_err("refused").to_string();
                    assert!(err.contains(part), "{root} {local:?}: {err}");
                }
            }
        }
    }

    /// A resolver that knows one image.
    #[derive(Debug)]
    struct OneImage;

    impl ImageResolver for OneImage {
        fn resolve(
            &self,
            name: &str,
            _node: Uuid,
        ) -> Result<ResolvedImage, crate::images::ImageError> {
            if name == "debian-12" {
                Ok(ResolvedImage {
                    url: "http://192.0.2.1:8080/images/debian-12.raw.zst".into(),
                    checksum: format!("sha256:{}", "e".repeat(64)),
                })
            } else {
                Err(crate::images::ImageError::NotFound(name.into()))
            }
        }
    }

    #[test]
    fn stored_images_resolve_without_a_checksum() {
        let mut node = Node::new(Uuid::new_v4(), "manual", Utc::now());
        for source in ["ingot://debian-12", "debian-12"] {
            node.instance_info
                .insert("image_source".into(), json!(source));
            let cmd = deploy_command(&node, Some(&OneImage)).expect("resolved");
            assert_eq!(
                cmd.image_url,
                "http://192.0.2.1:8080/images/debian-12.raw.zst"
            );
            assert_eq!(cmd.checksum, format!("sha256:{}", "e".repeat(64)));
            let err = deploy_command(&node, None).expect_err("no image store");
            assert!(err.to_string().contains("no image store"), "{err}");
        }
        node.instance_info
            .insert("image_checksum".into(), json!("E".repeat(64)));
        assert!(
            deploy_command(&node, Some(&OneImage)).is_ok(),
            "same checksum"
        );
        node.instance_info
            .insert("image_checksum".into(), json!("f".repeat(64)));
        let err = deploy_command(&node, Some(&OneImage)).expect_err("other checksum");
        assert!(err.to_string().contains("does not match"), "{err}");
        node.instance_info.remove("image_checksum");
        node.instance_info
            .insert("image_source".into(), json!("ingot://other"));
        let err = deploy_command(&node, Some(&OneImage)).expect_err("unknown image");
        assert!(
            err.to_string().contains("no image named \"other\""),
            "{err}"
        );
        // URLs still need their checksum.
        node.instance_info
            .insert("image_source".into(), json!("http://192.0.2.9/x.raw"));
        let err = deploy_command(&node, Some(&OneImage)).expect_err("url without checksum");
        assert!(err.to_string().contains("image_checksum"), "{err}");
    }
}
