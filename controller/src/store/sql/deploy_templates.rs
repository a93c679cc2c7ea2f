//! The `deploy_templates` table: the templates the operator manages at
//! `/v1/deploy_templates`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{SqlStore, Violation, from_micros, micros, violation, with_db};
use crate::deploy_templates::{DeployTemplate, TemplateStep};
use crate::model::JsonMap;
use crate::store::StoreError;

/// What `doc` holds.
#[derive(Serialize, Deserialize)]
struct Doc {
    steps: Vec<TemplateStep>,
    #[serde(default)]
    extra: JsonMap,
}

type Row = (String, String, String, i64, Option<i64>);

const SELECT: &str = "SELECT uuid, name, doc, created_at, updated_at FROM deploy_templates";

fn from_row(row: Row) -> Result<DeployTemplate, StoreError> {
    let (uuid, name, doc, created, updated) = row;
    let doc: Doc = serde_json::from_str(&doc)?;
    Ok(DeployTemplate {
        uuid: Uuid::parse_str(&uuid)
            .map_err(|e| StoreError::Database(format!("template uuid {uuid:?}: {e}").into()))?,
        name,
        steps: doc.steps,
        extra: doc.extra,
        created_at: from_micros(created)?,
        updated_at: updated.map(from_micros).transpose()?,
    })
}

fn doc(t: &DeployTemplate) -> Result<String, StoreError> {
    Ok(serde_json::to_string(&Doc {
        steps: t.steps.clone(),
        extra: t.extra.clone(),
    })?)
}

fn not_found(ident: String) -> StoreError {
    StoreError::NotFound {
        kind: "deploy template",
        ident,
    }
}

fn write_error(err: sqlx::Error, t: &DeployTemplate) -> StoreError {
    match violation(&err, "deploy_templates", &["uuid", "name"]) {
        Some(Violation::Unique(Some("name"))) => StoreError::Duplicate {
            kind: "deploy template",
            field: "name",
            value: t.name.clone(),
        },
        Some(Violation::Unique(_)) => StoreError::Duplicate {
            kind: "deploy template",
            field: "uuid",
            value: t.uuid.to_string(),
        },
        _ => err.into(),
    }
}

impl SqlStore {
    pub(super) async fn template_create(&self, t: &DeployTemplate) -> Result<(), StoreError> {
        let doc = doc(t)?;
        let result = with_db!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO deploy_templates (uuid, name, doc, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(t.uuid.to_string())
            .bind(t.name.as_str())
            .bind(doc.as_str())
            .bind(micros(t.created_at))
            .bind(t.updated_at.map(micros))
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        result.map(|_| ()).map_err(|err| write_error(err, t))
    }

    /// One template by `column` (`uuid` or `name`).
    pub(super) async fn template_get(
        &self,
        column: &'static str,
        value: String,
    ) -> Result<Option<DeployTemplate>, StoreError> {
        let sql = match column {
            "uuid" => format!("{SELECT} WHERE uuid = $1"),
            _ => format!("{SELECT} WHERE name = $1"),
        };
        let row: Option<Row> = with_db!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(value)
                .fetch_optional(pool)
                .await?
        });
        row.map(from_row).transpose()
    }

    /// Every template, in creation order.
    pub(super) async fn template_list(&self) -> Result<Vec<DeployTemplate>, StoreError> {
        let sql = format!("{SELECT} ORDER BY id");
        let rows: Vec<Row> = with_db!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(from_row).collect()
    }

    pub(super) async fn template_update(&self, t: &DeployTemplate) -> Result<(), StoreError> {
        let doc = doc(t)?;
        let result = with_db!(self, write, |pool| {
            sqlx::query(
                "UPDATE deploy_templates SET name = $2, doc = $3, updated_at = $4 \
                 WHERE uuid = $1",
            )
            .bind(t.uuid.to_string())
            .bind(t.name.as_str())
            .bind(doc.as_str())
            .bind(t.updated_at.map(micros))
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        match result {
            Ok(0) => Err(not_found(t.uuid.to_string())),
            Ok(_) => Ok(()),
            Err(err) => Err(write_error(err, t)),
        }
    }

    pub(super) async fn template_delete(&self, uuid: Uuid) -> Result<(), StoreError> {
        let done = with_db!(self, write, |pool| {
            sqlx::query("DELETE FROM deploy_templates WHERE uuid = $1")
                .bind(uuid.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        if done == 0 {
            return Err(not_found(uuid.to_string()));
        }
        Ok(())
    }
}
