//! The DHCP server's batches on a real store: a storm's DISCOVERs decided together, one
//! transaction for their offers, and a replica racing the batch's write.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration as StdDuration, SystemTime};

use async_trait::async_trait;
use controller::boot_http::StoreLeaseStore;
use controller::model::DhcpLeaseState;
use controller::netboot::MacAddr;
use controller::netboot::dhcp::leases::{Lease, LeaseOp, LeaseStore, LeaseStoreError};
use controller::netboot::dhcp::request::RequestBuilder;
use controller::netboot::dhcp::server::{Datagram, DhcpServer, WireReply};
use controller::netboot::dhcp::{BootTarget, FixedBootPolicy};
use controller::store::{LeaseWrite, Store};
use dhcproto::Decodable;
use dhcproto::v4::{Message, MessageType};

use super::leases::{dhcp_config_of, ip};
use crate::store::Db;

const CLIENTS: u8 = 120;

fn mac(i: u8) -> MacAddr {
    format!("52:54:00:cc:00:{i:02x}").parse().unwrap()
}

fn datagram(req: RequestBuilder) -> Datagram {
    Datagram {
        bytes: req.bytes(),
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
    }
}

fn decode(reply: &WireReply) -> (MessageType, Ipv4Addr) {
    let msg = Message::decode(&mut dhcproto::Decoder::new(&reply.bytes)).unwrap();
    (msg.opts().msg_type().unwrap(), msg.yiaddr())
}

/// The store of `ingot serve`, with another replica's write slipped in between the
/// batch's read and its write: `steal` is held for `thief` just before the batch's
/// transaction.
struct Racing {
    inner: StoreLeaseStore,
    other: Arc<dyn Store>,
    steal: Ipv4Addr,
    thief: String,
}

#[async_trait]
impl LeaseStore for Racing {
    async fn leases_in(
        &self,
        start: Ipv4Addr,
        end: Ipv4Addr,
    ) -> Result<Vec<Lease>, LeaseStoreError> {
        self.inner.leases_in(start, end).await
    }

    async fn apply(&self, op: &LeaseOp, now: SystemTime) -> Result<(), LeaseStoreError> {
        self.inner.apply(op, now).await
    }

    async fn leases_of(
        &self,
        macs: &[MacAddr],
        ips: &[Ipv4Addr],
    ) -> Result<Vec<Lease>, LeaseStoreError> {
        self.inner.leases_of(macs, ips).await
    }

    async fn apply_all(
        &self,
        ops: &[LeaseOp],
        now: SystemTime,
    ) -> Result<Vec<Result<(), LeaseStoreError>>, LeaseStoreError> {
        let at = now.into();
        self.other
            .write_dhcp_lease(&LeaseWrite::Hold {
                ip: self.steal,
                mac: self.thief.clone(),
                state: DhcpLeaseState::Offered,
                expires_at: at + chrono::Duration::seconds(30),
                now: at,
            })
            .await
            .unwrap();
        self.inner.apply_all(ops, now).await
    }
}

/// A storm in one batch: 120 DISCOVERs (one sent twice, one malformed packet among them)
/// get 120 distinct addresses, recorded in one transaction; the twice-sent one gets the
/// same offer twice. A replica takes one of the batch's addresses between its read and
/// its write: that client's offer is not sent, every other one is. Then the REQUESTs in
/// one batch: all acknowledged, the table holds them bound.
pub async fn dhcp_storm_batch(db: &mut Db) {
    let now = SystemTime::UNIX_EPOCH + StdDuration::from_secs(1_800_000_000);
    let store: Arc<dyn Store> = Arc::new(db.store.clone());
    let other: Arc<dyn Store> = Arc::new(db.second().await);
    let server = DhcpServer::new(
        dhcp_config_of(ip(1), ip(250)),
        Arc::new(FixedBootPolicy::new(BootTarget::Netboot)),
        Arc::new(Racing {
            inner: StoreLeaseStore::new(store.clone()),
            other,
            // The pool is searched from its start: the batch's 8th address.
            steal: ip(107),
            thief: "52:54:00:dd:00:01".into(),
        }),
    )
    .unwrap();
    let mut batch: Vec<Datagram> = (0..CLIENTS)
        .map(|i| {
            datagram(RequestBuilder::new(
                MessageType::Discover,
                mac(i),
                u32::from(i),
            ))
        })
        .collect();
    batch.insert(
        40,
        Datagram {
            bytes: vec![1, 2, 3],
            src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        },
    );
    batch.push(datagram(RequestBuilder::new(
        MessageType::Discover,
        mac(3),
        3,
    )));
    let replies = server.handle_batch(&batch, 67, now).await;
    assert_eq!(replies.len(), batch.len());
    assert!(replies[40].is_none(), "the malformed packet was answered");
    let offers: Vec<Option<(MessageType, Ipv4Addr)>> =
        replies.iter().map(|r| r.as_ref().map(decode)).collect();
    // Who sent each datagram of the batch.
    let mut senders: Vec<Option<MacAddr>> = (0..CLIENTS).map(|i| Some(mac(i))).collect();
    senders.insert(40, None);
    senders.push(Some(mac(3)));
    let mut offered: Vec<(MacAddr, Ipv4Addr)> = Vec::new();
    let mut lost = Vec::new();
    for (reply, sender) in offers.iter().zip(&senders) {
        let Some(client) = *sender else { continue };
        match reply {
            Some((MessageType::Offer, a)) => offered.push((client, *a)),
            None => lost.push(client),
            other => panic!("{client}: {other:?}"),
        }
    }
    assert_eq!(lost, vec![mac(7)], "only the raced client goes unanswered");
    // The twice-sent DISCOVER got the same address both times.
    let of3: Vec<Ipv4Addr> = offered
        .iter()
        .filter(|(m, _)| *m == mac(3))
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(of3.len(), 2);
    assert_eq!(of3[0], of3[1]);
    let mut addrs: Vec<Ipv4Addr> = offered.iter().map(|(_, a)| *a).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), usize::from(CLIENTS) - 1, "{offered:?}");
    assert!(!addrs.contains(&ip(107)), "the stolen address was offered");
    let rows = store.dhcp_leases_in(ip(100), ip(250)).await.unwrap();
    assert_eq!(rows.len(), usize::from(CLIENTS), "{rows:?}");
    for (m, a) in &offered {
        assert!(
            rows.iter().any(|r| r.ip == *a
                && r.mac == m.to_string()
                && r.state == DhcpLeaseState::Offered),
            "{m} was offered {a}, the table says {rows:?}"
        );
    }
    let thief = rows.iter().find(|r| r.ip == ip(107)).unwrap();
    assert_eq!(thief.mac, "52:54:00:dd:00:01");

    // The REQUESTs, in one batch.
    offered.sort_by_key(|(_, a)| *a);
    offered.dedup();
    let requests: Vec<Datagram> = offered
        .iter()
        .map(|(m, a)| {
            datagram(
                RequestBuilder::new(MessageType::Request, *m, 1000)
                    .server_id(ip(1))
                    .requested(*a),
            )
        })
        .collect();
    let later = now + StdDuration::from_secs(1);
    let acks = server.handle_batch(&requests, 67, later).await;
    for ((m, a), reply) in offered.iter().zip(&acks) {
        assert_eq!(
            reply.as_ref().map(decode),
            Some((MessageType::Ack, *a)),
            "{m}"
        );
    }
    let rows = store.dhcp_leases_in(ip(100), ip(250)).await.unwrap();
    let bound = rows
        .iter()
        .filter(|r| r.state == DhcpLeaseState::Bound)
        .count();
    assert_eq!(bound, offered.len(), "{rows:?}");
    assert_eq!(
        rows.len(),
        offered.len() + 1,
        "one row per client and the thief's"
    );
}
