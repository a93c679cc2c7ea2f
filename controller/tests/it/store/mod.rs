//! The store test suite, written once and run against real databases: SQLite in a
//! temporary directory and a PostgreSQL server the harness starts itself
//! (`qemu_tests::pg`).
//!
//! Run: `cargo test -p controller --test it store::`. For the timing figures:
//! `CARGO_PROFILE_DEV_PACKAGE_CONTROLLER_OPT_LEVEL=3 cargo test -p controller --test it store::
//! timing -- --nocapture`.

mod cases;
mod fixtures;

use std::sync::Arc;

use controller::store::SqlStore;
use qemu_tests::pg;

/// An open store on a fresh database, plus what keeps that database alive.
pub struct Db {
    pub store: SqlStore,
    url: String,
    _dir: Option<tempfile::TempDir>,
    _server: Option<Arc<pg::PgServer>>,
}

impl Db {
    /// A SQLite file in a new temporary directory (in a subdirectory that does not exist
    /// yet, to check that `connect` creates it).
    pub async fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/state/ingot.db", dir.path().display());
        let store = SqlStore::connect(&url).await.expect("open sqlite store");
        assert_eq!(store.backend_name(), "sqlite");
        Db {
            store,
            url,
            _dir: Some(dir),
            _server: None,
        }
    }

    /// A new database on the shared PostgreSQL server; `None` when PostgreSQL is absent.
    pub async fn postgres() -> Option<Db> {
        let server = tokio::task::spawn_blocking(pg::PgServer::shared)
            .await
            .expect("start postgres")?;
        let url = server.create_database();
        let store = SqlStore::connect(&url).await.expect("open postgres store");
        assert_eq!(store.backend_name(), "postgres");
        Some(Db {
            store,
            url,
            _dir: None,
            _server: Some(server),
        })
    }

    /// Closes the store and opens the same database again, as a restarted controller would.
    pub async fn reopen(&mut self) {
        self.store.close().await;
        self.store = SqlStore::connect(&self.url).await.expect("reopen store");
    }

    /// Runs one SQL statement on the database outside the store (to set up a row as an
    /// older controller left it).
    pub async fn raw_exec(&self, sql: &str) {
        if self.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.url).await.expect("sqlite");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect(sql);
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&self.url).await.expect("postgres");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect(sql);
            pool.close().await;
        }
    }

    /// A second, independent store on the same database (another controller process).
    pub async fn second(&self) -> SqlStore {
        SqlStore::connect(&self.url)
            .await
            .expect("open second store")
    }
}

/// Generates one test per case and backend: `sqlite::<case>` and `postgres::<case>`.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let mut db = super::Db::sqlite().await;
                    super::cases::$case(&mut db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(mut db) = super::Db::postgres().await else { return };
                    super::cases::$case(&mut db).await;
                }
            )*
        }
    };
}

suite!(
    node_crud,
    node_get_by_ident,
    node_duplicates,
    node_filters,
    node_by_system_uuid,
    node_by_bmc_host,
    node_sorting,
    node_paging,
    stale_update,
    concurrent_reserve,
    reserve_release,
    concurrent_claim,
    release_all,
    delete_cascade,
    port_crud,
    port_paging,
    allocation_crud,
    allocation_paging,
    history_order,
    inventory,
    reopen_keeps_everything,
    two_processes,
    timing,
    commit_transition,
    reserve_and_commit,
    create_discovered,
    dhcp_lease_rules,
    dhcp_reservations,
    dhcp_server_restart,
    dhcp_two_replicas_race,
    dhcp_storm_batch,
    node_state_counts,
    conductor_rows,
    conductors_register_and_heartbeat,
    inspection_rule_rows,
    deploy_template_rows,
    node_state_by_mac,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_memory() {
    let store = SqlStore::connect("sqlite::memory:")
        .await
        .expect("open in-memory store");
    cases::memory_smoke(&store).await;
}

#[tokio::test]
async fn bad_url() {
    let err = SqlStore::connect("mysql://x@127.0.0.1/db")
        .await
        .expect_err("mysql is refused");
    assert!(err.to_string().contains("database"), "{err}");
}
