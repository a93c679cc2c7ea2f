//! The `fake-hardware` hardware type: every interface finishes at once and touches nothing.
//!
//! It keeps state like a tiny BMC (power state and boot device per node), records every call
//! so tests can inspect them, and offers fault injection ([`FakeHardware::fail`]) and an
//! explicit mode ([`FakeHardware::pause`]) in which an operation blocks until the test
//! releases it, which lets tests watch concurrency. Without faults or pauses no call sleeps
//! or polls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{
    BootDevice, CleanStep, DeployInterface, DriverError, InspectInterface, ManagementInterface,
    PowerInterface, PowerState, PowerTarget, StepOutcome,
};
use crate::model::Node;

/// A fake operation, for fault injection, pauses and call records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    GetPower,
    SetPower,
    SetBootDevice,
    Deploy,
    TearDown,
    CleanStep,
    Inspect,
    Rescue,
    Unrescue,
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCall {
    pub node: Uuid,
    pub op: FakeOp,
    /// Call detail: the power target, boot device, or clean step name.
    pub detail: String,
}

#[derive(Debug, Default)]
struct Inner {
    power: HashMap<Uuid, PowerState>,
    boot: HashMap<Uuid, BootDevice>,
    calls: Vec<FakeCall>,
    /// Failing operations; an optional detail limits the fault (e.g. one clean step name).
    faults: HashMap<FakeOp, (Option<String>, String)>,
    gates: HashMap<FakeOp, Arc<Semaphore>>,
    running: HashMap<FakeOp, usize>,
    max_running: HashMap<FakeOp, usize>,
}

/// The shared state behind every `fake` interface of the `fake-hardware` type.
#[derive(Debug, Default)]
pub struct FakeHardware {
    inner: Mutex<Inner>,
}

/// Counts a running operation; decrements on drop.
struct Running<'a> {
    hw: &'a FakeHardware,
    op: FakeOp,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut inner = self.hw.lock();
        if let Some(n) = inner.running.get_mut(&self.op) {
            *n = n.saturating_sub(1);
        }
    }
}

impl FakeHardware {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep going with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// The calls made for one node.
    pub fn calls_for(&self, node: Uuid) -> Vec<FakeCall> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.node == node)
            .cloned()
            .collect()
    }

    /// Makes `op` fail with `message` (for every node) until [`Self::clear_faults`].
    pub fn fail(&self, op: FakeOp, message: &str) {
        self.lock().faults.insert(op, (None, message.to_owned()));
    }

    /// Makes only the clean step named `step` fail.
    pub fn fail_clean_step(&self, step: &str, message: &str) {
        self.lock().faults.insert(
            FakeOp::CleanStep,
            (Some(step.to_owned()), message.to_owned()),
        );
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Explicit mode: calls of `op` block until [`Self::release`] or [`Self::resume`].
    pub fn pause(&self, op: FakeOp) {
        self.lock().gates.insert(op, Arc::new(Semaphore::new(0)));
    }

    /// Lets `n` blocked (or future) calls of a paused `op` through.
    pub fn release(&self, op: FakeOp, n: usize) {
        if let Some(gate) = self.lock().gates.get(&op) {
            gate.add_permits(n);
        }
    }

    /// Leaves explicit mode for `op`: every blocked call proceeds.
    pub fn resume(&self, op: FakeOp) {
        if let Some(gate) = self.lock().gates.remove(&op) {
            gate.close();
        }
    }

    /// How many calls of `op` are running now, and the most that ever ran at once.
    pub fn concurrency(&self, op: FakeOp) -> (usize, usize) {
        let inner = self.lock();
        (
            inner.running.get(&op).copied().unwrap_or(0),
            inner.max_running.get(&op).copied().unwrap_or(0),
        )
    }

    /// The fake BMC's power state for a node, if it was ever set.
    pub fn power_state(&self, node: Uuid) -> Option<PowerState> {
        self.lock().power.get(&node).copied()
    }

    /// Records a call, honours pauses and faults.
    async fn enter(
        &self,
        node: Uuid,
        op: FakeOp,
        detail: &str,
    ) -> Result<Running<'_>, DriverError> {
        let gate = {
            let mut inner = self.lock();
            inner.calls.push(FakeCall {
                node,
                op,
                detail: detail.to_owned(),
            });
            let running = inner.running.entry(op).or_default();
            *running += 1;
            let now = *running;
            let max = inner.max_running.entry(op).or_default();
            *max = (*max).max(now);
            inner.gates.get(&op).cloned()
        };
        let guard = Running { hw: self, op };
        if let Some(gate) = gate {
            // A closed gate (resume) lets everyone through.
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
        }
        let inner = self.lock();
        if let Some((only, message)) = inner.faults.get(&op)
            && only.as_deref().is_none_or(|d| d == detail)
        {
            return Err(DriverError::Failed(message.clone()));
        }
        Ok(guard)
    }
}

/// The `fake` power interface.
#[async_trait]
impl PowerInterface for FakeHardware {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _node: &Node) -> Result<(), DriverError> {
        Ok(())
    }

    async fn get_power_state(&self, node: &Node) -> Result<Option<PowerState>, DriverError> {
        let _running = self.enter(node.uuid, FakeOp::GetPower, "").await?;
        // Never set here (for example after a restart): the stored state stands, so a
        // never-powered node stays null as Ironic's fake does.
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
        let _running = self
            .enter(node.uuid, FakeOp::SetPower, target.as_str())
            .await?;
        self.lock()
            .power
            .insert(node.uuid, target.resulting_state());
        Ok(())
    }
}

/// The `fake` management interface: only PXE is supported, as Ironic's fake.
#[async_trait]
impl ManagementInterface for FakeHardware {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _node: &Node) -> Result<(), DriverError> {
        Ok(())
    }

    fn supported_boot_devices(&self, _node: &Node) -> Vec<BootDevice> {
        vec![BootDevice::Pxe]
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        _persistent: bool,
    ) -> Result<(), DriverError> {
        let _running = self
            .enter(node.uuid, FakeOp::SetBootDevice, device.as_str())
            .await?;
        if device != BootDevice::Pxe {
            return Err(DriverError::InvalidParameter(format!(
                "Invalid boot device {device} specified."
            )));
        }
        self.lock().boot.insert(node.uuid, device);
        Ok(())
    }

    async fn get_boot_device(
        &self,
        node: &Node,
    ) -> Result<(Option<BootDevice>, bool), DriverError> {
        // Ironic's fake ignores persistence.
        let device = self
            .lock()
            .boot
            .get(&node.uuid)
            .copied()
            .unwrap_or(BootDevice::Pxe);
        Ok((Some(device), false))
    }
}

/// The `fake` deploy interface: accepts `instance_info`, fetches nothing.
#[async_trait]
impl DeployInterface for FakeHardware {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _node: &Node) -> Result<(), DriverError> {
        Ok(())
    }

    fn needs_ramdisk(&self) -> bool {
        false
    }

    async fn deploy(&self, node: &Node) -> Result<StepOutcome, DriverError> {
        let _running = self.enter(node.uuid, FakeOp::Deploy, "").await?;
        Ok(StepOutcome::Done)
    }

    async fn tear_down(&self, node: &Node) -> Result<(), DriverError> {
        let _running = self.enter(node.uuid, FakeOp::TearDown, "").await?;
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
        let _running = self.enter(node.uuid, FakeOp::CleanStep, &step.step).await?;
        Ok(StepOutcome::Done)
    }

    async fn rescue(&self, node: &Node) -> Result<StepOutcome, DriverError> {
        let _running = self.enter(node.uuid, FakeOp::Rescue, "").await?;
        Ok(StepOutcome::Done)
    }

    async fn unrescue(&self, node: &Node) -> Result<(), DriverError> {
        let _running = self.enter(node.uuid, FakeOp::Unrescue, "").await?;
        Ok(())
    }
}

/// The `fake` inspect interface.
#[async_trait]
impl InspectInterface for FakeHardware {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _node: &Node) -> Result<(), DriverError> {
        Ok(())
    }

    async fn inspect(&self, node: &Node) -> Result<StepOutcome, DriverError> {
        let _running = self.enter(node.uuid, FakeOp::Inspect, "").await?;
        Ok(StepOutcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn node() -> Node {
        Node::new(Uuid::new_v4(), "fake-hardware", Utc::now())
    }

    #[tokio::test]
    async fn power_and_boot_device_change_at_once_and_are_recorded() {
        let hw = FakeHardware::new();
        let n = node();
        assert_eq!(hw.get_power_state(&n).await, Ok(None));
        hw.set_power_state(&n, PowerTarget::Reboot, None)
            .await
            .expect("reboot");
        assert_eq!(hw.get_power_state(&n).await, Ok(Some(PowerState::On)));
        hw.set_boot_device(&n, BootDevice::Pxe, true)
            .await
            .expect("pxe");
        assert_eq!(
            hw.get_boot_device(&n).await,
            Ok((Some(BootDevice::Pxe), false))
        );
        let err = hw
            .set_boot_device(&n, BootDevice::Disk, false)
            .await
            .expect_err("disk");
        assert_eq!(err.to_string(), "Invalid boot device disk specified.");
        let ops: Vec<_> = hw
            .calls_for(n.uuid)
            .into_iter()
            .map(|c| (c.op, c.detail))
            .collect();
        assert_eq!(ops[1], (FakeOp::SetPower, "rebooting".to_owned()));
        assert_eq!(ops.len(), 5);
    }

    #[tokio::test]
    async fn faults_hit_only_the_named_clean_step() {
        let hw = FakeHardware::new();
        let n = node();
        hw.fail_clean_step("erase_devices", "disk on fire");
        let steps = hw.clean_steps(&n);
        assert_eq!(
            hw.execute_clean_step(&n, &steps[0]).await,
            Ok(StepOutcome::Done)
        );
        assert_eq!(
            hw.execute_clean_step(&n, &steps[1]).await,
            Err(DriverError::Failed("disk on fire".to_owned()))
        );
        hw.clear_faults();
        assert_eq!(
            hw.execute_clean_step(&n, &steps[1]).await,
            Ok(StepOutcome::Done)
        );
    }

    #[tokio::test]
    async fn paused_operations_wait_for_release() {
        let hw = FakeHardware::new();
        hw.pause(FakeOp::Deploy);
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let hw = hw.clone();
                tokio::spawn(async move { hw.deploy(&node()).await })
            })
            .collect();
        while hw.concurrency(FakeOp::Deploy).0 < 3 {
            tokio::task::yield_now().await;
        }
        hw.release(FakeOp::Deploy, 1);
        hw.resume(FakeOp::Deploy);
        for task in tasks {
            assert_eq!(task.await.expect("join"), Ok(StepOutcome::Done));
        }
        assert_eq!(hw.concurrency(FakeOp::Deploy), (0, 3));
    }
}
