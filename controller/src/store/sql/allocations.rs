//! Allocation records, unique by UUID and by name.

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::{
    Arg, QueryBuilder, SqlStore, Violation, bind_args, limit_of, opt_text, to_doc, violation,
    with_db,
};
use crate::model::Allocation;
use crate::store::{AllocationQuery, StoreError};

fn allocation_write_error(err: sqlx::Error, allocation: &Allocation) -> StoreError {
    match violation(&err, "allocations", &["uuid", "name"]) {
        Some(Violation::Unique(Some("name"))) => StoreError::Duplicate {
            kind: "allocation",
            field: "name",
            value: allocation.name.clone().unwrap_or_default(),
        },
        Some(Violation::Unique(_)) => StoreError::Duplicate {
            kind: "allocation",
            field: "uuid",
            value: allocation.uuid.to_string(),
        },
        _ => err.into(),
    }
}

fn not_found(ident: impl ToString) -> StoreError {
    StoreError::NotFound {
        kind: "allocation",
        ident: ident.to_string(),
    }
}

fn parse(doc: &str) -> Result<Allocation, StoreError> {
    serde_json::from_str(doc).map_err(StoreError::from)
}

impl SqlStore {
    pub(super) async fn allocation_create(
        &self,
        allocation: &Allocation,
    ) -> Result<(), StoreError> {
        let doc = to_doc(allocation, &[])?;
        let result = with_db!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO allocations (uuid, name, node_uuid, state, resource_class, owner, doc) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(allocation.uuid.to_string())
            .bind(allocation.name.as_deref())
            .bind(opt_text(allocation.node_uuid))
            .bind(allocation.state.as_str())
            .bind(allocation.resource_class.as_deref())
            .bind(allocation.owner.as_deref())
            .bind(doc)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        result
            .map(|_| ())
            .map_err(|err| allocation_write_error(err, allocation))
    }

    /// Reads one allocation by `column` (`uuid` or `name`).
    pub(super) async fn allocation_get(
        &self,
        column: &'static str,
        value: String,
    ) -> Result<Option<Allocation>, StoreError> {
        let sql = if column == "uuid" {
            "SELECT doc FROM allocations WHERE uuid = $1"
        } else {
            "SELECT doc FROM allocations WHERE name = $1"
        };
        let row: Option<(String,)> = with_db!(self, read, |pool| {
            sqlx::query_as(sql).bind(value).fetch_optional(pool).await?
        });
        row.map(|(doc,)| parse(&doc)).transpose()
    }

    pub(super) async fn allocation_list(
        &self,
        query: &AllocationQuery,
    ) -> Result<Vec<Allocation>, StoreError> {
        let mut sql = QueryBuilder::new("SELECT doc FROM allocations");
        let mut conds = Vec::new();
        let filters = [
            ("node_uuid", query.node_uuid.map(|uuid| uuid.to_string())),
            ("state", query.state.clone()),
            ("resource_class", query.resource_class.clone()),
            ("owner", query.owner.clone()),
        ];
        for (column, value) in filters {
            if let Some(value) = value {
                let placeholder = sql.arg(Arg::Text(value));
                conds.push(format!("{column} = {placeholder}"));
            }
        }
        if let Some(marker) = query.marker {
            let placeholder = sql.arg(Arg::Text(marker.to_string()));
            conds.push(format!(
                "id > (SELECT id FROM allocations WHERE uuid = {placeholder})"
            ));
        }
        if !conds.is_empty() {
            sql.push(" WHERE ");
            sql.push(&conds.join(" AND "));
        }
        let placeholder = sql.arg(Arg::Int(limit_of(query.limit)));
        sql.push(&format!(" ORDER BY id ASC LIMIT {placeholder}"));
        let QueryBuilder { sql, args, .. } = sql;
        let rows: Vec<(String,)> = with_db!(self, read, |pool| {
            bind_args!(sqlx::query_as(AssertSqlSafe(sql)), &args)
                .fetch_all(pool)
                .await?
        });
        if rows.is_empty()
            && let Some(marker) = query.marker
            && self
                .allocation_get("uuid", marker.to_string())
                .await?
                .is_none()
        {
            return Err(not_found(marker));
        }
        rows.iter().map(|(doc,)| parse(doc)).collect()
    }

    pub(super) async fn allocation_update(
        &self,
        allocation: &Allocation,
    ) -> Result<(), StoreError> {
        let doc = to_doc(allocation, &[])?;
        let result = with_db!(self, write, |pool| {
            sqlx::query(
                "UPDATE allocations SET name = $2, node_uuid = $3, state = $4, \
                 resource_class = $5, owner = $6, doc = $7 WHERE uuid = $1",
            )
            .bind(allocation.uuid.to_string())
            .bind(allocation.name.as_deref())
            .bind(opt_text(allocation.node_uuid))
            .bind(allocation.state.as_str())
            .bind(allocation.resource_class.as_deref())
            .bind(allocation.owner.as_deref())
            .bind(doc)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        match result {
            Ok(0) => Err(not_found(allocation.uuid)),
            Ok(_) => Ok(()),
            Err(err) => Err(allocation_write_error(err, allocation)),
        }
    }

    pub(super) async fn allocation_delete(&self, uuid: Uuid) -> Result<(), StoreError> {
        let done = with_db!(self, write, |pool| {
            sqlx::query("DELETE FROM allocations WHERE uuid = $1")
                .bind(uuid.to_string())
                .execute(pool)
                .await
                .map(|done| done.rows_affected())?
        });
        if done == 0 {
            return Err(not_found(uuid));
        }
        Ok(())
    }
}
