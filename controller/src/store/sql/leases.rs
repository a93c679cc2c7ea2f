//! The DHCP lease table: dynamic leases written by the DHCP server, and reservation rows kept
//! in step with ports whose `extra.dhcp_address` names an address.
//!
//! Addresses are stored as integers (`u32` of the IPv4 address), so a pool range is an index
//! range scan. Every write that could give an address to a second MAC is conditional on the
//! row it replaces (same MAC, or expired), so two controllers on one PostgreSQL never hand
//! out one address twice.

use std::net::Ipv4Addr;

use super::{Arg, Backend, QueryBuilder, SqlStore, bind_args, micros, parse_opt_uuid, with_db};
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

    /// Every row of any of `macs` or on any of `ips`: what the DHCP server reads once for a
    /// batch of packets.
    pub(super) async fn leases_of(
        &self,
        macs: &[String],
        ips: &[Ipv4Addr],
    ) -> Result<Vec<DhcpLease>, StoreError> {
        if macs.is_empty() && ips.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::for_many(&self.backend, SELECT);
        let mut terms = Vec::new();
        if !macs.is_empty() {
            let marks: Vec<String> = macs
                .iter()
                .map(|m| q.arg(Arg::Text(m.to_ascii_lowercase())))
                .collect();
            terms.push(format!("mac IN ({})", marks.join(", ")));
        }
        if !ips.is_empty() {
            let marks: Vec<String> = ips.iter().map(|ip| q.arg(Arg::Int(ip_key(*ip)))).collect();
            terms.push(format!("ip IN ({})", marks.join(", ")));
        }
        q.push(" WHERE ");
        q.push(&terms.join(" OR "));
        let QueryBuilder { sql, args, .. } = q;
        let rows: Vec<LeaseRow> = with_db!(self, read, |pool| {
            bind_args!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), &args)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(lease_from_row).collect()
    }

    /// One change, atomically ([`Self::lease_writes`] of one); a refused hold is `Duplicate`.
    pub(super) async fn lease_write(&self, write: &LeaseWrite) -> Result<u64, StoreError> {
        let done = self
            .lease_writes(std::slice::from_ref(write))
            .await?
            .first()
            .copied()
            .unwrap_or(0);
        match write {
            LeaseWrite::Hold { ip, .. } if done == 0 => Err(taken(*ip)),
            _ => Ok(done),
        }
    }

    /// `writes` in order in one transaction (the DHCP server's batch): each one's rows
    /// changed. A hold whose address another MAC holds (or that is reserved) changes
    /// nothing and counts 0; the others still apply.
    pub(super) async fn lease_writes(&self, writes: &[LeaseWrite]) -> Result<Vec<u64>, StoreError> {
        for w in writes {
            if let LeaseWrite::Hold { state, .. } = w
                && !matches!(state, DhcpLeaseState::Offered | DhcpLeaseState::Bound)
            {
                return Err(StoreError::Database(
                    format!("a held lease is offered or bound, not {}", state.as_str()).into(),
                ));
            }
        }
        // Replaces only a row of the same MAC or an expired one; never a reservation.
        const UPSERT: &str = "INSERT INTO dhcp_leases (ip, mac, state, expires_at) \
                              VALUES ($1, $2, $3, $4) \
                              ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, \
                              state = excluded.state, expires_at = excluded.expires_at \
                              WHERE dhcp_leases.state <> 'reserved' \
                              AND (dhcp_leases.mac = excluded.mac OR dhcp_leases.expires_at <= $5)";
        // After a hold took its address: the MAC's other offered or bound leases go.
        const DROP_OTHERS: &str = "DELETE FROM dhcp_leases WHERE mac = $1 AND ip <> $2 \
                                   AND state IN ('offered', 'bound')";
        const DECLINE: &str = "INSERT INTO dhcp_leases (ip, mac, state, expires_at) \
                               VALUES ($1, $2, 'declined', $3) \
                               ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, \
                               state = excluded.state, expires_at = excluded.expires_at \
                               WHERE dhcp_leases.state <> 'reserved'";
        const RELEASE: &str = "DELETE FROM dhcp_leases WHERE ip = $1 AND mac = $2 \
                               AND state IN ('offered', 'bound')";
        const FORGET: &str = "DELETE FROM dhcp_leases WHERE mac = $1 AND state = 'offered'";
        const PURGE: &str = "DELETE FROM dhcp_leases WHERE state <> 'reserved' AND expires_at < $1";
        let anonymous = matches!(self.backend, Backend::Sqlite { .. });
        Ok(with_db!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            let mut done = Vec::with_capacity(writes.len());
            let mut next = 0;
            while next < writes.len() {
                let run = hold_run(&writes[next..]);
                if run > 1 {
                    // A storm's offers: one statement for the run, one for what they replace.
                    let holds = &writes[next..next + run];
                    let held: std::collections::HashSet<i64> = {
                        let (sql, args) = upsert_holds(anonymous, holds);
                        let rows: Vec<(i64,)> =
                            bind_args!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), &args)
                                .fetch_all(&mut *tx)
                                .await?;
                        rows.into_iter().map(|(ip,)| ip).collect()
                    };
                    if let Some((sql, args)) = drop_replaced(anonymous, holds, &held) {
                        bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), &args)
                            .execute(&mut *tx)
                            .await?;
                    }
                    for w in holds {
                        let took = matches!(w, LeaseWrite::Hold { ip, .. }
                            if held.contains(&ip_key(*ip)));
                        done.push(u64::from(took));
                    }
                    next += run;
                    continue;
                }
                let write = &writes[next];
                next += 1;
                let n = match write {
                    LeaseWrite::Hold {
                        ip,
                        mac,
                        state,
                        expires_at,
                        now,
                    } => {
                        let mac = mac.to_ascii_lowercase();
                        let n = sqlx::query(UPSERT)
                            .bind(ip_key(*ip))
                            .bind(mac.as_str())
                            .bind(state.as_str())
                            .bind(micros(*expires_at))
                            .bind(micros(*now))
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        if n > 0 {
                            sqlx::query(DROP_OTHERS)
                                .bind(mac.as_str())
                                .bind(ip_key(*ip))
                                .execute(&mut *tx)
                                .await?;
                        }
                        n
                    }
                    LeaseWrite::Decline { ip, mac, until } => sqlx::query(DECLINE)
                        .bind(ip_key(*ip))
                        .bind(mac.to_ascii_lowercase())
                        .bind(micros(*until))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected(),
                    LeaseWrite::Release { ip, mac } => sqlx::query(RELEASE)
                        .bind(ip_key(*ip))
                        .bind(mac.to_ascii_lowercase())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected(),
                    LeaseWrite::ForgetOffer { mac } => sqlx::query(FORGET)
                        .bind(mac.to_ascii_lowercase())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected(),
                    LeaseWrite::PurgeExpired { before } => sqlx::query(PURGE)
                        .bind(micros(*before))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected(),
                };
                done.push(n);
            }
            tx.commit().await?;
            done
        }))
    }
}

/// PURE: how many writes at the start of `writes` are holds that one multi-row statement
/// may apply as the one-by-one statements would: distinct addresses, distinct MACs, one
/// `now` (0 when the first is not a hold).
fn hold_run(writes: &[LeaseWrite]) -> usize {
    let mut ips = std::collections::HashSet::new();
    let mut macs = std::collections::HashSet::new();
    let mut when = None;
    writes
        .iter()
        .take_while(|w| match w {
            LeaseWrite::Hold { ip, mac, now, .. } => {
                *when.get_or_insert(*now) == *now
                    && ips.insert(*ip)
                    && macs.insert(mac.to_ascii_lowercase())
            }
            _ => false,
        })
        .count()
}

/// The multi-row form of the hold upsert for `holds` (a [`hold_run`]), returning the
/// addresses it took.
fn upsert_holds(anonymous: bool, holds: &[LeaseWrite]) -> (String, Vec<Arg>) {
    let mut q = QueryBuilder::anonymous_if(
        anonymous,
        "INSERT INTO dhcp_leases (ip, mac, state, expires_at) VALUES ",
    );
    let mut at = None;
    for (i, w) in holds.iter().enumerate() {
        let LeaseWrite::Hold {
            ip,
            mac,
            state,
            expires_at,
            now,
        } = w
        else {
            continue;
        };
        at = Some(*now);
        let row = [
            q.arg(Arg::Int(ip_key(*ip))),
            q.arg(Arg::Text(mac.to_ascii_lowercase())),
            q.arg(Arg::Text(state.as_str().to_owned())),
            q.arg(Arg::Int(micros(*expires_at))),
        ];
        if i > 0 {
            q.push(", ");
        }
        q.push(&format!("({})", row.join(", ")));
    }
    let now = q.arg(Arg::Int(at.map(micros).unwrap_or(0)));
    q.push(&format!(
        " ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, state = excluded.state, \
         expires_at = excluded.expires_at WHERE dhcp_leases.state <> 'reserved' \
         AND (dhcp_leases.mac = excluded.mac OR dhcp_leases.expires_at <= {now}) RETURNING ip"
    ));
    (q.sql, q.args)
}

/// After [`upsert_holds`] took the addresses `held`: the statement that drops the other
/// offered or bound leases of the MACs that took one (`None` when none did).
fn drop_replaced(
    anonymous: bool,
    holds: &[LeaseWrite],
    held: &std::collections::HashSet<i64>,
) -> Option<(String, Vec<Arg>)> {
    let mut q = QueryBuilder::anonymous_if(
        anonymous,
        "DELETE FROM dhcp_leases WHERE state IN ('offered', 'bound') AND mac IN (",
    );
    let took: Vec<(&str, i64)> = holds
        .iter()
        .filter_map(|w| match w {
            LeaseWrite::Hold { ip, mac, .. } if held.contains(&ip_key(*ip)) => {
                Some((mac.as_str(), ip_key(*ip)))
            }
            _ => None,
        })
        .collect();
    if took.is_empty() {
        return None;
    }
    // Marks are made in the order they appear (`?` binds in order).
    let macs: Vec<String> = took
        .iter()
        .map(|(mac, _)| q.arg(Arg::Text(mac.to_ascii_lowercase())))
        .collect();
    let ips: Vec<String> = took.iter().map(|(_, ip)| q.arg(Arg::Int(*ip))).collect();
    q.push(&macs.join(", "));
    q.push(") AND ip NOT IN (");
    q.push(&ips.join(", "));
    q.push(")");
    Some((q.sql, q.args))
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn hold(last: u8, mac: &str, at: i64) -> LeaseWrite {
        let t = Utc.timestamp_opt(at, 0).single().expect("time");
        LeaseWrite::Hold {
            ip: Ipv4Addr::new(10, 0, 0, last),
            mac: mac.to_owned(),
            state: DhcpLeaseState::Offered,
            expires_at: t,
            now: t,
        }
    }

    #[test]
    fn hold_runs_stop_where_one_statement_would_differ_from_one_by_one() {
        let release = LeaseWrite::Release {
            ip: Ipv4Addr::new(10, 0, 0, 9),
            mac: "aa".into(),
        };
        let cases: Vec<(&str, Vec<LeaseWrite>, usize)> = vec![
            ("empty", vec![], 0),
            (
                "not a hold first",
                vec![release.clone(), hold(1, "a", 0)],
                0,
            ),
            (
                "distinct",
                vec![hold(1, "a", 0), hold(2, "b", 0), hold(3, "c", 0)],
                3,
            ),
            (
                "up to another kind",
                vec![hold(1, "a", 0), release, hold(2, "b", 0)],
                1,
            ),
            (
                "an address twice",
                vec![hold(1, "a", 0), hold(2, "b", 0), hold(1, "c", 0)],
                2,
            ),
            (
                "a MAC twice, any case",
                vec![hold(1, "a", 0), hold(2, "A", 0)],
                1,
            ),
            ("another now", vec![hold(1, "a", 0), hold(2, "b", 5)], 1),
        ];
        for (name, writes, want) in cases {
            assert_eq!(hold_run(&writes), want, "{name}");
        }
    }

    #[test]
    fn the_multi_row_statements_bind_every_hold_and_drop_only_what_was_taken() {
        let holds = [hold(1, "A", 0), hold(2, "b", 0)];
        let (sql, args) = upsert_holds(false, &holds);
        assert!(
            sql.contains("VALUES ($1, $2, $3, $4), ($5, $6, $7, $8) ON CONFLICT"),
            "{sql}"
        );
        assert!(sql.ends_with("expires_at <= $9) RETURNING ip"), "{sql}");
        assert_eq!(args.len(), 9);
        assert!(matches!(&args[1], Arg::Text(m) if m == "a"));
        let took: std::collections::HashSet<i64> = [ip_key(Ipv4Addr::new(10, 0, 0, 2))].into();
        let (sql, args) = drop_replaced(false, &holds, &took).expect("one hold took");
        assert!(sql.ends_with("mac IN ($1) AND ip NOT IN ($2)"), "{sql}");
        assert!(matches!(&args[0], Arg::Text(m) if m == "b"));
        assert!(drop_replaced(false, &holds, &Default::default()).is_none());
        // On SQLite: `?` marks, one per value in bind order.
        let (sql, args) = upsert_holds(true, &holds);
        assert!(
            sql.contains("VALUES (?, ?, ?, ?), (?, ?, ?, ?) ON CONFLICT"),
            "{sql}"
        );
        assert!(sql.ends_with("expires_at <= ?) RETURNING ip"), "{sql}");
        assert_eq!(args.len(), 9);
        let both: std::collections::HashSet<i64> = [1, 2]
            .map(|last| ip_key(Ipv4Addr::new(10, 0, 0, last)))
            .into();
        let (sql, args) = drop_replaced(true, &holds, &both).expect("both took");
        assert!(sql.ends_with("mac IN (?, ?) AND ip NOT IN (?, ?)"), "{sql}");
        let texts: Vec<bool> = args.iter().map(|a| matches!(a, Arg::Text(_))).collect();
        assert_eq!(texts, [true, true, false, false], "binds follow the marks");
    }
}
