//! The command hub between the conductor's `agent` interfaces and the agent API, and the
//! agent sessions it hands commands to.
//!
//! Sessions and commands live in the database (`store::sessions`), so every replica's
//! agent API and conductor see one truth: an agent may talk to any replica, a command queued
//! by one is handed out by another, and a survivor accepts the result of a command a dead
//! replica handed out. The hub holds the rules; in memory it keeps only wake-ups for
//! long-polls and when it last recorded each agent's sign of life.
//!
//! Drivers enqueue [`Command`]s per node; a heartbeat takes the next one, waiting on a
//! [`Notify`] (this replica's enqueues) and re-reading the store every `poll_every` (other
//! replicas') for at most the long-poll timeout. A command handed out is the session's
//! (token hash) until the agent reports its result.
//!
//! **One token per ramdisk boot.** A node has at most one live agent session. A token is
//! issued only when the conductor (re)booted the machine into the agent
//! ([`AgentHub::boot_requested`] opens a *boot window*, closed by the first lookup) or when
//! discovery enrolled it; any other power change ends the session
//! ([`AgentHub::session_ended`]). A later lookup gets no token ([`session::Decision`]).
//! A command handed to one session is never handed to another: the requeue of commands lost
//! with a dead connection stays within the session that had them, and a long-poll of a
//! session that is no longer live ends empty. Each change is one conditional write, so two
//! replicas never both issue a token or hand out one command.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use proto::protocol::Command;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use uuid::Uuid;

pub mod session;

use self::session::{Decision, SessionView};
use crate::images::resolve::ImageResolver;
use crate::store::StoreError;
use crate::store::sessions::{AgentSessions, CommandState, MemorySessions, SessionRow};

/// A result report being stored for longer than this is taken to have died with its
/// replica: the agent's retry may store it.
const REPORT_STALE: Duration = Duration::from_secs(120);
/// An agent's sign of life is written to the store at most this often (timers and fast
/// track on other replicas read it).
const RECORD_SEEN_EVERY: Duration = Duration::from_secs(5);
/// Conditional writes retried after losing a race.
const RACE_RETRIES: usize = 8;

/// A token's SHA-256.
pub type TokenHash = [u8; 32];

/// What this replica keeps in memory per node.
#[derive(Debug, Default)]
struct Local {
    notify: Arc<Notify>,
    /// Last heartbeat, lookup or event heard here.
    last_seen: Option<Instant>,
    /// When that was last written to the store.
    recorded: Option<Instant>,
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

/// How a hub behaves besides its store.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// `[deploy] fast_track`: how recent the agent's last sign of life must be, or `None`.
    pub fast_track: Option<Duration>,
    /// How `ingot://NAME` image sources resolve (the controller's image store).
    pub images: Option<Arc<dyn ImageResolver>>,
    /// How often a long-poll re-reads the store for commands other replicas queued
    /// (`None`: only this replica queues, its wake-ups suffice).
    pub poll_every: Option<Duration>,
    /// Write agents' signs of life to the store (other replicas' timers and fast track read
    /// them); off for a single process, which hears every sign itself.
    pub record_seen: bool,
}

/// Agent sessions and their command queues. Share as `Arc<AgentHub>`.
#[derive(Debug)]
pub struct AgentHub {
    store: Arc<dyn AgentSessions>,
    local: Mutex<HashMap<Uuid, Local>>,
    options: HubOptions,
}

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two hashes in constant time.
pub fn hashes_equal(a: &TokenHash, b: &TokenHash) -> bool {
    constant_eq(a, b)
}

/// Whether a stored hex hash is `hash` (constant time over the bytes).
fn stored_is(stored: Option<&str>, hash: &TokenHash) -> bool {
    stored.is_some_and(|s| constant_eq(s.as_bytes(), to_hex(hash).as_bytes()))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn command_body(command: &Command) -> Result<String, StoreError> {
    Ok(serde_json::to_string(command)?)
}

fn parse_command(body: &str) -> Result<Command, StoreError> {
    Ok(serde_json::from_str(body)?)
}

impl AgentHub {
    /// A hub over sessions kept in memory, fast track off (unit tests).
    pub fn new() -> Arc<Self> {
        Self::with_options(Arc::new(MemorySessions::default()), HubOptions::default())
    }

    /// A hub over `store` (`ingot serve`: the database every replica shares).
    pub fn with_options(store: Arc<dyn AgentSessions>, options: HubOptions) -> Arc<Self> {
        Arc::new(Self {
            store,
            local: Mutex::default(),
            options,
        })
    }

    /// Whether fast track is enabled at all.
    pub fn fast_track_enabled(&self) -> bool {
        self.options.fast_track.is_some()
    }

    /// The stored-image resolver, if the controller has one.
    pub fn image_resolver(&self) -> Option<&Arc<dyn ImageResolver>> {
        self.options.images.as_ref()
    }

    fn local(&self) -> MutexGuard<'_, HashMap<Uuid, Local>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self, node: Uuid) {
        if let Some(l) = self.local().get(&node) {
            l.notify.notify_waiters();
        }
    }

    /// Queues a command for a node's agent; returns its id.
    pub async fn enqueue(&self, node: Uuid, command: Command) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        self.store
            .push_agent_command(node, id, &command_body(&command)?, Utc::now())
            .await?;
        self.wake(node);
        Ok(id)
    }

    /// Commands queued and not yet taken, oldest first.
    pub async fn pending(&self, node: Uuid) -> Result<Vec<Command>, StoreError> {
        self.store
            .queued_agent_commands(node)
            .await?
            .iter()
            .map(|b| parse_command(b))
            .collect()
    }

    /// Forgets a node's commands and ends its session (for example when it is torn down).
    pub async fn clear(&self, node: Uuid) -> Result<(), StoreError> {
        self.end(node, false, true).await
    }

    async fn end(&self, node: Uuid, window: bool, drop_queued: bool) -> Result<(), StoreError> {
        // Most power changes are of machines without an agent (or whose session ended
        // already): a read says so, and nothing is written.
        if !window {
            let idle = match self.store.agent_session(node).await? {
                None => true,
                Some(r) => r.token_hash.is_none() && !r.boot_window,
            };
            let nothing_queued =
                !drop_queued || self.store.queued_agent_commands(node).await?.is_empty();
            if idle && nothing_queued {
                return Ok(());
            }
        }
        self.store
            .end_agent_session(node, window, drop_queued)
            .await?;
        if let Some(l) = self.local().get_mut(&node) {
            l.last_seen = None;
            l.recorded = None;
        }
        self.wake(node);
        Ok(())
    }

    /// The conductor is about to boot the machine into the agent: the current session
    /// ends, nothing queued for it survives, and the next lookup gets a fresh token.
    pub async fn boot_requested(&self, node: Uuid) -> Result<(), StoreError> {
        self.end(node, true, true).await
    }

    /// The machine left the agent (powered off, rebooted into its instance, or power
    /// changed by the operator): the token is dead and no new one is handed out until the
    /// conductor boots the agent again. What it was handed is dropped (it can never report
    /// it); what is queued stays.
    pub async fn session_ended(&self, node: Uuid) -> Result<(), StoreError> {
        self.end(node, false, false).await
    }

    /// How many nodes have a live agent session (a token handed out and not ended).
    pub async fn live_sessions(&self) -> Result<u64, StoreError> {
        self.store.count_agent_sessions().await
    }

    /// True when `hash` is the node's live token.
    pub async fn is_live(&self, node: Uuid, hash: &TokenHash) -> Result<bool, StoreError> {
        Ok(self
            .store
            .agent_session(node)
            .await?
            .is_some_and(|r| stored_is(r.token_hash.as_deref(), hash)))
    }

    /// A lookup for a known node: decides (and records) whether a token is issued. `fresh`
    /// is the hash of the token to issue; `presented` the hash of a token the caller sent.
    pub async fn lookup(
        &self,
        node: Uuid,
        presented: Option<&TokenHash>,
        fresh: TokenHash,
    ) -> Result<Decision, StoreError> {
        for _ in 0..RACE_RETRIES {
            let row = self.store.agent_session(node).await?;
            let expected = row.as_ref().map(|r| r.generation);
            let row = row.unwrap_or_default();
            let view = SessionView {
                boot_window: row.boot_window,
                live: row.token_hash.is_some(),
                presented_live: presented.is_some_and(|p| stored_is(row.token_hash.as_deref(), p)),
                presented_previous: presented
                    .is_some_and(|p| stored_is(row.previous_hash.as_deref(), p)),
            };
            let decision = session::decide(&view);
            match decision {
                Decision::Issue => {
                    let next = SessionRow {
                        token_hash: Some(to_hex(&fresh)),
                        previous_hash: row.previous_hash.clone(),
                        boot_window: false,
                        generation: row.generation + 1,
                        last_seen: Some(Utc::now()),
                    };
                    if !self.store.put_agent_session(node, expected, &next).await? {
                        continue;
                    }
                    self.seen_locally(node, true);
                    self.wake(node);
                }
                Decision::Continue => self.touch(node).await?,
                Decision::Conflict | Decision::NoBoot => {}
            }
            return Ok(decision);
        }
        Err(StoreError::Stale { uuid: node })
    }

    /// Discovery enrolled the machine just now: its agent's session begins with this token.
    pub async fn discovered(&self, node: Uuid, fresh: TokenHash) -> Result<(), StoreError> {
        for _ in 0..RACE_RETRIES {
            let row = self.store.agent_session(node).await?;
            let expected = row.as_ref().map(|r| r.generation);
            let row = row.unwrap_or_default();
            let next = SessionRow {
                token_hash: Some(to_hex(&fresh)),
                previous_hash: row.token_hash.or(row.previous_hash),
                boot_window: false,
                generation: row.generation + 1,
                last_seen: Some(Utc::now()),
            };
            if self.store.put_agent_session(node, expected, &next).await? {
                self.seen_locally(node, true);
                self.wake(node);
                return Ok(());
            }
        }
        Err(StoreError::Stale { uuid: node })
    }

    /// The token issued by [`Self::lookup`] could not be handed out: take it back and
    /// reopen the window, unless the session moved on meanwhile.
    pub async fn undo_issue(&self, node: Uuid, fresh: &TokenHash) -> Result<(), StoreError> {
        for _ in 0..RACE_RETRIES {
            let Some(row) = self.store.agent_session(node).await? else {
                return Ok(());
            };
            if !stored_is(row.token_hash.as_deref(), fresh) {
                return Ok(());
            }
            let next = SessionRow {
                token_hash: None,
                boot_window: true,
                generation: row.generation + 1,
                ..row.clone()
            };
            if self
                .store
                .put_agent_session(node, Some(row.generation), &next)
                .await?
            {
                return Ok(());
            }
        }
        Err(StoreError::Stale { uuid: node })
    }

    /// Takes the next command for the session `session` of `node`, waiting up to
    /// `timeout` for one; empty as soon as that session is no longer the live one.
    pub async fn next(
        &self,
        node: Uuid,
        session: &TokenHash,
        timeout: Duration,
    ) -> Result<Option<(Uuid, Command)>, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let hex = to_hex(session);
        loop {
            let notify = self.local().entry(node).or_default().notify.clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Registered before reading, so an enqueue in between is not missed.
            if let Some((id, body)) = self
                .store
                .hand_out_agent_command(node, &hex, Utc::now())
                .await?
            {
                self.seen_locally(node, false);
                return Ok(Some((id, parse_command(&body)?)));
            }
            if !self.is_live(node, session).await? {
                return Ok(None);
            }
            self.touch(node).await?;
            let wake_at = match self.options.poll_every {
                Some(every) => deadline.min(tokio::time::Instant::now() + every),
                None => deadline,
            };
            let woken = tokio::time::timeout_at(wake_at, notified).await.is_ok();
            if !woken && tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Puts every command handed to `session` and not reported back in the node's queue,
    /// in hand-out order. Called when that session's agent says it is idle: those commands
    /// went to a connection that died. Commands of other sessions stay where they are: a
    /// command is never handed to a token it was not handed to. Returns how many.
    pub async fn requeue_sent(&self, node: Uuid, session: &TokenHash) -> Result<u64, StoreError> {
        let n = self
            .store
            .requeue_agent_commands(node, &to_hex(session), Utc::now())
            .await?;
        if n > 0 {
            self.wake(node);
        }
        Ok(n)
    }

    /// A handed-out command of `session`, still running (for progress reports).
    pub async fn sent(
        &self,
        node: Uuid,
        session: &TokenHash,
        command_id: Uuid,
    ) -> Result<Option<Command>, StoreError> {
        match self.store.agent_command(command_id).await? {
            Some(c)
                if c.node == node
                    && matches!(c.state, CommandState::Sent | CommandState::Reporting)
                    && stored_is(c.session_hash.as_deref(), session) =>
            {
                Ok(Some(parse_command(&c.body)?))
            }
            _ => Ok(None),
        }
    }

    /// A result report for `command_id` arrived from `session`: what to do with it.
    pub async fn claim_result(
        &self,
        node: Uuid,
        session: &TokenHash,
        command_id: Uuid,
    ) -> Result<Claim, StoreError> {
        for _ in 0..RACE_RETRIES {
            let Some(c) = self.store.agent_command(command_id).await? else {
                return Ok(Claim::Unknown);
            };
            if c.node != node || !stored_is(c.session_hash.as_deref(), session) {
                return Ok(Claim::Unknown);
            }
            let now = Utc::now();
            let (from, before) = match c.state {
                CommandState::Queued => return Ok(Claim::Unknown),
                CommandState::Done => return Ok(Claim::Duplicate),
                CommandState::Sent => (CommandState::Sent, None),
                CommandState::Reporting => {
                    let stale = now - chrono::Duration::from_std(REPORT_STALE).unwrap_or_default();
                    if c.updated_at >= stale {
                        return Ok(Claim::InProgress);
                    }
                    (CommandState::Reporting, Some(stale))
                }
            };
            if self
                .store
                .move_agent_command(command_id, from, before, CommandState::Reporting, now)
                .await?
            {
                return Ok(Claim::Apply(parse_command(&c.body)?));
            }
        }
        Ok(Claim::InProgress)
    }

    /// The claimed result is stored: the command is done, a repeated report is a duplicate.
    pub async fn result_stored(&self, command_id: Uuid) -> Result<(), StoreError> {
        self.store
            .move_agent_command(
                command_id,
                CommandState::Reporting,
                None,
                CommandState::Done,
                Utc::now(),
            )
            .await
            .map(|_| ())
    }

    /// The claimed result could not be stored: the agent will send it again.
    pub async fn result_not_stored(&self, command_id: Uuid) -> Result<(), StoreError> {
        self.store
            .move_agent_command(
                command_id,
                CommandState::Reporting,
                None,
                CommandState::Sent,
                Utc::now(),
            )
            .await
            .map(|_| ())
    }

    /// Notes a sign of life here; true when it is time to write it to the store.
    fn seen_locally(&self, node: Uuid, recorded: bool) -> bool {
        let now = Instant::now();
        let mut local = self.local();
        let l = local.entry(node).or_default();
        l.last_seen = Some(now);
        if recorded {
            l.recorded = Some(now);
            return false;
        }
        let due = l.recorded.is_none_or(|t| t.elapsed() >= RECORD_SEEN_EVERY);
        if due {
            l.recorded = Some(now);
        }
        due
    }

    /// Marks the live session as heard from now (written to the store at most every few
    /// seconds, for the other replicas' timers and fast track).
    pub async fn touch(&self, node: Uuid) -> Result<(), StoreError> {
        if self.seen_locally(node, false) && self.options.record_seen {
            self.store.touch_agent_session(node, Utc::now()).await?;
        }
        Ok(())
    }

    /// When the node's agent was last heard from, by any replica (as recorded).
    pub async fn last_seen(&self, node: Uuid) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .store
            .agent_session(node)
            .await?
            .filter(|r| r.token_hash.is_some())
            .and_then(|r| r.last_seen))
    }

    /// Fast track: fast track is on, the node has a live session (which began with a boot
    /// the conductor asked for or with discovery, as every session does) and its agent was
    /// heard within the fast-track timeout, here or by another replica.
    pub async fn fast_track_ready(&self, node: Uuid) -> Result<bool, StoreError> {
        let Some(window) = self.options.fast_track else {
            return Ok(false);
        };
        let Some(row) = self.store.agent_session(node).await? else {
            return Ok(false);
        };
        if row.token_hash.is_none() {
            return Ok(false);
        }
        let here = self
            .local()
            .get(&node)
            .and_then(|l| l.last_seen)
            .is_some_and(|t| t.elapsed() <= window);
        let recorded = row.last_seen.is_some_and(|t| {
            (Utc::now() - t)
                .to_std()
                .is_ok_and(|age| age <= window.saturating_sub(RECORD_SEEN_EVERY))
        });
        Ok(here || recorded)
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

#[cfg(test)]
mod tests;
