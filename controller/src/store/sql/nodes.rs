//! Node records: create, read, list (its query is built in `node_list.rs`), optimistic
//! updates, and the atomic reservation and claim operations.

use std::sync::LazyLock;

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::node_list::build_list;
use super::{
    QueryBuilder, SqlStore, Violation, bind_args, micros, opt_text, parse_opt_uuid, parse_uuid,
    to_doc, violation, with_db,
};
use crate::model::{HistoryEvent, Node, Port};
use crate::store::{NodeQuery, StoreError};

/// Columns written from the record on insert and update, in bind order (`$1`..`$27`).
/// `reservation` is not among them: only the reservation calls change it.
const COLUMNS: [&str; 27] = [
    "uuid",
    "name",
    "description",
    "driver",
    "provision_state",
    "target_provision_state",
    "power_state",
    "resource_class",
    "maintenance",
    "fault",
    "retired",
    "instance_uuid",
    "instance_name",
    "allocation_uuid",
    "owner",
    "lessee",
    "conductor_group",
    "shard",
    "chassis_uuid",
    "parent_node",
    "created_at",
    "updated_at",
    "provision_updated_at",
    "revision",
    "doc",
    "system_uuid",
    "bmc_host",
];

/// `$28` is the initial reservation.
static INSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    let placeholders: Vec<String> = (1..=COLUMNS.len() + 1).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO nodes ({}, reservation) VALUES ({})",
        COLUMNS.join(", "),
        placeholders.join(", ")
    )
});

/// `$24` is the new revision and `$28` the expected (current) one.
static UPDATE_SQL: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = COLUMNS
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, column)| format!("{column} = ${}", i + 1))
        .collect();
    format!(
        "UPDATE nodes SET {} WHERE uuid = $1 AND revision = ${}",
        sets.join(", "),
        COLUMNS.len() + 1
    )
});

/// [`UPDATE_SQL`] that also clears the reservation when `$29` holds it.
static UPDATE_RELEASE_SQL: LazyLock<String> = LazyLock::new(|| {
    UPDATE_SQL.replacen(
        " WHERE uuid = $1",
        &format!(
            ", reservation = CASE WHEN reservation = ${} THEN NULL ELSE reservation END \
             WHERE uuid = $1",
            COLUMNS.len() + 2
        ),
        1,
    )
});

/// [`UPDATE_SQL`] that also takes the reservation for `$29`, only if nobody holds it.
static UPDATE_ACQUIRE_SQL: LazyLock<String> = LazyLock::new(|| {
    UPDATE_SQL.replacen(
        " WHERE uuid = $1",
        &format!(
            ", reservation = ${} WHERE uuid = $1 AND reservation IS NULL",
            COLUMNS.len() + 2
        ),
        1,
    )
});

/// [`UPDATE_SQL`] only if nobody holds the reservation (a task that takes the lock and
/// ends in the same transition leaves it empty).
static UPDATE_UNRESERVED_SQL: LazyLock<String> = LazyLock::new(|| {
    UPDATE_SQL.replacen(
        " WHERE uuid = $1",
        " WHERE uuid = $1 AND reservation IS NULL",
        1,
    )
});

/// What a node commit does with the reservation.
#[derive(Debug, Clone, Copy)]
pub(super) enum LockChange<'a> {
    Keep,
    /// Clears it if this holder holds it.
    Release(&'a str),
    /// Takes it for this holder; the commit fails (`Locked`) if anyone holds it.
    Acquire(&'a str),
    /// Requires it empty and leaves it so.
    AcquireAndRelease,
}

/// Node fields kept only in their columns and laid over the document on read.
const OVERLAID: &[&str] = &[
    "revision",
    "reservation",
    "instance_uuid",
    "allocation_uuid",
];

/// What a node read selects: the document and the columns laid over it.
pub(super) const SELECT: &str =
    "n.doc, n.revision, n.reservation, n.instance_uuid, n.allocation_uuid";
type NodeRow = (String, i64, Option<String>, Option<String>, Option<String>);

fn node_from_row(
    secrets: Option<&crate::secrets::SecretBox>,
    row: NodeRow,
) -> Result<Node, StoreError> {
    let (doc, revision, reservation, instance_uuid, allocation_uuid) = row;
    let mut node: Node = serde_json::from_str(&doc)?;
    if let Some(b) = secrets {
        b.open_node(&mut node)
            .map_err(|e| StoreError::Database(format!("node {}: {e}", node.uuid).into()))?;
    }
    node.revision = revision;
    node.reservation = reservation;
    node.instance_uuid = parse_opt_uuid(instance_uuid.as_deref())?;
    node.allocation_uuid = parse_opt_uuid(allocation_uuid.as_deref())?;
    Ok(node)
}

/// Binds `COLUMNS` from `$node` with revision `$revision`, then `$extra` as `$28`.
macro_rules! bind_node {
    ($query:expr, $node:expr, $doc:expr, $revision:expr, $extra:expr) => {{
        let node: &Node = $node;
        $query
            .bind(node.uuid.to_string())
            .bind(node.name.as_deref())
            .bind(node.description.as_deref())
            .bind(node.driver.as_str())
            .bind(node.provision_state.as_str())
            .bind(node.target_provision_state.as_deref())
            .bind(node.power_state.as_deref())
            .bind(node.resource_class.as_deref())
            .bind(node.maintenance)
            .bind(node.fault.as_deref())
            .bind(node.retired)
            .bind(opt_text(node.instance_uuid))
            .bind(node.instance_name.as_deref())
            .bind(opt_text(node.allocation_uuid))
            .bind(node.owner.as_deref())
            .bind(node.lessee.as_deref())
            .bind(node.conductor_group.as_str())
            .bind(node.shard.as_deref())
            .bind(opt_text(node.chassis_uuid))
            .bind(node.parent_node.as_deref())
            .bind(micros(node.created_at))
            .bind(node.updated_at.map(micros))
            .bind(node.provision_updated_at.map(micros))
            .bind($revision)
            .bind($doc)
            .bind(system_uuid_of(node))
            .bind(bmc_host_of(node))
            .bind($extra)
    }};
}

/// The SMBIOS system UUID a lookup finds the node by (`properties.system_uuid`, else
/// `extra.system_uuid`), lower case; kept in the indexed `system_uuid` column.
fn system_uuid_of(node: &Node) -> Option<String> {
    [&node.properties, &node.extra]
        .into_iter()
        .find_map(|m| m.get(crate::model::SYSTEM_UUID_KEY)?.as_str())
        .map(str::to_ascii_lowercase)
}

/// The host of the node's BMC for the indexed `bmc_host` column; '' when it has none (NULL
/// marks a row written before the column existed, filled in by [`SqlStore::fill_bmc_hosts`]).
fn bmc_host_of(node: &Node) -> String {
    crate::bmc_host::bmc_host(&node.driver_info).unwrap_or_default()
}

/// Maps a failed node write to `Duplicate` when a unique column clashed.
fn node_write_error(err: sqlx::Error, node: &Node) -> StoreError {
    match violation(&err, "nodes", &["uuid", "name", "instance_uuid"]) {
        Some(Violation::Unique(Some("name"))) => StoreError::Duplicate {
            kind: "node",
            field: "name",
            value: node.name.clone().unwrap_or_default(),
        },
        Some(Violation::Unique(Some("instance_uuid"))) => StoreError::Duplicate {
            kind: "node",
            field: "instance_uuid",
            value: opt_text(node.instance_uuid).unwrap_or_default(),
        },
        Some(Violation::Unique(_)) => StoreError::Duplicate {
            kind: "node",
            field: "uuid",
            value: node.uuid.to_string(),
        },
        _ => err.into(),
    }
}

fn not_found(uuid: Uuid) -> StoreError {
    StoreError::NotFound {
        kind: "node",
        ident: uuid.to_string(),
    }
}

impl SqlStore {
    /// The node's stored document, its BMC secrets sealed when encryption is on.
    fn node_doc(&self, node: &Node) -> Result<String, StoreError> {
        match &self.secrets {
            Some(b) => {
                let mut sealed = node.clone();
                b.seal_node(&mut sealed);
                to_doc(&sealed, OVERLAID)
            }
            None => to_doc(node, OVERLAID),
        }
    }

    /// Fills `bmc_host` for rows written before the column existed (NULL), from their
    /// documents, in batches; a no-op index lookup once they are all filled.
    pub(super) async fn fill_bmc_hosts(&self) -> Result<(), StoreError> {
        const BATCH: i64 = 500;
        loop {
            let rows: Vec<(String, String)> = with_db!(self, write, |pool| {
                sqlx::query_as("SELECT uuid, doc FROM nodes WHERE bmc_host IS NULL LIMIT $1")
                    .bind(BATCH)
                    .fetch_all(pool)
                    .await?
            });
            if rows.is_empty() {
                return Ok(());
            }
            let count = rows.len();
            for (uuid, doc) in rows {
                let doc: serde_json::Value = serde_json::from_str(&doc)?;
                let host = doc
                    .get("driver_info")
                    .and_then(serde_json::Value::as_object)
                    .and_then(crate::bmc_host::bmc_host)
                    .unwrap_or_default();
                with_db!(self, write, |pool| {
                    sqlx::query("UPDATE nodes SET bmc_host = $1 WHERE uuid = $2")
                        .bind(host)
                        .bind(uuid)
                        .execute(pool)
                        .await?;
                });
            }
            tracing::info!(nodes = count, "filled the BMC host column");
        }
    }

    fn node_of(&self, row: NodeRow) -> Result<Node, StoreError> {
        node_from_row(self.secrets.as_deref(), row)
    }

    pub(super) async fn node_create(&self, node: &Node) -> Result<(), StoreError> {
        let doc = self.node_doc(node)?;
        let result = with_db!(self, write, |pool| {
            bind_node!(
                sqlx::query(INSERT_SQL.as_str()),
                node,
                doc,
                node.revision,
                node.reservation.as_deref()
            )
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        result
            .map(|_| ())
            .map_err(|err| node_write_error(err, node))
    }

    /// A discovered machine's node, inventory and ports in one transaction: nothing of it
    /// is stored unless all of it is (a crash never leaves a node without the ports its
    /// next lookup finds it by). A MAC another node has already is left to that node.
    pub(super) async fn node_create_discovered(
        &self,
        node: &Node,
        inventory: &serde_json::Value,
        ports: &[Port],
    ) -> Result<(), StoreError> {
        const INVENTORY: &str = "INSERT INTO node_inventory (node_uuid, doc) VALUES ($1, $2)";
        const PORT: &str = "INSERT INTO ports (uuid, node_uuid, address, doc) \
                            VALUES ($1, $2, $3, $4) ON CONFLICT (address) DO NOTHING";
        let doc = self.node_doc(node)?;
        let inventory = serde_json::to_string(inventory)?;
        let mut rows = Vec::with_capacity(ports.len());
        for port in ports {
            if port.node_uuid != node.uuid {
                return Err(StoreError::Database(
                    format!("port {} is not of node {}", port.address, node.uuid).into(),
                ));
            }
            rows.push(super::ports::plain_port_row(port)?.ok_or_else(|| {
                StoreError::Database(
                    format!(
                        "port {} asks for a DHCP reservation; a discovered port cannot",
                        port.address
                    )
                    .into(),
                )
            })?);
        }
        let uuid = node.uuid.to_string();
        let result = with_db!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                bind_node!(
                    sqlx::query(INSERT_SQL.as_str()),
                    node,
                    doc.as_str(),
                    node.revision,
                    node.reservation.as_deref()
                )
                .execute(&mut *tx)
                .await?;
                sqlx::query(INVENTORY)
                    .bind(uuid.as_str())
                    .bind(inventory.as_str())
                    .execute(&mut *tx)
                    .await?;
                for [port, address, doc] in &rows {
                    sqlx::query(PORT)
                        .bind(port.as_str())
                        .bind(uuid.as_str())
                        .bind(address.as_str())
                        .bind(doc.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }
            .await
        });
        result.map_err(|err| node_write_error(err, node))
    }

    /// Reads one node by `column` (`uuid` or `name`).
    pub(super) async fn node_get(
        &self,
        column: &'static str,
        value: String,
    ) -> Result<Option<Node>, StoreError> {
        let sql = select_by(column);
        let row: Option<NodeRow> = with_db!(self, read, |pool| {
            sqlx::query_as(sql).bind(value).fetch_optional(pool).await?
        });
        row.map(|r| self.node_of(r)).transpose()
    }

    pub(super) async fn node_list(&self, query: &NodeQuery) -> Result<Vec<Node>, StoreError> {
        let QueryBuilder { sql, args, .. } = build_list(query)?;
        let rows: Vec<NodeRow> = with_db!(self, read, |pool| {
            bind_args!(sqlx::query_as(AssertSqlSafe(sql)), &args)
                .fetch_all(pool)
                .await?
        });
        if rows.is_empty()
            && let Some(marker) = query.marker
            && self.node_get("uuid", marker.to_string()).await?.is_none()
        {
            return Err(not_found(marker));
        }
        rows.into_iter().map(|r| self.node_of(r)).collect()
    }

    pub(super) async fn node_update(&self, node: &Node) -> Result<i64, StoreError> {
        let doc = self.node_doc(node)?;
        let revision = node.revision + 1;
        let result = with_db!(self, write, |pool| {
            bind_node!(
                sqlx::query(UPDATE_SQL.as_str()),
                node,
                doc,
                revision,
                node.revision
            )
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        match result {
            Ok(1) => Ok(revision),
            Ok(_) => match self.node_get("uuid", node.uuid.to_string()).await? {
                Some(_) => Err(StoreError::Stale { uuid: node.uuid }),
                None => Err(not_found(node.uuid)),
            },
            Err(err) => Err(node_write_error(err, node)),
        }
    }

    /// `update_node` plus a history row plus releasing the lock, in one transaction.
    pub(super) async fn node_commit(
        &self,
        node: &Node,
        history: Option<&HistoryEvent>,
        lock: LockChange<'_>,
    ) -> Result<i64, StoreError> {
        if history.is_none() && matches!(lock, LockChange::Keep) {
            return self.node_update(node).await;
        }
        let doc = self.node_doc(node)?;
        let revision = node.revision + 1;
        let event_doc = history.map(|event| to_doc(event, &[])).transpose()?;
        let (sql, holder) = match lock {
            LockChange::Keep => (UPDATE_SQL.as_str(), None),
            LockChange::Release(h) => (UPDATE_RELEASE_SQL.as_str(), Some(h)),
            LockChange::Acquire(h) => (UPDATE_ACQUIRE_SQL.as_str(), Some(h)),
            LockChange::AcquireAndRelease => (UPDATE_UNRESERVED_SQL.as_str(), None),
        };
        let result = with_db!(self, write, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let mut query = bind_node!(sqlx::query(sql), node, doc, revision, node.revision);
                if let Some(holder) = holder {
                    query = query.bind(holder);
                }
                if query.execute(&mut *tx).await?.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok::<bool, sqlx::Error>(false);
                }
                if let (Some(event), Some(event_doc)) = (history, event_doc) {
                    sqlx::query(
                        "INSERT INTO node_history (uuid, node_uuid, created_at, doc) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(event.uuid.to_string())
                    .bind(event.node_uuid.to_string())
                    .bind(micros(event.created_at))
                    .bind(event_doc)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }
            .await
        });
        match result {
            Ok(true) => Ok(revision),
            Ok(false) => match self.node_get("uuid", node.uuid.to_string()).await? {
                Some(Node {
                    reservation: Some(holder),
                    ..
                }) if matches!(lock, LockChange::Acquire(_) | LockChange::AcquireAndRelease) => {
                    Err(StoreError::Locked {
                        uuid: node.uuid,
                        holder,
                    })
                }
                Some(_) => Err(StoreError::Stale { uuid: node.uuid }),
                None => Err(not_found(node.uuid)),
            },
            Err(err) => Err(node_write_error(err, node)),
        }
    }

    pub(super) async fn node_delete(&self, uuid: Uuid) -> Result<(), StoreError> {
        let done = with_db!(self, write, |pool| {
            sqlx::query("DELETE FROM nodes WHERE uuid = $1")
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

    pub(super) async fn node_reserve(&self, uuid: Uuid, holder: &str) -> Result<Node, StoreError> {
        const SQL: &str = "UPDATE nodes SET reservation = $2 \
            WHERE uuid = $1 AND reservation IS NULL \
            RETURNING doc, revision, reservation, instance_uuid, allocation_uuid";
        // Loops only if the holder released the node between our two statements.
        loop {
            let row: Option<NodeRow> = with_db!(self, write, |pool| {
                sqlx::query_as(SQL)
                    .bind(uuid.to_string())
                    .bind(holder)
                    .fetch_optional(pool)
                    .await?
            });
            if let Some(row) = row {
                return self.node_of(row);
            }
            match self.node_get("uuid", uuid.to_string()).await? {
                None => return Err(not_found(uuid)),
                Some(Node {
                    reservation: Some(holder),
                    ..
                }) => {
                    return Err(StoreError::Locked { uuid, holder });
                }
                Some(_) => continue,
            }
        }
    }

    pub(super) async fn node_release(&self, uuid: Uuid, holder: &str) -> Result<(), StoreError> {
        with_db!(self, write, |pool| {
            sqlx::query("UPDATE nodes SET reservation = NULL WHERE uuid = $1 AND reservation = $2")
                .bind(uuid.to_string())
                .bind(holder)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())?
        });
        Ok(())
    }

    pub(super) async fn node_release_all(&self, holder: &str) -> Result<Vec<Uuid>, StoreError> {
        let rows: Vec<(String,)> = with_db!(self, write, |pool| {
            sqlx::query_as(
                "UPDATE nodes SET reservation = NULL WHERE reservation = $1 RETURNING uuid",
            )
            .bind(holder)
            .fetch_all(pool)
            .await?
        });
        rows.iter().map(|(uuid,)| parse_uuid(uuid)).collect()
    }

    pub(super) async fn node_claim(
        &self,
        node: Uuid,
        allocation: Uuid,
    ) -> Result<bool, StoreError> {
        let done = with_db!(self, write, |pool| {
            sqlx::query(
                "UPDATE nodes SET allocation_uuid = $2, instance_uuid = $2, \
                 revision = revision + 1 \
                 WHERE uuid = $1 AND allocation_uuid IS NULL AND instance_uuid IS NULL",
            )
            .bind(node.to_string())
            .bind(allocation.to_string())
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        match done {
            Ok(1) => Ok(true),
            Ok(_) => match self.node_get("uuid", node.to_string()).await? {
                Some(_) => Ok(false),
                None => Err(not_found(node)),
            },
            // Another node already carries this allocation as its instance.
            Err(err) if matches!(violation(&err, "nodes", &[]), Some(Violation::Unique(_))) => {
                Ok(false)
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// The single-node select by `uuid` or `name`.
fn select_by(column: &str) -> &'static str {
    if column == "uuid" {
        "SELECT n.doc, n.revision, n.reservation, n.instance_uuid, n.allocation_uuid \
         FROM nodes AS n WHERE n.uuid = $1"
    } else {
        "SELECT n.doc, n.revision, n.reservation, n.instance_uuid, n.allocation_uuid \
         FROM nodes AS n WHERE n.name = $1"
    }
}
