//! Port records, unique by UUID and by MAC address (stored lower-case).

use std::borrow::Cow;

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::{
    Arg, QueryBuilder, SqlStore, Violation, bind_args, dir_sql, limit_of, to_doc, violation,
    with_db,
};
use crate::model::Port;
use crate::store::{PortQuery, StoreError};

/// The port with its MAC address in lower case (borrowed when it already is).
fn normalized(port: &Port) -> Cow<'_, Port> {
    if port.address.bytes().any(|byte| byte.is_ascii_uppercase()) {
        let mut owned = port.clone();
        owned.address = owned.address.to_ascii_lowercase();
        Cow::Owned(owned)
    } else {
        Cow::Borrowed(port)
    }
}

fn port_write_error(err: sqlx::Error, port: &Port) -> StoreError {
    match violation(&err, "ports", &["uuid", "address"]) {
        Some(Violation::Unique(Some("address"))) => StoreError::Duplicate {
            kind: "port",
            field: "address",
            value: port.address.clone(),
        },
        Some(Violation::Unique(_)) => StoreError::Duplicate {
            kind: "port",
            field: "uuid",
            value: port.uuid.to_string(),
        },
        Some(Violation::ForeignKey) => StoreError::NotFound {
            kind: "node",
            ident: port.node_uuid.to_string(),
        },
        None => err.into(),
    }
}

fn not_found(uuid: Uuid) -> StoreError {
    StoreError::NotFound {
        kind: "port",
        ident: uuid.to_string(),
    }
}

impl SqlStore {
    pub(super) async fn port_create(&self, port: &Port) -> Result<(), StoreError> {
        let port = normalized(port);
        let doc = to_doc(&*port, &[])?;
        let result = with_db!(self, write, |pool| {
            sqlx::query("INSERT INTO ports (uuid, node_uuid, address, doc) VALUES ($1, $2, $3, $4)")
                .bind(port.uuid.to_string())
                .bind(port.node_uuid.to_string())
                .bind(port.address.as_str())
                .bind(doc)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        result
            .map(|_| ())
            .map_err(|err| port_write_error(err, &port))
    }

    pub(super) async fn port_get(&self, uuid: Uuid) -> Result<Option<Port>, StoreError> {
        let row: Option<(String,)> = with_db!(self, read, |pool| {
            sqlx::query_as("SELECT doc FROM ports WHERE uuid = $1")
                .bind(uuid.to_string())
                .fetch_optional(pool)
                .await?
        });
        row.map(|(doc,)| serde_json::from_str(&doc).map_err(StoreError::from))
            .transpose()
    }

    pub(super) async fn port_list(&self, query: &PortQuery) -> Result<Vec<Port>, StoreError> {
        let (dir, cmp) = dir_sql(query.sort_dir);
        let mut sql = QueryBuilder::new("SELECT doc FROM ports");
        let mut conds = Vec::new();
        if let Some(node) = query.node_uuid {
            let placeholder = sql.arg(Arg::Text(node.to_string()));
            conds.push(format!("node_uuid = {placeholder}"));
        }
        if let Some(address) = &query.address {
            let placeholder = sql.arg(Arg::Text(address.to_ascii_lowercase()));
            conds.push(format!("address = {placeholder}"));
        }
        if let Some(marker) = query.marker {
            let placeholder = sql.arg(Arg::Text(marker.to_string()));
            conds.push(format!(
                "id {cmp} (SELECT id FROM ports WHERE uuid = {placeholder})"
            ));
        }
        if !conds.is_empty() {
            sql.push(" WHERE ");
            sql.push(&conds.join(" AND "));
        }
        let placeholder = sql.arg(Arg::Int(limit_of(query.limit)));
        sql.push(&format!(" ORDER BY id {dir} LIMIT {placeholder}"));
        let QueryBuilder { sql, args } = sql;
        let rows: Vec<(String,)> = with_db!(self, read, |pool| {
            bind_args!(sqlx::query_as(AssertSqlSafe(sql)), &args)
                .fetch_all(pool)
                .await?
        });
        if rows.is_empty()
            && let Some(marker) = query.marker
            && self.port_get(marker).await?.is_none()
        {
            return Err(not_found(marker));
        }
        rows.iter()
            .map(|(doc,)| serde_json::from_str(doc).map_err(StoreError::from))
            .collect()
    }

    pub(super) async fn port_update(&self, port: &Port) -> Result<(), StoreError> {
        let port = normalized(port);
        let doc = to_doc(&*port, &[])?;
        let result = with_db!(self, write, |pool| {
            sqlx::query("UPDATE ports SET node_uuid = $2, address = $3, doc = $4 WHERE uuid = $1")
                .bind(port.uuid.to_string())
                .bind(port.node_uuid.to_string())
                .bind(port.address.as_str())
                .bind(doc)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        match result {
            Ok(0) => Err(not_found(port.uuid)),
            Ok(_) => Ok(()),
            Err(err) => Err(port_write_error(err, &port)),
        }
    }

    pub(super) async fn port_delete(&self, uuid: Uuid) -> Result<(), StoreError> {
        let done = with_db!(self, write, |pool| {
            sqlx::query("DELETE FROM ports WHERE uuid = $1")
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
