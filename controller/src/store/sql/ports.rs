//! Port records, unique by UUID and by MAC address (stored lower-case).

use std::borrow::Cow;

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::leases::reserve_for_port;
use super::{
    Arg, QueryBuilder, SqlStore, Violation, bind_args, dir_sql, limit_of, to_doc, violation,
    with_db,
};
use crate::model::{Port, port_dhcp_address};
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

/// The error of a port write whose `extra.dhcp_address` is reserved by another port.
fn reserved_elsewhere(port: &Port) -> StoreError {
    StoreError::Duplicate {
        kind: "port",
        field: "extra/dhcp_address",
        value: port_dhcp_address(port)
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
    }
}

fn not_found(uuid: Uuid) -> StoreError {
    StoreError::NotFound {
        kind: "port",
        ident: uuid.to_string(),
    }
}

/// A new port's row: UUID, MAC address (lower case) and document. `None` for a port whose
/// `extra` asks for a DHCP reservation (written only by [`SqlStore::port_create`], with it).
pub(super) fn plain_port_row(port: &Port) -> Result<Option<[String; 3]>, StoreError> {
    let port = normalized(port);
    if port_dhcp_address(&port).is_some() {
        return Ok(None);
    }
    Ok(Some([
        port.uuid.to_string(),
        port.address.clone(),
        to_doc(&*port, &[])?,
    ]))
}

impl SqlStore {
    pub(super) async fn port_create(&self, port: &Port) -> Result<(), StoreError> {
        const SQL: &str =
            "INSERT INTO ports (uuid, node_uuid, address, doc) VALUES ($1, $2, $3, $4)";
        let port = normalized(port);
        let doc = to_doc(&*port, &[])?;
        let reserve = port_dhcp_address(&port);
        let result = if reserve.is_none() {
            with_db!(self, write, |pool| {
                sqlx::query(SQL)
                    .bind(port.uuid.to_string())
                    .bind(port.node_uuid.to_string())
                    .bind(port.address.as_str())
                    .bind(doc)
                    .execute(pool)
                    .await
                    .map(|_| true)
            })
        } else {
            // The port and its DHCP reservation are written together.
            with_db!(self, write, |pool| {
                async {
                    let mut tx = pool.begin().await?;
                    sqlx::query(SQL)
                        .bind(port.uuid.to_string())
                        .bind(port.node_uuid.to_string())
                        .bind(port.address.as_str())
                        .bind(doc)
                        .execute(&mut *tx)
                        .await?;
                    let reserved = reserve_for_port!(tx, &port, reserve, false).await?;
                    if reserved {
                        tx.commit().await?;
                    } else {
                        tx.rollback().await?;
                    }
                    Ok::<bool, sqlx::Error>(reserved)
                }
                .await
            })
        };
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(reserved_elsewhere(&port)),
            Err(err) => Err(port_write_error(err, &port)),
        }
    }

    /// The node a MAC belongs to and its provision state, in one indexed read (no node
    /// document decoded): what DHCP and the iPXE script ask of every booting machine.
    /// (port MAC, node, provision state) of the ports among `macs`.
    pub(super) async fn port_node_states(
        &self,
        macs: &[String],
    ) -> Result<Vec<(String, Uuid, String)>, StoreError> {
        if macs.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::for_many(
            &self.backend,
            "SELECT p.address, n.uuid, n.provision_state FROM ports p \
             JOIN nodes n ON n.uuid = p.node_uuid WHERE p.address IN (",
        );
        let marks: Vec<String> = macs
            .iter()
            .map(|m| q.arg(Arg::Text(m.to_ascii_lowercase())))
            .collect();
        q.push(&marks.join(", "));
        q.push(")");
        let QueryBuilder { sql, args, .. } = q;
        let rows: Vec<(String, String, String)> = with_db!(self, read, |pool| {
            bind_args!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), &args)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(mac, uuid, state)| {
                Uuid::parse_str(&uuid)
                    .map(|u| (mac.to_ascii_lowercase(), u, state))
                    .map_err(|e| StoreError::Database(format!("node uuid {uuid:?}: {e}").into()))
            })
            .collect()
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
        let QueryBuilder { sql, args, .. } = sql;
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
        let reserve = port_dhcp_address(&port);
        // The port and its DHCP reservation (MAC or address may have changed) change together.
        let result = with_db!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let done = sqlx::query(
                    "UPDATE ports SET node_uuid = $2, address = $3, doc = $4 WHERE uuid = $1",
                )
                .bind(port.uuid.to_string())
                .bind(port.node_uuid.to_string())
                .bind(port.address.as_str())
                .bind(doc)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if done == 0 {
                    tx.rollback().await?;
                    return Ok::<Option<bool>, sqlx::Error>(None);
                }
                let reserved = reserve_for_port!(tx, &port, reserve, true).await?;
                if reserved {
                    tx.commit().await?;
                } else {
                    tx.rollback().await?;
                }
                Ok(Some(reserved))
            }
            .await
        });
        match result {
            Ok(None) => Err(not_found(port.uuid)),
            Ok(Some(true)) => Ok(()),
            Ok(Some(false)) => Err(reserved_elsewhere(&port)),
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
