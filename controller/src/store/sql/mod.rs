//! The SQL implementation of [`Store`](super::Store) for SQLite and PostgreSQL.
//!
//! One code path serves both databases: every query is written once, in the SQL both
//! dialects accept (`$N` placeholders, `RETURNING`, `ON CONFLICT`, `NULLS FIRST`), and the
//! [`with_db!`] macro expands it once per backend so each runs on its native sqlx driver with
//! its prepared-statement cache (no `Any` driver conversions).
//!
//! Storage model: each record is a JSON document (`doc`) next to real columns for what is
//! filtered, sorted, unique or changed atomically. Every write sets both from the record.
//! Four node fields are owned by their columns and laid over the document on read:
//! `revision` (optimistic concurrency), `reservation` (the task lock), `instance_uuid` and
//! `allocation_uuid` (set atomically by `claim_node`).
//!
//! SQLite runs in WAL mode with one writer connection (writes queue in the pool instead of
//! spinning on `SQLITE_BUSY`) and a small pool of reader connections. PostgreSQL uses one
//! pool; the conditional `UPDATE`s make `reserve_node`/`claim_node` safe across processes.
//!
//! Speed (release build, loaded 2-core dev machine; details on the `timing` case in
//! `controller/tests/it/store/cases/misc.rs`): SQLite enrols 4,000+ node+port pairs/s and
//! lists 500 full nodes in ~2 ms, about half of it JSON decoding; PostgreSQL lists them in
//! ~2.5-3.5 ms.

mod allocations;
mod conductors;
mod deploy_templates;
mod history;
mod inspection_rules;
pub(crate) mod leases;
mod node_list;
mod nodes;
mod ports;
mod sessions;

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use uuid::Uuid;

use super::{
    AllocationQuery, LeaseWrite, NodeQuery, PoolUse, PortQuery, SortDir, Store, StoreError,
};
use crate::deploy_templates::DeployTemplate;
use crate::inspection_rules::InspectionRule;
use crate::model::{Allocation, ConductorRecord, DhcpLease, HistoryEvent, Node, Port};

pub use node_list::{NODE_SORT_KEYS, node_sort_column};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Reader connections for a SQLite file (WAL lets them run beside the writer).
const SQLITE_READERS: u32 = 4;
/// Connections per process to PostgreSQL.
const POSTGRES_CONNECTIONS: u32 = 16;
/// Rows a SQLite worker thread may queue for the reading task.
const SQLITE_ROW_BUFFER: usize = 4096;
/// Idle time after which a PostgreSQL connection is checked before use.
const POSTGRES_PING_AFTER_IDLE: Duration = Duration::from_secs(10);
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection pools of one backend.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite { read: SqlitePool, write: SqlitePool },
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool for reading (`read`) or writing
/// (`write`). The body is compiled once per backend, so the same SQL text serves both.
macro_rules! with_db {
    ($store:expr, read, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::sql::Backend::Sqlite { read: $pool, .. } => $body,
            $crate::store::sql::Backend::Postgres($pool) => $body,
        }
    };
    ($store:expr, write, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::sql::Backend::Sqlite { write: $pool, .. } => $body,
            $crate::store::sql::Backend::Postgres($pool) => $body,
        }
    };
}

/// Binds a slice of [`Arg`]s, in order, to a sqlx query of either backend.
macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                $crate::store::sql::Arg::Text(text) => query.bind(text.as_str()),
                $crate::store::sql::Arg::Bool(flag) => query.bind(*flag),
                $crate::store::sql::Arg::Int(int) => query.bind(*int),
            };
        }
        query
    }};
}

pub(crate) use {bind_args, with_db};

/// A bind value of a query built at run time.
#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Bool(bool),
    Int(i64),
}

/// A query text under construction with its bind values (placeholders `$1`, `$2`, ...).
#[derive(Debug, Default)]
struct QueryBuilder {
    sql: String,
    args: Vec<Arg>,
    /// Placeholders are `?`, bound in order of appearance.
    anonymous: bool,
}

impl QueryBuilder {
    fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            ..Self::default()
        }
    }

    /// A builder for `backend` whose placeholders are `?` on SQLite, so each appears once
    /// and in bind order. For statements with hundreds of values: SQLite finds a named
    /// (`$N`) parameter's index by a linear search of the statement's names, so binding
    /// `n` of them costs n² (a 256-row upsert of the DHCP batch spent milliseconds there).
    fn for_many(backend: &Backend, sql: &str) -> Self {
        Self::anonymous_if(matches!(backend, Backend::Sqlite { .. }), sql)
    }

    /// A builder whose placeholders are `?` when `anonymous`, else `$N`.
    fn anonymous_if(anonymous: bool, sql: &str) -> Self {
        Self {
            anonymous,
            ..Self::new(sql)
        }
    }

    /// Adds a bind value and returns its placeholder.
    fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        if self.anonymous {
            "?".to_owned()
        } else {
            format!("${}", self.args.len())
        }
    }

    fn push(&mut self, text: &str) {
        self.sql.push_str(text);
    }
}

/// The `Store` on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlStore {
    backend: Backend,
    /// Encrypts the BMC secrets of nodes at rest (`None`: stored as given).
    secrets: Option<std::sync::Arc<crate::secrets::SecretBox>>,
}

impl SqlStore {
    /// Encrypts nodes' BMC secrets with `secrets` from now on (and decrypts them on read).
    pub fn with_secrets(mut self, secrets: std::sync::Arc<crate::secrets::SecretBox>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Opens (creating if needed) the database at `url` and applies pending migrations.
    ///
    /// Accepts `sqlite:///abs/path/ingot.db` (parent directory and file are created),
    /// `sqlite::memory:` (a private in-memory database, one connection) and
    /// `postgres://user@host:port/db` or `postgresql://...`.
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            connect_sqlite(url).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            connect_postgres(url).await?
        } else {
            return Err(StoreError::Database(
                format!(
                    "unsupported database URL scheme in {url:?}: expected sqlite: or postgres://"
                )
                .into(),
            ));
        };
        let store = SqlStore {
            backend,
            secrets: None,
        };
        store.fill_bmc_hosts().await?;
        Ok(store)
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Closes every connection (waits for checked-out ones to come back).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

async fn connect_sqlite(url: &str) -> Result<Backend, StoreError> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let options = SqliteConnectOptions::from_str(url)?
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        .synchronous(SqliteSynchronous::Normal)
        // Let the connection's worker thread hand over a whole list without waiting for the
        // task to drain the channel (the default of 50 rows costs a thread handoff each).
        .row_buffer_size(SQLITE_ROW_BUFFER);
    if in_memory {
        // Each in-memory connection would be its own database: keep exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        SQLITE_MIGRATOR.run(&pool).await.map_err(migrate_error)?;
        return Ok(Backend::Sqlite {
            read: pool.clone(),
            write: pool,
        });
    }
    let options = options.create_if_missing(true);
    if let Some(parent) = options.get_filename().parent()
        && !parent.as_os_str().is_empty()
    {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|err| StoreError::Database(Box::new(err)))?;
    }
    // A SQLite connection cannot drop like a socket: skip the ping sqlx does on every
    // acquire by default (a round trip to the connection's worker thread per query).
    let write = SqlitePoolOptions::new()
        .test_before_acquire(false)
        .max_connections(1)
        .min_connections(1)
        .connect_with(options.clone().journal_mode(SqliteJournalMode::Wal))
        .await?;
    SQLITE_MIGRATOR.run(&write).await.map_err(migrate_error)?;
    // Readers open on first use: start-up needs only the writer (cold start).
    let read = SqlitePoolOptions::new()
        .test_before_acquire(false)
        .max_connections(SQLITE_READERS)
        .connect_lazy_with(options);
    tracing::debug!(url, "opened sqlite store");
    Ok(Backend::Sqlite { read, write })
}

async fn connect_postgres(url: &str) -> Result<Backend, StoreError> {
    let options = PgConnectOptions::from_str(url)?;
    // Ping only connections that sat idle a while (a server restart or a dropped socket),
    // instead of one extra round trip before every query.
    let pool = PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > POSTGRES_PING_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .max_connections(POSTGRES_CONNECTIONS)
        .connect_with(options)
        .await?;
    POSTGRES_MIGRATOR.run(&pool).await.map_err(migrate_error)?;
    tracing::debug!("opened postgres store");
    Ok(Backend::Postgres(pool))
}

fn migrate_error(err: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Database(Box::new(err))
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::Database(Box::new(err))
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        StoreError::Database(Box::new(err))
    }
}

/// The constraint a failed write broke, if any.
enum Violation {
    /// A unique constraint on `table.column`; holds the column name when recognised.
    Unique(Option<&'static str>),
    ForeignKey,
}

/// Classifies a constraint violation on `table`, naming which of `columns` was duplicated.
///
/// SQLite reports `UNIQUE constraint failed: table.column`; PostgreSQL names the
/// constraint `table_column_key` (or `table_pkey`).
fn violation(err: &sqlx::Error, table: &str, columns: &[&'static str]) -> Option<Violation> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    match db.kind() {
        sqlx::error::ErrorKind::UniqueViolation => {
            let message = db.message();
            let constraint = db.constraint().unwrap_or_default();
            let column = columns.iter().copied().find(|column| {
                message.contains(&format!("{table}.{column}"))
                    || constraint == format!("{table}_{column}_key")
            });
            Some(Violation::Unique(column))
        }
        sqlx::error::ErrorKind::ForeignKeyViolation => Some(Violation::ForeignKey),
        _ => None,
    }
}

/// Serializes a record as its stored document: a JSON object without its `null` fields
/// (they read back as `None`) nor the fields in `owned_by_columns`.
///
/// Dropping the nulls roughly halves a node's document and its decoding time, which is
/// most of the cost of listing nodes.
fn to_doc<T: serde::Serialize>(
    record: &T,
    owned_by_columns: &[&str],
) -> Result<String, StoreError> {
    let mut value = serde_json::to_value(record)?;
    if let Value::Object(fields) = &mut value {
        fields.retain(|name, field| !field.is_null() && !owned_by_columns.contains(&name.as_str()));
    }
    Ok(serde_json::to_string(&value)?)
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// A stored timestamp (microseconds since the Unix epoch, as [`micros`] writes them).
fn from_micros(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::<Utc>::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Database(format!("timestamp {us} out of range").into()))
}

fn opt_text(value: Option<Uuid>) -> Option<String> {
    value.map(|uuid| uuid.to_string())
}

fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|err| StoreError::Database(Box::new(err)))
}

fn parse_opt_uuid(text: Option<&str>) -> Result<Option<Uuid>, StoreError> {
    text.map(parse_uuid).transpose()
}

fn limit_of(limit: Option<u32>) -> i64 {
    limit.map_or(i64::MAX, i64::from)
}

fn dir_sql(dir: SortDir) -> (&'static str, &'static str) {
    match dir {
        SortDir::Asc => ("ASC", ">"),
        SortDir::Desc => ("DESC", "<"),
    }
}

#[async_trait]
impl Store for SqlStore {
    fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    fn pool_use(&self) -> Vec<PoolUse> {
        fn of<DB: sqlx::Database>(name: &'static str, p: &sqlx::Pool<DB>) -> PoolUse {
            PoolUse {
                pool: name,
                open: p.size(),
                idle: u32::try_from(p.num_idle()).unwrap_or(u32::MAX),
                max: p.options().get_max_connections(),
            }
        }
        match &self.backend {
            Backend::Sqlite { read, write } => vec![of("read", read), of("write", write)],
            Backend::Postgres(pool) => vec![of("main", pool)],
        }
    }

    async fn create_node(&self, node: &Node) -> Result<(), StoreError> {
        self.node_create(node).await
    }

    async fn create_discovered(
        &self,
        node: &Node,
        inventory: &Value,
        ports: &[Port],
    ) -> Result<(), StoreError> {
        self.node_create_discovered(node, inventory, ports).await
    }

    async fn get_node(&self, ident: &str) -> Result<Option<Node>, StoreError> {
        match Uuid::parse_str(ident) {
            Ok(uuid) => self.node_get("uuid", uuid.to_string()).await,
            Err(_) => self.node_get("name", ident.to_owned()).await,
        }
    }

    async fn get_node_by_uuid(&self, uuid: Uuid) -> Result<Option<Node>, StoreError> {
        self.node_get("uuid", uuid.to_string()).await
    }

    async fn list_nodes(&self, query: &NodeQuery) -> Result<Vec<Node>, StoreError> {
        self.node_list(query).await
    }

    async fn count_nodes_by_state(&self) -> Result<Vec<crate::store::StateCount>, StoreError> {
        let rows: Vec<(String, Option<String>, i64)> = with_db!(self, read, |pool| {
            sqlx::query_as(
                "SELECT provision_state, power_state, COUNT(*) FROM nodes \
                 GROUP BY provision_state, power_state \
                 ORDER BY provision_state, power_state NULLS FIRST",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(provision_state, power_state, nodes)| crate::store::StateCount {
                    provision_state,
                    power_state,
                    nodes,
                },
            )
            .collect())
    }

    async fn update_node(&self, node: &Node) -> Result<i64, StoreError> {
        self.node_update(node).await
    }

    async fn commit_transition(
        &self,
        node: &Node,
        history: Option<&HistoryEvent>,
        release: Option<&str>,
    ) -> Result<i64, StoreError> {
        let lock = release.map_or(nodes::LockChange::Keep, nodes::LockChange::Release);
        self.node_commit(node, history, lock).await
    }

    async fn reserve_and_commit(
        &self,
        node: &Node,
        history: Option<&HistoryEvent>,
        holder: &str,
        release: bool,
    ) -> Result<i64, StoreError> {
        let lock = if release {
            nodes::LockChange::AcquireAndRelease
        } else {
            nodes::LockChange::Acquire(holder)
        };
        self.node_commit(node, history, lock).await
    }

    async fn delete_node(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.node_delete(uuid).await
    }

    async fn reserve_node(&self, uuid: Uuid, holder: &str) -> Result<Node, StoreError> {
        self.node_reserve(uuid, holder).await
    }

    async fn release_node(&self, uuid: Uuid, holder: &str) -> Result<(), StoreError> {
        self.node_release(uuid, holder).await
    }

    async fn release_all(&self, holder: &str) -> Result<Vec<Uuid>, StoreError> {
        self.node_release_all(holder).await
    }

    async fn claim_node(&self, node: Uuid, allocation: Uuid) -> Result<bool, StoreError> {
        self.node_claim(node, allocation).await
    }

    async fn create_port(&self, port: &Port) -> Result<(), StoreError> {
        self.port_create(port).await
    }

    async fn get_port(&self, uuid: Uuid) -> Result<Option<Port>, StoreError> {
        self.port_get(uuid).await
    }

    async fn list_ports(&self, query: &PortQuery) -> Result<Vec<Port>, StoreError> {
        self.port_list(query).await
    }

    async fn node_state_by_mac(&self, mac: &str) -> Result<Option<(Uuid, String)>, StoreError> {
        let mac = mac.to_ascii_lowercase();
        Ok(self
            .port_node_states(std::slice::from_ref(&mac))
            .await?
            .into_iter()
            .find(|(m, _, _)| *m == mac)
            .map(|(_, uuid, state)| (uuid, state)))
    }

    async fn node_states_by_macs(
        &self,
        macs: &[String],
    ) -> Result<Vec<(String, Uuid, String)>, StoreError> {
        self.port_node_states(macs).await
    }

    async fn update_port(&self, port: &Port) -> Result<(), StoreError> {
        self.port_update(port).await
    }

    async fn delete_port(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.port_delete(uuid).await
    }

    async fn create_allocation(&self, allocation: &Allocation) -> Result<(), StoreError> {
        self.allocation_create(allocation).await
    }

    async fn get_allocation(&self, ident: &str) -> Result<Option<Allocation>, StoreError> {
        match Uuid::parse_str(ident) {
            Ok(uuid) => self.allocation_get("uuid", uuid.to_string()).await,
            Err(_) => self.allocation_get("name", ident.to_owned()).await,
        }
    }

    async fn list_allocations(
        &self,
        query: &AllocationQuery,
    ) -> Result<Vec<Allocation>, StoreError> {
        self.allocation_list(query).await
    }

    async fn update_allocation(&self, allocation: &Allocation) -> Result<(), StoreError> {
        self.allocation_update(allocation).await
    }

    async fn delete_allocation(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.allocation_delete(uuid).await
    }

    async fn register_conductor(&self, conductor: &ConductorRecord) -> Result<(), StoreError> {
        self.conductor_register(conductor).await
    }

    async fn touch_conductor(
        &self,
        hostname: &str,
        online: bool,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.conductor_touch(hostname, online, at).await
    }

    async fn list_conductors(&self) -> Result<Vec<ConductorRecord>, StoreError> {
        self.conductor_list().await
    }

    async fn create_inspection_rule(&self, rule: &InspectionRule) -> Result<(), StoreError> {
        self.rule_create(rule).await
    }

    async fn get_inspection_rule(&self, uuid: Uuid) -> Result<Option<InspectionRule>, StoreError> {
        self.rule_get(uuid).await
    }

    async fn list_inspection_rules(&self) -> Result<Vec<InspectionRule>, StoreError> {
        self.rule_list().await
    }

    async fn update_inspection_rule(&self, rule: &InspectionRule) -> Result<(), StoreError> {
        self.rule_update(rule).await
    }

    async fn delete_inspection_rule(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.rule_delete(uuid).await
    }

    async fn create_deploy_template(&self, t: &DeployTemplate) -> Result<(), StoreError> {
        self.template_create(t).await
    }

    async fn get_deploy_template(&self, uuid: Uuid) -> Result<Option<DeployTemplate>, StoreError> {
        self.template_get("uuid", uuid.to_string()).await
    }

    async fn get_deploy_template_by_name(
        &self,
        name: &str,
    ) -> Result<Option<DeployTemplate>, StoreError> {
        self.template_get("name", name.to_owned()).await
    }

    async fn list_deploy_templates(&self) -> Result<Vec<DeployTemplate>, StoreError> {
        self.template_list().await
    }

    async fn update_deploy_template(&self, t: &DeployTemplate) -> Result<(), StoreError> {
        self.template_update(t).await
    }

    async fn delete_deploy_template(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.template_delete(uuid).await
    }

    async fn add_history(&self, event: &HistoryEvent) -> Result<(), StoreError> {
        self.history_add(event).await
    }

    async fn list_history(&self, node: Uuid) -> Result<Vec<HistoryEvent>, StoreError> {
        self.history_list(node).await
    }

    async fn put_inventory(&self, node: Uuid, inventory: &Value) -> Result<(), StoreError> {
        self.inventory_put(node, inventory).await
    }

    async fn get_inventory(&self, node: Uuid) -> Result<Option<Value>, StoreError> {
        self.inventory_get(node).await
    }

    async fn dhcp_lease_by_mac(&self, mac: &str) -> Result<Option<DhcpLease>, StoreError> {
        self.lease_by_mac(mac).await
    }

    async fn dhcp_lease_by_ip(&self, ip: Ipv4Addr) -> Result<Option<DhcpLease>, StoreError> {
        self.lease_by_ip(ip).await
    }

    async fn dhcp_leases_in(
        &self,
        start: Ipv4Addr,
        end: Ipv4Addr,
    ) -> Result<Vec<DhcpLease>, StoreError> {
        self.leases_in(start, end).await
    }

    async fn write_dhcp_lease(&self, write: &LeaseWrite) -> Result<u64, StoreError> {
        self.lease_write(write).await
    }

    async fn dhcp_leases_of(
        &self,
        macs: &[String],
        ips: &[Ipv4Addr],
    ) -> Result<Vec<DhcpLease>, StoreError> {
        self.leases_of(macs, ips).await
    }

    async fn write_dhcp_leases(&self, writes: &[LeaseWrite]) -> Result<Vec<u64>, StoreError> {
        self.lease_writes(writes).await
    }
}
