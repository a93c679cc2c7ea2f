//! The steps a node task carries out: the machine's actions on the drivers (power, boot
//! device, the agent's deploy and clean work), each returning the machine event it produced.
//! `task.rs` holds the transactions and the lock around them.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::task::{
    CLEAN_STEP_INDEX, CLEAN_STEPS, DEPLOY_STEP_INDEX, DEPLOY_STEPS, REQUESTED_CLEAN_STEPS,
    REQUESTED_SERVICE_STEPS, SERVICE_STEP_INDEX, SERVICE_STEPS, TaskFlags,
};
use super::{Conductor, ConductorError};
use crate::deploy_templates;
use crate::drivers::{
    BootDevice, CleanStep, DriverError, NodeDrivers, PowerState, PowerTarget, StepOutcome,
    resolve_step,
};
use crate::machine::{Action, Event, Phase};
use crate::model::Node;

impl Conductor {
    /// Executes one action; returns the event it produced, if any.
    pub(super) async fn execute(
        &self,
        node: &mut Node,
        action: Action,
    ) -> Result<Option<Event>, ConductorError> {
        let drivers = match self.drivers.resolve(node) {
            Ok(d) => d,
            Err(e) => return Ok(Some(Event::Failed(e.to_string()))),
        };
        let event = match action {
            Action::Verify => {
                let result = match drivers.power.validate(node) {
                    Ok(()) => drivers.power.get_power_state(node).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(state) => {
                        node.power_state = state.map(|s| s.as_str().to_owned());
                        Some(Event::StepDone)
                    }
                    Err(e) => Some(Event::Failed(format!(
                        "Failed to get power state for node {}. Error: {e}",
                        node.uuid
                    ))),
                }
            }
            Action::Deploy { .. } => {
                let _slot = self.deploy_slots.acquire().await;
                Some(self.run_deploy(node, &drivers, false).await)
            }
            Action::Resume(Phase::Deploy) => Some(self.run_deploy(node, &drivers, true).await),
            Action::Clean { manual } => {
                let _slot = self.clean_slots.acquire().await;
                Some(self.run_clean(node, &drivers, manual, false).await)
            }
            Action::Resume(Phase::Clean) => {
                let _slot = self.clean_slots.acquire().await;
                Some(self.run_clean(node, &drivers, false, true).await)
            }
            Action::Teardown => {
                let result = async {
                    self.power(node, &drivers, PowerTarget::Off).await?;
                    drivers.deploy.tear_down(node).await
                }
                .await;
                Some(match result {
                    Ok(()) => Event::StepDone,
                    Err(e) => Event::Failed(format!(
                        "Failed to tear down node {}. Error: {e}",
                        node.uuid
                    )),
                })
            }
            Action::Inspect => {
                node.inspection_started_at = Some(Utc::now());
                node.inspection_finished_at = None;
                Some(match drivers.inspect.inspect(node).await {
                    Ok(StepOutcome::Done) => {
                        node.inspection_finished_at = Some(Utc::now());
                        Event::StepDone
                    }
                    Ok(StepOutcome::Wait) => Event::StepWaiting,
                    Err(e) => Event::Failed(format!("Failed to inspect hardware. Reason: {e}")),
                })
            }
            Action::Resume(Phase::Inspect) => {
                node.inspection_finished_at = Some(Utc::now());
                Some(Event::StepDone)
            }
            Action::Adopt => Some(match drivers.deploy.validate(node) {
                Ok(()) => Event::StepDone,
                Err(e) => Event::Failed(format!(
                    "Error while attempting to adopt node {}: {e}",
                    node.uuid
                )),
            }),
            Action::Rescue => Some(match drivers.deploy.rescue(node).await {
                Ok(StepOutcome::Done) => Event::StepDone,
                Ok(StepOutcome::Wait) => Event::StepWaiting,
                Err(e) => Event::Failed(format!("Failed to rescue node {}: {e}", node.uuid)),
            }),
            Action::Unrescue => Some(match drivers.deploy.unrescue(node).await {
                Ok(()) => {
                    node.instance_info.remove("rescue_password");
                    Event::StepDone
                }
                Err(e) => Event::Failed(format!("Failed to unrescue node {}: {e}", node.uuid)),
            }),
            Action::Service => Some(self.run_service(node, &drivers, false).await),
            Action::Resume(Phase::Service) => Some(self.run_service(node, &drivers, true).await),
            Action::Resume(_) => Some(Event::StepDone),
            Action::StartWaitTimer(phase) => {
                self.arm_wait_timer(node.uuid, phase, node.provision_updated_at);
                None
            }
            Action::CancelWait(_) => {
                self.cancel_wait_timer(node.uuid, None);
                None
            }
            Action::RecordHistory { .. } | Action::ClearInstance => None,
        };
        Ok(event)
    }

    /// Changes power through the driver and records the new state on the node. The agent
    /// session on the machine (if any) ends: its token is refused from now on.
    async fn power(
        &self,
        node: &mut Node,
        drivers: &NodeDrivers,
        target: PowerTarget,
    ) -> Result<(), DriverError> {
        self.end_agent_session(node.uuid, false).await?;
        self.drive_power(node, drivers, target).await
    }

    async fn drive_power(
        &self,
        node: &mut Node,
        drivers: &NodeDrivers,
        target: PowerTarget,
    ) -> Result<(), DriverError> {
        drivers.power.set_power_state(node, target, None).await?;
        node.power_state = Some(target.resulting_state().as_str().to_owned());
        Ok(())
    }

    /// The machine leaves its agent session: a power change ends it; a boot into the agent
    /// (`booting_agent`) also opens the window in which the next lookup gets a token.
    pub(super) async fn end_agent_session(
        &self,
        node: Uuid,
        booting_agent: bool,
    ) -> Result<(), DriverError> {
        let Some(hub) = self.drivers.agent_hub() else {
            return Ok(());
        };
        let ended = if booting_agent {
            hub.boot_requested(node).await
        } else {
            hub.session_ended(node).await
        };
        // A power change whose session could not end would leave the old token accepted.
        ended.map_err(|e| DriverError::Failed(format!("the agent session could not be ended: {e}")))
    }

    /// Boots the agent ramdisk: one-time PXE, then power on (or reboot when running).
    async fn boot_ramdisk(
        &self,
        node: &mut Node,
        drivers: &NodeDrivers,
    ) -> Result<(), DriverError> {
        steer_boot(node, drivers, BootDevice::Pxe, false).await?;
        // The machine's power as the BMC says (the stored one may be older than an agent
        // boot by inspection): a running machine must be rebooted, or the agent of its old
        // boot would stay and no new session could begin.
        let on = match drivers.power.get_power_state(node).await {
            Ok(Some(state)) => state == PowerState::On,
            _ => node.power_state.as_deref() == Some(PowerState::On.as_str()),
        };
        self.end_agent_session(node.uuid, true).await?;
        self.drive_power(
            node,
            drivers,
            if on {
                PowerTarget::Reboot
            } else {
                PowerTarget::On
            },
        )
        .await
    }

    /// The steps a deploy runs (`deploy_templates::deploy_plan`): the driver's, those of the
    /// deploy templates named by the instance's traits, and the operator's `deploy_steps`;
    /// a 400 when they do not fit together.
    pub(super) async fn deploy_plan(
        &self,
        node: &Node,
        requested: Option<&[Value]>,
    ) -> Result<Vec<CleanStep>, ConductorError> {
        let bad = |e: String| {
            ConductorError::BadRequest(format!(
                "Failed to validate deploy steps for node {}: {e}",
                node.uuid
            ))
        };
        let drivers = self
            .drivers
            .resolve(node)
            .map_err(|e| ConductorError::BadRequest(e.to_string()))?;
        let offered = drivers.deploy.deploy_steps(node);
        let user = requested
            .unwrap_or_default()
            .iter()
            .map(|r| resolve_step("Deploy", &offered, r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let traits =
            deploy_templates::instance_traits(&node.instance_info, &node.traits).map_err(bad)?;
        let mut templates = Vec::new();
        for name in &traits {
            if let Some(t) = self.store.get_deploy_template_by_name(name).await? {
                templates.push(t);
            }
        }
        let plan = super::deploy_plan::deploy_plan(&offered, &templates, &user).map_err(bad)?;
        if !plan
            .iter()
            .any(|s| s.interface == "deploy" && s.step == "deploy")
        {
            return Err(bad(
                "deploy step deploy.deploy writes the instance and cannot be disabled".to_owned(),
            ));
        }
        drivers
            .deploy
            .check_deploy_plan(node, &plan)
            .map_err(|e| bad(e.to_string()))?;
        Ok(plan)
    }

    /// A deploy: the saved plan's steps in order in the ramdisk (booted first unless fast
    /// track finds an agent), then the instance booted from its disk; a step that waits for
    /// the agent leaves `wait call-back` and comes back here with `resume`.
    async fn run_deploy(&self, node: &mut Node, drivers: &NodeDrivers, resume: bool) -> Event {
        let (steps, start) = StepRun::Deploy.saved(node);
        let (steps, start) = if resume || !steps.is_empty() {
            (steps, start)
        } else {
            // A deploy requested before plans were saved runs the interface's own deploy.
            (vec![CleanStep::new("deploy", "deploy", 100)], 0)
        };
        let ramdisk = drivers.deploy.needs_ramdisk();
        if ramdisk
            && !resume
            && !drivers.deploy.fast_track(node).await
            && let Err(e) = self.boot_ramdisk(node, drivers).await
        {
            return Event::Failed(format!(
                "Failed to prepare node {} for deployment: {e}",
                node.uuid
            ));
        }
        if let Some(stop) = self
            .walk(node, drivers, StepRun::Deploy, &steps, start)
            .await
        {
            return stop;
        }
        for key in [DEPLOY_STEPS, DEPLOY_STEP_INDEX] {
            node.driver_internal_info.remove(key);
        }
        node.deploy_step = None;
        if ramdisk && let Err(e) = self.boot_instance(node, drivers).await {
            return Event::Failed(format!(
                "Deploy step deploy.deploy failed on node {}: the instance could not be \
                 booted: {e}",
                node.uuid
            ));
        }
        Event::StepDone
    }

    /// Boots the instance from its disk: persistent disk boot, then a reboot (the end of a
    /// deploy and of a service).
    async fn boot_instance(
        &self,
        node: &mut Node,
        drivers: &NodeDrivers,
    ) -> Result<(), DriverError> {
        steer_boot(node, drivers, BootDevice::Disk, true).await?;
        self.power(node, drivers, PowerTarget::Reboot).await
    }

    /// `service`: the requested steps on an active node, in the order given, in the ramdisk
    /// (booted first, the instance booted again at the end); a step that waits for the
    /// agent leaves `service wait` and comes back here with `resume`.
    async fn run_service(&self, node: &mut Node, drivers: &NodeDrivers, resume: bool) -> Event {
        let (steps, start) = if resume {
            StepRun::Service.saved(node)
        } else {
            let offered = drivers.deploy.service_steps(node);
            let requested = node
                .driver_internal_info
                .get(REQUESTED_SERVICE_STEPS)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let plan = requested
                .iter()
                .map(|r| resolve_step("Service", &offered, r))
                .collect::<Result<Vec<_>, _>>();
            match plan {
                Ok(steps) if !steps.is_empty() => (steps, 0),
                Ok(_) => {
                    return Event::Failed(format!(
                        "Node {} has no service steps to run",
                        node.uuid
                    ));
                }
                Err(e) => {
                    return Event::Failed(format!(
                        "Failed to validate service steps for node {}: {e}",
                        node.uuid
                    ));
                }
            }
        };
        let ramdisk = drivers.deploy.needs_ramdisk();
        if ramdisk
            && !resume
            && let Err(e) = self.boot_ramdisk(node, drivers).await
        {
            return Event::Failed(format!(
                "Failed to prepare node {} for servicing: {e}",
                node.uuid
            ));
        }
        if let Some(stop) = self
            .walk(node, drivers, StepRun::Service, &steps, start)
            .await
        {
            return stop;
        }
        for key in [REQUESTED_SERVICE_STEPS, SERVICE_STEPS, SERVICE_STEP_INDEX] {
            node.driver_internal_info.remove(key);
        }
        node.service_step = None;
        if ramdisk && let Err(e) = self.boot_instance(node, drivers).await {
            return Event::Failed(format!(
                "Failed to boot the instance of node {} after servicing: {e}",
                node.uuid
            ));
        }
        Event::StepDone
    }

    /// Runs `steps` from `start` on the deploy interface; `Some(event)` when a step waits
    /// for the agent (the list and its position saved for the resume) or fails, `None` when
    /// every step is done.
    async fn walk(
        &self,
        node: &mut Node,
        drivers: &NodeDrivers,
        run: StepRun,
        steps: &[CleanStep],
        start: usize,
    ) -> Option<Event> {
        for (index, step) in steps.iter().enumerate().skip(start) {
            run.show(
                node,
                serde_json::to_value(step)
                    .ok()
                    .and_then(|v| v.as_object().cloned()),
            );
            let outcome = match run {
                StepRun::Clean => drivers.deploy.execute_clean_step(node, step).await,
                StepRun::Service => drivers.deploy.execute_service_step(node, step).await,
                StepRun::Deploy => drivers.deploy.execute_deploy_step(node, step).await,
            };
            match outcome {
                Ok(StepOutcome::Done) => {}
                Ok(StepOutcome::Wait) => {
                    let (list, position) = run.keys();
                    node.driver_internal_info.insert(list.into(), json!(steps));
                    node.driver_internal_info
                        .insert(position.into(), index.into());
                    return Some(Event::StepWaiting);
                }
                Err(e) => return Some(Event::Failed(run.failure(node, step, &e))),
            }
        }
        None
    }

    /// The steps a cleaning runs.
    fn clean_plan(
        &self,
        node: &Node,
        drivers: &NodeDrivers,
        manual: bool,
    ) -> Result<Vec<CleanStep>, String> {
        let offered = drivers.deploy.clean_steps(node);
        if manual {
            let requested = node
                .driver_internal_info
                .get(REQUESTED_CLEAN_STEPS)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            return requested
                .iter()
                .map(|r| resolve_step("Clean", &offered, r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    format!("Failed to validate clean steps for node {}: {e}", node.uuid)
                });
        }
        if node.automated_clean == Some(false) {
            return Ok(Vec::new());
        }
        let mut steps: Vec<_> = offered.into_iter().filter(|s| s.priority > 0).collect();
        steps.sort_by_key(|s| std::cmp::Reverse(s.priority));
        Ok(steps)
    }

    async fn run_clean(
        &self,
        node: &mut Node,
        drivers: &NodeDrivers,
        manual: bool,
        resume: bool,
    ) -> Event {
        let (steps, start) = if resume {
            StepRun::Clean.saved(node)
        } else {
            match self.clean_plan(node, drivers, manual) {
                Ok(steps) => (steps, 0),
                Err(reason) => return Event::Failed(reason),
            }
        };
        let ramdisk = drivers.deploy.needs_ramdisk() && !steps.is_empty();
        if ramdisk
            && !resume
            && !drivers.deploy.fast_track(node).await
            && let Err(e) = self.boot_ramdisk(node, drivers).await
        {
            return Event::Failed(format!(
                "Failed to prepare node {} for cleaning: {e}",
                node.uuid
            ));
        }
        if let Some(stop) = self
            .walk(node, drivers, StepRun::Clean, &steps, start)
            .await
        {
            return stop;
        }
        for key in [
            REQUESTED_CLEAN_STEPS,
            CLEAN_STEPS,
            CLEAN_STEP_INDEX,
            "disable_ramdisk",
        ] {
            node.driver_internal_info.remove(key);
        }
        node.clean_step = None;
        if ramdisk
            && !drivers.deploy.fast_track(node).await
            && let Err(e) = self.power(node, drivers, PowerTarget::Off).await
        {
            return Event::Failed(format!(
                "Failed to tear down cleaning on node {}: {e}",
                node.uuid
            ));
        }
        Event::StepDone
    }

    /// Completes a power change started by `set_power` (we hold the lock).
    pub(super) async fn run_power(
        self: Arc<Self>,
        mut node: Node,
        target: PowerTarget,
        timeout: Option<Duration>,
    ) {
        let uuid = node.uuid;
        let result =
            async {
                self.end_agent_session(uuid, false).await?;
                let drivers = self.drivers.resolve(&node)?;
                let call = drivers.power.set_power_state(&node, target, timeout);
                match timeout {
                    Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| {
                        DriverError::Timeout {
                            operation: format!("power {target}"),
                            timeout: limit,
                        }
                    })?,
                    None => call.await,
                }?;
                Ok::<_, DriverError>(drivers.power.name())
            }
            .await;
        let (severity, text) = match &result {
            Ok(_) => {
                node.power_state = Some(target.resulting_state().as_str().to_owned());
                (
                    "INFO",
                    format!(
                        "power state changed to {}",
                        target.resulting_state().as_str()
                    ),
                )
            }
            Err(e) => {
                let msg = format!("Failed to change power state to '{target}'. Error: {e}");
                node.last_error = Some(msg.clone());
                ("ERROR", msg)
            }
        };
        node.target_power_state = None;
        let event = self.history_event(uuid, Utc::now(), severity, "power", text);
        // State, history and lock release together; on failure the lock is still ours.
        if let Err(err) = self
            .save_with(&mut node, &TaskFlags::default(), Some(&event), true)
            .await
        {
            tracing::error!(node = %uuid, error = %err, "saving power state failed");
            self.release(uuid).await;
        }
    }
}

/// Sets the next boot device where the management interface can (a machine that cannot be
/// steered boots as it is set up to).
async fn steer_boot(
    node: &Node,
    drivers: &NodeDrivers,
    device: BootDevice,
    persistent: bool,
) -> Result<(), DriverError> {
    if drivers
        .management
        .supported_boot_devices(node)
        .contains(&device)
    {
        drivers
            .management
            .set_boot_device(node, device, persistent)
            .await?;
    }
    Ok(())
}

/// A run over a list of steps: where it keeps the list and its position in
/// `driver_internal_info`, and which node field shows the running step.
#[derive(Debug, Clone, Copy)]
enum StepRun {
    Clean,
    Service,
    Deploy,
}

impl StepRun {
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            Self::Clean => (CLEAN_STEPS, CLEAN_STEP_INDEX),
            Self::Service => (SERVICE_STEPS, SERVICE_STEP_INDEX),
            Self::Deploy => (DEPLOY_STEPS, DEPLOY_STEP_INDEX),
        }
    }

    /// The `last_error` of a step that failed, worded as Ironic's (`Node X failed step
    /// {...}` for cleaning, `Deploy step deploy.deploy failed on node X` for a deploy).
    fn failure(self, node: &Node, step: &CleanStep, e: &DriverError) -> String {
        let (uuid, interface, name) = (node.uuid, &step.interface, &step.step);
        match self {
            Self::Clean => {
                format!(
                    "Node {uuid} failed step {{'interface': '{interface}', 'step': '{name}'}}: {e}"
                )
            }
            Self::Service => format!(
                "Node {uuid} failed service step {{'interface': '{interface}', 'step': '{name}'}}: {e}"
            ),
            Self::Deploy => format!("Deploy step {interface}.{name} failed on node {uuid}: {e}"),
        }
    }

    fn show(self, node: &mut Node, step: Option<crate::model::JsonMap>) {
        match self {
            Self::Clean => node.clean_step = step,
            Self::Service => node.service_step = step,
            Self::Deploy => node.deploy_step = step,
        }
    }

    /// The saved list and the index of the step after the one that waited (a resume).
    fn saved(self, node: &Node) -> (Vec<CleanStep>, usize) {
        let (list, position) = self.keys();
        let steps = node
            .driver_internal_info
            .get(list)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let index = node
            .driver_internal_info
            .get(position)
            .and_then(Value::as_u64);
        (steps, index.map_or(0, |i| i as usize + 1))
    }
}
