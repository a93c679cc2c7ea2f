//! The in-memory command hub between the conductor's `agent` interfaces and the agent API.
//!
//! Drivers enqueue [`Command`]s per node; a heartbeat takes the next one, waiting on a
//! [`Notify`] for at most the long-poll timeout. Commands handed out are remembered by id
//! until the agent reports their result. The hub also keeps the hash of each node's current
//! agent token (persisted in `driver_internal_info` too) and when the agent was last heard.
//!
//! A machine that reboots leaves its agent's long-poll behind: the server cannot tell that
//! the connection is dead, and a command handed to it is lost. So a lookup (a new agent
//! session) ends the long-polls of the old session, and a heartbeat that says the agent is
//! idle gets back every command handed out earlier and never reported ([`AgentHub::requeue_sent`]).

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
    /// Bumped by every lookup; a long-poll of an older session returns empty.
    session: u64,
    /// Hand-out order of the commands in `Inner::sent` (id -> sequence number).
    handed: HashMap<Uuid, u64>,
    handed_seq: u64,
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
            slot.handed.clear();
        }
        inner.sent.retain(|_, (n, _)| *n != node);
    }

    /// Takes the next command for `node`, waiting up to `timeout` for one to arrive.
    pub async fn next(&self, node: Uuid, timeout: Duration) -> Option<(Uuid, Command)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let session = self.lock().nodes.entry(node).or_default().session;
        loop {
            let notify = {
                let mut inner = self.lock();
                let slot = inner.nodes.entry(node).or_default();
                if slot.session != session {
                    // A new agent looked up: this poll belongs to one that is gone.
                    return None;
                }
                slot.last_seen = Some(Instant::now());
                if let Some((id, cmd)) = slot.queue.pop_front() {
                    slot.handed_seq += 1;
                    slot.handed.insert(id, slot.handed_seq);
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
                .is_none_or(|s| s.queue.is_empty() && s.session == session)
            {
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Puts every command handed out to `node`'s agent and not reported back at the front of
    /// its queue, in the order they were queued. Called when the agent says it is idle:
    /// those commands went to a connection that died (a rebooted machine's long-poll).
    /// Returns how many were requeued.
    pub fn requeue_sent(&self, node: Uuid) -> usize {
        let mut inner = self.lock();
        let mut lost: Vec<(u64, Uuid, Command)> = Vec::new();
        inner.sent.retain(|id, (n, c)| {
            if *n == node {
                lost.push((0, *id, c.clone()));
                false
            } else {
                true
            }
        });
        if lost.is_empty() {
            return 0;
        }
        let slot = inner.nodes.entry(node).or_default();
        // Command ids are random: order by when they were handed out.
        for entry in &mut lost {
            entry.0 = slot.handed.remove(&entry.1).unwrap_or(0);
        }
        lost.sort_by_key(|e| std::cmp::Reverse(e.0));
        for (_, id, cmd) in &lost {
            slot.queue.push_front((*id, cmd.clone()));
        }
        slot.notify.notify_waiters();
        lost.len()
    }

    /// Forgets a handed-out command and returns it, when it belongs to `node`.
    pub fn take_sent(&self, node: Uuid, command_id: Uuid) -> Option<Command> {
        let mut inner = self.lock();
        match inner.sent.get(&command_id) {
            Some((n, _)) if *n == node => {
                if let Some(slot) = inner.nodes.get_mut(&node) {
                    slot.handed.remove(&command_id);
                }
                inner.sent.remove(&command_id).map(|(_, c)| c)
            }
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
        if slot.token_hash != Some(hash) {
            slot.session += 1;
            slot.notify.notify_waiters();
        }
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

    #[tokio::test]
    async fn a_lookup_ends_the_long_poll_of_the_previous_agent() {
        let hub = AgentHub::new();
        let node = Uuid::new_v4();
        hub.set_token_hash(node, hash_token("first"));
        let h2 = hub.clone();
        let old_poll = tokio::spawn(async move { h2.next(node, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The machine rebooted and its new agent looked up: the old poll ends empty.
        hub.set_token_hash(node, hash_token("second"));
        let ended = tokio::time::timeout(Duration::from_secs(1), old_poll)
            .await
            .expect("the old poll ends at once")
            .expect("join");
        assert_eq!(ended, None);
        // The same token again is the same session: nothing ends.
        hub.set_token_hash(node, hash_token("second"));
        let id = hub.enqueue(node, Command::Inspect);
        assert_eq!(
            hub.next(node, Duration::from_millis(50)).await,
            Some((id, Command::Inspect))
        );
    }

    #[tokio::test]
    async fn commands_lost_with_a_dead_connection_are_handed_out_again_in_order() {
        let hub = AgentHub::new();
        let node = Uuid::new_v4();
        let other = Uuid::new_v4();
        let wipe = Command::Wipe {
            mode: proto::WipeMode::Metadata,
            devices: vec![],
        };
        let a = hub.enqueue(node, Command::Inspect);
        let b = hub.enqueue(node, wipe.clone());
        let c = hub.enqueue(other, Command::Inspect);
        let queued = hub.enqueue(node, Command::Inspect);
        // Handed to polls whose answers never arrived.
        for _ in 0..2 {
            assert!(hub.next(node, Duration::from_millis(10)).await.is_some());
        }
        assert!(hub.next(other, Duration::from_millis(10)).await.is_some());
        assert_eq!(hub.requeue_sent(node), 2);
        assert_eq!(hub.requeue_sent(node), 0);
        let mut order = Vec::new();
        while let Some((id, _)) = hub.next(node, Duration::from_millis(10)).await {
            order.push(id);
        }
        assert_eq!(order, vec![a, b, queued]);
        assert_eq!(hub.sent(node, b), Some(wipe));
        // The other node's command is still out, and a reported command is never requeued.
        assert_eq!(hub.take_sent(other, c), Some(Command::Inspect));
        assert_eq!(hub.take_sent(node, a), Some(Command::Inspect));
        assert_eq!(hub.requeue_sent(node), 2);
        assert_eq!(hub.pending(node).len(), 2);
    }

    #[test]
    fn token_hashes_compare() {
        let a = hash_token("abc");
        assert!(hashes_equal(&a, &hash_token("abc")));
        assert!(!hashes_equal(&a, &hash_token("abd")));
    }
}
