//! The in-memory command hub between the conductor's `agent` interfaces and the agent API,
//! and the agent sessions it hands commands to.
//!
//! Drivers enqueue [`Command`]s per node; a heartbeat takes the next one, waiting on a
//! [`Notify`] for at most the long-poll timeout. Commands handed out are remembered by id,
//! with the session (token hash) they went to, until the agent reports their result.
//!
//! **One token per ramdisk boot.** A node has at most one live agent session. A token is
//! issued only when the conductor (re)booted the machine into the agent
//! ([`AgentHub::boot_requested`] opens a *boot window*, closed by the first lookup) or when
//! discovery enrolled it; any other power change ends the session
//! ([`AgentHub::session_ended`]). A later lookup gets no token ([`session::Decision`]).
//! A command handed to one session is never handed to another: the requeue of commands lost
//! with a dead connection stays within the session that had them, and a long-poll of a
//! session that is no longer live ends empty. The hash of the live token is also kept in
//! `driver_internal_info` (the conductor writes the hub's view at each task save), so a
//! restarted controller restores the session on first use ([`AgentHub::restore`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use proto::protocol::Command;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use uuid::Uuid;

pub mod session;

use self::session::{Decision, SessionView};
use crate::images::resolve::ImageResolver;

/// `driver_internal_info` key holding the hex SHA-256 of the current agent token.
pub const TOKEN_HASH_KEY: &str = "agent_token_sha256";

/// Reported command ids remembered per hub, so a repeated report is answered without being
/// applied twice.
const DONE_KEPT: usize = 4096;

/// A token's SHA-256.
pub type TokenHash = [u8; 32];

#[derive(Debug, Default)]
struct Slot {
    /// Whether `token_hash` is this run's knowledge (false after a restart until
    /// [`AgentHub::restore`] read the stored hash).
    known: bool,
    token_hash: Option<TokenHash>,
    /// The token of the session the last boot ended (refused in the next window).
    previous_hash: Option<TokenHash>,
    /// The conductor booted the machine into the agent and no lookup took a token yet.
    boot_window: bool,
    queue: VecDeque<(Uuid, Command)>,
    /// Last heartbeat, lookup or event of the live session (fast track).
    last_seen: Option<Instant>,
    notify: Arc<Notify>,
    /// Bumped whenever the live session changes; a long-poll of an older one returns empty.
    generation: u64,
    handed_seq: u64,
}

#[derive(Debug)]
struct Sent {
    node: Uuid,
    session: TokenHash,
    command: Command,
    seq: u64,
    /// A result report for it is being stored.
    reporting: bool,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: HashMap<Uuid, Slot>,
    /// Commands handed to an agent and not yet reported.
    sent: HashMap<Uuid, Sent>,
    /// Commands whose result was stored: id -> (node, session), oldest first in `done_order`.
    done: HashMap<Uuid, (Uuid, TokenHash)>,
    done_order: VecDeque<Uuid>,
}

/// What a result report may do with a command ([`AgentHub::claim_result`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Store this command's result, then [`AgentHub::result_stored`] or
    /// [`AgentHub::result_not_stored`].
    Apply(Command),
    /// Its result was stored already: answer success, change nothing.
    Duplicate,
    /// Another report of it is being stored right now.
    InProgress,
    /// Not handed to this session.
    Unknown,
}

/// Shared per-node command queues and agent sessions. Share as `Arc<AgentHub>`.
#[derive(Debug, Default)]
pub struct AgentHub {
    inner: Mutex<Inner>,
    /// `[deploy] fast_track`: how recent the agent's last sign of life must be, or `None`.
    fast_track: Option<Duration>,
    /// How `ingot://NAME` image sources resolve (given by `ingot serve` at construction);
    /// the agent deploy interfaces of every hardware type share the hub, so it carries this
    /// too.
    images: Option<Arc<dyn ImageResolver>>,
}

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two hashes in constant time.
pub fn hashes_equal(a: &TokenHash, b: &TokenHash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn same(a: Option<&TokenHash>, b: &TokenHash) -> bool {
    a.is_some_and(|a| hashes_equal(a, b))
}

impl AgentHub {
    /// A hub with fast track off.
    pub fn new() -> Arc<Self> {
        Self::with_fast_track(None)
    }

    /// A hub that allows fast track for an agent heard from within `window` (`None`: off).
    pub fn with_fast_track(window: Option<Duration>) -> Arc<Self> {
        Self::with_images(window, None)
    }

    /// A hub with fast track as [`Self::with_fast_track`] that resolves `ingot://NAME`
    /// through `images` (`ingot serve`: the controller's image store).
    pub fn with_images(
        window: Option<Duration>,
        images: Option<Arc<dyn ImageResolver>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            fast_track: window,
            images,
            ..Self::default()
        })
    }

    /// Whether fast track is enabled at all.
    pub fn fast_track_enabled(&self) -> bool {
        self.fast_track.is_some()
    }

    /// The stored-image resolver, if the controller has one.
    pub fn image_resolver(&self) -> Option<&Arc<dyn ImageResolver>> {
        self.images.as_ref()
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

    /// Forgets everything about a node (for example when it is deleted or torn down): its
    /// queue, what it was handed, and its session.
    pub fn clear(&self, node: Uuid) {
        let mut inner = self.lock();
        if let Some(slot) = inner.nodes.get_mut(&node) {
            slot.queue.clear();
        }
        inner.sent.retain(|_, s| s.node != node);
        drop(inner);
        self.end(node, false);
    }

    /// Ends the live session: its token is refused from now on, its long-polls end, and
    /// what it was handed is dropped (it can never report it).
    fn end(&self, node: Uuid, open_window: bool) {
        let mut inner = self.lock();
        inner.sent.retain(|_, s| s.node != node);
        let slot = inner.nodes.entry(node).or_default();
        if slot.token_hash.is_some() {
            slot.previous_hash = slot.token_hash.take();
        }
        slot.known = true;
        slot.boot_window = open_window;
        slot.last_seen = None;
        slot.generation += 1;
        slot.notify.notify_waiters();
    }

    /// The conductor is about to boot the machine into the agent: the current session
    /// ends, nothing queued for it survives, and the next lookup gets a fresh token.
    pub fn boot_requested(&self, node: Uuid) {
        if let Some(slot) = self.lock().nodes.get_mut(&node) {
            slot.queue.clear();
        }
        self.end(node, true);
    }

    /// The machine left the agent (powered off, rebooted into its instance, or power
    /// changed by the operator): the token is dead and no new one is handed out until the
    /// conductor boots the agent again.
    pub fn session_ended(&self, node: Uuid) {
        self.end(node, false);
    }

    /// Whether the hub knows the node's session this run (else [`Self::restore`] first).
    pub fn knows(&self, node: Uuid) -> bool {
        self.lock().nodes.get(&node).is_some_and(|s| s.known)
    }

    /// After a restart: the session as stored (`driver_internal_info`), unless this run
    /// already knows better.
    pub fn restore(&self, node: Uuid, stored: Option<TokenHash>) {
        let mut inner = self.lock();
        let slot = inner.nodes.entry(node).or_default();
        if !slot.known {
            slot.known = true;
            slot.token_hash = stored;
        }
    }

    /// The live token's hash as this run knows it (`None` inside: no live session;
    /// outer `None`: not known yet, see [`Self::restore`]).
    pub fn session_hash(&self, node: Uuid) -> Option<Option<TokenHash>> {
        self.lock()
            .nodes
            .get(&node)
            .filter(|s| s.known)
            .map(|s| s.token_hash)
    }

    /// How many nodes have a live agent session (a token handed out and not ended).
    pub fn live_sessions(&self) -> usize {
        self.lock()
            .nodes
            .values()
            .filter(|s| s.token_hash.is_some())
            .count()
    }

    /// True when `hash` is the node's live token (the node must be known).
    pub fn is_live(&self, node: Uuid, hash: &TokenHash) -> bool {
        self.lock()
            .nodes
            .get(&node)
            .is_some_and(|s| same(s.token_hash.as_ref(), hash))
    }

    /// A lookup for a known node: decides (and records) whether a token is issued. `fresh`
    /// is the hash of the token to issue; `presented` the hash of a token the caller sent.
    pub fn lookup(&self, node: Uuid, presented: Option<&TokenHash>, fresh: TokenHash) -> Decision {
        let mut inner = self.lock();
        let slot = inner.nodes.entry(node).or_default();
        let view = SessionView {
            boot_window: slot.boot_window,
            live: slot.token_hash.is_some(),
            presented_live: presented.is_some_and(|p| same(slot.token_hash.as_ref(), p)),
            presented_previous: presented.is_some_and(|p| same(slot.previous_hash.as_ref(), p)),
        };
        let decision = session::decide(&view);
        match decision {
            Decision::Issue => {
                slot.known = true;
                slot.boot_window = false;
                slot.token_hash = Some(fresh);
                slot.last_seen = Some(Instant::now());
                slot.generation += 1;
                slot.notify.notify_waiters();
            }
            Decision::Continue => slot.last_seen = Some(Instant::now()),
            Decision::Conflict | Decision::NoBoot => {}
        }
        decision
    }

    /// Discovery enrolled the machine just now: its agent's session begins with this token.
    pub fn discovered(&self, node: Uuid, fresh: TokenHash) {
        let mut inner = self.lock();
        let slot = inner.nodes.entry(node).or_default();
        slot.known = true;
        slot.boot_window = false;
        slot.token_hash = Some(fresh);
        slot.last_seen = Some(Instant::now());
        slot.generation += 1;
        slot.notify.notify_waiters();
    }

    /// The token issued by [`Self::lookup`] could not be stored: take it back and reopen
    /// the window, unless the session moved on meanwhile.
    pub fn undo_issue(&self, node: Uuid, fresh: &TokenHash) {
        let mut inner = self.lock();
        if let Some(slot) = inner.nodes.get_mut(&node)
            && same(slot.token_hash.as_ref(), fresh)
        {
            slot.token_hash = None;
            slot.boot_window = true;
            slot.generation += 1;
        }
    }

    /// Takes the next command for the session `session` of `node`, waiting up to
    /// `timeout` for one; empty as soon as that session is no longer the live one.
    pub async fn next(
        &self,
        node: Uuid,
        session: &TokenHash,
        timeout: Duration,
    ) -> Option<(Uuid, Command)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let generation = self.lock().nodes.entry(node).or_default().generation;
        loop {
            let notify = {
                let mut inner = self.lock();
                let inner = &mut *inner;
                let slot = inner.nodes.entry(node).or_default();
                if slot.generation != generation || !same(slot.token_hash.as_ref(), session) {
                    return None;
                }
                slot.last_seen = Some(Instant::now());
                if let Some((id, command)) = slot.queue.pop_front() {
                    slot.handed_seq += 1;
                    inner.sent.insert(
                        id,
                        Sent {
                            node,
                            session: *session,
                            command: command.clone(),
                            seq: slot.handed_seq,
                            reporting: false,
                        },
                    );
                    return Some((id, command));
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
                .is_none_or(|s| s.queue.is_empty() && s.generation == generation)
            {
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Puts every command handed to `session` and not reported at the front of the node's
    /// queue, in hand-out order. Called when that session's agent says it is idle: those
    /// commands went to a connection that died. Commands of other sessions stay where they
    /// are: a command is never handed to a token it was not handed to. Returns how many.
    pub fn requeue_sent(&self, node: Uuid, session: &TokenHash) -> usize {
        let mut inner = self.lock();
        let mut lost: Vec<(u64, Uuid, Command)> = Vec::new();
        inner.sent.retain(|id, s| {
            if s.node == node && hashes_equal(&s.session, session) && !s.reporting {
                lost.push((s.seq, *id, s.command.clone()));
                false
            } else {
                true
            }
        });
        if lost.is_empty() {
            return 0;
        }
        let slot = inner.nodes.entry(node).or_default();
        lost.sort_by_key(|e| std::cmp::Reverse(e.0));
        for (_, id, cmd) in &lost {
            slot.queue.push_front((*id, cmd.clone()));
        }
        slot.notify.notify_waiters();
        lost.len()
    }

    /// A handed-out command of `session`, still running (for progress reports).
    pub fn sent(&self, node: Uuid, session: &TokenHash, command_id: Uuid) -> Option<Command> {
        match self.lock().sent.get(&command_id) {
            Some(s) if s.node == node && hashes_equal(&s.session, session) => {
                Some(s.command.clone())
            }
            _ => None,
        }
    }

    /// A result report for `command_id` arrived from `session`: what to do with it.
    pub fn claim_result(&self, node: Uuid, session: &TokenHash, command_id: Uuid) -> Claim {
        let mut inner = self.lock();
        if let Some((n, s)) = inner.done.get(&command_id) {
            return if *n == node && hashes_equal(s, session) {
                Claim::Duplicate
            } else {
                Claim::Unknown
            };
        }
        match inner.sent.get_mut(&command_id) {
            Some(s) if s.node == node && hashes_equal(&s.session, session) => {
                if s.reporting {
                    Claim::InProgress
                } else {
                    s.reporting = true;
                    Claim::Apply(s.command.clone())
                }
            }
            _ => Claim::Unknown,
        }
    }

    /// The claimed result is stored: the command is done, a repeated report is a duplicate.
    pub fn result_stored(&self, command_id: Uuid) {
        let mut inner = self.lock();
        if let Some(s) = inner.sent.remove(&command_id) {
            inner.done.insert(command_id, (s.node, s.session));
            inner.done_order.push_back(command_id);
            while inner.done_order.len() > DONE_KEPT {
                if let Some(old) = inner.done_order.pop_front() {
                    inner.done.remove(&old);
                }
            }
        }
    }

    /// The claimed result could not be stored: the agent will send it again.
    pub fn result_not_stored(&self, command_id: Uuid) {
        if let Some(s) = self.lock().sent.get_mut(&command_id) {
            s.reporting = false;
        }
    }

    /// Marks the live session as heard from now.
    pub fn touch(&self, node: Uuid) {
        if let Some(slot) = self.lock().nodes.get_mut(&node) {
            slot.last_seen = Some(Instant::now());
        }
    }

    /// Fast track: fast track is on, the node has a live session (which began with a boot
    /// the conductor asked for or with discovery, as every session does) and its agent was
    /// heard within the fast-track timeout.
    pub fn fast_track_ready(&self, node: Uuid) -> bool {
        let Some(window) = self.fast_track else {
            return false;
        };
        self.lock().nodes.get(&node).is_some_and(|s| {
            s.token_hash.is_some() && s.last_seen.is_some_and(|t| t.elapsed() <= window)
        })
    }
}

/// `driver_internal_info` key with the latest agent progress report ([`AgentProgress`]).
pub const PROGRESS_KEY: &str = "agent_progress";

/// The latest progress report of a node's agent, as stored under [`PROGRESS_KEY`]: the one
/// shape the agent API writes and `ingot node watch` and the console read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentProgress {
    /// The command reporting (always written; a reader takes a report without it).
    #[serde(default)]
    pub command_id: Option<Uuid>,
    /// `proto::Phase` as its wire name (`fetch`, `write`, `wipe`, `verify`, ...).
    pub phase: String,
    #[serde(default)]
    pub bytes_fetched: u64,
    #[serde(default)]
    pub bytes_written: u64,
    #[serde(default)]
    pub bytes_total: Option<u64>,
    #[serde(default)]
    pub rate_bps: u64,
    #[serde(default)]
    pub elapsed_ms: u64,
}

impl AgentProgress {
    /// The stored value of a report.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The report stored in a `driver_internal_info` value, if it reads as one.
    pub fn from_value(v: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<TokenHash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The token hash stored in a node's `driver_internal_info`.
pub fn stored_token_hash(node: &crate::model::Node) -> Option<TokenHash> {
    node.driver_internal_info
        .get(TOKEN_HASH_KEY)
        .and_then(serde_json::Value::as_str)
        .and_then(from_hex)
}

/// Writes the hub's view of the node's session into `driver_internal_info` (the conductor
/// calls this before it saves a node it holds, so its copy never brings back a dead token
/// or drops a new one). No-op while the hub does not know the node (after a restart).
pub fn sync_token_hash(hub: &AgentHub, node: &mut crate::model::Node) {
    match hub.session_hash(node.uuid) {
        Some(Some(hash)) => {
            node.driver_internal_info.insert(
                TOKEN_HASH_KEY.into(),
                serde_json::Value::String(to_hex(&hash)),
            );
        }
        Some(None) => {
            node.driver_internal_info.remove(TOKEN_HASH_KEY);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests;
