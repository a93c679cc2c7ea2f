//! The `agent_sessions` and `agent_commands` tables ([`AgentSessions`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{SqlStore, from_micros, micros, parse_uuid, with_db};
use crate::store::StoreError;
use crate::store::sessions::{AgentSessions, CommandRow, CommandState, SessionRow};

type SessionTuple = (Option<String>, Option<String>, i64, i64, Option<i64>);
type CommandTuple = (String, String, i64, String, Option<String>, String, i64);

impl SqlStore {
    /// A command body as stored: sealed when secrets at rest are on (a config drive may
    /// carry passwords).
    fn seal_body(&self, body: &str) -> String {
        match &self.secrets {
            Some(b) => b.seal(body),
            None => body.to_owned(),
        }
    }

    fn open_body(&self, stored: String) -> Result<String, StoreError> {
        match &self.secrets {
            Some(b) => b.open_value(&stored).map_err(|e| {
                StoreError::Database(format!("agent command cannot be opened: {e}").into())
            }),
            None => Ok(stored),
        }
    }

    fn command_row(&self, row: CommandTuple) -> Result<CommandRow, StoreError> {
        let (id, node, seq, state, session_hash, body, updated_at) = row;
        Ok(CommandRow {
            id: parse_uuid(&id)?,
            node: parse_uuid(&node)?,
            seq,
            state: CommandState::parse(&state)?,
            session_hash,
            body: self.open_body(body)?,
            updated_at: from_micros(updated_at)?,
        })
    }
}

#[async_trait]
impl AgentSessions for SqlStore {
    async fn agent_session(&self, node: Uuid) -> Result<Option<SessionRow>, StoreError> {
        let sql = "SELECT token_hash, previous_hash, boot_window, generation, last_seen \
                   FROM agent_sessions WHERE node_uuid = $1";
        let row: Option<SessionTuple> = with_db!(self, read, |pool| {
            sqlx::query_as(sql)
                .bind(node.to_string())
                .fetch_optional(pool)
                .await?
        });
        row.map(|(token_hash, previous_hash, window, generation, seen)| {
            Ok(SessionRow {
                token_hash,
                previous_hash,
                boot_window: window != 0,
                generation,
                last_seen: seen.map(from_micros).transpose()?,
            })
        })
        .transpose()
    }

    async fn put_agent_session(
        &self,
        node: Uuid,
        expected: Option<i64>,
        row: &SessionRow,
    ) -> Result<bool, StoreError> {
        let id = node.to_string();
        let seen = row.last_seen.map(micros);
        let window = i64::from(row.boot_window);
        let done = match expected {
            // The node must exist (a lookup of a node deleted meanwhile changes nothing).
            None => {
                let sql = "INSERT INTO agent_sessions (node_uuid, token_hash, previous_hash, \
                           boot_window, generation, last_seen) SELECT $1, $2, $3, $4, $5, $6 \
                           WHERE EXISTS (SELECT 1 FROM nodes WHERE uuid = $1) \
                           ON CONFLICT (node_uuid) DO NOTHING";
                with_db!(self, write, |pool| {
                    sqlx::query(sql)
                        .bind(id.as_str())
                        .bind(row.token_hash.as_deref())
                        .bind(row.previous_hash.as_deref())
                        .bind(window)
                        .bind(row.generation)
                        .bind(seen)
                        .execute(pool)
                        .await?
                        .rows_affected()
                })
            }
            Some(generation) => {
                let sql = "UPDATE agent_sessions SET token_hash = $2, previous_hash = $3, \
                           boot_window = $4, generation = $5, last_seen = $6 \
                           WHERE node_uuid = $1 AND generation = $7";
                with_db!(self, write, |pool| {
                    sqlx::query(sql)
                        .bind(id.as_str())
                        .bind(row.token_hash.as_deref())
                        .bind(row.previous_hash.as_deref())
                        .bind(window)
                        .bind(row.generation)
                        .bind(seen)
                        .bind(generation)
                        .execute(pool)
                        .await?
                        .rows_affected()
                })
            }
        };
        Ok(done == 1)
    }

    async fn end_agent_session(
        &self,
        node: Uuid,
        boot_window: bool,
        drop_queued: bool,
    ) -> Result<(), StoreError> {
        let upsert = "INSERT INTO agent_sessions (node_uuid, token_hash, previous_hash, \
                      boot_window, generation, last_seen) \
                      SELECT $1, NULL, NULL, $2, 1, NULL \
                      WHERE EXISTS (SELECT 1 FROM nodes WHERE uuid = $1) \
                      ON CONFLICT (node_uuid) DO UPDATE SET \
                      previous_hash = COALESCE(agent_sessions.token_hash, \
                      agent_sessions.previous_hash), token_hash = NULL, \
                      boot_window = excluded.boot_window, \
                      generation = agent_sessions.generation + 1, last_seen = NULL";
        let drop = if drop_queued {
            "DELETE FROM agent_commands WHERE node_uuid = $1"
        } else {
            "DELETE FROM agent_commands WHERE node_uuid = $1 AND state IN ('sent', 'reporting')"
        };
        let id = node.to_string();
        with_db!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(upsert)
                .bind(id.as_str())
                .bind(i64::from(boot_window))
                .execute(&mut *tx)
                .await?;
            sqlx::query(drop)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    async fn touch_agent_session(&self, node: Uuid, at: DateTime<Utc>) -> Result<(), StoreError> {
        let sql = "UPDATE agent_sessions SET last_seen = $2 WHERE node_uuid = $1";
        with_db!(self, write, |pool| {
            sqlx::query(sql)
                .bind(node.to_string())
                .bind(micros(at))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    async fn count_agent_sessions(&self) -> Result<u64, StoreError> {
        let sql = "SELECT COUNT(*) FROM agent_sessions WHERE token_hash IS NOT NULL";
        let (n,): (i64,) = with_db!(self, read, |pool| {
            sqlx::query_as(sql).fetch_one(pool).await?
        });
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn push_agent_command(
        &self,
        node: Uuid,
        id: Uuid,
        body: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO agent_commands (id, node_uuid, seq, state, session_hash, body, \
                   updated_at) SELECT $1, $2, \
                   COALESCE((SELECT MAX(seq) FROM agent_commands WHERE node_uuid = $2), 0) + 1, \
                   'queued', NULL, $3, $4";
        let sealed = self.seal_body(body);
        with_db!(self, write, |pool| {
            sqlx::query(sql)
                .bind(id.to_string())
                .bind(node.to_string())
                .bind(sealed.as_str())
                .bind(micros(at))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    async fn hand_out_agent_command(
        &self,
        node: Uuid,
        session: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<(Uuid, String)>, StoreError> {
        // Most long-polls find nothing: ask a reader first, so they never queue for the
        // writer (SQLite has one).
        let peek = "SELECT 1 FROM agent_commands WHERE node_uuid = $1 AND state = 'queued' LIMIT 1";
        let any: Option<(i32,)> = with_db!(self, read, |pool| {
            sqlx::query_as(peek)
                .bind(node.to_string())
                .fetch_optional(pool)
                .await?
        });
        if any.is_none() {
            return Ok(None);
        }
        let sql = "UPDATE agent_commands SET state = 'sent', session_hash = $2, updated_at = $3 \
                   WHERE id = (SELECT c.id FROM agent_commands c WHERE c.node_uuid = $1 \
                   AND c.state = 'queued' ORDER BY c.seq LIMIT 1) \
                   AND state = 'queued' \
                   AND EXISTS (SELECT 1 FROM agent_sessions s WHERE s.node_uuid = $1 \
                   AND s.token_hash = $2) \
                   RETURNING id, body";
        let row: Option<(String, String)> = with_db!(self, write, |pool| {
            sqlx::query_as(sql)
                .bind(node.to_string())
                .bind(session)
                .bind(micros(at))
                .fetch_optional(pool)
                .await?
        });
        row.map(|(id, body)| Ok((parse_uuid(&id)?, self.open_body(body)?)))
            .transpose()
    }

    async fn requeue_agent_commands(
        &self,
        node: Uuid,
        session: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // Every idle heartbeat asks; almost always nothing was lost: a reader says so.
        let peek = "SELECT 1 FROM agent_commands WHERE node_uuid = $1 AND session_hash = $2 \
                    AND state = 'sent' LIMIT 1";
        let any: Option<(i32,)> = with_db!(self, read, |pool| {
            sqlx::query_as(peek)
                .bind(node.to_string())
                .bind(session)
                .fetch_optional(pool)
                .await?
        });
        if any.is_none() {
            return Ok(0);
        }
        let sql = "UPDATE agent_commands SET state = 'queued', session_hash = NULL, \
                   updated_at = $3 WHERE node_uuid = $1 AND session_hash = $2 AND state = 'sent'";
        Ok(with_db!(self, write, |pool| {
            sqlx::query(sql)
                .bind(node.to_string())
                .bind(session)
                .bind(micros(at))
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    async fn agent_command(&self, id: Uuid) -> Result<Option<CommandRow>, StoreError> {
        let sql = "SELECT id, node_uuid, seq, state, session_hash, body, updated_at \
                   FROM agent_commands WHERE id = $1";
        let row: Option<CommandTuple> = with_db!(self, read, |pool| {
            sqlx::query_as(sql)
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        });
        row.map(|r| self.command_row(r)).transpose()
    }

    async fn move_agent_command(
        &self,
        id: Uuid,
        from: CommandState,
        changed_before: Option<DateTime<Utc>>,
        to: CommandState,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE agent_commands SET state = $3, updated_at = $4 \
                   WHERE id = $1 AND state = $2 AND ($5 IS NULL OR updated_at < $5)";
        let done = with_db!(self, write, |pool| {
            sqlx::query(sql)
                .bind(id.to_string())
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(micros(at))
                .bind(changed_before.map(micros))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    async fn queued_agent_commands(&self, node: Uuid) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT body FROM agent_commands WHERE node_uuid = $1 AND state = 'queued' \
                   ORDER BY seq";
        let rows: Vec<(String,)> = with_db!(self, read, |pool| {
            sqlx::query_as(sql)
                .bind(node.to_string())
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(|(b,)| self.open_body(b)).collect()
    }
}
