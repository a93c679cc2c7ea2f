//! The `conductors` table: each `ingot serve` registers itself and heartbeats.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;

use super::{SqlStore, from_micros, micros, with_db};
use crate::model::ConductorRecord;
use crate::store::StoreError;

/// What `doc` holds.
#[derive(Serialize, Deserialize)]
struct Doc {
    drivers: Vec<String>,
    listen: Vec<String>,
    version: String,
}

type Row = (String, String, String, i64, i64, i64, i64);

const SELECT: &str = "SELECT hostname, conductor_group, doc, online, started_at, created_at, \
                      updated_at FROM conductors";

fn from_row(row: Row) -> Result<ConductorRecord, StoreError> {
    let (hostname, conductor_group, doc, online, started, created, updated) = row;
    let doc: Doc = serde_json::from_str(&doc)?;
    Ok(ConductorRecord {
        hostname,
        conductor_group,
        drivers: doc.drivers,
        listen: doc.listen,
        version: doc.version,
        online: online != 0,
        started_at: from_micros(started)?,
        created_at: from_micros(created)?,
        updated_at: from_micros(updated)?,
    })
}

impl SqlStore {
    /// Inserts or replaces the row of `c.hostname` (its `created_at` is kept).
    pub(super) async fn conductor_register(&self, c: &ConductorRecord) -> Result<(), StoreError> {
        let doc = serde_json::to_string(&Doc {
            drivers: c.drivers.clone(),
            listen: c.listen.clone(),
            version: c.version.clone(),
        })?;
        let sql = "INSERT INTO conductors (hostname, conductor_group, doc, online, started_at, \
                   created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                   ON CONFLICT (hostname) DO UPDATE SET conductor_group = excluded.conductor_group, \
                   doc = excluded.doc, online = excluded.online, started_at = excluded.started_at, \
                   updated_at = excluded.updated_at";
        with_db!(self, write, |pool| {
            sqlx::query(sql)
                .bind(c.hostname.as_str())
                .bind(c.conductor_group.as_str())
                .bind(doc.as_str())
                .bind(i64::from(c.online))
                .bind(micros(c.started_at))
                .bind(micros(c.created_at))
                .bind(micros(c.updated_at))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Sets `updated_at` (and `online`); false when the row is gone.
    pub(super) async fn conductor_touch(
        &self,
        hostname: &str,
        online: bool,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE conductors SET updated_at = $2, online = $3 WHERE hostname = $1";
        let done = with_db!(self, write, |pool| {
            sqlx::query(sql)
                .bind(hostname)
                .bind(micros(at))
                .bind(i64::from(online))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    /// Every registered conductor, by hostname.
    pub(super) async fn conductor_list(&self) -> Result<Vec<ConductorRecord>, StoreError> {
        let sql = format!("{SELECT} ORDER BY hostname");
        let rows: Vec<Row> = with_db!(self, read, |pool| {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(from_row).collect()
    }
}
