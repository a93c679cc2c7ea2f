//! The `inspection_rules` table: the rules the operator manages at `/v1/inspection_rules`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{SqlStore, Violation, from_micros, micros, violation, with_db};
use crate::inspection_rules::{InspectionRule, Operation};
use crate::store::StoreError;

/// What `doc` holds.
#[derive(Serialize, Deserialize)]
struct Doc {
    description: Option<String>,
    sensitive: bool,
    conditions: Vec<Operation>,
    actions: Vec<Operation>,
}

type Row = (String, i64, String, String, i64, Option<i64>);

const SELECT: &str =
    "SELECT uuid, priority, phase, doc, created_at, updated_at FROM inspection_rules";

fn from_row(row: Row) -> Result<InspectionRule, StoreError> {
    let (uuid, priority, phase, doc, created, updated) = row;
    let doc: Doc = serde_json::from_str(&doc)?;
    Ok(InspectionRule {
        uuid: Uuid::parse_str(&uuid)
            .map_err(|e| StoreError::Database(format!("rule uuid {uuid:?}: {e}").into()))?,
        description: doc.description,
        priority,
        sensitive: doc.sensitive,
        phase,
        conditions: doc.conditions,
        actions: doc.actions,
        created_at: from_micros(created)?,
        updated_at: updated.map(from_micros).transpose()?,
    })
}

fn doc(rule: &InspectionRule) -> Result<String, StoreError> {
    Ok(serde_json::to_string(&Doc {
        description: rule.description.clone(),
        sensitive: rule.sensitive,
        conditions: rule.conditions.clone(),
        actions: rule.actions.clone(),
    })?)
}

fn not_found(uuid: Uuid) -> StoreError {
    StoreError::NotFound {
        kind: "inspection rule",
        ident: uuid.to_string(),
    }
}

impl SqlStore {
    pub(super) async fn rule_create(&self, rule: &InspectionRule) -> Result<(), StoreError> {
        let doc = doc(rule)?;
        let result = with_db!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO inspection_rules (uuid, priority, phase, doc, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(rule.uuid.to_string())
            .bind(rule.priority)
            .bind(rule.phase.as_str())
            .bind(doc.as_str())
            .bind(micros(rule.created_at))
            .bind(rule.updated_at.map(micros))
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        result
            .map(|_| ())
            .map_err(|err| match violation(&err, "inspection_rules", &["uuid"]) {
                Some(Violation::Unique(_)) => StoreError::Duplicate {
                    kind: "inspection rule",
                    field: "uuid",
                    value: rule.uuid.to_string(),
                },
                _ => err.into(),
            })
    }

    pub(super) async fn rule_get(&self, uuid: Uuid) -> Result<Option<InspectionRule>, StoreError> {
        let sql = format!("{SELECT} WHERE uuid = $1");
        let row: Option<Row> = with_db!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(uuid.to_string())
                .fetch_optional(pool)
                .await?
        });
        row.map(from_row).transpose()
    }

    /// Every rule, highest priority first, then by UUID.
    pub(super) async fn rule_list(&self) -> Result<Vec<InspectionRule>, StoreError> {
        let sql = format!("{SELECT} ORDER BY priority DESC, uuid");
        let rows: Vec<Row> = with_db!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(from_row).collect()
    }

    pub(super) async fn rule_update(&self, rule: &InspectionRule) -> Result<(), StoreError> {
        let doc = doc(rule)?;
        let done = with_db!(self, write, |pool| {
            sqlx::query(
                "UPDATE inspection_rules SET priority = $2, phase = $3, doc = $4, updated_at = $5 \
                 WHERE uuid = $1",
            )
            .bind(rule.uuid.to_string())
            .bind(rule.priority)
            .bind(rule.phase.as_str())
            .bind(doc.as_str())
            .bind(rule.updated_at.map(micros))
            .execute(pool)
            .await?
            .rows_affected()
        });
        if done == 0 {
            return Err(not_found(rule.uuid));
        }
        Ok(())
    }

    pub(super) async fn rule_delete(&self, uuid: Uuid) -> Result<(), StoreError> {
        let done = with_db!(self, write, |pool| {
            sqlx::query("DELETE FROM inspection_rules WHERE uuid = $1")
                .bind(uuid.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        if done == 0 {
            return Err(not_found(uuid));
        }
        Ok(())
    }
}
