//! The node lifecycle as a pure state machine (Ironic's provision state machine).
//!
//! `step(node, event, now)` decides what an event does to a node: the new provision state,
//! its target, the `last_error` change and the [`Action`]s the conductor must carry out.
//! Nothing here does IO, reads a clock or touches tokio/sqlx/axum; the conductor executes the
//! actions and feeds their results back as events (`StepDone`, `StepWaiting`, `Failed`, ...).
//!
//! Rules kept here (contract sections 7.1 and 7.3):
//! - `target_provision_state` is the stable state aimed at while transient, stays set in wait,
//!   hold and `* failed` states, and is null in every stable state;
//! - `clean failed` never reaches `available` without an operator verb (`manage`, then
//!   `provide`);
//! - a wait state is left only by the agent's callback, `abort`, a failure, a timeout, or
//!   (for `wait call-back` and rescue states) an undeploy;
//! - undeploy goes `deleting` -> `cleaning` -> `available`, clearing the instance and freeing
//!   the allocation.

mod state;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use state::{AgentLookup, ParseStateError, Phase, ProvisionState, StateKind, Verb};

use crate::model::Node;

/// What the machine needs to know about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub uuid: Uuid,
    pub provision_state: ProvisionState,
    pub target: Option<ProvisionState>,
    pub maintenance: bool,
    pub protected: bool,
}

impl NodeView {
    /// Reads the view from a stored node; fails on an unknown state string.
    pub fn from_node(node: &Node) -> Result<Self, ParseStateError> {
        let target = match node.target_provision_state.as_deref() {
            None | Some("") => None,
            Some(s) => Some(s.parse()?),
        };
        Ok(Self {
            uuid: node.uuid,
            provision_state: node.provision_state.parse()?,
            target,
            maintenance: node.maintenance,
            protected: node.protected,
        })
    }
}

/// Something that happened to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An operator asked for a verb.
    Verb(Verb),
    /// The work of the current transient state finished.
    StepDone,
    /// The work of the current transient state continues on the agent.
    StepWaiting,
    /// The agent reported that the awaited work finished.
    AgentCallback,
    /// The current operation failed; the reason becomes `last_error`.
    Failed(String),
    /// A wait state outlived its timeout.
    Timeout,
}

/// How a transition changes `last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastError {
    Keep,
    Clear,
    Set(String),
}

/// History severity, as Ironic's node history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "INFO",
            Self::Error => "ERROR",
        }
    }
}

/// Work the conductor must do after persisting a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Record the transition in node history.
    RecordHistory {
        severity: Severity,
        event_type: &'static str,
        event: String,
    },
    /// Check the BMC answers (read the power state).
    Verify,
    /// Deploy the instance (copy allocation traits, write the image, boot from disk).
    Deploy {
        rebuild: bool,
    },
    /// Power off and tear the instance down.
    Teardown,
    /// Clear `instance_info` and `instance_uuid` and free the allocation.
    ClearInstance,
    /// Run clean steps: automated (on provide/undeploy) or the operator's (manual).
    Clean {
        manual: bool,
    },
    Inspect,
    Adopt,
    Rescue,
    Unrescue,
    Service,
    /// Arm the timeout of the wait state just entered.
    StartWaitTimer(Phase),
    /// The agent finished; complete the phase.
    Resume(Phase),
    /// Give up waiting on the agent (abort).
    CancelWait(Phase),
}

/// The outcome of an accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: ProvisionState,
    pub provision_state: ProvisionState,
    pub target_provision_state: Option<ProvisionState>,
    pub last_error: LastError,
    /// The new `provision_updated_at`.
    pub at: DateTime<Utc>,
    pub actions: Vec<Action>,
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The verb is not valid in this state (HTTP 400).
    #[error(
        "The requested action \"{action}\" can not be performed on node \"{node}\" while it is in state \"{state}\"."
    )]
    InvalidState {
        action: &'static str,
        node: Uuid,
        state: ProvisionState,
    },
    /// The verb is not allowed while the node is in maintenance (HTTP 400).
    #[error(
        "The {op} operation can't be performed on node {node} because it's in maintenance mode."
    )]
    Maintenance { op: &'static str, node: Uuid },
    /// The node is protected (HTTP 403).
    #[error("Node {node} is protected and cannot be undeployed, rebuilt or deleted")]
    Protected { node: Uuid },
    /// An internal event that cannot happen in this state (a conductor bug or a stale task).
    #[error("event {event} is not valid for node {node} in state \"{state}\"")]
    UnexpectedEvent {
        event: &'static str,
        node: Uuid,
        state: ProvisionState,
    },
}

/// The default target of an operation, used when a stored node lacks one.
fn phase_target(phase: Phase) -> ProvisionState {
    match phase {
        Phase::Verify | Phase::Inspect => ProvisionState::Manageable,
        Phase::Deploy | Phase::Adopt | Phase::Unrescue | Phase::Service => ProvisionState::Active,
        Phase::Teardown | Phase::Clean => ProvisionState::Available,
        Phase::Rescue => ProvisionState::Rescue,
    }
}

/// Where a verb leads from a state: the new state, its target, and the actions to start.
/// `None` when Ironic's machine has no such transition.
fn verb_transition(
    state: ProvisionState,
    verb: Verb,
    target: Option<ProvisionState>,
) -> Option<(ProvisionState, Option<ProvisionState>, Vec<Action>)> {
    use ProvisionState as S;
    let keep_target = |phase| Some(target.unwrap_or(phase_target(phase)));
    Some(match (verb, state) {
        (Verb::Manage, S::Enroll) => (S::Verifying, Some(S::Manageable), vec![Action::Verify]),
        (Verb::Manage, S::Available | S::CleanFailed | S::InspectFailed | S::AdoptFailed) => {
            (S::Manageable, None, vec![])
        }
        (Verb::Provide, S::Manageable) => (
            S::Cleaning,
            Some(S::Available),
            vec![Action::Clean { manual: false }],
        ),
        (Verb::Clean, S::Manageable) => (
            S::Cleaning,
            Some(S::Manageable),
            vec![Action::Clean { manual: true }],
        ),
        (Verb::Inspect, S::Manageable | S::InspectFailed) => {
            (S::Inspecting, Some(S::Manageable), vec![Action::Inspect])
        }
        (Verb::Deploy, S::Available | S::DeployFailed) => (
            S::Deploying,
            Some(S::Active),
            vec![Action::Deploy { rebuild: false }],
        ),
        (Verb::Rebuild, S::Active | S::DeployFailed | S::Error) => (
            S::Deploying,
            Some(S::Active),
            vec![Action::Deploy { rebuild: true }],
        ),
        (
            Verb::Undeploy,
            S::Active
            | S::DeployWait
            | S::DeployFailed
            | S::Error
            | S::Rescue
            | S::RescueWait
            | S::RescueFailed
            | S::UnrescueFailed,
        ) => {
            let mut actions = Vec::new();
            if let Some(phase) = state.phase().filter(|_| state.kind() == StateKind::Wait) {
                actions.push(Action::CancelWait(phase));
            }
            actions.push(Action::Teardown);
            (S::Deleting, Some(S::Available), actions)
        }
        (Verb::Abort, S::DeployWait | S::DeployHold) => (
            S::DeployFailed,
            keep_target(Phase::Deploy),
            vec![Action::CancelWait(Phase::Deploy)],
        ),
        (Verb::Abort, S::CleanWait | S::CleanHold) => (
            S::CleanFailed,
            keep_target(Phase::Clean),
            vec![Action::CancelWait(Phase::Clean)],
        ),
        (Verb::Abort, S::InspectWait) => (
            S::InspectFailed,
            keep_target(Phase::Inspect),
            vec![Action::CancelWait(Phase::Inspect)],
        ),
        (Verb::Abort, S::RescueWait) => (
            S::RescueFailed,
            keep_target(Phase::Rescue),
            vec![Action::CancelWait(Phase::Rescue)],
        ),
        (Verb::Abort, S::ServiceWait | S::ServiceHold) => (
            S::ServiceFailed,
            keep_target(Phase::Service),
            vec![Action::CancelWait(Phase::Service)],
        ),
        (Verb::Adopt, S::Manageable | S::AdoptFailed) => {
            (S::Adopting, Some(S::Active), vec![Action::Adopt])
        }
        (Verb::Rescue, S::Active | S::Rescue | S::RescueFailed | S::UnrescueFailed) => {
            (S::Rescuing, Some(S::Rescue), vec![Action::Rescue])
        }
        (Verb::Unrescue, S::Rescue | S::RescueFailed | S::UnrescueFailed) => {
            (S::Unrescuing, Some(S::Active), vec![Action::Unrescue])
        }
        (Verb::Unhold, S::DeployHold) => (
            S::DeployWait,
            keep_target(Phase::Deploy),
            vec![Action::StartWaitTimer(Phase::Deploy)],
        ),
        (Verb::Unhold, S::CleanHold) => (
            S::CleanWait,
            keep_target(Phase::Clean),
            vec![Action::StartWaitTimer(Phase::Clean)],
        ),
        (Verb::Unhold, S::ServiceHold) => (
            S::ServiceWait,
            keep_target(Phase::Service),
            vec![Action::StartWaitTimer(Phase::Service)],
        ),
        (Verb::Service, S::Active | S::ServiceFailed) => {
            (S::Servicing, Some(S::Active), vec![Action::Service])
        }
        _ => return None,
    })
}

/// The state a failing operation ends in, and its target.
fn failure_state(
    state: ProvisionState,
    target: Option<ProvisionState>,
) -> Option<(ProvisionState, Option<ProvisionState>)> {
    use ProvisionState as S;
    let phase = state.phase()?;
    let target = Some(target.unwrap_or(phase_target(phase)));
    Some(match phase {
        Phase::Verify => (S::Enroll, None),
        Phase::Teardown => (S::Error, None),
        Phase::Deploy => (S::DeployFailed, target),
        Phase::Clean => (S::CleanFailed, target),
        Phase::Inspect => (S::InspectFailed, target),
        Phase::Adopt => (S::AdoptFailed, target),
        Phase::Rescue => (S::RescueFailed, target),
        Phase::Unrescue => (S::UnrescueFailed, target),
        Phase::Service => (S::ServiceFailed, target),
    })
}

fn wait_state(phase: Phase) -> Option<ProvisionState> {
    use ProvisionState as S;
    Some(match phase {
        Phase::Deploy => S::DeployWait,
        Phase::Clean => S::CleanWait,
        Phase::Inspect => S::InspectWait,
        Phase::Rescue => S::RescueWait,
        Phase::Service => S::ServiceWait,
        Phase::Verify | Phase::Teardown | Phase::Adopt | Phase::Unrescue => return None,
    })
}

fn timeout_message(phase: Phase, node: Uuid) -> String {
    match phase {
        Phase::Deploy => format!("Timeout reached while waiting for callback for node {node}"),
        Phase::Clean => "Timeout reached while cleaning the node. Please check if the ramdisk \
                         responsible for the cleaning is running on the node."
            .to_owned(),
        Phase::Inspect => "Timeout reached while inspecting the node".to_owned(),
        Phase::Rescue => {
            format!("Timeout reached while waiting for rescue ramdisk callback for node {node}")
        }
        _ => format!("Timeout reached while waiting for the agent on node {node}"),
    }
}

fn abort_message(phase: Phase) -> String {
    let what = match phase {
        Phase::Deploy => "Deployment",
        Phase::Clean => "Cleaning",
        Phase::Inspect => "Inspection",
        Phase::Rescue => "Rescue",
        _ => "Servicing",
    };
    format!("{what} was aborted by an operator")
}

fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Verb(_) => "verb",
        Event::StepDone => "done",
        Event::StepWaiting => "wait",
        Event::AgentCallback => "resume",
        Event::Failed(_) => "fail",
        Event::Timeout => "timeout",
    }
}

/// Applies an event to a node. Pure: `now` becomes `provision_updated_at`.
pub fn step(node: &NodeView, event: &Event, now: DateTime<Utc>) -> Result<Transition, Rejected> {
    use ProvisionState as S;
    let state = node.provision_state;
    let unexpected = || Rejected::UnexpectedEvent {
        event: event_name(event),
        node: node.uuid,
        state,
    };
    let (new_state, target, last_error, mut actions, severity, event_type, text) = match event {
        Event::Verb(verb) => {
            if node.maintenance
                && let Some(op) = verb.maintenance_op()
            {
                return Err(Rejected::Maintenance {
                    op,
                    node: node.uuid,
                });
            }
            let (new_state, target, actions) =
                verb_transition(state, *verb, node.target).ok_or(Rejected::InvalidState {
                    action: verb.as_str(),
                    node: node.uuid,
                    state,
                })?;
            if node.protected && matches!(verb, Verb::Undeploy | Verb::Rebuild) {
                return Err(Rejected::Protected { node: node.uuid });
            }
            let (last_error, severity) = match verb {
                Verb::Abort => {
                    let phase = state.phase().ok_or_else(unexpected)?;
                    (LastError::Set(abort_message(phase)), Severity::Error)
                }
                // Resting moves keep the error so the operator can still read it.
                _ if new_state.kind() == StateKind::Stable => (LastError::Keep, Severity::Info),
                Verb::Unhold => (LastError::Keep, Severity::Info),
                _ => (LastError::Clear, Severity::Info),
            };
            let event_type = new_state.phase().map_or("provisioning", Phase::event_type);
            let text = format!("{verb} requested: {state} -> {new_state}");
            (
                new_state, target, last_error, actions, severity, event_type, text,
            )
        }
        Event::StepDone => {
            let phase = state
                .phase()
                .filter(|_| state.kind() == StateKind::Transient);
            let phase = phase.ok_or_else(unexpected)?;
            let (new_state, target, actions) = match phase {
                Phase::Teardown => (
                    S::Cleaning,
                    Some(S::Available),
                    vec![Action::ClearInstance, Action::Clean { manual: false }],
                ),
                Phase::Clean => (node.target.unwrap_or(S::Available), None, vec![]),
                other => (phase_target(other), None, vec![]),
            };
            let text = format!("{} done: {state} -> {new_state}", phase.event_type());
            (
                new_state,
                target,
                LastError::Keep,
                actions,
                Severity::Info,
                phase.event_type(),
                text,
            )
        }
        Event::StepWaiting => {
            let phase = state
                .phase()
                .filter(|_| state.kind() == StateKind::Transient);
            let phase = phase.ok_or_else(unexpected)?;
            let new_state = wait_state(phase).ok_or_else(unexpected)?;
            let target = Some(node.target.unwrap_or(phase_target(phase)));
            let text = format!("waiting for the agent: {state} -> {new_state}");
            let actions = vec![Action::StartWaitTimer(phase)];
            (
                new_state,
                target,
                LastError::Keep,
                actions,
                Severity::Info,
                phase.event_type(),
                text,
            )
        }
        Event::AgentCallback => {
            let phase = state.phase().filter(|_| state.kind() == StateKind::Wait);
            let phase = phase.ok_or_else(unexpected)?;
            let new_state = match phase {
                Phase::Deploy => S::Deploying,
                Phase::Clean => S::Cleaning,
                Phase::Inspect => S::Inspecting,
                Phase::Rescue => S::Rescuing,
                _ => S::Servicing,
            };
            let target = Some(node.target.unwrap_or(phase_target(phase)));
            let text = format!("agent callback: {state} -> {new_state}");
            let actions = vec![Action::Resume(phase)];
            (
                new_state,
                target,
                LastError::Keep,
                actions,
                Severity::Info,
                phase.event_type(),
                text,
            )
        }
        Event::Failed(reason) => {
            let running = matches!(state.kind(), StateKind::Transient | StateKind::Wait);
            if !running {
                return Err(unexpected());
            }
            let (new_state, target) = failure_state(state, node.target).ok_or_else(unexpected)?;
            let phase = state.phase().ok_or_else(unexpected)?;
            let mut actions = Vec::new();
            if state.kind() == StateKind::Wait {
                actions.push(Action::CancelWait(phase));
            }
            let text = format!("{state} -> {new_state}: {reason}");
            let last_error = LastError::Set(reason.clone());
            (
                new_state,
                target,
                last_error,
                actions,
                Severity::Error,
                phase.event_type(),
                text,
            )
        }
        Event::Timeout => {
            if state.kind() != StateKind::Wait {
                return Err(unexpected());
            }
            let phase = state.phase().ok_or_else(unexpected)?;
            let (new_state, target) = failure_state(state, node.target).ok_or_else(unexpected)?;
            let reason = timeout_message(phase, node.uuid);
            let text = format!("{state} -> {new_state}: {reason}");
            let actions = vec![Action::CancelWait(phase)];
            let last_error = LastError::Set(reason);
            (
                new_state,
                target,
                last_error,
                actions,
                Severity::Error,
                phase.event_type(),
                text,
            )
        }
    };
    debug_assert!(
        !new_state.is_stable() || target.is_none(),
        "stable state with a target"
    );
    actions.insert(
        0,
        Action::RecordHistory {
            severity,
            event_type,
            event: text,
        },
    );
    Ok(Transition {
        from: state,
        provision_state: new_state,
        target_provision_state: target,
        last_error,
        at: now,
        actions,
    })
}
