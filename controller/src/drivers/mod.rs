//! Hardware drivers: the interfaces the conductor drives, and the hardware types that bundle
//! them (Ironic's "hardware type" + "interfaces" model).
//!
//! Each interface is an async trait used as `Arc<dyn ...>`:
//! - [`PowerInterface`]: read and change the power state;
//! - [`ManagementInterface`]: boot device and boot mode;
//! - [`DeployInterface`]: deploy, tear down and clean steps (`erase_devices_metadata`,
//!   `erase_devices`, ...);
//! - [`InspectInterface`]: hardware inspection.
//!
//! Deploy, clean and inspect work returns [`StepOutcome::Done`] when it finished, or
//! [`StepOutcome::Wait`] when an agent on the machine carries on; the node then sits in a
//! wait state until the conductor is told the agent finished, or the wait times out.
//!
//! Hardware types here: `fake-hardware` ([`fake`], instant, records calls, fault injection),
//! `manual` ([`manual`], an operator presses the buttons, an agent does the work), and the
//! BMC-backed `ipmi` ([`ipmi`], IPMI 2.0 lanplus), `redfish` ([`redfish`]) and `qemu`
//! ([`qemu`], QMP for lab VMs without a BMC), all in the same [`registry`].

pub mod agent;
mod agent_command;
pub mod agent_steps;
pub mod fake;
pub mod ipmi;
pub mod manual;
pub mod measured;
pub mod qemu;
pub mod raid;
pub mod redfish;
pub mod registry;
pub mod wipe_proof;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{JsonMap, Node};

pub use registry::{DriverRegistry, HardwareType, InterfaceValidation, NodeDrivers};

/// Errors a driver reports; the conductor turns them into `last_error` or HTTP errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The interface cannot do this (for example an unsupported boot device).
    #[error("{0}")]
    Unsupported(String),
    /// `driver_info`, `instance_info` or a request parameter is wrong or missing.
    #[error("{0}")]
    InvalidParameter(String),
    /// The hardware did not answer in time.
    #[error("{operation} timed out after {timeout:?}")]
    Timeout {
        operation: String,
        timeout: Duration,
    },
    /// The hardware answered with a failure.
    #[error("{0}")]
    Failed(String),
}

/// An observed power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    On,
    Off,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "power on",
            Self::Off => "power off",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "power on" => Some(Self::On),
            "power off" => Some(Self::Off),
            _ => None,
        }
    }
}

/// A requested power change (`PUT /v1/nodes/{ident}/states/power` target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerTarget {
    On,
    Off,
    Reboot,
    SoftOff,
    SoftReboot,
}

impl PowerTarget {
    pub const ALL: [PowerTarget; 5] = [
        Self::On,
        Self::Off,
        Self::Reboot,
        Self::SoftOff,
        Self::SoftReboot,
    ];

    /// Ironic's string, shown in `target_power_state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "power on",
            Self::Off => "power off",
            Self::Reboot => "rebooting",
            Self::SoftOff => "soft power off",
            Self::SoftReboot => "soft rebooting",
        }
    }

    /// The power state the node is in once the change completed.
    pub fn resulting_state(self) -> PowerState {
        match self {
            Self::On | Self::Reboot | Self::SoftReboot => PowerState::On,
            Self::Off | Self::SoftOff => PowerState::Off,
        }
    }
}

impl fmt::Display for PowerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PowerTarget {
    type Err = DriverError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                DriverError::InvalidParameter(format!("Invalid power state target: {s}"))
            })
    }
}

/// A boot device, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    Pxe,
    Disk,
    Cdrom,
    Bios,
    Safe,
    Wanboot,
}

impl BootDevice {
    pub const ALL: [BootDevice; 6] = [
        Self::Pxe,
        Self::Disk,
        Self::Cdrom,
        Self::Bios,
        Self::Safe,
        Self::Wanboot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pxe => "pxe",
            Self::Disk => "disk",
            Self::Cdrom => "cdrom",
            Self::Bios => "bios",
            Self::Safe => "safe",
            Self::Wanboot => "wanboot",
        }
    }
}

impl fmt::Display for BootDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BootDevice {
    type Err = DriverError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                DriverError::InvalidParameter(format!("Invalid boot device {s} specified."))
            })
    }
}

/// Firmware boot mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootMode {
    Bios,
    Uefi,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bios => "bios",
            Self::Uefi => "uefi",
        }
    }
}

/// Whether deploy/clean/inspect work finished or continues on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    Wait,
}

/// A clean step, as the API and node `clean_step` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanStep {
    pub interface: String,
    pub step: String,
    /// Automated cleaning runs steps with a priority above zero, highest first.
    #[serde(default)]
    pub priority: u32,
    #[serde(default)]
    pub args: JsonMap,
    #[serde(default)]
    pub abortable: bool,
}

impl CleanStep {
    pub fn new(interface: &str, step: &str, priority: u32) -> Self {
        Self {
            interface: interface.to_owned(),
            step: step.to_owned(),
            priority,
            args: JsonMap::new(),
            abortable: false,
        }
    }
}

/// Reads and changes the power state.
#[async_trait]
pub trait PowerInterface: Send + Sync + fmt::Debug {
    /// Interface name (`fake`, `manual`, `ipmitool`, `redfish`).
    fn name(&self) -> &'static str;
    /// Checks `driver_info` (no IO).
    fn validate(&self, node: &Node) -> Result<(), DriverError>;
    /// The current power state; `None` when unknown.
    async fn get_power_state(&self, node: &Node) -> Result<Option<PowerState>, DriverError>;
    /// Changes the power state and returns once it took effect (or `timeout` passed).
    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerTarget,
        timeout: Option<Duration>,
    ) -> Result<(), DriverError>;
    /// The targets this interface supports.
    fn supported_power_targets(&self) -> Vec<PowerTarget> {
        PowerTarget::ALL.to_vec()
    }
}

/// Boot device and boot mode.
#[async_trait]
pub trait ManagementInterface: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    fn validate(&self, node: &Node) -> Result<(), DriverError>;
    fn supported_boot_devices(&self, node: &Node) -> Vec<BootDevice>;
    /// Sets the next boot device, for one boot or persistently.
    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError>;
    /// The current boot device (if known) and whether it is persistent.
    async fn get_boot_device(&self, node: &Node)
    -> Result<(Option<BootDevice>, bool), DriverError>;
    async fn get_boot_mode(&self, _node: &Node) -> Result<Option<BootMode>, DriverError> {
        Ok(None)
    }
    async fn set_boot_mode(&self, _node: &Node, mode: BootMode) -> Result<(), DriverError> {
        Err(DriverError::Unsupported(format!(
            "{} management does not support setting boot mode {}",
            self.name(),
            mode.as_str()
        )))
    }
}

/// Deploying, tearing down and cleaning.
#[async_trait]
pub trait DeployInterface: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    /// Checks `driver_info` and `instance_info` (no IO).
    fn validate(&self, node: &Node) -> Result<(), DriverError>;
    /// True when deploy/clean run in an agent ramdisk: the conductor then sets a one-time
    /// PXE boot and powers the node on before the step, and boots it from disk afterwards.
    fn needs_ramdisk(&self) -> bool;
    /// True when an agent already runs on the node and takes work without a reboot (fast
    /// track): the conductor then neither boots the ramdisk nor powers off after cleaning.
    async fn fast_track(&self, _node: &Node) -> bool {
        false
    }
    /// Writes the instance (`node.instance_info`).
    async fn deploy(&self, node: &Node) -> Result<StepOutcome, DriverError>;
    /// Removes what deploy set up (the conductor powers the node off first).
    async fn tear_down(&self, node: &Node) -> Result<(), DriverError>;
    /// Every clean step this interface offers, automated ones with priority > 0.
    fn clean_steps(&self, node: &Node) -> Vec<CleanStep>;
    /// The deploy steps this interface offers, in Ironic's shape: `deploy.deploy` (write
    /// the instance) at 100, and steps with priority 0 that run only when a deploy template
    /// or the operator's `deploy_steps` give them a priority (`deploy_templates::deploy_plan`).
    fn deploy_steps(&self, _node: &Node) -> Vec<CleanStep> {
        vec![CleanStep::new("deploy", "deploy", 100)]
    }
    /// Checks a deploy's plan (its steps in order) before anything runs (no IO): rules of
    /// order this interface needs.
    fn check_deploy_plan(&self, _node: &Node, _plan: &[CleanStep]) -> Result<(), DriverError> {
        Ok(())
    }
    /// Runs one deploy step; `deploy.deploy` is [`DeployInterface::deploy`].
    async fn execute_deploy_step(
        &self,
        node: &Node,
        step: &CleanStep,
    ) -> Result<StepOutcome, DriverError> {
        match (step.interface.as_str(), step.step.as_str()) {
            ("deploy", "deploy") => self.deploy(node).await,
            (i, s) => Err(DriverError::Unsupported(format!(
                "{} deploy does not support deploy step {i}.{s}",
                self.name()
            ))),
        }
    }
    /// The service steps `service` may run on an active node (none: `service` is refused
    /// rather than accepted and ignored).
    fn service_steps(&self, _node: &Node) -> Vec<CleanStep> {
        Vec::new()
    }
    /// Checks a service step's arguments before anything is booted (no IO).
    fn validate_service_step(&self, _node: &Node, _step: &CleanStep) -> Result<(), DriverError> {
        Ok(())
    }
    /// Runs one service step (the conductor has booted the ramdisk when
    /// [`DeployInterface::needs_ramdisk`]).
    async fn execute_service_step(
        &self,
        _node: &Node,
        step: &CleanStep,
    ) -> Result<StepOutcome, DriverError> {
        Err(DriverError::Unsupported(format!(
            "{} deploy does not support service step {}.{}",
            self.name(),
            step.interface,
            step.step
        )))
    }
    /// Runs one clean step.
    async fn execute_clean_step(
        &self,
        node: &Node,
        step: &CleanStep,
    ) -> Result<StepOutcome, DriverError>;
    /// Boots the rescue environment.
    async fn rescue(&self, _node: &Node) -> Result<StepOutcome, DriverError> {
        Err(DriverError::Unsupported(format!(
            "{} deploy does not support rescue",
            self.name()
        )))
    }
    async fn unrescue(&self, _node: &Node) -> Result<(), DriverError> {
        Err(DriverError::Unsupported(format!(
            "{} deploy does not support unrescue",
            self.name()
        )))
    }
}

/// Hardware inspection.
#[async_trait]
pub trait InspectInterface: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    fn validate(&self, node: &Node) -> Result<(), DriverError>;
    /// Inspects the node; `Wait` when the agent will report the inventory.
    async fn inspect(&self, node: &Node) -> Result<StepOutcome, DriverError>;
}

/// Which kind of step an operator names: `Clean`, `Deploy` or `Service` (the word in
/// errors).
pub type StepKind = &'static str;

/// Checks that a step requested by an operator (`kind`: "Clean", "Deploy", "Service")
/// names a step the driver offers; returns the driver's step with the operator's arguments
/// (and priority, when given).
pub fn resolve_step(
    kind: StepKind,
    offered: &[CleanStep],
    requested: &serde_json::Value,
) -> Result<CleanStep, DriverError> {
    let obj = requested.as_object().ok_or_else(|| {
        DriverError::InvalidParameter(format!("{kind} step {requested} is not an object"))
    })?;
    let interface = obj
        .get("interface")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let name = obj.get("step").and_then(|v| v.as_str()).unwrap_or_default();
    let found = offered.iter().find(|s| s.interface == interface && s.step == name).ok_or_else(|| {
        DriverError::InvalidParameter(format!(
            "{kind} step {{'interface': '{interface}', 'step': '{name}'}} is not supported by the \
             driver"
        ))
    })?;
    let mut step = found.clone();
    if let Some(args) = obj.get("args").and_then(|v| v.as_object()) {
        step.args = args.clone();
    }
    if let Some(p) = obj.get("priority").and_then(serde_json::Value::as_u64) {
        step.priority = u32::try_from(p).unwrap_or(u32::MAX);
    }
    Ok(step)
}
