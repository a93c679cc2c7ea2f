//! What the conductor tells the world about nodes: one [`NodeEvent`] per provision-state
//! change, handed to a [`NodeEvents`] sink (the webhooks; nothing by default). A sink must
//! return at once: it is called from the conductor's transition, after the transition was
//! saved.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A provision-state change, as webhooks receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeEvent {
    /// `provision_state_changed`, or `node_failed` when the new state is a failure
    /// (`* failed`, `error`).
    pub event: &'static str,
    /// Unique per event (receivers use it to drop a retried duplicate).
    pub id: Uuid,
    pub node_uuid: Uuid,
    pub node_name: Option<String>,
    pub previous_provision_state: String,
    pub provision_state: String,
    pub target_provision_state: Option<String>,
    pub last_error: Option<String>,
    pub conductor: String,
    pub at: DateTime<Utc>,
}

impl NodeEvent {
    /// The event of `node` having just moved from `from` to its current provision state
    /// (`failed`: that state is a failure, [`crate::machine::ProvisionState::is_failure`]).
    pub fn transition(
        node: &crate::model::Node,
        from: &str,
        failed: bool,
        conductor: &str,
    ) -> Self {
        Self {
            event: if failed {
                NODE_FAILED
            } else {
                PROVISION_STATE_CHANGED
            },
            id: Uuid::new_v4(),
            node_uuid: node.uuid,
            node_name: node.name.clone(),
            previous_provision_state: from.to_owned(),
            provision_state: node.provision_state.clone(),
            target_provision_state: node.target_provision_state.clone(),
            last_error: node.last_error.clone(),
            conductor: conductor.to_owned(),
            at: node.provision_updated_at.unwrap_or_else(Utc::now),
        }
    }
}

/// The two event names.
pub const PROVISION_STATE_CHANGED: &str = "provision_state_changed";
pub const NODE_FAILED: &str = "node_failed";

/// Where node events go; must not block.
pub trait NodeEvents: Send + Sync + std::fmt::Debug {
    fn publish(&self, event: NodeEvent);
}

/// The sink of a controller without webhooks.
#[derive(Debug, Default)]
pub struct NoEvents;

impl NodeEvents for NoEvents {
    fn publish(&self, _event: NodeEvent) {}
}

/// Several sinks (webhooks and metrics), each given every event.
#[derive(Debug, Default)]
pub struct Fanout(pub Vec<std::sync::Arc<dyn NodeEvents>>);

impl NodeEvents for Fanout {
    fn publish(&self, event: NodeEvent) {
        for sink in &self.0 {
            sink.publish(event.clone());
        }
    }
}
