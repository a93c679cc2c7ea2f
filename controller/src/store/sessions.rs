//! Agent sessions and their command queues, in the database: every replica's agent API and
//! conductor read and change one truth (`agent_sessions`, `agent_commands`), so an agent may
//! talk to any replica and a survivor continues what a dead one handed out.
//!
//! The rules (who gets a token, who a command goes to) are the hub's (`crate::hub`); this
//! is their storage, each change one conditional statement or transaction so two replicas
//! never both succeed. [`MemorySessions`] keeps the same rows in memory for unit tests.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreError;

/// A node's agent session as stored. Token hashes are lower-case hex SHA-256.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRow {
    /// The live token's hash (`None`: no live session).
    pub token_hash: Option<String>,
    /// The token of the session the last boot ended (refused in the next window).
    pub previous_hash: Option<String>,
    /// The conductor booted the machine into the agent and no lookup took a token yet.
    pub boot_window: bool,
    /// Bumped at every change of the live session; writes are conditional on it.
    pub generation: i64,
    /// The agent's last sign of life as recorded (throttled by the hub).
    pub last_seen: Option<DateTime<Utc>>,
}

/// Where a queued command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandState {
    /// Waiting for the node's agent to ask.
    Queued,
    /// Handed to the session in `session_hash`; its result is awaited.
    Sent,
    /// A result report is being stored (since `updated_at`).
    Reporting,
    /// Its result is stored.
    Done,
}

impl CommandState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Reporting => "reporting",
            Self::Done => "done",
        }
    }

    /// The state a stored name stands for.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "queued" => Self::Queued,
            "sent" => Self::Sent,
            "reporting" => Self::Reporting,
            "done" => Self::Done,
            other => {
                return Err(StoreError::Database(
                    format!("unknown agent command state {other:?}").into(),
                ));
            }
        })
    }
}

/// One command of a node's agent as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRow {
    pub id: Uuid,
    pub node: Uuid,
    pub seq: i64,
    pub state: CommandState,
    /// The session it was handed to (`Sent`, `Reporting`, `Done`).
    pub session_hash: Option<String>,
    /// The command's JSON (`proto::protocol::Command`).
    pub body: String,
    pub updated_at: DateTime<Utc>,
}

/// The storage of agent sessions and commands.
#[async_trait]
pub trait AgentSessions: Send + Sync + std::fmt::Debug {
    async fn agent_session(&self, node: Uuid) -> Result<Option<SessionRow>, StoreError>;
    /// Writes `row` (its `generation` as given) when the stored generation is still
    /// `expected` (`None`: no row yet). False when another writer got there first or the
    /// node is gone.
    async fn put_agent_session(
        &self,
        node: Uuid,
        expected: Option<i64>,
        row: &SessionRow,
    ) -> Result<bool, StoreError>;
    /// Ends the live session in one transaction: its token becomes the previous one, the
    /// boot window is `boot_window`, the generation moves on, the commands handed to it are
    /// dropped, and with `drop_queued` every command of the node goes. No-op for a node
    /// that is gone.
    async fn end_agent_session(
        &self,
        node: Uuid,
        boot_window: bool,
        drop_queued: bool,
    ) -> Result<(), StoreError>;
    /// Records a sign of life at `at`.
    async fn touch_agent_session(&self, node: Uuid, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Nodes with a live session.
    async fn count_agent_sessions(&self) -> Result<u64, StoreError>;
    /// Queues a command after the node's others.
    async fn push_agent_command(
        &self,
        node: Uuid,
        id: Uuid,
        body: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Hands the node's oldest queued command to `session`, if `session` is the node's live
    /// token (one statement: two replicas never hand out one command).
    async fn hand_out_agent_command(
        &self,
        node: Uuid,
        session: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<(Uuid, String)>, StoreError>;
    /// Puts the commands handed to `session` and not reported back in the queue; how many.
    async fn requeue_agent_commands(
        &self,
        node: Uuid,
        session: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    async fn agent_command(&self, id: Uuid) -> Result<Option<CommandRow>, StoreError>;
    /// Moves a command from `from` to `to` when it is still in `from` and (with
    /// `changed_before`) last changed before that time; true when it moved.
    async fn move_agent_command(
        &self,
        id: Uuid,
        from: CommandState,
        changed_before: Option<DateTime<Utc>>,
        to: CommandState,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// The bodies of the node's queued commands, oldest first.
    async fn queued_agent_commands(&self, node: Uuid) -> Result<Vec<String>, StoreError>;
}

#[derive(Debug, Default)]
struct Rows {
    sessions: HashMap<Uuid, SessionRow>,
    commands: Vec<CommandRow>,
}

/// [`AgentSessions`] in memory (unit tests; every node exists).
#[derive(Debug, Default)]
pub struct MemorySessions {
    rows: Mutex<Rows>,
}

impl MemorySessions {
    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl AgentSessions for MemorySessions {
    async fn agent_session(&self, node: Uuid) -> Result<Option<SessionRow>, StoreError> {
        Ok(self.rows().sessions.get(&node).cloned())
    }

    async fn put_agent_session(
        &self,
        node: Uuid,
        expected: Option<i64>,
        row: &SessionRow,
    ) -> Result<bool, StoreError> {
        let mut rows = self.rows();
        let current = rows.sessions.get(&node).map(|r| r.generation);
        if current != expected {
            return Ok(false);
        }
        rows.sessions.insert(node, row.clone());
        Ok(true)
    }

    async fn end_agent_session(
        &self,
        node: Uuid,
        boot_window: bool,
        drop_queued: bool,
    ) -> Result<(), StoreError> {
        let mut rows = self.rows();
        let row = rows.sessions.entry(node).or_default();
        if row.token_hash.is_some() {
            row.previous_hash = row.token_hash.take();
        }
        row.boot_window = boot_window;
        row.generation += 1;
        row.last_seen = None;
        rows.commands.retain(|c| {
            c.node != node
                || (!drop_queued && matches!(c.state, CommandState::Queued | CommandState::Done))
        });
        Ok(())
    }

    async fn touch_agent_session(&self, node: Uuid, at: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some(row) = self.rows().sessions.get_mut(&node) {
            row.last_seen = Some(at);
        }
        Ok(())
    }

    async fn count_agent_sessions(&self) -> Result<u64, StoreError> {
        Ok(self
            .rows()
            .sessions
            .values()
            .filter(|r| r.token_hash.is_some())
            .count() as u64)
    }

    async fn push_agent_command(
        &self,
        node: Uuid,
        id: Uuid,
        body: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut rows = self.rows();
        let seq = rows
            .commands
            .iter()
            .filter(|c| c.node == node)
            .map(|c| c.seq)
            .max()
            .unwrap_or(0)
            + 1;
        rows.commands.push(CommandRow {
            id,
            node,
            seq,
            state: CommandState::Queued,
            session_hash: None,
            body: body.to_owned(),
            updated_at: at,
        });
        Ok(())
    }

    async fn hand_out_agent_command(
        &self,
        node: Uuid,
        session: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<(Uuid, String)>, StoreError> {
        let mut rows = self.rows();
        let live = rows
            .sessions
            .get(&node)
            .is_some_and(|r| r.token_hash.as_deref() == Some(session));
        if !live {
            return Ok(None);
        }
        let next = rows
            .commands
            .iter_mut()
            .filter(|c| c.node == node && c.state == CommandState::Queued)
            .min_by_key(|c| c.seq);
        Ok(next.map(|c| {
            c.state = CommandState::Sent;
            c.session_hash = Some(session.to_owned());
            c.updated_at = at;
            (c.id, c.body.clone())
        }))
    }

    async fn requeue_agent_commands(
        &self,
        node: Uuid,
        session: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for c in self.rows().commands.iter_mut() {
            if c.node == node
                && c.state == CommandState::Sent
                && c.session_hash.as_deref() == Some(session)
            {
                c.state = CommandState::Queued;
                c.session_hash = None;
                c.updated_at = at;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn agent_command(&self, id: Uuid) -> Result<Option<CommandRow>, StoreError> {
        Ok(self.rows().commands.iter().find(|c| c.id == id).cloned())
    }

    async fn move_agent_command(
        &self,
        id: Uuid,
        from: CommandState,
        changed_before: Option<DateTime<Utc>>,
        to: CommandState,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut rows = self.rows();
        let Some(c) = rows.commands.iter_mut().find(|c| c.id == id) else {
            return Ok(false);
        };
        if c.state != from || changed_before.is_some_and(|t| c.updated_at >= t) {
            return Ok(false);
        }
        c.state = to;
        c.updated_at = at;
        Ok(true)
    }

    async fn queued_agent_commands(&self, node: Uuid) -> Result<Vec<String>, StoreError> {
        let rows = self.rows();
        let mut queued: Vec<&CommandRow> = rows
            .commands
            .iter()
            .filter(|c| c.node == node && c.state == CommandState::Queued)
            .collect();
        queued.sort_by_key(|c| c.seq);
        Ok(queued.into_iter().map(|c| c.body.clone()).collect())
    }
}
