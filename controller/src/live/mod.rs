//! Live node changes for the web console's server-sent events (`GET /v1/ingot/events`).
//!
//! Every saved change of a node (created, updated, transition, deleted), whoever made it
//! (the API, discovery, the conductor, the agent API's progress reports), reaches the
//! [`LiveEvents`] hub through [`store::Watched`], a [`crate::store::Store`] wrapper around the
//! real store. The hub is a bounded `tokio::sync::broadcast` channel: publishing never waits,
//! and a stream that falls more than [`CHANNEL_CAPACITY`] events behind is ended (its page
//! reconnects and reloads what it shows) instead of being buffered for. At most
//! [`MAX_STREAMS`] streams are open at once; a stream lives at most [`STREAM_LIFETIME`], so
//! its credentials are checked again when the page reconnects.
//!
//! Why a store wrapper rather than the conductor's [`crate::events::NodeEvents`] sink: that
//! sink sees provision-state transitions only, and the console must also show nodes being
//! created (by an operator or discovery), power and maintenance changes and the agent's
//! progress, which are plain node updates made in several places. The wrapper sees them all
//! at the one place they become true (after the store accepted the write).

pub mod store;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::hub::PROGRESS_KEY;
use crate::model::Node;

/// Events kept for the slowest stream before it is dropped.
pub const CHANNEL_CAPACITY: usize = 4096;
/// Streams open at once; more are refused with 503.
pub const MAX_STREAMS: usize = 64;
/// Longest life of one stream (the page reconnects, authenticating again).
pub const STREAM_LIFETIME: Duration = Duration::from_secs(600);
/// Comment lines sent on an idle stream, so a dead peer is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a row of the console shows about a node, sent on every change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSummary {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub driver: String,
    pub provision_state: String,
    pub target_provision_state: Option<String>,
    pub power_state: Option<String>,
    pub target_power_state: Option<String>,
    pub resource_class: Option<String>,
    pub maintenance: bool,
    pub last_error: Option<String>,
    pub discovered: bool,
    /// The agent's latest progress report (`driver_internal_info.agent_progress`).
    pub progress: Option<Value>,
    /// Who sees it (not sent: the stream filters on it, as the API filters lists).
    #[serde(skip)]
    pub owner: Option<String>,
    #[serde(skip)]
    pub lessee: Option<String>,
}

impl NodeSummary {
    /// PURE: the summary of `node`.
    pub fn of(node: &Node) -> Self {
        Self {
            uuid: node.uuid,
            name: node.name.clone(),
            driver: node.driver.clone(),
            provision_state: node.provision_state.clone(),
            target_provision_state: node.target_provision_state.clone(),
            power_state: node.power_state.clone(),
            target_power_state: node.target_power_state.clone(),
            resource_class: node.resource_class.clone(),
            maintenance: node.maintenance,
            last_error: node.last_error.clone(),
            discovered: node.discovered,
            progress: node.driver_internal_info.get(PROGRESS_KEY).cloned(),
            owner: node.owner.clone(),
            lessee: node.lessee.clone(),
        }
    }
}

/// One change, as the stream sends it.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    /// A node was created or changed (`event: node`, the summary as data).
    Node(Box<NodeSummary>),
    /// A node was deleted (`event: deleted`, `{"uuid"}`); every stream may see it: a UUID
    /// the caller does not know tells it nothing.
    Deleted(Uuid),
}

impl LiveEvent {
    /// The SSE event name and JSON data.
    pub fn wire(&self) -> (&'static str, String) {
        match self {
            LiveEvent::Node(s) => ("node", serde_json::to_string(s).unwrap_or_default()),
            LiveEvent::Deleted(uuid) => {
                ("deleted", serde_json::json!({ "uuid": uuid }).to_string())
            }
        }
    }

    /// Whether a caller limited to `project` (none: every node) may see it.
    pub fn visible_to(&self, project: Option<&str>) -> bool {
        match (self, project) {
            (_, None) | (LiveEvent::Deleted(_), _) => true,
            (LiveEvent::Node(s), Some(p)) => {
                s.owner.as_deref() == Some(p) || s.lessee.as_deref() == Some(p)
            }
        }
    }
}

/// The hub: a bounded broadcast channel and the cap on streams.
#[derive(Debug)]
pub struct LiveEvents {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    slots: Arc<Semaphore>,
    /// Cancelled at shutdown: open streams end, so the API's graceful shutdown, which waits
    /// for every connection, is not held up by them.
    closed: CancellationToken,
}

impl Default for LiveEvents {
    fn default() -> Self {
        Self::new(CHANNEL_CAPACITY, MAX_STREAMS)
    }
}

impl LiveEvents {
    pub fn new(capacity: usize, max_streams: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            slots: Arc::new(Semaphore::new(max_streams)),
            closed: CancellationToken::new(),
        }
    }

    /// Ends every open stream and refuses new ones (at shutdown).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Cancelled when [`LiveEvents::close`] is called.
    pub fn closing(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Whether anyone listens (the wrapper skips building events otherwise).
    pub fn has_listeners(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Hands `event` to every open stream; never waits.
    pub fn publish(&self, event: LiveEvent) {
        // No receiver is not an error: nobody has the console open.
        let _ = self.tx.send(Arc::new(event));
    }

    /// A new stream's receiver and its slot, or `None` when [`MAX_STREAMS`] are open.
    pub fn subscribe(&self) -> Option<(broadcast::Receiver<Arc<LiveEvent>>, OwnedSemaphorePermit)> {
        if self.closed.is_cancelled() {
            return None;
        }
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        Some((self.tx.subscribe(), permit))
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    #[test]
    fn summary_carries_progress_and_hides_owner() {
        let mut node = Node::new(Uuid::new_v4(), "fake-hardware", Utc::now());
        node.owner = Some("p1".into());
        node.driver_internal_info.insert(
            PROGRESS_KEY.into(),
            serde_json::json!({"phase": "stream", "bytes_fetched": 5}),
        );
        let event = LiveEvent::Node(Box::new(NodeSummary::of(&node)));
        let (name, data) = event.wire();
        assert_eq!(name, "node");
        let v: Value = serde_json::from_str(&data).expect("json");
        assert_eq!(v["progress"]["phase"], "stream");
        assert_eq!(v["provision_state"], "enroll");
        assert!(v.get("owner").is_none());
        assert!(event.visible_to(None));
        assert!(event.visible_to(Some("p1")));
        assert!(!event.visible_to(Some("p2")));
        assert!(LiveEvent::Deleted(node.uuid).visible_to(Some("p2")));
    }

    #[test]
    fn streams_are_capped_and_slow_ones_lag() {
        let hub = LiveEvents::new(2, 1);
        let (mut rx, permit) = hub.subscribe().expect("first stream");
        assert!(hub.subscribe().is_none(), "second stream over the cap");
        for _ in 0..3 {
            hub.publish(LiveEvent::Deleted(Uuid::nil()));
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(1))
        ));
        drop(permit);
        assert!(hub.subscribe().is_some(), "a slot is free again");
    }
}
