//! DHCP lease storage: the [`LeaseStore`] trait the server uses, [`MemoryLeaseStore`], and
//! the pure [`pick_free`] address search both implementations share.
//!
//! The policy never touches the store: the server reads what the policy needs into a
//! [`LeaseContext`], and applies the [`LeaseOp`] the policy returns. `ingot serve` uses the
//! controller database (`boot_http::StoreLeaseStore`), so leases survive a restart; the
//! in-memory store serves tests and a controller without a database.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::netboot::MacAddr;

/// Where an address stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Offered to `mac`, held until `expires` for its REQUEST.
    Offered,
    /// Acknowledged to `mac` until `expires`.
    Bound,
    /// A client reported the address in use (DECLINE): out of the pool until `expires`.
    Declined,
    /// Fixed for `mac` by the operator (a port's `extra.dhcp_address`); never expires and
    /// is never changed by a [`LeaseOp`].
    Reserved,
}

/// One address and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub state: LeaseState,
    pub expires: SystemTime,
}

impl Lease {
    /// Whether the lease still holds its address at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.state == LeaseState::Reserved || self.expires > now
    }
}

/// A change the policy asks the server to make to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOp {
    /// Hold `ip` for `mac` (OFFER sent).
    Offer {
        ip: Ipv4Addr,
        mac: MacAddr,
        expires: SystemTime,
    },
    /// Bind `ip` to `mac` (ACK sent).
    Bind {
        ip: Ipv4Addr,
        mac: MacAddr,
        expires: SystemTime,
    },
    /// The client gave `ip` back.
    Release { ip: Ipv4Addr, mac: MacAddr },
    /// The client found `ip` in use; keep it out of the pool until `until`.
    Decline {
        ip: Ipv4Addr,
        mac: MacAddr,
        until: SystemTime,
    },
    /// The client chose another server: drop what we only offered it.
    ForgetOffer { mac: MacAddr },
}

/// What the policy needs to know from the store about one packet's client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseContext {
    /// The lease (any state) held by this client's MAC.
    pub by_mac: Option<Lease>,
    /// The lease on the address the client asks for (option 50, or ciaddr), if any.
    pub requested_holder: Option<Lease>,
    /// A free pool address, looked up for DISCOVER when the client has nothing yet.
    pub free: Option<Ipv4Addr>,
}

/// Error from a lease store.
#[derive(Debug, thiserror::Error)]
pub enum LeaseStoreError {
    #[error("lease store backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An `Offer`/`Bind` for an address another MAC holds (or that is reserved): nothing
    /// was changed. With one server this cannot happen; with replicas sharing a database
    /// it means another one handed the address out first.
    #[error("address {ip} is held by another client")]
    Taken { ip: Ipv4Addr },
}

/// PURE: the free address of `start..=end` when no never-used one is left, given its rows
/// (any order): the lowest address in the range that is not in `exclude`, has no row, and
/// is not `server`; failing that, the lowest whose row is no longer active at `now`. So
/// never-used addresses go first and a returning client keeps its old one longer.
pub fn pick_free(
    start: Ipv4Addr,
    end: Ipv4Addr,
    exclude: &BTreeSet<Ipv4Addr>,
    rows: &[Lease],
    now: SystemTime,
) -> Option<Ipv4Addr> {
    let by_ip: BTreeMap<Ipv4Addr, &Lease> = rows.iter().map(|l| (l.ip, l)).collect();
    let mut expired = None;
    for n in u32::from(start)..=u32::from(end) {
        let ip = Ipv4Addr::from(n);
        if exclude.contains(&ip) {
            continue;
        }
        match by_ip.get(&ip) {
            None => return Some(ip),
            Some(l) if !l.is_active(now) && expired.is_none() => expired = Some(ip),
            Some(_) => {}
        }
    }
    expired
}

/// PURE: the lowest address of `start..=end` that is not in `exclude` and has no row in
/// `rows` (the rows of that range, any order): a never-used address.
pub fn first_unused(
    start: Ipv4Addr,
    end: Ipv4Addr,
    exclude: &BTreeSet<Ipv4Addr>,
    rows: &[Lease],
) -> Option<Ipv4Addr> {
    let used: BTreeSet<Ipv4Addr> = rows.iter().map(|l| l.ip).collect();
    (u32::from(start)..=u32::from(end))
        .map(Ipv4Addr::from)
        .find(|ip| !exclude.contains(ip) && !used.contains(ip))
}

/// The fewest addresses the search for never-used ones reads at a time.
pub const FREE_WINDOW: u32 = 64;

/// PURE: the windows the search for never-used addresses reads, in order: from `from` to
/// `end`, then from `start` to just before `from`, `size` addresses each (at least 1).
pub fn free_windows(
    start: Ipv4Addr,
    end: Ipv4Addr,
    from: Ipv4Addr,
    size: u32,
) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let size = size.max(1);
    let (s, e) = (u32::from(start), u32::from(end));
    if s > e {
        return Vec::new();
    }
    let f = u32::from(from).clamp(s, e);
    let mut ranges = vec![(f, e)];
    if f > s {
        ranges.push((s, f - 1));
    }
    let mut out = Vec::new();
    for (lo, hi) in ranges {
        let mut a = lo;
        loop {
            let b = a.saturating_add(size - 1).min(hi);
            out.push((Ipv4Addr::from(a), Ipv4Addr::from(b)));
            if b >= hi {
                break;
            }
            a = b + 1;
        }
    }
    out
}

/// PURE: how many addresses of `start..=end` [`pick_free`] could still hand out at `now`
/// (not in `exclude`, not `server`, no row active at `now`).
pub fn count_free(
    start: Ipv4Addr,
    end: Ipv4Addr,
    exclude: &BTreeSet<Ipv4Addr>,
    rows: &[Lease],
    now: SystemTime,
) -> u64 {
    let held: BTreeSet<Ipv4Addr> = rows
        .iter()
        .filter(|l| l.is_active(now))
        .map(|l| l.ip)
        .collect();
    (u32::from(start)..=u32::from(end))
        .map(Ipv4Addr::from)
        .filter(|ip| !exclude.contains(ip) && !held.contains(ip))
        .count() as u64
}

/// Lease persistence.
///
/// Contract: at most one lease per address and per MAC (an `Offer` or `Bind` for a MAC
/// replaces its previous lease). An `Offer` or `Bind` on an address that another MAC holds
/// at `now`, or that is reserved, fails with [`LeaseStoreError::Taken`] and changes nothing.
/// Every method is cancel-safe and may be retried: `apply` is idempotent for the same op.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Every lease row of `start..=end` (any order).
    async fn leases_in(
        &self,
        start: Ipv4Addr,
        end: Ipv4Addr,
    ) -> Result<Vec<Lease>, LeaseStoreError>;
    async fn apply(&self, op: &LeaseOp, now: SystemTime) -> Result<(), LeaseStoreError>;

    /// Every lease row (any state) of any of `macs` or on any of `ips`: what the server
    /// reads once for a batch of packets.
    async fn leases_of(
        &self,
        macs: &[MacAddr],
        ips: &[Ipv4Addr],
    ) -> Result<Vec<Lease>, LeaseStoreError>;

    /// Applies `ops` in order, in one transaction where the store has them: the outer error
    /// when nothing could be written, else each op's own result (a `Taken` op changed
    /// nothing; the others stand).
    async fn apply_all(
        &self,
        ops: &[LeaseOp],
        now: SystemTime,
    ) -> Result<Vec<Result<(), LeaseStoreError>>, LeaseStoreError> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(match self.apply(op, now).await {
                Err(LeaseStoreError::Backend(e)) => return Err(LeaseStoreError::Backend(e)),
                r => r,
            });
        }
        Ok(out)
    }

    /// How many pool addresses are free at `now` ([`count_free`]).
    async fn count_free(
        &self,
        start: Ipv4Addr,
        end: Ipv4Addr,
        exclude: &BTreeSet<Ipv4Addr>,
        now: SystemTime,
    ) -> Result<u64, LeaseStoreError> {
        let rows = self.leases_in(start, end).await?;
        Ok(count_free(start, end, exclude, &rows, now))
    }
}

/// In-memory [`LeaseStore`]: leases are lost on restart (clients then re-DISCOVER or get an
/// INIT-REBOOT ACK for a free address).
#[derive(Debug, Default)]
pub struct MemoryLeaseStore {
    by_ip: Mutex<BTreeMap<Ipv4Addr, Lease>>,
}

impl MemoryLeaseStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every lease, ordered by address.
    pub fn snapshot(&self) -> Vec<Lease> {
        self.lock().values().cloned().collect()
    }

    /// Adds rows read elsewhere (the server's batch overlay); a row already held for an
    /// address stays.
    pub fn seed(&self, rows: impl IntoIterator<Item = Lease>) {
        let mut leases = self.lock();
        for row in rows {
            leases.entry(row.ip).or_insert(row);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Ipv4Addr, Lease>> {
        self.by_ip.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemoryLeaseStore {
    /// The lease `mac` holds: its reservation, else its latest offered or bound one
    /// (declines are not leases), as the store's `dhcp_lease_by_mac`.
    pub fn lease_of(&self, mac: MacAddr) -> Option<Lease> {
        self.lock()
            .values()
            .filter(|l| l.mac == mac && l.state != LeaseState::Declined)
            .max_by_key(|l| (l.state == LeaseState::Reserved, l.expires))
            .cloned()
    }

    /// The row on `ip`, any state.
    pub fn lease_on(&self, ip: Ipv4Addr) -> Option<Lease> {
        self.lock().get(&ip).cloned()
    }

    /// [`LeaseStore::leases_in`], at once.
    pub fn rows_in(&self, start: Ipv4Addr, end: Ipv4Addr) -> Vec<Lease> {
        if start > end {
            return Vec::new();
        }
        self.lock()
            .range(start..=end)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// [`LeaseStore::apply`], at once.
    pub fn change(&self, op: &LeaseOp, now: SystemTime) -> Result<(), LeaseStoreError> {
        let mut leases = self.lock();
        match *op {
            LeaseOp::Offer { ip, mac, expires } | LeaseOp::Bind { ip, mac, expires } => {
                if leases.get(&ip).is_some_and(|l| {
                    l.state == LeaseState::Reserved || (l.mac != mac && l.is_active(now))
                }) {
                    return Err(LeaseStoreError::Taken { ip });
                }
                let state = if matches!(op, LeaseOp::Bind { .. }) {
                    LeaseState::Bound
                } else {
                    LeaseState::Offered
                };
                leases.retain(|a, l| {
                    *a == ip
                        || l.mac != mac
                        || matches!(l.state, LeaseState::Declined | LeaseState::Reserved)
                });
                leases.insert(
                    ip,
                    Lease {
                        ip,
                        mac,
                        state,
                        expires,
                    },
                );
            }
            LeaseOp::Release { ip, mac } => {
                if leases
                    .get(&ip)
                    .is_some_and(|l| l.mac == mac && l.state != LeaseState::Reserved)
                {
                    leases.remove(&ip);
                }
            }
            LeaseOp::Decline { ip, mac, until } => {
                if leases
                    .get(&ip)
                    .is_some_and(|l| l.state == LeaseState::Reserved)
                {
                    return Ok(());
                }
                leases.insert(
                    ip,
                    Lease {
                        ip,
                        mac,
                        state: LeaseState::Declined,
                        expires: until,
                    },
                );
            }
            LeaseOp::ForgetOffer { mac } => {
                leases.retain(|_, l| !(l.mac == mac && l.state == LeaseState::Offered));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn leases_of(
        &self,
        macs: &[MacAddr],
        ips: &[Ipv4Addr],
    ) -> Result<Vec<Lease>, LeaseStoreError> {
        Ok(self
            .lock()
            .values()
            .filter(|l| macs.contains(&l.mac) || ips.contains(&l.ip))
            .cloned()
            .collect())
    }

    async fn leases_in(
        &self,
        start: Ipv4Addr,
        end: Ipv4Addr,
    ) -> Result<Vec<Lease>, LeaseStoreError> {
        Ok(self.rows_in(start, end))
    }

    async fn apply(&self, op: &LeaseOp, now: SystemTime) -> Result<(), LeaseStoreError> {
        self.change(op, now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    /// The address the server would hand out of `start..=end` as `store` stands.
    fn free(
        store: &MemoryLeaseStore,
        start: Ipv4Addr,
        end: Ipv4Addr,
        exclude: &BTreeSet<Ipv4Addr>,
        now: SystemTime,
    ) -> Option<Ipv4Addr> {
        pick_free(start, end, exclude, &store.rows_in(start, end), now)
    }
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    #[test]
    fn free_windows_run_from_the_hint_to_the_end_then_from_the_start() {
        let a = |n: u32| Ipv4Addr::from(0x0a00_0000 + n);
        assert_eq!(
            free_windows(a(0), a(9), a(4), FREE_WINDOW),
            vec![(a(4), a(9)), (a(0), a(3))]
        );
        assert_eq!(
            free_windows(a(0), a(9), a(0), FREE_WINDOW),
            vec![(a(0), a(9))]
        );
        // A hint outside the pool is clamped into it.
        assert_eq!(
            free_windows(a(5), a(9), a(1), FREE_WINDOW),
            vec![(a(5), a(9))]
        );
        assert_eq!(
            free_windows(a(5), a(9), a(30), FREE_WINDOW),
            vec![(a(9), a(9)), (a(5), a(8))]
        );
        assert!(free_windows(a(9), a(5), a(6), FREE_WINDOW).is_empty());
        // A batch asks for windows its size: three addresses at a time here.
        assert_eq!(
            free_windows(a(0), a(9), a(4), 3),
            vec![(a(4), a(6)), (a(7), a(9)), (a(0), a(2)), (a(3), a(3))]
        );
        assert_eq!(
            free_windows(a(0), a(1), a(0), 0),
            vec![(a(0), a(0)), (a(1), a(1))]
        );
        let big = free_windows(a(0), a(199), a(100), FREE_WINDOW);
        assert_eq!(
            big,
            vec![
                (a(100), a(163)),
                (a(164), a(199)),
                (a(0), a(63)),
                (a(64), a(99))
            ]
        );
        // Every address exactly once.
        let covered: u32 = big
            .iter()
            .map(|(l, h)| u32::from(*h) - u32::from(*l) + 1)
            .sum();
        assert_eq!(covered, 200);
    }

    #[test]
    fn first_unused_skips_rows_of_any_state_and_exclusions() {
        let now = SystemTime::now();
        let lease = |last: u8, mac: MacAddr, expires: SystemTime| Lease {
            ip: ip(last),
            mac,
            state: LeaseState::Offered,
            expires,
        };
        // An active row and one long expired: neither address is "unused".
        let rows = vec![
            lease(10, A, now + Duration::from_secs(60)),
            lease(12, B, now - Duration::from_secs(3600)),
        ];
        let excl: BTreeSet<Ipv4Addr> = [ip(11)].into();
        assert_eq!(first_unused(ip(10), ip(14), &excl, &rows), Some(ip(13)));
        assert_eq!(first_unused(ip(10), ip(12), &excl, &rows), None);
        assert_eq!(
            first_unused(ip(10), ip(10), &BTreeSet::new(), &[]),
            Some(ip(10))
        );
    }

    #[tokio::test]
    async fn one_lease_per_mac_and_free_search_skips_held_addresses() {
        let store = MemoryLeaseStore::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let later = now + Duration::from_secs(60);
        let none = BTreeSet::new();
        assert_eq!(free(&store, ip(10), ip(12), &none, now), Some(ip(10)));
        store
            .apply(
                &LeaseOp::Offer {
                    ip: ip(10),
                    mac: A,
                    expires: later,
                },
                SystemTime::UNIX_EPOCH,
            )
            .await
            .expect("apply");
        store
            .apply(
                &LeaseOp::Bind {
                    ip: ip(11),
                    mac: A,
                    expires: later,
                },
                SystemTime::UNIX_EPOCH,
            )
            .await
            .expect("apply");
        // The offer on .10 was replaced by the binding on .11.
        assert_eq!(store.snapshot().len(), 1);
        assert_eq!(store.lease_of(A).map(|l| l.ip), Some(ip(11)));
        let excl: BTreeSet<_> = [ip(10)].into();
        assert_eq!(free(&store, ip(10), ip(12), &excl, now), Some(ip(12)));
        store
            .apply(
                &LeaseOp::Decline {
                    ip: ip(12),
                    mac: B,
                    until: later,
                },
                SystemTime::UNIX_EPOCH,
            )
            .await
            .expect("apply");
        assert_eq!(free(&store, ip(11), ip(12), &none, now), None);
        // Once expired, held addresses come back, after never-used ones.
        assert_eq!(free(&store, ip(11), ip(12), &none, later), Some(ip(11)));
        assert_eq!(store.lease_of(B), None, "declines are not leases");
    }

    #[tokio::test]
    async fn release_only_by_holder_and_forget_only_offers() {
        let store = MemoryLeaseStore::new();
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
        store
            .apply(
                &LeaseOp::Bind {
                    ip: ip(10),
                    mac: A,
                    expires: later,
                },
                SystemTime::UNIX_EPOCH,
            )
            .await
            .expect("apply");
        store
            .apply(
                &LeaseOp::Release { ip: ip(10), mac: B },
                SystemTime::UNIX_EPOCH,
            )
            .await
            .expect("apply");
        assert_eq!(store.snapshot().len(), 1);
        store
            .apply(&LeaseOp::ForgetOffer { mac: A }, SystemTime::UNIX_EPOCH)
            .await
            .expect("apply");
        assert_eq!(store.snapshot().len(), 1);
        store
            .apply(
                &LeaseOp::Release { ip: ip(10), mac: A },
                SystemTime::UNIX_EPOCH,
            )
            .await
            .expect("apply");
        assert!(store.snapshot().is_empty());
        store
            .apply(
                &LeaseOp::Offer {
                    ip: ip(10),
                    mac: A,
                    expires: later,
                },
                SystemTime::UNIX_EPOCH,
            )
            .await
            .expect("apply");
        store
            .apply(&LeaseOp::ForgetOffer { mac: A }, SystemTime::UNIX_EPOCH)
            .await
            .expect("apply");
        assert!(store.snapshot().is_empty());
    }

    /// (name, rows, exclude, expected)
    type FreeCase = (
        &'static str,
        Vec<Lease>,
        BTreeSet<Ipv4Addr>,
        Option<Ipv4Addr>,
    );

    #[test]
    fn pick_free_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let row = |last: u8, state: LeaseState, secs_left: i64| Lease {
            ip: ip(last),
            mac: A,
            state,
            expires: if secs_left >= 0 {
                now + Duration::from_secs(secs_left.unsigned_abs())
            } else {
                now - Duration::from_secs(secs_left.unsigned_abs())
            },
        };
        let none = BTreeSet::new();
        let cases: Vec<FreeCase> = vec![
            (
                "empty table: first address",
                vec![],
                none.clone(),
                Some(ip(10)),
            ),
            (
                "held addresses are skipped",
                vec![
                    row(10, LeaseState::Bound, 60),
                    row(11, LeaseState::Offered, 5),
                ],
                none.clone(),
                Some(ip(12)),
            ),
            (
                "excluded addresses are skipped",
                vec![],
                [ip(10), ip(11)].into(),
                Some(ip(12)),
            ),
            (
                "never-used before expired",
                vec![
                    row(10, LeaseState::Bound, -60),
                    row(11, LeaseState::Bound, 60),
                ],
                none.clone(),
                Some(ip(12)),
            ),
            (
                "expired comes back when nothing is unused",
                vec![
                    row(10, LeaseState::Bound, 60),
                    row(11, LeaseState::Declined, -1),
                    row(12, LeaseState::Offered, -5),
                ],
                none.clone(),
                Some(ip(11)),
            ),
            (
                "a lease expiring exactly now is free",
                vec![
                    row(10, LeaseState::Bound, 0),
                    row(11, LeaseState::Bound, 1),
                    row(12, LeaseState::Bound, 1),
                ],
                none.clone(),
                Some(ip(10)),
            ),
            (
                "reservations never expire",
                vec![
                    row(10, LeaseState::Reserved, -1000),
                    row(11, LeaseState::Bound, 1),
                    row(12, LeaseState::Declined, 1),
                ],
                none.clone(),
                None,
            ),
            (
                "rows in any order",
                vec![row(12, LeaseState::Bound, 9), row(10, LeaseState::Bound, 9)],
                none.clone(),
                Some(ip(11)),
            ),
        ];
        for (name, rows, exclude, want) in cases {
            assert_eq!(
                pick_free(ip(10), ip(12), &exclude, &rows, now),
                want,
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn an_address_held_by_another_is_not_taken_over() {
        let store = MemoryLeaseStore::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let later = now + Duration::from_secs(60);
        let bind = |mac, expires| LeaseOp::Bind {
            ip: ip(10),
            mac,
            expires,
        };
        store.apply(&bind(A, later), now).await.expect("free");
        let err = store.apply(&bind(B, later), now).await.expect_err("held");
        assert!(matches!(err, LeaseStoreError::Taken { ip: i } if i == ip(10)));
        assert_eq!(store.snapshot()[0].mac, A, "nothing changed");
        // Once A's lease expired, B may have the address.
        store.apply(&bind(B, later), later).await.expect("expired");
        assert_eq!(store.snapshot()[0].mac, B);
    }
}
