//! `dhcp_server`: one UDP datagram into the controller's DHCP server, from the parser through
//! the pure policy to the lease store and the encoded reply (`DhcpServer::handle_packet`), in
//! full mode on port 67 and in proxy mode on ports 67 and 4011, each with a fresh in-memory
//! lease store that already holds a few leases. Every datagram is handled twice (a
//! retransmission meets the state the first one left).
//!
//! Invariants: a reply decodes, is a BOOTREPLY of at least 300 bytes for the request's xid
//! and chaddr; an address offered or acknowledged in full mode is held in the store for that
//! client (the server never promises an address it did not record).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use controller::netboot::MacAddr;
use controller::netboot::dhcp::leases::{LeaseOp, LeaseStore, MemoryLeaseStore};
use controller::netboot::dhcp::server::DhcpServer;
use controller::netboot::dhcp::{
    BootFiles, BootTarget, DhcpConfig, DhcpMode, FixedBootPolicy, Pool, client,
};
use dhcproto::Decodable;
use dhcproto::v4::{Decoder, Message, MessageType, Opcode};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const OTHER: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x22]);
const IGNORED: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x33]);
const ADDRESS_ONLY: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x44]);
const RESERVED_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x09]);

fn config(mode: DhcpMode) -> DhcpConfig {
    let mut reservations = BTreeMap::new();
    reservations.insert(RESERVED_MAC, Ipv4Addr::new(10, 9, 0, 50));
    DhcpConfig {
        mode,
        server_ip: SERVER,
        http_base: "http://10.9.0.1:8080".to_owned(),
        script_path: "/boot/ipxe".to_owned(),
        http_boot_path: "/boot/ipxe.efi".to_owned(),
        boot_files: BootFiles::default(),
        pool: (mode == DhcpMode::Full).then(|| Pool {
            start: Ipv4Addr::new(10, 9, 0, 100),
            end: Ipv4Addr::new(10, 9, 0, 103),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            routers: vec![],
            dns: vec![Ipv4Addr::new(10, 9, 0, 1)],
            lease_time: Duration::from_secs(600),
            offer_hold: Duration::from_secs(30),
            decline_hold: Duration::from_secs(900),
        }),
        reservations,
    }
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

async fn server(mode: DhcpMode) -> (DhcpServer, Arc<MemoryLeaseStore>) {
    let policy = Arc::new(FixedBootPolicy::new(BootTarget::Netboot));
    policy.set(IGNORED, BootTarget::Ignore);
    policy.set(ADDRESS_ONLY, BootTarget::AddressOnly);
    let leases = Arc::new(MemoryLeaseStore::new());
    let seed = [
        LeaseOp::Bind {
            ip: Ipv4Addr::new(10, 9, 0, 100),
            mac: OTHER,
            expires: now() + Duration::from_secs(300),
        },
        LeaseOp::Offer {
            ip: Ipv4Addr::new(10, 9, 0, 101),
            mac: ADDRESS_ONLY,
            expires: now() + Duration::from_secs(20),
        },
        LeaseOp::Bind {
            ip: Ipv4Addr::new(10, 9, 0, 102),
            mac: IGNORED,
            expires: now() - Duration::from_secs(5),
        },
    ];
    for op in &seed {
        leases
            .apply(op, now() - Duration::from_secs(10))
            .await
            .expect("seeding the in-memory lease store");
    }
    let srv = DhcpServer::new(config(mode), policy, leases.clone())
        .expect("the fuzz DHCP configuration is valid");
    (srv, leases)
}

/// Entry point.
pub fn run(data: &[u8]) {
    // The request as the parser sees it, to check the replies against.
    let request = client::parse(data)
        .ok()
        .and_then(|m| client::ClientInfo::from_message(&m).ok().map(|i| (m, i)));
    crate::rt::block_on(async {
        for (mode, port) in [
            (DhcpMode::Full, 67),
            (DhcpMode::Proxy, 67),
            (DhcpMode::Proxy, 4011),
        ] {
            let (srv, leases) = server(mode).await;
            for src in [
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
                SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 101), 68),
            ] {
                for _ in 0..2 {
                    let Some(reply) = srv.handle_packet(data, src, port, now()).await else {
                        continue;
                    };
                    let Some((msg, info)) = &request else {
                        panic!("a reply to a datagram the parser refuses");
                    };
                    assert!(reply.bytes.len() >= 300, "reply shorter than 300 bytes");
                    let out = Message::decode(&mut Decoder::new(&reply.bytes))
                        .expect("our own reply decodes");
                    assert_eq!(out.opcode(), Opcode::BootReply);
                    assert_eq!(out.xid(), info.xid);
                    assert_eq!(out.chaddr().get(..6), msg.chaddr().get(..6));
                    let kind = out.opts().msg_type();
                    let yiaddr = out.yiaddr();
                    if mode == DhcpMode::Full
                        && matches!(kind, Some(MessageType::Offer | MessageType::Ack))
                        && !yiaddr.is_unspecified()
                    {
                        let held = leases.lease_on(yiaddr);
                        assert!(
                            held.is_some_and(|l| l.mac == info.mac),
                            "{kind:?} of {yiaddr} to {} that the store does not hold for it",
                            info.mac
                        );
                    }
                    if mode == DhcpMode::Proxy {
                        assert!(yiaddr.is_unspecified(), "proxy DHCP handed out an address");
                    }
                }
            }
        }
    });
}
