//! The executor: persists transitions and carries out the machine's actions.
//!
//! One node task holds the node lock from the verb (or event) that started it until the node
//! rests in a stable, wait or failed state. Each transition is one store transaction
//! (`commit_transition`: the node, its history row, and, for the transition that leaves the
//! node at rest, the lock release), so no reader ever sees a node at rest but still locked.
//! Driver results come back as machine events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Conductor, ConductorError, ProvisionRequest};
use crate::events::NodeEvent;
use crate::machine::{self, Action, Event, LastError, NodeView, Transition, Verb};
use crate::model::{HistoryEvent, Node};
use crate::store::StoreError;

/// `driver_internal_info` keys the executor keeps.
pub(super) const REQUESTED_CLEAN_STEPS: &str = "requested_clean_steps";
pub(super) const CLEAN_STEPS: &str = "clean_steps";
pub(super) const CLEAN_STEP_INDEX: &str = "clean_step_index";
pub(super) const REQUESTED_SERVICE_STEPS: &str = "requested_service_steps";
pub(super) const SERVICE_STEPS: &str = "service_steps";
pub(super) const SERVICE_STEP_INDEX: &str = "service_step_index";
pub(super) const DEPLOY_STEPS: &str = "deploy_steps";
pub(super) const DEPLOY_STEP_INDEX: &str = "deploy_step_index";

/// What a task changed besides the fields it always owns.
#[derive(Debug, Clone, Default)]
pub(super) struct TaskFlags {
    /// `instance_uuid` / `allocation_uuid` were cleared by this task.
    pub instance_changed: bool,
    /// Set once the task's last transition released the node lock (shared by clones, so
    /// `run_guarded` sees it after the task ran elsewhere): nobody must release it again,
    /// since the next holder has the same name.
    pub released: Arc<AtomicBool>,
    /// The node is not locked yet: the next save takes the lock in its transaction
    /// (`Store::reserve_and_commit`) and fails with `Locked`/`Stale` instead of merging.
    pub acquire: bool,
}

/// Whether a transition's remaining actions can produce no further event, so the node
/// rests once it is saved (the task's last transition).
fn at_rest(actions: &[Action]) -> bool {
    actions
        .iter()
        .all(|a| matches!(a, Action::StartWaitTimer(_) | Action::CancelWait(_)))
}

/// A node task ready to run: the locked node and the actions left to execute.
pub(super) struct Run {
    node: Node,
    actions: Vec<Action>,
    flags: TaskFlags,
}

/// Copies the fields a task owns from its working copy onto a fresher stored node, so a
/// concurrent operator change (maintenance, extra, ...) is kept.
fn merge_task_fields(mut fresh: Node, ours: &Node, flags: &TaskFlags) -> Node {
    fresh.provision_state.clone_from(&ours.provision_state);
    fresh
        .target_provision_state
        .clone_from(&ours.target_provision_state);
    fresh.provision_updated_at = ours.provision_updated_at;
    fresh.last_error.clone_from(&ours.last_error);
    fresh.power_state.clone_from(&ours.power_state);
    fresh
        .target_power_state
        .clone_from(&ours.target_power_state);
    fresh.boot_device.clone_from(&ours.boot_device);
    fresh.boot_device_persistent = ours.boot_device_persistent;
    fresh.clean_step.clone_from(&ours.clean_step);
    fresh.deploy_step.clone_from(&ours.deploy_step);
    fresh.service_step.clone_from(&ours.service_step);
    fresh
        .driver_internal_info
        .clone_from(&ours.driver_internal_info);
    fresh.instance_info.clone_from(&ours.instance_info);
    // Only the conductor writes it, under the node's lock.
    fresh
        .target_raid_config
        .clone_from(&ours.target_raid_config);
    fresh.inspection_started_at = ours.inspection_started_at;
    fresh.inspection_finished_at = ours.inspection_finished_at;
    if flags.instance_changed {
        fresh.instance_uuid = ours.instance_uuid;
        fresh.allocation_uuid = ours.allocation_uuid;
    }
    fresh
}

impl Conductor {
    /// Persists a node (merging on a concurrent change), updating `node.revision`.
    pub(super) async fn save(&self, node: &mut Node, flags: &TaskFlags) -> Result<(), StoreError> {
        self.save_with(node, flags, None, false).await
    }

    /// Persists a node, plus `history` and (when `release`) the lock release, in one store
    /// transaction; on a concurrent change, merges and retries the whole of it.
    pub(super) async fn save_with(
        &self,
        node: &mut Node,
        flags: &TaskFlags,
        history: Option<&HistoryEvent>,
        release: bool,
    ) -> Result<(), StoreError> {
        node.updated_at = Some(Utc::now());
        if flags.acquire {
            super::takeover::stamp_affinity(node, &self.config.name);
            let name = self.config.name.as_str();
            node.revision = self
                .store
                .reserve_and_commit(node, history, name, release)
                .await?;
            node.reservation = (!release).then(|| name.to_owned());
            if release {
                flags.released.store(true, Ordering::Release);
            }
            return Ok(());
        }
        let holder = release.then_some(self.config.name.as_str());
        for _ in 0..8 {
            super::takeover::stamp_affinity(node, &self.config.name);
            match self.store.commit_transition(node, history, holder).await {
                Ok(revision) => {
                    node.revision = revision;
                    if release {
                        flags.released.store(true, Ordering::Release);
                    }
                    return Ok(());
                }
                Err(StoreError::Stale { uuid }) => {
                    let fresh = self.store.get_node_by_uuid(uuid).await?.ok_or_else(|| {
                        StoreError::NotFound {
                            kind: "node",
                            ident: uuid.to_string(),
                        }
                    })?;
                    *node = merge_task_fields(fresh, node, flags);
                }
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Stale { uuid: node.uuid })
    }

    pub(super) fn history_event(
        &self,
        node: Uuid,
        at: DateTime<Utc>,
        severity: &str,
        kind: &str,
        text: String,
    ) -> HistoryEvent {
        HistoryEvent {
            uuid: Uuid::new_v4(),
            node_uuid: node,
            created_at: at,
            severity: severity.to_owned(),
            event_type: kind.to_owned(),
            event: text,
            conductor: Some(self.config.name.clone()),
            user: None,
        }
    }

    /// Applies a verb to a locked node and persists the transition.
    pub(super) async fn begin_verb(
        &self,
        node: Node,
        req: &ProvisionRequest,
    ) -> Result<Run, ConductorError> {
        self.begin_verb_with(node, req, TaskFlags::default()).await
    }

    /// [`Self::begin_verb`] on a node read without its lock: the verb's transition takes
    /// the lock in the same transaction. `Locked` or `Stale` when someone else got there
    /// first (nothing written; the caller takes the lock the slow way).
    pub(super) async fn begin_verb_unlocked(
        &self,
        node: Node,
        req: &ProvisionRequest,
    ) -> Result<Run, ConductorError> {
        let flags = TaskFlags {
            acquire: true,
            ..TaskFlags::default()
        };
        self.begin_verb_with(node, req, flags).await
    }

    async fn begin_verb_with(
        &self,
        mut node: Node,
        req: &ProvisionRequest,
        mut flags: TaskFlags,
    ) -> Result<Run, ConductorError> {
        let view = NodeView::from_node(&node).map_err(|e| ConductorError::BadRequest(e.0))?;
        let transition = machine::step(&view, &Event::Verb(req.verb), Utc::now())?;
        self.prepare_verb(&mut node, req).await?;
        let actions = self.commit(&mut node, transition, &mut flags).await?;
        Ok(Run {
            node,
            actions,
            flags,
        })
    }

    /// Applies an internal event to a locked node and persists the transition.
    pub(super) async fn begin_event(
        &self,
        node: Node,
        event: Event,
    ) -> Result<Run, ConductorError> {
        self.begin_event_with(node, event, TaskFlags::default())
            .await
    }

    /// [`Self::begin_event`] on a node read without its lock: the transition takes the
    /// lock in the same transaction; `Locked` or `Stale` (nothing written) when someone
    /// else got there first.
    pub(super) async fn begin_event_unlocked(
        &self,
        node: Node,
        event: Event,
    ) -> Result<Run, ConductorError> {
        let flags = TaskFlags {
            acquire: true,
            ..TaskFlags::default()
        };
        self.begin_event_with(node, event, flags).await
    }

    async fn begin_event_with(
        &self,
        mut node: Node,
        event: Event,
        mut flags: TaskFlags,
    ) -> Result<Run, ConductorError> {
        let view = NodeView::from_node(&node).map_err(|e| ConductorError::BadRequest(e.0))?;
        let transition = machine::step(&view, &event, Utc::now())?;
        let actions = self.commit(&mut node, transition, &mut flags).await?;
        Ok(Run {
            node,
            actions,
            flags,
        })
    }

    /// Node changes a verb brings besides its state (stored with the transient state).
    async fn prepare_verb(
        &self,
        node: &mut Node,
        req: &ProvisionRequest,
    ) -> Result<(), ConductorError> {
        // A new operation: the agent progress of the last one must not show as this one's.
        node.driver_internal_info.remove(crate::hub::PROGRESS_KEY);
        match req.verb {
            Verb::Deploy | Verb::Rebuild => {
                if let Some(configdrive) = &req.configdrive {
                    node.instance_info
                        .insert("configdrive".into(), configdrive.clone());
                }
                node.instance_info
                    .insert("image_type".into(), "whole-disk".into());
                if let Some(allocation) = node.allocation_uuid
                    && let Some(allocation) =
                        self.store.get_allocation(&allocation.to_string()).await?
                {
                    node.instance_info
                        .insert("traits".into(), json!(allocation.traits));
                }
                if let Some(steps) = &req.deploy_steps {
                    node.driver_internal_info
                        .insert("user_deploy_steps".into(), json!(steps));
                }
                // What runs is fixed now, checked (400 before anything boots) and saved.
                let plan = self.deploy_plan(node, req.deploy_steps.as_deref()).await?;
                node.deploy_step = plan
                    .first()
                    .and_then(|s| serde_json::to_value(s).ok())
                    .and_then(|v| v.as_object().cloned());
                node.driver_internal_info
                    .insert(DEPLOY_STEPS.into(), json!(plan));
                node.driver_internal_info.remove(DEPLOY_STEP_INDEX);
            }
            Verb::Clean => {
                let steps = req.clean_steps.clone().unwrap_or_default();
                node.driver_internal_info
                    .insert(REQUESTED_CLEAN_STEPS.into(), Value::Array(steps));
                if let Some(disable) = req.disable_ramdisk {
                    node.driver_internal_info
                        .insert("disable_ramdisk".into(), disable.into());
                }
            }
            Verb::Service => {
                let steps = req.service_steps.clone().unwrap_or_default();
                node.driver_internal_info
                    .insert(REQUESTED_SERVICE_STEPS.into(), Value::Array(steps));
            }
            Verb::Rescue => {
                if let Some(password) = &req.rescue_password {
                    node.instance_info
                        .insert("rescue_password".into(), password.clone().into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Persists a transition (node and history row in one store transaction) and returns
    /// the actions left to execute. When the transition leaves the node at rest, its timer
    /// actions run first and the same transaction releases the lock (`flags.released`);
    /// nothing is left to execute then.
    pub(super) async fn commit(
        &self,
        node: &mut Node,
        t: Transition,
        flags: &mut TaskFlags,
    ) -> Result<Vec<Action>, StoreError> {
        let mut history = None;
        let mut rest = Vec::with_capacity(t.actions.len());
        for action in t.actions {
            match action {
                Action::RecordHistory {
                    severity,
                    event_type,
                    event,
                } => {
                    history = Some(self.history_event(
                        node.uuid,
                        t.at,
                        severity.as_str(),
                        event_type,
                        event,
                    ));
                }
                Action::ClearInstance => {
                    self.clear_instance(node).await?;
                    flags.instance_changed = true;
                }
                other => rest.push(other),
            }
        }
        node.provision_state = t.provision_state.as_str().to_owned();
        node.target_provision_state = t.target_provision_state.map(|s| s.as_str().to_owned());
        node.provision_updated_at = Some(t.at);
        match t.last_error {
            LastError::Keep => {}
            LastError::Clear => node.last_error = None,
            LastError::Set(e) => node.last_error = Some(e),
        }
        if t.provision_state.is_stable() {
            node.deploy_step = None;
            node.clean_step = None;
            node.service_step = None;
        }
        let release = at_rest(&rest);
        if release {
            // Timers first: once the lock is gone the next task may arm or cancel its own,
            // which a late arm of ours would replace. A timer armed for a transition that
            // then fails to save finds another `provision_updated_at` and does nothing.
            for action in rest.drain(..) {
                self.execute_timer(node, action);
            }
        }
        self.save_with(node, flags, history.as_ref(), release)
            .await?;
        flags.acquire = false;
        tracing::info!(
            node = %node.uuid,
            from = %t.from,
            to = %t.provision_state,
            target = ?t.target_provision_state.map(|s| s.as_str()),
            released = release,
            "provision state changed"
        );
        let event = NodeEvent::transition(
            node,
            t.from.as_str(),
            t.provision_state.is_failure(),
            &self.config.name,
        );
        self.config.events.publish(event);
        Ok(rest)
    }

    /// Carries out a timer action (the only actions that produce no event).
    fn execute_timer(&self, node: &Node, action: Action) {
        match action {
            Action::StartWaitTimer(phase) => {
                self.arm_wait_timer(node.uuid, phase, node.provision_updated_at);
            }
            Action::CancelWait(_) => self.cancel_wait_timer(node.uuid, None),
            other => tracing::error!(node = %node.uuid, action = ?other, "not a timer action"),
        }
    }

    /// Undeploy: forgets the instance and deletes the node's allocation.
    async fn clear_instance(&self, node: &mut Node) -> Result<(), StoreError> {
        if let Some(allocation) = node.allocation_uuid.take() {
            match self.store.delete_allocation(allocation).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        node.instance_info.clear();
        node.instance_uuid = None;
        node.instance_name = None;
        Ok(())
    }

    /// Runs a node task to its end and releases the lock, also after an error or a panic
    /// (the node is then failed with a `last_error` saying so). A task whose last transition
    /// already released the lock is left alone.
    pub(super) async fn run_guarded(self: Arc<Self>, uuid: Uuid, run: Run) {
        let released = run.flags.released.clone();
        let this = self.clone();
        let outcome = tokio::spawn(async move { this.run(run).await }).await;
        let reason = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(err)) => {
                tracing::error!(node = %uuid, error = %err, "node task failed");
                Some(format!("Internal error while processing the node: {err}"))
            }
            Err(join) => {
                tracing::error!(node = %uuid, error = %join, "node task panicked");
                Some("Internal error: the node task crashed".to_owned())
            }
        };
        if released.load(Ordering::Acquire) {
            return;
        }
        if let Some(reason) = reason
            && self.fail_locked(uuid, reason).await
        {
            return;
        }
        self.release(uuid).await;
    }

    /// Fails a node we hold the lock of, if it is still running an operation. Returns
    /// whether that released the lock.
    pub(super) async fn fail_locked(&self, uuid: Uuid, reason: String) -> bool {
        let mut flags = TaskFlags::default();
        let result = async {
            let Some(mut node) = self.store.get_node_by_uuid(uuid).await? else {
                return Ok(());
            };
            let Ok(view) = NodeView::from_node(&node) else {
                return Ok(());
            };
            if let Ok(t) = machine::step(&view, &Event::Failed(reason), Utc::now()) {
                let rest = self.commit(&mut node, t, &mut flags).await?;
                for action in rest {
                    if let Action::CancelWait(_) = action {
                        self.cancel_wait_timer(uuid, None);
                    }
                }
            }
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(err) = result {
            tracing::error!(node = %uuid, error = %err, "failing node after an error failed");
        }
        flags.released.load(Ordering::Acquire)
    }

    async fn run(&self, run: Run) -> Result<(), ConductorError> {
        let Run {
            mut node,
            mut actions,
            mut flags,
        } = run;
        loop {
            let mut next = None;
            for action in actions {
                if let Some(event) = self.execute(&mut node, action).await? {
                    next = Some(event);
                }
            }
            let Some(event) = next else { return Ok(()) };
            let view = NodeView::from_node(&node).map_err(|e| ConductorError::BadRequest(e.0))?;
            let transition = machine::step(&view, &event, Utc::now())?;
            actions = self.commit(&mut node, transition, &mut flags).await?;
        }
    }
}
