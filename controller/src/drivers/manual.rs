//! The `manual` hardware type: an operator presses the buttons, an agent does the work.
//!
//! Power and boot device changes are recorded and logged as instructions for the operator;
//! the reported power state is the last one requested. Deploy, clean and inspect go through
//! the agent ([`super::agent`]): they return `StepOutcome::Wait`, and the conductor completes
//! them when the agent reports back (or fails them when the wait times out).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    BootDevice, DriverError, ManagementInterface, PowerInterface, PowerState, PowerTarget,
};
use crate::model::Node;

/// One instruction given to the operator (or work handed to the agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub node: Uuid,
    pub text: String,
}

#[derive(Debug, Default)]
struct Inner {
    power: HashMap<Uuid, PowerState>,
    boot: HashMap<Uuid, (BootDevice, bool)>,
    instructions: Vec<Instruction>,
}

/// State behind the `manual` power/management interfaces (deploy, clean and inspect use the
/// agent interfaces of [`super::agent`]).
#[derive(Debug, Default)]
pub struct ManualHardware {
    inner: Mutex<Inner>,
}

impl ManualHardware {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn instruct(&self, node: Uuid, text: String) {
        tracing::info!(node = %node, instruction = %text, "manual hardware: operator action needed");
        self.lock().instructions.push(Instruction { node, text });
    }

    /// Every instruction so far, oldest first.
    pub fn instructions(&self) -> Vec<Instruction> {
        self.lock().instructions.clone()
    }
}

/// `manual` power: records what the operator must do.
#[async_trait]
impl PowerInterface for ManualHardware {
    fn name(&self) -> &'static str {
        "manual"
    }

    fn validate(&self, _node: &Node) -> Result<(), DriverError> {
        Ok(())
    }

    async fn get_power_state(&self, node: &Node) -> Result<Option<PowerState>, DriverError> {
        Ok(self
            .lock()
            .power
            .get(&node.uuid)
            .copied()
            .or_else(|| node.power_state.as_deref().and_then(PowerState::parse)))
    }

    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerTarget,
        _timeout: Option<Duration>,
    ) -> Result<(), DriverError> {
        let verb = match target {
            PowerTarget::On => "power on",
            PowerTarget::Off => "power off",
            PowerTarget::Reboot => "reboot (power cycle)",
            PowerTarget::SoftOff => "shut down the OS of",
            PowerTarget::SoftReboot => "reboot the OS of",
        };
        self.instruct(node.uuid, format!("{verb} node {}", node.uuid));
        self.lock()
            .power
            .insert(node.uuid, target.resulting_state());
        Ok(())
    }
}

/// `manual` management: boot device choices are instructions too.
#[async_trait]
impl ManagementInterface for ManualHardware {
    fn name(&self) -> &'static str {
        "manual"
    }

    fn validate(&self, _node: &Node) -> Result<(), DriverError> {
        Ok(())
    }

    fn supported_boot_devices(&self, _node: &Node) -> Vec<BootDevice> {
        vec![
            BootDevice::Pxe,
            BootDevice::Disk,
            BootDevice::Cdrom,
            BootDevice::Bios,
        ]
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        if !self.supported_boot_devices(node).contains(&device) {
            return Err(DriverError::InvalidParameter(format!(
                "Invalid boot device {device} specified."
            )));
        }
        let how = if persistent { "always" } else { "next time" };
        self.instruct(
            node.uuid,
            format!("boot node {} from {device} ({how})", node.uuid),
        );
        self.lock().boot.insert(node.uuid, (device, persistent));
        Ok(())
    }

    async fn get_boot_device(
        &self,
        node: &Node,
    ) -> Result<(Option<BootDevice>, bool), DriverError> {
        Ok(self
            .lock()
            .boot
            .get(&node.uuid)
            .map_or((None, false), |&(d, p)| (Some(d), p)))
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    #[tokio::test]
    async fn power_is_the_last_requested_and_recorded_as_instructions() {
        let hw = ManualHardware::new();
        let node = Node::new(Uuid::new_v4(), "manual", Utc::now());
        assert_eq!(hw.get_power_state(&node).await, Ok(None));
        hw.set_power_state(&node, PowerTarget::On, None)
            .await
            .expect("on");
        assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::On)));
        hw.set_boot_device(&node, BootDevice::Disk, true)
            .await
            .expect("disk");
        assert_eq!(
            hw.get_boot_device(&node).await,
            Ok((Some(BootDevice::Disk), true))
        );
        let texts: Vec<_> = hw.instructions().into_iter().map(|i| i.text).collect();
        assert_eq!(
            texts,
            vec![
                format!("power on node {}", node.uuid),
                format!("boot node {} from disk (always)", node.uuid)
            ]
        );
    }
}
