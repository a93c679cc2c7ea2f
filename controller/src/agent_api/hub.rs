//! The in-memory command hub between the conductor's `agent` interfaces and the agent API.
//!
//! Drivers enqueue [`Command`]s per node; a heartbeat takes the next one, waiting on a
//! [`Notify`] for at most the long-poll timeout. Commands handed out are remembered by id
//! until the agent reports their result. The hub also keeps the hash of each node's current
//! agent token (persisted in `driver_internal_info` too) and when the agent was last heard.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use proto::protocol::Command;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::images::resolve::ImageResolver;

/// `driver_internal_info` key holding the hex SHA-256 of the current agent token.
pub const TOKEN_HASH_KEY: &str = "agent_token_sha256";

#[derive(Debug, Default)]
struct Slot {
    token_hash: Option<[u8; 32]>,
    queue: VecDeque<(Uuid, Command)>,
    last_seen: Option<Instant>,
    notify: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: HashMap<Uuid, Slot>,
    /// Commands handed to an agent and not yet reported: id -> (node, command).
    sent: HashMap<Uuid, (Uuid, Command)>,
}

/// Shared per-node command queues. Share as `Arc<AgentHub>`.
#[derive(Debug, Default)]
pub struct AgentHub {
    inner: Mutex<Inner>,
    /// How `ingot://NAME` image sources resolve (set once by `ingot serve`); the agent
    /// deploy interfaces of every hardware type share the hub, so it carries this too.
    images: OnceLock<Arc<dyn ImageResolver>>,
}

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two hashes in constant time.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AgentHub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Sets the stored-image resolver (first call wins).
    pub fn set_image_resolver(&self, resolver: Arc<dyn ImageResolver>) {
        let _ = self.images.set(resolver);
    }

    /// The stored-image resolver, if the controller has one.
    pub fn image_resolver(&self) -> Option<&Arc<dyn ImageResolver>> {
        self.images.get()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a command for a node's agent; returns its id.
    pub fn enqueue(&self, node: Uuid, command: Command) -> Uuid {
        let id = Uuid::new_v4();
        let mut inner = self.lock();
        let slot = inner.nodes.entry(node).or_default();
        slot.queue.push_back((id, command));
        slot.notify.notify_waiters();
        slot.notify.notify_one();
        id
    }

    /// Commands queued and not yet taken, oldest first.
    pub fn pending(&self, node: Uuid) -> Vec<Command> {
        self.lock()
            .nodes
            .get(&node)
            .map(|s| s.queue.iter().map(|(_, c)| c.clone()).collect())
            .unwrap_or_default()
    }

    /// Drops every queued command of a node (for example when it is deleted).
    pub fn clear(&self, node: Uuid) {
        let mut inner = self.lock();
        if let Some(slot) = inner.nodes.get_mut(&node) {
            slot.queue.clear();
        }
        inner.sent.retain(|_, (n, _)| *n != node);
    }

    /// Takes the next command for `node`, waiting up to `timeout` for one to arrive.
    pub async fn next(&self, node: Uuid, timeout: Duration) -> Option<(Uuid, Command)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notify = {
                let mut inner = self.lock();
                let slot = inner.nodes.entry(node).or_default();
                slot.last_seen = Some(Instant::now());
                if let Some((id, cmd)) = slot.queue.pop_front() {
                    inner.sent.insert(id, (node, cmd.clone()));
                    return Some((id, cmd));
                }
                slot.notify.clone()
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check after registering, so an enqueue in between is not missed.
            if !self
                .lock()
                .nodes
                .get(&node)
                .is_none_or(|s| s.queue.is_empty())
            {
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Forgets a handed-out command and returns it, when it belongs to `node`.
    pub fn take_sent(&self, node: Uuid, command_id: Uuid) -> Option<Command> {
        let mut inner = self.lock();
        match inner.sent.get(&command_id) {
            Some((n, _)) if *n == node => inner.sent.remove(&command_id).map(|(_, c)| c),
            _ => None,
        }
    }

    /// A handed-out command, still running (for progress reports).
    pub fn sent(&self, node: Uuid, command_id: Uuid) -> Option<Command> {
        match self.lock().sent.get(&command_id) {
            Some((n, c)) if *n == node => Some(c.clone()),
            _ => None,
        }
    }

    /// Records a node's current token hash (a lookup replaces the previous one).
    pub fn set_token_hash(&self, node: Uuid, hash: [u8; 32]) {
        let mut inner = self.lock();
        let slot = inner.nodes.entry(node).or_default();
        slot.token_hash = Some(hash);
        slot.last_seen = Some(Instant::now());
    }

    /// The token hash the hub knows for a node (none after a restart).
    pub fn token_hash(&self, node: Uuid) -> Option<[u8; 32]> {
        self.lock().nodes.get(&node).and_then(|s| s.token_hash)
    }

    /// Marks the agent as heard from now.
    pub fn touch(&self, node: Uuid) {
        self.lock().nodes.entry(node).or_default().last_seen = Some(Instant::now());
    }

    /// Marks the agent as gone (it was told to reboot into the instance, or powered off).
    pub fn gone(&self, node: Uuid) {
        if let Some(slot) = self.lock().nodes.get_mut(&node) {
            slot.last_seen = None;
        }
    }

    /// True when the node's agent looked up or heartbeated within `within` (fast track).
    pub fn alive(&self, node: Uuid, within: Duration) -> bool {
        self.lock()
            .nodes
            .get(&node)
            .and_then(|s| s.last_seen)
            .is_some_and(|t| t.elapsed() <= within)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heartbeat_waits_for_a_command_and_times_out() {
        let hub = AgentHub::new();
        let node = Uuid::new_v4();
        assert!(hub.next(node, Duration::from_millis(20)).await.is_none());
        assert!(hub.alive(node, Duration::from_secs(5)));
        let h2 = hub.clone();
        let waiter = tokio::spawn(async move { h2.next(node, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let id = hub.enqueue(node, Command::Inspect);
        let (got, cmd) = waiter.await.expect("join").expect("command");
        assert_eq!((got, cmd), (id, Command::Inspect));
        assert_eq!(hub.take_sent(Uuid::new_v4(), id), None);
        assert_eq!(hub.take_sent(node, id), Some(Command::Inspect));
        assert_eq!(hub.take_sent(node, id), None);
    }

    #[test]
    fn token_hashes_compare() {
        let a = hash_token("abc");
        assert!(hashes_equal(&a, &hash_token("abc")));
        assert!(!hashes_equal(&a, &hash_token("abd")));
    }
}
