//! The lease view of one batch of DHCP packets.
//!
//! The server drains what its socket has queued (a PXE storm queues hundreds of DISCOVERs
//! within milliseconds) and decides the whole batch against one read of the store: the rows
//! of the batch's MACs and requested addresses, and enough windows of the pool to hold an
//! address for every DISCOVER ([`Overlay`]). Each decision's lease change is applied to the
//! overlay at once, so the next packet of the batch sees it (two DISCOVERs never get one
//! address); then the changes are written in one transaction and only the replies whose
//! change the store accepted are sent.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::SystemTime;

use super::leases::{
    FREE_WINDOW, Lease, LeaseContext, LeaseOp, LeaseStore, LeaseStoreError, MemoryLeaseStore,
    first_unused, free_windows, pick_free,
};
use super::policy::LeaseLookups;
use super::{MacAddr, Pool};

/// The rows one batch reads, plus the batch's own changes.
#[derive(Debug, Default)]
pub struct Overlay {
    rows: MemoryLeaseStore,
    /// Pool windows read in full, in the order the free-address search walks them.
    windows: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// The whole pool was read: expired addresses may be handed out again.
    whole_pool: bool,
}

/// What the batch needs of one packet's client.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub mac: MacAddr,
    pub lookups: LeaseLookups,
}

impl Overlay {
    /// Reads what `wants` need from `store`: the rows of their MACs and requested addresses,
    /// and pool windows from `hint` on until they hold an unused address for each client
    /// that may need one (the whole pool when the windows do not).
    pub async fn read(
        store: &dyn LeaseStore,
        wants: &[Want],
        pool: Option<&Pool>,
        reserved: &BTreeSet<Ipv4Addr>,
        hint: Ipv4Addr,
    ) -> Result<Overlay, LeaseStoreError> {
        let needed: Vec<&Want> = wants.iter().filter(|w| w.lookups.needed).collect();
        let mut macs: Vec<MacAddr> = needed.iter().map(|w| w.mac).collect();
        macs.sort_unstable_by_key(|m| m.0);
        macs.dedup();
        let mut ips: Vec<Ipv4Addr> = needed.iter().filter_map(|w| w.lookups.requested).collect();
        ips.sort_unstable();
        ips.dedup();
        let mut overlay = Overlay::default();
        if !macs.is_empty() || !ips.is_empty() {
            overlay.rows.seed(store.leases_of(&macs, &ips).await?);
        }
        let free_wanted = needed.iter().filter(|w| w.lookups.want_free).count();
        let Some(pool) = pool.filter(|_| free_wanted > 0) else {
            return Ok(overlay);
        };
        let mut unused = 0;
        // Windows twice what the batch may take: one read in a storm, not one per DISCOVER.
        let size = u32::try_from(free_wanted.saturating_mul(2))
            .unwrap_or(u32::MAX)
            .max(FREE_WINDOW);
        for (lo, hi) in free_windows(pool.start, pool.end, hint, size) {
            let rows = store.leases_in(lo, hi).await?;
            unused += unused_count(lo, hi, reserved, &rows);
            overlay.rows.seed(rows);
            overlay.windows.push((lo, hi));
            if unused >= free_wanted {
                return Ok(overlay);
            }
        }
        overlay
            .rows
            .seed(store.leases_in(pool.start, pool.end).await?);
        overlay.whole_pool = true;
        Ok(overlay)
    }

    /// A packet's [`LeaseContext`] as the batch stands. A free address is the first unused
    /// one of the windows read (the search runs on from there), else, when the whole pool
    /// was read, the lowest expired one ([`pick_free`]).
    pub fn context(
        &self,
        want: &Want,
        pool: Option<&Pool>,
        reserved: &BTreeSet<Ipv4Addr>,
        now: SystemTime,
    ) -> LeaseContext {
        let mut ctx = LeaseContext::default();
        if !want.lookups.needed {
            return ctx;
        }
        ctx.by_mac = self.rows.lease_of(want.mac);
        ctx.requested_holder = want.lookups.requested.and_then(|ip| self.rows.lease_on(ip));
        if want.lookups.want_free
            && let Some(pool) = pool
        {
            ctx.free = self
                .windows
                .iter()
                .find_map(|&(lo, hi)| first_unused(lo, hi, reserved, &self.rows.rows_in(lo, hi)))
                .or_else(|| {
                    self.whole_pool.then(|| {
                        let rows = self.rows.rows_in(pool.start, pool.end);
                        pick_free(pool.start, pool.end, reserved, &rows, now)
                    })?
                });
        }
        ctx
    }

    /// Records a decision's change, so the rest of the batch sees it.
    pub fn apply(&self, op: &LeaseOp, now: SystemTime) -> Result<(), LeaseStoreError> {
        self.rows.change(op, now)
    }
}

/// PURE: how many addresses of `lo..=hi` are neither in `reserved` nor have a row in `rows`.
fn unused_count(
    lo: Ipv4Addr,
    hi: Ipv4Addr,
    reserved: &BTreeSet<Ipv4Addr>,
    rows: &[Lease],
) -> usize {
    let used: BTreeSet<Ipv4Addr> = rows.iter().map(|l| l.ip).collect();
    (u32::from(lo)..=u32::from(hi))
        .map(Ipv4Addr::from)
        .filter(|ip| !reserved.contains(ip) && !used.contains(ip))
        .count()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn mac(i: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, i])
    }

    fn pool(start: u8, end: u8) -> Pool {
        Pool {
            start: ip(start),
            end: ip(end),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            routers: vec![],
            dns: vec![],
            lease_time: Duration::from_secs(600),
            offer_hold: Duration::from_secs(30),
            decline_hold: Duration::from_secs(600),
        }
    }

    fn discover(i: u8) -> Want {
        Want {
            mac: mac(i),
            lookups: LeaseLookups {
                needed: true,
                requested: None,
                want_free: true,
            },
        }
    }

    /// Offers `free` to `want`'s client in the overlay, as the server does.
    fn offer(o: &Overlay, want: &Want, free: Ipv4Addr, now: SystemTime) {
        let op = LeaseOp::Offer {
            ip: free,
            mac: want.mac,
            expires: now + Duration::from_secs(30),
        };
        o.apply(&op, now).expect("offer");
    }

    #[tokio::test]
    async fn a_batch_hands_out_distinct_unused_addresses_then_expired_ones() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let store = MemoryLeaseStore::new();
        // .10 is held, .11 expired long ago, .12 reserved by the configuration.
        for (last, expires) in [
            (10, now + Duration::from_secs(60)),
            (11, now - Duration::from_secs(60)),
        ] {
            let op = LeaseOp::Bind {
                ip: ip(last),
                mac: mac(100 + last),
                expires,
            };
            store.change(&op, SystemTime::UNIX_EPOCH).expect("bind");
        }
        let reserved: BTreeSet<Ipv4Addr> = [ip(12)].into();
        let pool = pool(10, 14);
        let wants: Vec<Want> = (1..=4).map(discover).collect();
        let o = Overlay::read(&store, &wants, Some(&pool), &reserved, ip(10))
            .await
            .expect("read");
        let mut got = Vec::new();
        for w in &wants {
            let ctx = o.context(w, Some(&pool), &reserved, now);
            assert_eq!(ctx.by_mac, None);
            let Some(free) = ctx.free else {
                got.push(None);
                continue;
            };
            offer(&o, w, free, now);
            got.push(Some(free));
        }
        // Never-used .13 and .14 first, then the expired .11; then nothing.
        assert_eq!(got, vec![Some(ip(13)), Some(ip(14)), Some(ip(11)), None]);
        // The store itself is untouched until the server writes.
        assert_eq!(store.snapshot().len(), 2);
        // A client that now asks again sees its own offer.
        let again = o.context(&wants[0], Some(&pool), &reserved, now);
        assert_eq!(again.by_mac.map(|l| l.ip), Some(ip(13)));
    }

    #[tokio::test]
    async fn without_full_mode_nothing_is_read() {
        let store = MemoryLeaseStore::new();
        let want = Want {
            mac: mac(1),
            lookups: LeaseLookups {
                needed: false,
                requested: None,
                want_free: false,
            },
        };
        let o = Overlay::read(&store, &[want], None, &BTreeSet::new(), ip(0))
            .await
            .expect("read");
        assert!(o.windows.is_empty() && !o.whole_pool);
        assert_eq!(
            o.context(&want, None, &BTreeSet::new(), SystemTime::UNIX_EPOCH),
            LeaseContext::default()
        );
    }

    #[test]
    fn unused_count_skips_rows_and_reservations() {
        let rows = [Lease {
            ip: ip(2),
            mac: mac(1),
            state: super::super::leases::LeaseState::Declined,
            expires: SystemTime::UNIX_EPOCH,
        }];
        assert_eq!(unused_count(ip(1), ip(5), &[ip(4)].into(), &rows), 3);
        assert_eq!(unused_count(ip(1), ip(1), &BTreeSet::new(), &[]), 1);
    }
}
