//! Provision states and operator verbs, spelled as Ironic spells them.

use std::fmt;
use std::str::FromStr;

/// Every provision state a node can be in (Ironic's `ironic.common.states`).
///
/// Stable states (`enroll`, `manageable`, `available`, `active`, `error`, `rescue`) are where a
/// node rests with a null target. Transient states run a task; wait states wait for the agent;
/// `* failed` states rest until an operator acts and keep the target they aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProvisionState {
    Enroll,
    Verifying,
    Manageable,
    Available,
    Active,
    Deploying,
    DeployWait,
    DeployFailed,
    DeployHold,
    Deleting,
    Cleaning,
    CleanWait,
    CleanFailed,
    CleanHold,
    Error,
    Inspecting,
    InspectWait,
    InspectFailed,
    Adopting,
    AdoptFailed,
    Rescue,
    Rescuing,
    RescueWait,
    RescueFailed,
    Unrescuing,
    UnrescueFailed,
    Servicing,
    ServiceWait,
    ServiceFailed,
    ServiceHold,
}

/// How a state behaves, which decides what may happen next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// Rests with a null target.
    Stable,
    /// A task is running (the node is locked).
    Transient,
    /// Waiting for the agent (callback), an abort, a failure or a timeout.
    Wait,
    /// Paused by a hold step until `unhold` or `abort`.
    Hold,
    /// A failed operation; rests with its target kept until an operator acts.
    Failed,
}

/// Unknown provision state or verb string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseStateError(pub String);

impl ProvisionState {
    /// Every state, for tables and validation.
    pub const ALL: [ProvisionState; 30] = [
        Self::Enroll,
        Self::Verifying,
        Self::Manageable,
        Self::Available,
        Self::Active,
        Self::Deploying,
        Self::DeployWait,
        Self::DeployFailed,
        Self::DeployHold,
        Self::Deleting,
        Self::Cleaning,
        Self::CleanWait,
        Self::CleanFailed,
        Self::CleanHold,
        Self::Error,
        Self::Inspecting,
        Self::InspectWait,
        Self::InspectFailed,
        Self::Adopting,
        Self::AdoptFailed,
        Self::Rescue,
        Self::Rescuing,
        Self::RescueWait,
        Self::RescueFailed,
        Self::Unrescuing,
        Self::UnrescueFailed,
        Self::Servicing,
        Self::ServiceWait,
        Self::ServiceFailed,
        Self::ServiceHold,
    ];

    /// Ironic's string for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enroll => "enroll",
            Self::Verifying => "verifying",
            Self::Manageable => "manageable",
            Self::Available => "available",
            Self::Active => "active",
            Self::Deploying => "deploying",
            Self::DeployWait => "wait call-back",
            Self::DeployFailed => "deploy failed",
            Self::DeployHold => "deploy hold",
            Self::Deleting => "deleting",
            Self::Cleaning => "cleaning",
            Self::CleanWait => "clean wait",
            Self::CleanFailed => "clean failed",
            Self::CleanHold => "clean hold",
            Self::Error => "error",
            Self::Inspecting => "inspecting",
            Self::InspectWait => "inspect wait",
            Self::InspectFailed => "inspect failed",
            Self::Adopting => "adopting",
            Self::AdoptFailed => "adopt failed",
            Self::Rescue => "rescue",
            Self::Rescuing => "rescuing",
            Self::RescueWait => "rescue wait",
            Self::RescueFailed => "rescue failed",
            Self::Unrescuing => "unrescuing",
            Self::UnrescueFailed => "unrescue failed",
            Self::Servicing => "servicing",
            Self::ServiceWait => "service wait",
            Self::ServiceFailed => "service failed",
            Self::ServiceHold => "service hold",
        }
    }

    pub fn kind(self) -> StateKind {
        use ProvisionState::*;
        match self {
            Enroll | Manageable | Available | Active | Error | Rescue => StateKind::Stable,
            Verifying | Deploying | Deleting | Cleaning | Inspecting | Adopting | Rescuing
            | Unrescuing | Servicing => StateKind::Transient,
            DeployWait | CleanWait | InspectWait | RescueWait | ServiceWait => StateKind::Wait,
            DeployHold | CleanHold | ServiceHold => StateKind::Hold,
            DeployFailed | CleanFailed | InspectFailed | AdoptFailed | RescueFailed
            | UnrescueFailed | ServiceFailed => StateKind::Failed,
        }
    }

    pub fn is_stable(self) -> bool {
        self.kind() == StateKind::Stable
    }

    /// A state an operator must look at: a `* failed` state or `error`.
    pub fn is_failure(self) -> bool {
        self.kind() == StateKind::Failed || self == ProvisionState::Error
    }

    /// The operation a non-stable state belongs to.
    pub fn phase(self) -> Option<Phase> {
        use ProvisionState::*;
        Some(match self {
            Verifying => Phase::Verify,
            Deploying | DeployWait | DeployFailed | DeployHold => Phase::Deploy,
            Deleting => Phase::Teardown,
            Cleaning | CleanWait | CleanFailed | CleanHold => Phase::Clean,
            Inspecting | InspectWait | InspectFailed => Phase::Inspect,
            Adopting | AdoptFailed => Phase::Adopt,
            Rescuing | RescueWait | RescueFailed => Phase::Rescue,
            Unrescuing | UnrescueFailed => Phase::Unrescue,
            Servicing | ServiceWait | ServiceFailed | ServiceHold => Phase::Service,
            Enroll | Manageable | Available | Active | Error | Rescue => return None,
        })
    }
}

/// Whether a lookup from the agent is answered for a node in a state, as Ironic's
/// `LOOKUP_ALLOWED_STATES`: where the conductor waits for an agent it booted, plus the
/// resting states where an agent may idle when fast track is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentLookup {
    /// An agent is expected: lookup is answered.
    Expected,
    /// Answered only when fast track is enabled.
    FastTrackOnly,
    /// No agent belongs here: lookup is refused (404, as Ironic).
    Refused,
}

impl ProvisionState {
    /// Where an agent lookup is answered (see [`AgentLookup`]).
    pub fn agent_lookup(self) -> AgentLookup {
        use ProvisionState::*;
        match self {
            Deploying | DeployWait | Cleaning | CleanWait | Inspecting | InspectWait | Rescuing
            | RescueWait | Servicing | ServiceWait => AgentLookup::Expected,
            Enroll | Manageable | Available => AgentLookup::FastTrackOnly,
            Verifying | Active | DeployFailed | DeployHold | Deleting | CleanFailed | CleanHold
            | Error | InspectFailed | Adopting | AdoptFailed | Rescue | RescueFailed
            | Unrescuing | UnrescueFailed | ServiceFailed | ServiceHold => AgentLookup::Refused,
        }
    }

    /// True when a lookup for a node in this state is answered.
    pub fn allows_agent_lookup(self, fast_track: bool) -> bool {
        match self.agent_lookup() {
            AgentLookup::Expected => true,
            AgentLookup::FastTrackOnly => fast_track,
            AgentLookup::Refused => false,
        }
    }
}

impl ProvisionState {
    /// Names Ironic accepts in a `provision_state` list filter besides the states themselves:
    /// states of its machine that no node rests in here.
    pub const FILTER_ONLY_NAMES: [&'static str; 3] = ["deleted", "rebuild", "unholding"];

    /// Whether `name` may be asked for in a list filter (a state, or one of
    /// [`Self::FILTER_ONLY_NAMES`]).
    pub fn is_filter_name(name: &str) -> bool {
        name.parse::<Self>().is_ok() || Self::FILTER_ONLY_NAMES.contains(&name)
    }

    /// Whether a node may be deleted in this state without maintenance mode (Ironic's
    /// `DELETE_ALLOWED_STATES`).
    pub fn allows_delete(self) -> bool {
        use ProvisionState::*;
        matches!(self, Manageable | Enroll | AdoptFailed | Available)
    }

    /// Whether a node may be made protected in this state (Ironic: `active` and `rescue`).
    pub fn allows_protect(self) -> bool {
        matches!(self, ProvisionState::Active | ProvisionState::Rescue)
    }

    /// Whether a node's allocation may be removed in this state without maintenance mode
    /// (Ironic's `UPDATE_ALLOWED_STATES`: stable, failed and wait states, and inspection).
    pub fn allows_deallocate(self) -> bool {
        use ProvisionState::*;
        matches!(
            self,
            Enroll
                | Manageable
                | Available
                | Active
                | Error
                | Rescue
                | DeployFailed
                | Inspecting
                | InspectFailed
                | InspectWait
                | CleanFailed
                | Verifying
                | AdoptFailed
                | RescueFailed
                | UnrescueFailed
                | ServiceFailed
                | CleanWait
        )
    }
}

impl fmt::Display for ProvisionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProvisionState {
    type Err = ParseStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseStateError(format!("Provision state \"{s}\" is not valid")))
    }
}

/// The operation a transient, wait, hold or failed state belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Verify,
    Deploy,
    /// `deleting`: tearing the instance down before cleaning.
    Teardown,
    Clean,
    Inspect,
    Adopt,
    Rescue,
    Unrescue,
    Service,
}

impl Phase {
    /// The node history `event_type` for this phase, as Ironic writes it.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Deploy => "deploy",
            Self::Teardown => "undeploy",
            Self::Clean => "clean",
            Self::Inspect => "inspect",
            Self::Adopt => "adopt",
            Self::Rescue | Self::Unrescue => "rescue",
            Self::Service => "service",
        }
    }
}

/// An operator verb, the `target` of `PUT /v1/nodes/{ident}/states/provision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Manage,
    Provide,
    Inspect,
    /// `active` (or `deploy`).
    Deploy,
    /// `deleted` (or `undeploy`).
    Undeploy,
    Clean,
    Abort,
    Rebuild,
    Adopt,
    Rescue,
    Unrescue,
    Unhold,
    Service,
}

impl Verb {
    pub const ALL: [Verb; 13] = [
        Self::Manage,
        Self::Provide,
        Self::Inspect,
        Self::Deploy,
        Self::Undeploy,
        Self::Clean,
        Self::Abort,
        Self::Rebuild,
        Self::Adopt,
        Self::Rescue,
        Self::Unrescue,
        Self::Unhold,
        Self::Service,
    ];

    /// The API target string (the canonical one for aliased verbs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manage => "manage",
            Self::Provide => "provide",
            Self::Inspect => "inspect",
            Self::Deploy => "active",
            Self::Undeploy => "deleted",
            Self::Clean => "clean",
            Self::Abort => "abort",
            Self::Rebuild => "rebuild",
            Self::Adopt => "adopt",
            Self::Rescue => "rescue",
            Self::Unrescue => "unrescue",
            Self::Unhold => "unhold",
            Self::Service => "service",
        }
    }

    /// What Ironic reports when the verb is refused on a node in maintenance, or `None` when
    /// maintenance does not block the verb.
    pub fn maintenance_op(self) -> Option<&'static str> {
        match self {
            Self::Deploy | Self::Rebuild => Some("provisioning"),
            Self::Clean => Some("cleaning"),
            Self::Rescue => Some("rescuing"),
            Self::Unrescue => Some("unrescuing"),
            Self::Service => Some("servicing"),
            _ => None,
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verb {
    type Err = ParseStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "deploy" => Self::Deploy,
            "undeploy" => Self::Undeploy,
            _ => Self::ALL
                .into_iter()
                .find(|verb| verb.as_str() == s)
                .ok_or_else(|| ParseStateError(format!("Invalid provision state target: {s}")))?,
        })
    }
}
