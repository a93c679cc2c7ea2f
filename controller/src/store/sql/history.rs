//! Node history events and the hardware inventory agents report.

use serde_json::Value;
use uuid::Uuid;

use super::{SqlStore, Violation, micros, to_doc, violation, with_db};
use crate::model::HistoryEvent;
use crate::store::StoreError;

fn node_not_found(uuid: Uuid) -> StoreError {
    StoreError::NotFound {
        kind: "node",
        ident: uuid.to_string(),
    }
}

impl SqlStore {
    pub(super) async fn history_add(&self, event: &HistoryEvent) -> Result<(), StoreError> {
        let doc = to_doc(event, &[])?;
        let result = with_db!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO node_history (uuid, node_uuid, created_at, doc) VALUES ($1, $2, $3, $4)",
            )
            .bind(event.uuid.to_string())
            .bind(event.node_uuid.to_string())
            .bind(micros(event.created_at))
            .bind(doc)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        match result {
            Ok(_) => Ok(()),
            Err(err) => match violation(&err, "node_history", &["uuid"]) {
                Some(Violation::ForeignKey) => Err(node_not_found(event.node_uuid)),
                Some(Violation::Unique(_)) => Err(StoreError::Duplicate {
                    kind: "history event",
                    field: "uuid",
                    value: event.uuid.to_string(),
                }),
                None => Err(err.into()),
            },
        }
    }

    pub(super) async fn history_list(&self, node: Uuid) -> Result<Vec<HistoryEvent>, StoreError> {
        let rows: Vec<(String,)> = with_db!(self, read, |pool| {
            sqlx::query_as(
                "SELECT doc FROM node_history WHERE node_uuid = $1 ORDER BY created_at, id",
            )
            .bind(node.to_string())
            .fetch_all(pool)
            .await?
        });
        rows.iter()
            .map(|(doc,)| serde_json::from_str(doc).map_err(StoreError::from))
            .collect()
    }

    pub(super) async fn inventory_put(
        &self,
        node: Uuid,
        inventory: &Value,
    ) -> Result<(), StoreError> {
        let doc = serde_json::to_string(inventory)?;
        let result = with_db!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO node_inventory (node_uuid, doc) VALUES ($1, $2) \
                 ON CONFLICT (node_uuid) DO UPDATE SET doc = excluded.doc",
            )
            .bind(node.to_string())
            .bind(doc)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if matches!(
                    violation(&err, "node_inventory", &[]),
                    Some(Violation::ForeignKey)
                ) =>
            {
                Err(node_not_found(node))
            }
            Err(err) => Err(err.into()),
        }
    }

    pub(super) async fn inventory_get(&self, node: Uuid) -> Result<Option<Value>, StoreError> {
        let row: Option<(String,)> = with_db!(self, read, |pool| {
            sqlx::query_as("SELECT doc FROM node_inventory WHERE node_uuid = $1")
                .bind(node.to_string())
                .fetch_optional(pool)
                .await?
        });
        row.map(|(doc,)| serde_json::from_str(&doc).map_err(StoreError::from))
            .transpose()
    }
}
