//! The DHCP lease table: dynamic leases written by the DHCP server, and reservation rows kept
//! in step with ports whose `extra.dhcp_address` names an address.
//!
//! Addresses are stored as integers (`u32` of the IPv4 address), so a pool range is an index
//! range scan. Every write that could give an address to a second MAC is conditional on the
//! row it replaces (same MAC, or expired), so two controllers on one PostgreSQL never hand
//! out one address twice.

use std::net::Ipv4Addr;

use super::{SqlStore, micros, parse_opt_uuid, with_db};
use crate::model::{DhcpLease, DhcpLeaseState};
use crate::store::{LeaseWrite, StoreError};
use chrono::{DateTime, Utc};

/// `expires_at` of reservation rows: 9999-12-31T23:59:59Z, in microseconds.
pub(crate) const RESERVED_EXPIRES: i64 = 253_402_300_799_000_000;

type LeaseRow = (i64, String, String, i64, Option<String>);

const SELECT: &str = "SELECT ip, mac, state, expires_at, port_uuid FROM dhcp_leases";

fn ip_key(ip: Ipv4Addr) -> i64 {
    i64::from(u32::from(ip))
}

fn lease_from_row(row: LeaseRow) -> Result<DhcpLease, StoreError> {
    let (ip, mac, state, expires, port) = row;
    let bad = |what: String| StoreError::Database(what.into());
    let ip = u32::try_from(ip).map_err(|_| bad(format!("lease address {ip} is not IPv4")))?;
    Ok(DhcpLease {
        ip: Ipv4Addr::from(ip),
        mac,
        state: DhcpLeaseState::parse(&state)
            .ok_or_else(|| bad(format!("unknown lease state {state:?}")))?,
        expires_at: DateTime::<Utc>::from_timestamp_micros(expires)
            .ok_or_else(|| bad(format!("lease expiry {expires} out of range")))?,
        port_uuid: parse_opt_uuid(port.as_deref())?,
    })
}

fn taken(ip: Ipv4Addr) -> StoreError {
    StoreError::Duplicate {
        kind: "dhcp lease",
        field: "ip",
        value: ip.to_string(),
    }
}

impl SqlStore {
    pub(super) async fn lease_by_mac(&self, mac: &str) -> Result<Option<DhcpLease>, StoreError> {
        let sql = "SELECT ip, mac, state, expires_at, port_uuid FROM dhcp_leases \
                   WHERE mac = $1 AND state <> 'declined' \
                   ORDER BY CASE WHEN state = 'reserved' THEN 0 ELSE 1 END, expires_at DESC \
                   LIMIT 1";
        let row: Option<LeaseRow> = with_db!(self, read, |pool| {
            sqlx::query_as(sql)
                .bind(mac.to_ascii_lowercase())
                .fetch_optional(pool)
                .await?
        });
        row.map(lease_from_row).transpose()
    }

    pub(super) async fn lease_by_ip(&self, ip: Ipv4Addr) -> Result<Option<DhcpLease>, StoreError> {
        let sql = "SELECT ip, mac, state, expires_at, port_uuid FROM dhcp_leases WHERE ip = $1";
        let row: Option<LeaseRow> = with_db!(self, read, |pool| {
            sqlx::query_as(sql)
                .bind(ip_key(ip))
                .fetch_optional(pool)
                .await?
        });
        row.map(lease_from_row).transpose()
    }

    pub(super) async fn leases_in(
        &self,
        start: Ipv4Addr,
        end: Ipv4Addr,
    ) -> Result<Vec<DhcpLease>, StoreError> {
        let sql = format!("{SELECT} WHERE ip >= $1 AND ip <= $2 ORDER BY ip");
        let rows: Vec<LeaseRow> = with_db!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(ip_key(start))
                .bind(ip_key(end))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(lease_from_row).collect()
    }

    pub(super) async fn lease_write(&self, write: &LeaseWrite) -> Result<u64, StoreError> {
        match write {
            LeaseWrite::Hold {
                ip,
                mac,
                state,
                expires_at,
                now,
            } => self.lease_hold(*ip, mac, *state, *expires_at, *now).await,
            LeaseWrite::Decline { ip, mac, until } => {
                let sql = "INSERT INTO dhcp_leases (ip, mac, state, expires_at) \
                           VALUES ($1, $2, 'declined', $3) \
                           ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, \
                           state = excluded.state, expires_at = excluded.expires_at \
                           WHERE dhcp_leases.state <> 'reserved'";
                Ok(with_db!(self, write, |pool| {
                    sqlx::query(sql)
                        .bind(ip_key(*ip))
                        .bind(mac.to_ascii_lowercase())
                        .bind(micros(*until))
                        .execute(pool)
                        .await?
                        .rows_affected()
                }))
            }
            LeaseWrite::Release { ip, mac } => {
                let sql = "DELETE FROM dhcp_leases WHERE ip = $1 AND mac = $2 \
                           AND state IN ('offered', 'bound')";
                Ok(with_db!(self, write, |pool| {
                    sqlx::query(sql)
                        .bind(ip_key(*ip))
                        .bind(mac.to_ascii_lowercase())
                        .execute(pool)
                        .await?
                        .rows_affected()
                }))
            }
            LeaseWrite::ForgetOffer { mac } => {
                let sql = "DELETE FROM dhcp_leases WHERE mac = $1 AND state = 'offered'";
                Ok(with_db!(self, write, |pool| {
                    sqlx::query(sql)
                        .bind(mac.to_ascii_lowercase())
                        .execute(pool)
                        .await?
                        .rows_affected()
                }))
            }
            LeaseWrite::PurgeExpired { before } => {
                let sql = "DELETE FROM dhcp_leases WHERE state <> 'reserved' AND expires_at < $1";
                Ok(with_db!(self, write, |pool| {
                    sqlx::query(sql)
                        .bind(micros(*before))
                        .execute(pool)
                        .await?
                        .rows_affected()
                }))
            }
        }
    }

    async fn lease_hold(
        &self,
        ip: Ipv4Addr,
        mac: &str,
        state: DhcpLeaseState,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if !matches!(state, DhcpLeaseState::Offered | DhcpLeaseState::Bound) {
            return Err(StoreError::Database(
                format!("a held lease is offered or bound, not {}", state.as_str()).into(),
            ));
        }
        let mac = mac.to_ascii_lowercase();
        const DROP_OTHERS: &str = "DELETE FROM dhcp_leases WHERE mac = $1 AND ip <> $2 \
                                   AND state IN ('offered', 'bound')";
        // Replaces only a row of the same MAC or an expired one; never a reservation.
        const UPSERT: &str = "INSERT INTO dhcp_leases (ip, mac, state, expires_at) \
                              VALUES ($1, $2, $3, $4) \
                              ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, \
                              state = excluded.state, expires_at = excluded.expires_at \
                              WHERE dhcp_leases.state <> 'reserved' \
                              AND (dhcp_leases.mac = excluded.mac OR dhcp_leases.expires_at <= $5)";
        let done = with_db!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(DROP_OTHERS)
                .bind(mac.as_str())
                .bind(ip_key(ip))
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query(UPSERT)
                .bind(ip_key(ip))
                .bind(mac.as_str())
                .bind(state.as_str())
                .bind(micros(expires_at))
                .bind(micros(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done == 0 {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            done
        });
        if done == 0 {
            return Err(taken(ip));
        }
        Ok(done)
    }
}

/// Inside the transaction `$tx` of a port write: drops the port's old reservation row (when
/// `$replace`), then reserves `$ip` (an `Option<Ipv4Addr>`) for the port's MAC. A dynamic
/// lease on the address gives way; another port's reservation does not. Evaluates to
/// `Result<bool, sqlx::Error>`: false when the address is reserved by another port.
macro_rules! reserve_for_port {
    ($tx:expr, $port:expr, $ip:expr, $replace:expr) => {
        async {
            let port: &$crate::model::Port = $port;
            if $replace {
                sqlx::query("DELETE FROM dhcp_leases WHERE port_uuid = $1")
                    .bind(port.uuid.to_string())
                    .execute(&mut *$tx)
                    .await?;
            }
            let Some(ip) = $ip else {
                return Ok::<bool, sqlx::Error>(true);
            };
            let done = sqlx::query(
                "INSERT INTO dhcp_leases (ip, mac, state, expires_at, port_uuid) \
                 VALUES ($1, $2, 'reserved', $3, $4) \
                 ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, state = excluded.state, \
                 expires_at = excluded.expires_at, port_uuid = excluded.port_uuid \
                 WHERE dhcp_leases.state <> 'reserved'",
            )
            .bind(i64::from(u32::from(ip)))
            .bind(port.address.as_str())
            .bind($crate::store::sql::leases::RESERVED_EXPIRES)
            .bind(port.uuid.to_string())
            .execute(&mut *$tx)
            .await?
            .rows_affected();
            Ok(done > 0)
        }
    };
}

pub(crate) use reserve_for_port;
