//! [`StoreLeaseStore`]: the DHCP server's [`LeaseStore`] on the controller database, so
//! leases survive a restart and reservations come from ports (`extra.dhcp_address`).
//!
//! Only conversions live here: the address search is the pure
//! [`pick_free`](crate::netboot::dhcp::leases::pick_free), the write rules are the store's
//! conditional statements.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::model::{DhcpLease, DhcpLeaseState};
use crate::netboot::MacAddr;
use crate::netboot::dhcp::leases::{Lease, LeaseOp, LeaseState, LeaseStore, LeaseStoreError};
use crate::store::{LeaseWrite, Store, StoreError};

/// The lease store of `ingot serve`.
#[derive(Debug, Clone)]
pub struct StoreLeaseStore {
    store: Arc<dyn Store>,
}

impl StoreLeaseStore {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

fn backend(err: StoreError) -> LeaseStoreError {
    LeaseStoreError::Backend(Box::new(err))
}

fn to_lease(row: DhcpLease) -> Result<Lease, LeaseStoreError> {
    let mac: MacAddr = row
        .mac
        .parse()
        .map_err(|e| LeaseStoreError::Backend(Box::new(e)))?;
    Ok(Lease {
        ip: row.ip,
        mac,
        state: match row.state {
            DhcpLeaseState::Offered => LeaseState::Offered,
            DhcpLeaseState::Bound => LeaseState::Bound,
            DhcpLeaseState::Declined => LeaseState::Declined,
            DhcpLeaseState::Reserved => LeaseState::Reserved,
        },
        expires: row.expires_at.into(),
    })
}

/// The error for a hold the store refused: another MAC holds its address.
fn taken(op: &LeaseOp) -> LeaseStoreError {
    LeaseStoreError::Taken {
        ip: match *op {
            LeaseOp::Offer { ip, .. }
            | LeaseOp::Bind { ip, .. }
            | LeaseOp::Release { ip, .. }
            | LeaseOp::Decline { ip, .. } => ip,
            LeaseOp::ForgetOffer { .. } => Ipv4Addr::UNSPECIFIED,
        },
    }
}

fn utc(time: SystemTime) -> DateTime<Utc> {
    time.into()
}

/// The store write for a policy op (pure).
pub fn lease_write(op: &LeaseOp, now: SystemTime) -> LeaseWrite {
    match *op {
        LeaseOp::Offer { ip, mac, expires } => LeaseWrite::Hold {
            ip,
            mac: mac.to_string(),
            state: DhcpLeaseState::Offered,
            expires_at: utc(expires),
            now: utc(now),
        },
        LeaseOp::Bind { ip, mac, expires } => LeaseWrite::Hold {
            ip,
            mac: mac.to_string(),
            state: DhcpLeaseState::Bound,
            expires_at: utc(expires),
            now: utc(now),
        },
        LeaseOp::Release { ip, mac } => LeaseWrite::Release {
            ip,
            mac: mac.to_string(),
        },
        LeaseOp::Decline { ip, mac, until } => LeaseWrite::Decline {
            ip,
            mac: mac.to_string(),
            until: utc(until),
        },
        LeaseOp::ForgetOffer { mac } => LeaseWrite::ForgetOffer {
            mac: mac.to_string(),
        },
    }
}

#[async_trait]
impl LeaseStore for StoreLeaseStore {
    async fn leases_in(
        &self,
        start: Ipv4Addr,
        end: Ipv4Addr,
    ) -> Result<Vec<Lease>, LeaseStoreError> {
        self.store
            .dhcp_leases_in(start, end)
            .await
            .map_err(backend)?
            .into_iter()
            .map(to_lease)
            .collect()
    }

    async fn apply(&self, op: &LeaseOp, now: SystemTime) -> Result<(), LeaseStoreError> {
        match self.store.write_dhcp_lease(&lease_write(op, now)).await {
            Ok(_) => Ok(()),
            Err(StoreError::Duplicate { .. }) => Err(taken(op)),
            Err(err) => Err(backend(err)),
        }
    }

    async fn leases_of(
        &self,
        macs: &[MacAddr],
        ips: &[Ipv4Addr],
    ) -> Result<Vec<Lease>, LeaseStoreError> {
        let macs: Vec<String> = macs.iter().map(ToString::to_string).collect();
        self.store
            .dhcp_leases_of(&macs, ips)
            .await
            .map_err(backend)?
            .into_iter()
            .map(to_lease)
            .collect()
    }

    async fn apply_all(
        &self,
        ops: &[LeaseOp],
        now: SystemTime,
    ) -> Result<Vec<Result<(), LeaseStoreError>>, LeaseStoreError> {
        let writes: Vec<LeaseWrite> = ops.iter().map(|op| lease_write(op, now)).collect();
        let done = self
            .store
            .write_dhcp_leases(&writes)
            .await
            .map_err(backend)?;
        Ok(ops
            .iter()
            .zip(done)
            .map(|(op, n)| match op {
                LeaseOp::Offer { .. } | LeaseOp::Bind { .. } if n == 0 => Err(taken(op)),
                _ => Ok(()),
            })
            .collect())
    }
}
