//! DHCP lease cases: the lease table's write rules, reservations that follow ports, and the
//! DHCP server on the store across a restart.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration as StdDuration, SystemTime};

use chrono::{DateTime, Duration, Utc};
use controller::boot_http::StoreLeaseStore;
use controller::model::{DhcpLeaseState, Port};
use controller::netboot::MacAddr;
use controller::netboot::dhcp::request::RequestBuilder;
use controller::netboot::dhcp::server::DhcpServer;
use controller::netboot::dhcp::{
    BootFiles, BootTarget, DhcpConfig, DhcpMode, FixedBootPolicy, Pool,
};
use controller::store::{LeaseWrite, Store, StoreError};
use dhcproto::Decodable;
use dhcproto::v4::{Message, MessageType};
use serde_json::json;

use crate::store::Db;
use crate::store::fixtures::{json_map, node, port, t0};

const MAC_A: &str = "52:54:00:aa:00:01";
const MAC_B: &str = "52:54:00:aa:00:02";

pub(super) fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 7, 0, last)
}

fn hold(ip: Ipv4Addr, mac: &str, state: DhcpLeaseState, now: DateTime<Utc>) -> LeaseWrite {
    LeaseWrite::Hold {
        ip,
        mac: mac.to_owned(),
        state,
        expires_at: now + Duration::seconds(600),
        now,
    }
}

fn is_taken(err: &StoreError) -> bool {
    matches!(
        err,
        StoreError::Duplicate {
            kind: "dhcp lease",
            field: "ip",
            ..
        }
    )
}

pub async fn dhcp_lease_rules(db: &mut Db) {
    let store = &db.store;
    let now = t0();
    assert_eq!(store.dhcp_lease_by_mac(MAC_A).await.unwrap(), None);
    store
        .write_dhcp_lease(&hold(ip(10), MAC_A, DhcpLeaseState::Offered, now))
        .await
        .unwrap();
    // Upper case MACs are the same client.
    let lease = store
        .dhcp_lease_by_mac(&MAC_A.to_uppercase())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (lease.ip, lease.state, lease.expires_at),
        (
            ip(10),
            DhcpLeaseState::Offered,
            now + Duration::seconds(600)
        )
    );
    // Bound elsewhere: the offer goes (one lease per MAC).
    store
        .write_dhcp_lease(&hold(ip(11), MAC_A, DhcpLeaseState::Bound, now))
        .await
        .unwrap();
    assert_eq!(store.dhcp_lease_by_ip(ip(10)).await.unwrap(), None);
    assert_eq!(
        store.dhcp_lease_by_ip(ip(11)).await.unwrap().unwrap().mac,
        MAC_A
    );
    // Another MAC cannot take a held address, and nothing changes when it tries.
    store
        .write_dhcp_lease(&hold(ip(12), MAC_B, DhcpLeaseState::Bound, now))
        .await
        .unwrap();
    let err = store
        .write_dhcp_lease(&hold(ip(11), MAC_B, DhcpLeaseState::Offered, now))
        .await
        .unwrap_err();
    assert!(is_taken(&err), "{err:?}");
    assert_eq!(
        store.dhcp_lease_by_mac(MAC_B).await.unwrap().unwrap().ip,
        ip(12),
        "the failed hold rolled back"
    );
    // Once expired, it can.
    let later = now + Duration::seconds(600);
    store
        .write_dhcp_lease(&hold(ip(11), MAC_B, DhcpLeaseState::Offered, later))
        .await
        .unwrap();
    assert_eq!(
        store.dhcp_lease_by_ip(ip(11)).await.unwrap().unwrap().mac,
        MAC_B
    );
    assert_eq!(store.dhcp_lease_by_mac(MAC_A).await.unwrap(), None);
    let range = store.dhcp_leases_in(ip(0), ip(255)).await.unwrap();
    assert_eq!(range.iter().map(|l| l.ip).collect::<Vec<_>>(), vec![ip(11)]);
    // Release only by the holder; forget only offers.
    let release = |mac: &str| LeaseWrite::Release {
        ip: ip(11),
        mac: mac.to_owned(),
    };
    assert_eq!(store.write_dhcp_lease(&release(MAC_A)).await.unwrap(), 0);
    let forget = LeaseWrite::ForgetOffer {
        mac: MAC_B.to_owned(),
    };
    assert_eq!(store.write_dhcp_lease(&forget).await.unwrap(), 1);
    assert_eq!(store.dhcp_lease_by_mac(MAC_B).await.unwrap(), None);
    store
        .write_dhcp_lease(&hold(ip(11), MAC_B, DhcpLeaseState::Bound, later))
        .await
        .unwrap();
    assert_eq!(store.write_dhcp_lease(&forget).await.unwrap(), 0);
    assert_eq!(store.write_dhcp_lease(&release(MAC_B)).await.unwrap(), 1);
    // A decline keeps the address out, is not a client's lease, and expires.
    store
        .write_dhcp_lease(&LeaseWrite::Decline {
            ip: ip(13),
            mac: MAC_A.to_owned(),
            until: later,
        })
        .await
        .unwrap();
    assert_eq!(store.dhcp_lease_by_mac(MAC_A).await.unwrap(), None);
    let declined = store.dhcp_lease_by_ip(ip(13)).await.unwrap().unwrap();
    assert_eq!(declined.state, DhcpLeaseState::Declined);
    let purge = |before: DateTime<Utc>| LeaseWrite::PurgeExpired { before };
    assert_eq!(store.write_dhcp_lease(&purge(later)).await.unwrap(), 0);
    assert_eq!(
        store
            .write_dhcp_lease(&purge(later + Duration::seconds(1)))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.dhcp_leases_in(ip(0), ip(255)).await.unwrap(), vec![]);
}

/// A port of `node` with MAC `mac` reserving `ip`.
fn reserving_port(node: uuid::Uuid, i: u32, mac: &str, ip: Option<Ipv4Addr>) -> Port {
    let mut p = port(node, i);
    p.address = mac.to_owned();
    if let Some(ip) = ip {
        p.extra = json_map(json!({ "dhcp_address": ip.to_string(), "rack": "A" }));
    }
    p
}

pub async fn dhcp_reservations(db: &mut Db) {
    let store = &db.store;
    let now = t0();
    let n = node(1);
    store.create_node(&n).await.unwrap();
    // A dynamic lease on the address gives way to the reservation.
    store
        .write_dhcp_lease(&hold(ip(50), MAC_B, DhcpLeaseState::Bound, now))
        .await
        .unwrap();
    let mut p = reserving_port(n.uuid, 1, MAC_A, Some(ip(50)));
    store.create_port(&p).await.unwrap();
    let row = store.dhcp_lease_by_ip(ip(50)).await.unwrap().unwrap();
    assert_eq!(
        (row.mac.as_str(), row.state, row.port_uuid),
        (MAC_A, DhcpLeaseState::Reserved, Some(p.uuid))
    );
    assert_eq!(
        store.dhcp_lease_by_mac(MAC_A).await.unwrap(),
        Some(row.clone())
    );
    // No lease write changes it: not another MAC's hold (even long "expired"), not its own
    // hold, release or decline.
    let far = now + Duration::days(365 * 100);
    for write in [
        hold(ip(50), MAC_B, DhcpLeaseState::Offered, far),
        hold(ip(50), MAC_A, DhcpLeaseState::Bound, now),
    ] {
        let err = store.write_dhcp_lease(&write).await.unwrap_err();
        assert!(is_taken(&err), "{err:?}");
    }
    for write in [
        LeaseWrite::Release {
            ip: ip(50),
            mac: MAC_A.to_owned(),
        },
        LeaseWrite::Decline {
            ip: ip(50),
            mac: MAC_A.to_owned(),
            until: now,
        },
        LeaseWrite::PurgeExpired { before: far },
    ] {
        assert_eq!(
            store.write_dhcp_lease(&write).await.unwrap(),
            0,
            "{write:?}"
        );
    }
    assert_eq!(store.dhcp_lease_by_ip(ip(50)).await.unwrap(), Some(row));
    // A second port cannot reserve the same address; it is not created.
    let clash = reserving_port(n.uuid, 2, MAC_B, Some(ip(50)));
    let err = store.create_port(&clash).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { kind: "port", field: "extra/dhcp_address", ref value } if value == "10.7.0.50"),
        "{err:?}"
    );
    assert!(store.get_port(clash.uuid).await.unwrap().is_none());
    // The reservation follows the port's MAC and address, and goes with the key.
    p.address = MAC_B.to_owned();
    p.extra = json_map(json!({ "dhcp_address": "10.7.0.51" }));
    store.update_port(&p).await.unwrap();
    assert_eq!(store.dhcp_lease_by_ip(ip(50)).await.unwrap(), None);
    assert_eq!(store.dhcp_lease_by_mac(MAC_A).await.unwrap(), None);
    assert_eq!(
        store.dhcp_lease_by_mac(MAC_B).await.unwrap().unwrap().ip,
        ip(51)
    );
    // An update clashing with another port's reservation changes nothing.
    let other = reserving_port(n.uuid, 3, "52:54:00:aa:00:03", Some(ip(52)));
    store.create_port(&other).await.unwrap();
    let mut moved = p.clone();
    moved.extra = json_map(json!({ "dhcp_address": "10.7.0.52" }));
    assert!(matches!(
        store.update_port(&moved).await.unwrap_err(),
        StoreError::Duplicate { .. }
    ));
    assert_eq!(
        store.get_port(p.uuid).await.unwrap().unwrap().extra,
        p.extra
    );
    assert_eq!(
        store.dhcp_lease_by_mac(MAC_B).await.unwrap().unwrap().ip,
        ip(51)
    );
    // Not an address: no reservation.
    p.extra = json_map(json!({ "dhcp_address": "not-an-ip" }));
    store.update_port(&p).await.unwrap();
    assert_eq!(store.dhcp_lease_by_mac(MAC_B).await.unwrap(), None);
    // Deleting the port, or its node, drops the reservation.
    store.delete_port(other.uuid).await.unwrap();
    assert_eq!(store.dhcp_lease_by_ip(ip(52)).await.unwrap(), None);
    p.extra = json_map(json!({ "dhcp_address": "10.7.0.53" }));
    store.update_port(&p).await.unwrap();
    assert!(store.dhcp_lease_by_ip(ip(53)).await.unwrap().is_some());
    store.delete_node(n.uuid).await.unwrap();
    assert_eq!(store.dhcp_leases_in(ip(0), ip(255)).await.unwrap(), vec![]);
}

fn dhcp_config() -> DhcpConfig {
    dhcp_config_of(ip(1), ip(103))
}

/// Full mode as the server at `server_ip`, pool `10.7.0.100..=end`.
pub(super) fn dhcp_config_of(server_ip: Ipv4Addr, end: Ipv4Addr) -> DhcpConfig {
    let cfg = DhcpConfig {
        mode: DhcpMode::Full,
        server_ip,
        http_base: "http://10.7.0.1:8080".to_owned(),
        script_path: "/boot/ipxe".to_owned(),
        http_boot_path: "/boot/ipxe.efi".to_owned(),
        boot_files: BootFiles::default(),
        pool: Some(Pool {
            start: ip(100),
            end,
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            routers: vec![],
            dns: vec![],
            lease_time: StdDuration::from_secs(600),
            offer_hold: StdDuration::from_secs(30),
            decline_hold: StdDuration::from_secs(600),
        }),
        reservations: Default::default(),
    };
    cfg.validate().unwrap();
    cfg
}

fn server(store: &Arc<dyn Store>) -> DhcpServer {
    DhcpServer::new(
        dhcp_config(),
        Arc::new(FixedBootPolicy::new(BootTarget::Netboot)),
        Arc::new(StoreLeaseStore::new(store.clone())),
    )
    .unwrap()
}

/// One exchange through the server; the reply's type and address.
async fn exchange(
    server: &DhcpServer,
    req: RequestBuilder,
    now: SystemTime,
) -> Option<(MessageType, Ipv4Addr)> {
    let src = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
    let reply = server.handle_packet(&req.bytes(), src, 67, now).await?;
    let msg = Message::decode(&mut dhcproto::Decoder::new(&reply.bytes)).unwrap();
    Some((msg.opts().msg_type().unwrap(), msg.yiaddr()))
}

/// DORA for `mac`; the bound address.
async fn dora(server: &DhcpServer, mac: MacAddr, now: SystemTime) -> Ipv4Addr {
    let (kind, offered) = exchange(
        server,
        RequestBuilder::new(MessageType::Discover, mac, 1),
        now,
    )
    .await
    .unwrap();
    assert_eq!(kind, MessageType::Offer);
    let req = RequestBuilder::new(MessageType::Request, mac, 2)
        .server_id(ip(1))
        .requested(offered);
    let (kind, acked) = exchange(server, req, now).await.unwrap();
    assert_eq!((kind, acked), (MessageType::Ack, offered));
    acked
}

pub async fn dhcp_server_restart(db: &mut Db) {
    let now = SystemTime::UNIX_EPOCH + StdDuration::from_secs(1_800_000_000);
    let a: MacAddr = MAC_A.parse().unwrap();
    let b: MacAddr = MAC_B.parse().unwrap();
    let c: MacAddr = "52:54:00:aa:00:03".parse().unwrap();
    let store: Arc<dyn Store> = Arc::new(db.store.clone());
    let first = dora(&server(&store), a, now).await;
    assert_eq!(first, ip(100));

    // Restart: a new server on the reopened database.
    db.reopen().await;
    let store: Arc<dyn Store> = Arc::new(db.store.clone());
    let restarted = server(&store);
    // Another machine asking for A's address after the restart (INIT-REBOOT) is refused...
    let steal = RequestBuilder::new(MessageType::Request, b, 3).requested(first);
    assert_eq!(
        exchange(&restarted, steal, now).await.map(|r| r.0),
        Some(MessageType::Nak)
    );
    // ... and gets another one; A keeps its own.
    let second = dora(&restarted, b, now).await;
    assert_ne!(second, first);
    assert_eq!(dora(&restarted, a, now).await, first);

    // A port reservation: C gets its fixed address, outside the pool range.
    let n = node(7);
    store.create_node(&n).await.unwrap();
    store
        .create_port(&reserving_port(n.uuid, 1, &c.to_string(), Some(ip(60))))
        .await
        .unwrap();
    assert_eq!(dora(&restarted, c, now).await, ip(60));

    // Two replicas on one database (a second store): an address held by one is never
    // handed out by the other, and the pool runs dry instead.
    let other: Arc<dyn Store> = Arc::new(db.second().await);
    let replica = server(&other);
    let mut seen = vec![first, second];
    for i in 10..12u8 {
        let mac: MacAddr = format!("52:54:00:aa:01:{i:02x}").parse().unwrap();
        let got = dora(&replica, mac, now).await;
        assert!(!seen.contains(&got), "{got} handed out twice");
        seen.push(got);
    }
    let late: MacAddr = "52:54:00:aa:02:01".parse().unwrap();
    assert_eq!(
        exchange(
            &restarted,
            RequestBuilder::new(MessageType::Discover, late, 9),
            now
        )
        .await,
        None,
        "pool of 4 exhausted"
    );
    // Leases expire: after the lease time the pool has room again.
    let after = now + StdDuration::from_secs(601);
    let reused = dora(&restarted, late, after).await;
    assert!(seen.contains(&reused));
}

/// Two replicas serve one boot network from one lease table: every client's DISCOVER and
/// REQUEST reach both servers at once (as broadcasts do), many clients race, and no address
/// is ever acknowledged to two clients; the pool fills exactly, and the table holds what
/// the servers acknowledged.
pub async fn dhcp_two_replicas_race(db: &mut Db) {
    const POOL: usize = 16;
    const CLIENTS: u8 = 24;
    let now = SystemTime::UNIX_EPOCH + StdDuration::from_secs(1_800_000_000);
    let end = ip(100 + u8::try_from(POOL - 1).unwrap());
    let stores: [Arc<dyn Store>; 2] = [Arc::new(db.store.clone()), Arc::new(db.second().await)];
    let servers: Vec<(Ipv4Addr, Arc<DhcpServer>)> = stores
        .iter()
        .zip([ip(1), ip(2)])
        .map(|(store, id)| {
            let server = DhcpServer::new(
                dhcp_config_of(id, end),
                Arc::new(FixedBootPolicy::new(BootTarget::Netboot)),
                Arc::new(StoreLeaseStore::new(store.clone())),
            )
            .unwrap();
            (id, Arc::new(server))
        })
        .collect();
    let servers = Arc::new(servers);
    // One client's DORA against both servers at once: the first offer wins; the REQUEST
    // names its server and goes to both. `None` when no server offered or the chosen one
    // did not acknowledge.
    async fn dora_both(
        servers: Arc<Vec<(Ipv4Addr, Arc<DhcpServer>)>>,
        mac: MacAddr,
        xid: u32,
        now: SystemTime,
    ) -> Option<(Ipv4Addr, Ipv4Addr)> {
        let (a, b) = (servers[0].clone(), servers[1].clone());
        let discover = || RequestBuilder::new(MessageType::Discover, mac, xid);
        let (oa, ob) = tokio::join!(
            exchange(&a.1, discover(), now),
            exchange(&b.1, discover(), now)
        );
        // Which offer "arrives first": half the clients prefer each server.
        let offers = match (oa, ob) {
            (Some((MessageType::Offer, x)), Some((MessageType::Offer, y))) if mac.0[5] % 2 == 1 => {
                [Some((b.0, y)), Some((a.0, x))]
            }
            (oa, ob) => [
                oa.filter(|o| o.0 == MessageType::Offer).map(|o| (a.0, o.1)),
                ob.filter(|o| o.0 == MessageType::Offer).map(|o| (b.0, o.1)),
            ],
        };
        let (server_id, offered) = offers.into_iter().flatten().next()?;
        let request = || {
            RequestBuilder::new(MessageType::Request, mac, xid + 1)
                .server_id(server_id)
                .requested(offered)
        };
        let (ra, rb) = tokio::join!(
            exchange(&a.1, request(), now),
            exchange(&b.1, request(), now)
        );
        // Only the named server answers a REQUEST in the SELECTING state.
        let (mine, other) = if server_id == a.0 { (ra, rb) } else { (rb, ra) };
        assert_eq!(
            other, None,
            "the server not chosen answered a REQUEST for another"
        );
        match mine {
            Some((MessageType::Ack, acked)) => {
                assert_eq!(acked, offered);
                Some((acked, server_id))
            }
            _ => None,
        }
    }
    let mut bound: Vec<(MacAddr, Ipv4Addr)> = Vec::new();
    let mut waiting: Vec<MacAddr> = (0..CLIENTS)
        .map(|i| format!("52:54:00:bb:00:{i:02x}").parse().unwrap())
        .collect();
    // Clients that got nothing (every free address held by an offer of the other race)
    // try again, as real clients do, until the pool is full.
    for round in 0..10u32 {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, mac) in waiting.iter().enumerate() {
            let xid = round * 1000 + u32::try_from(i).unwrap() * 2;
            tasks.spawn(dora_both(servers.clone(), *mac, xid, now).map_with(*mac));
        }
        waiting.clear();
        while let Some(done) = tasks.join_next().await {
            match done.unwrap() {
                (mac, Some((addr, _))) => bound.push((mac, addr)),
                (mac, None) => waiting.push(mac),
            }
        }
        if bound.len() == POOL {
            break;
        }
    }
    // A full pool: the clients left get nothing from either replica.
    for (i, mac) in waiting.iter().enumerate() {
        let xid = 50_000 + u32::try_from(i).unwrap() * 2;
        assert_eq!(
            dora_both(servers.clone(), *mac, xid, now).await,
            None,
            "{mac}"
        );
    }
    assert_eq!(waiting.len(), usize::from(CLIENTS) - POOL);
    let mut addrs: Vec<Ipv4Addr> = bound.iter().map(|(_, a)| *a).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(
        addrs.len(),
        bound.len(),
        "an address was acknowledged twice: {bound:?}"
    );
    assert_eq!(bound.len(), POOL, "the pool did not fill: {bound:?}");
    // The table holds exactly what was acknowledged.
    let rows = db.store.dhcp_leases_in(ip(100), end).await.unwrap();
    let held: Vec<(String, Ipv4Addr)> = rows
        .iter()
        .filter(|r| r.state == DhcpLeaseState::Bound)
        .map(|r| (r.mac.clone(), r.ip))
        .collect();
    assert_eq!(held.len(), POOL, "{rows:?}");
    for (mac, addr) in &bound {
        assert!(
            held.contains(&(mac.to_string(), *addr)),
            "{mac} acknowledged {addr} but the table says {rows:?}"
        );
    }
}

/// Pairs a future's output with a value known before it ran.
trait MapWith: std::future::Future + Sized {
    fn map_with<T>(self, with: T) -> impl std::future::Future<Output = (T, Self::Output)> {
        async move { (with, self.await) }
    }
}
impl<F: std::future::Future> MapWith for F {}
