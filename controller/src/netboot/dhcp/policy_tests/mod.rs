//! Table tests for the DHCP policy and the packet parser.
#![allow(clippy::type_complexity, clippy::collapsible_if)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::netboot::MacAddr;
use crate::netboot::dhcp::client::{self, ClientInfo, DropReason};
use crate::netboot::dhcp::leases::{Lease, LeaseContext, LeaseOp, LeaseState};
use crate::netboot::dhcp::request::RequestBuilder;
use crate::netboot::dhcp::{BootFiles, BootTarget, DhcpConfig, DhcpMode, Pool};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const OTHER: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
const RESERVED_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 9]);
const RESERVED_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 50);
const FREE: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 100);
const CLIENT68: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
}

fn pool() -> Pool {
    Pool {
        start: Ipv4Addr::new(10, 9, 0, 100),
        end: Ipv4Addr::new(10, 9, 0, 102),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        routers: vec![],
        dns: vec![],
        lease_time: Duration::from_secs(600),
        offer_hold: Duration::from_secs(30),
        decline_hold: Duration::from_secs(900),
    }
}

fn cfg(mode: DhcpMode) -> DhcpConfig {
    let mut reservations = BTreeMap::new();
    reservations.insert(RESERVED_MAC, RESERVED_IP);
    let c = DhcpConfig {
        mode,
        server_ip: SERVER,
        http_base: "http://10.9.0.1:8080".to_owned(),
        script_path: "/boot/ipxe".to_owned(),
        http_boot_path: "/boot/ipxe.efi".to_owned(),
        boot_files: BootFiles::default(),
        pool: (mode == DhcpMode::Full).then(pool),
        reservations,
    };
    c.validate().expect("test config is valid");
    c
}

fn free_ctx() -> LeaseContext {
    LeaseContext {
        free: Some(FREE),
        ..LeaseContext::default()
    }
}

fn lease(ip: Ipv4Addr, mac: MacAddr, state: LeaseState, secs_left: i64) -> Lease {
    let expires = if secs_left >= 0 {
        now() + Duration::from_secs(secs_left.unsigned_abs())
    } else {
        now() - Duration::from_secs(secs_left.unsigned_abs())
    };
    Lease {
        ip,
        mac,
        state,
        expires,
    }
}

/// Run one request through the wire format, the parser and the policy.
fn run_at(
    c: &DhcpConfig,
    req: RequestBuilder,
    src: SocketAddrV4,
    port: u16,
    target: BootTarget,
    ctx: &LeaseContext,
) -> Decision {
    let msg = client::parse(&req.bytes()).expect("request parses");
    let info = ClientInfo::from_message(&msg).expect("request is valid");
    let inc = Incoming {
        msg: &msg,
        info: &info,
        src,
        local_port: port,
    };
    decide(c, &inc, target, ctx, now())
}

fn run(c: &DhcpConfig, req: RequestBuilder, ctx: &LeaseContext) -> Decision {
    run_at(c, req, CLIENT68, SERVER_PORT, BootTarget::Netboot, ctx)
}

fn reply_of(d: &Decision) -> (&Message, Destination) {
    match &d.outcome {
        Outcome::Reply { message, dest } => (message, *dest),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn msg_type(m: &Message) -> Option<MessageType> {
    m.opts().msg_type()
}

fn file(m: &Message) -> Option<String> {
    match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => Some(String::from_utf8_lossy(f).into_owned()),
        _ => None,
    }
}

fn vendor(m: &Message) -> Option<Vec<u8>> {
    match m.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(v.clone()),
        _ => None,
    }
}

fn ipxe_encap(m: &Message) -> Option<Vec<u8>> {
    match m.opts().get(OptionCode::Unknown(175)) {
        Some(DhcpOption::Unknown(u)) => Some(u.data().to_vec()),
        _ => None,
    }
}

const BCAST68: Destination = Destination::Broadcast { port: 68 };

#[test]
fn full_discover_picks_boot_file_by_client_kind() {
    let c = cfg(DhcpMode::Full);
    let uuid = Uuid::parse_str("1ab0c0de-0000-4000-8000-000000000001").expect("uuid");
    // (request, expected file, expected option 60, expected 175)
    let cases: Vec<(
        &str,
        RequestBuilder,
        Option<&str>,
        Option<&[u8]>,
        Option<Vec<u8>>,
    )> = vec![
        (
            "bios pxe",
            RequestBuilder::new(MessageType::Discover, MAC, 1).pxe(0),
            Some("undionly.kpxe"),
            None,
            None,
        ),
        (
            "uefi pxe arch 7",
            RequestBuilder::new(MessageType::Discover, MAC, 1).pxe(7),
            Some("snponly.efi"),
            None,
            None,
        ),
        (
            "uefi pxe arch 9",
            RequestBuilder::new(MessageType::Discover, MAC, 1).pxe(9),
            Some("snponly.efi"),
            None,
            None,
        ),
        (
            "unknown arch",
            RequestBuilder::new(MessageType::Discover, MAC, 1).pxe(11),
            None,
            None,
            None,
        ),
        (
            "ipxe bios",
            RequestBuilder::new(MessageType::Discover, MAC, 1)
                .pxe(0)
                .ipxe(),
            Some("http://10.9.0.1:8080/boot/ipxe?mac=52:54:00:00:00:01&platform=pcbios"),
            None,
            Some(vec![176, 1, 1]),
        ),
        (
            "ipxe efi with uuid",
            RequestBuilder::new(MessageType::Discover, MAC, 1)
                .pxe(7)
                .ipxe()
                .uuid(uuid),
            Some(
                "http://10.9.0.1:8080/boot/ipxe?mac=52:54:00:00:00:01&platform=efi&uuid=1ab0c0de-0000-4000-8000-000000000001",
            ),
            None,
            Some(vec![176, 1, 1]),
        ),
        (
            "uefi http boot",
            RequestBuilder::new(MessageType::Discover, MAC, 1).http_client(16),
            Some("http://10.9.0.1:8080/boot/ipxe.efi"),
            Some(b"HTTPClient"),
            None,
        ),
        (
            "plain dhcp client (the agent)",
            RequestBuilder::new(MessageType::Discover, MAC, 1),
            None,
            None,
            None,
        ),
    ];
    for (name, req, want_file, want_vc, want_175) in cases {
        let d = run(&c, req, &free_ctx());
        let (m, dest) = reply_of(&d);
        assert_eq!(msg_type(m), Some(MessageType::Offer), "{name}");
        assert_eq!(m.opcode(), Opcode::BootReply, "{name}");
        assert_eq!(m.yiaddr(), FREE, "{name}");
        assert_eq!(dest, BCAST68, "{name}");
        assert_eq!(file(m).as_deref(), want_file, "{name}");
        assert_eq!(vendor(m).as_deref(), want_vc, "{name}");
        assert_eq!(ipxe_encap(m), want_175, "{name}");
        if want_file.is_some() {
            assert_eq!(m.siaddr(), SERVER, "{name}");
        }
        // Never a router or DNS unless configured.
        assert!(!m.opts().contains(OptionCode::Router), "{name}");
        assert!(!m.opts().contains(OptionCode::DomainNameServer), "{name}");
        assert!(
            matches!(m.opts().get(OptionCode::ServerIdentifier), Some(DhcpOption::ServerIdentifier(s)) if *s == SERVER)
        );
        assert!(matches!(
            m.opts().get(OptionCode::AddressLeaseTime),
            Some(DhcpOption::AddressLeaseTime(600))
        ));
        assert_eq!(
            d.lease_op,
            Some(LeaseOp::Offer {
                ip: FREE,
                mac: MAC,
                expires: now() + Duration::from_secs(30)
            }),
            "{name}"
        );
    }
}

#[test]
fn tftp_file_name_fits_bootp_field_and_script_url_is_in_option_67() {
    let c = cfg(DhcpMode::Full);
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Discover, MAC, 1).pxe(0),
        &free_ctx(),
    );
    let (m, _) = reply_of(&d);
    assert_eq!(m.fname_str().and_then(Result::ok), Some("undionly.kpxe"));
    let encoded = encode_reply(m).expect("encodes");
    assert!(encoded.len() >= 300, "padded to the BOOTP minimum");
    let back = client::parse(&encoded).expect("decodes");
    assert_eq!(back.opts(), m.opts());
    assert_eq!(
        (back.yiaddr(), back.siaddr(), back.xid()),
        (m.yiaddr(), m.siaddr(), m.xid())
    );
}

#[test]
fn targets_address_only_and_ignore() {
    let c = cfg(DhcpMode::Full);
    let req = || RequestBuilder::new(MessageType::Discover, MAC, 1).pxe(0);
    let d = run_at(
        &c,
        req(),
        CLIENT68,
        67,
        BootTarget::AddressOnly,
        &free_ctx(),
    );
    let (m, _) = reply_of(&d);
    assert_eq!(m.yiaddr(), FREE);
    assert_eq!(file(m), None);
    let d = run_at(&c, req(), CLIENT68, 67, BootTarget::Ignore, &free_ctx());
    assert_eq!(d, Decision::drop(DropReason::PolicyIgnored));
}

#[test]
fn discover_address_choice() {
    let c = cfg(DhcpMode::Full);
    let asked = Ipv4Addr::new(10, 9, 0, 101);
    let own = Ipv4Addr::new(10, 9, 0, 102);
    let disc = |mac| RequestBuilder::new(MessageType::Discover, mac, 7);
    let cases: Vec<(&str, RequestBuilder, LeaseContext, Option<Ipv4Addr>)> = vec![
        (
            "reservation wins over free",
            disc(RESERVED_MAC),
            free_ctx(),
            Some(RESERVED_IP),
        ),
        (
            "own lease wins over free",
            disc(MAC),
            LeaseContext {
                by_mac: Some(lease(own, MAC, LeaseState::Bound, 100)),
                free: Some(FREE),
                ..Default::default()
            },
            Some(own),
        ),
        (
            "own expired lease is reused",
            disc(MAC),
            LeaseContext {
                by_mac: Some(lease(own, MAC, LeaseState::Bound, -100)),
                free: Some(FREE),
                ..Default::default()
            },
            Some(own),
        ),
        (
            "requested free address is honoured",
            disc(MAC).requested(asked),
            free_ctx(),
            Some(asked),
        ),
        (
            "requested address held by another is not",
            disc(MAC).requested(asked),
            LeaseContext {
                requested_holder: Some(lease(asked, OTHER, LeaseState::Bound, 100)),
                free: Some(FREE),
                ..Default::default()
            },
            Some(FREE),
        ),
        (
            "requested reserved address is not",
            disc(MAC).requested(RESERVED_IP),
            free_ctx(),
            Some(FREE),
        ),
        (
            "requested address outside the pool is not",
            disc(MAC).requested(Ipv4Addr::new(10, 9, 0, 7)),
            free_ctx(),
            Some(FREE),
        ),
        ("pool exhausted", disc(MAC), LeaseContext::default(), None),
    ];
    for (name, req, ctx, want) in cases {
        let d = run(&c, req, &ctx);
        match want {
            Some(ip) => assert_eq!(reply_of(&d).0.yiaddr(), ip, "{name}"),
            None => assert_eq!(d, Decision::drop(DropReason::PoolExhausted), "{name}"),
        }
    }
}

#[test]
fn discover_keeps_a_valid_binding_instead_of_downgrading_it() {
    let c = cfg(DhcpMode::Full);
    let own = Ipv4Addr::new(10, 9, 0, 102);
    let ctx = LeaseContext {
        by_mac: Some(lease(own, MAC, LeaseState::Bound, 100)),
        ..Default::default()
    };
    let d = run(&c, RequestBuilder::new(MessageType::Discover, MAC, 1), &ctx);
    assert_eq!(reply_of(&d).0.yiaddr(), own);
    assert_eq!(d.lease_op, None);
}

#[test]
fn same_xid_from_two_macs_are_two_clients() {
    let c = cfg(DhcpMode::Full);
    let a = run(
        &c,
        RequestBuilder::new(MessageType::Discover, MAC, 243253080),
        &free_ctx(),
    );
    let b = run(
        &c,
        RequestBuilder::new(MessageType::Discover, OTHER, 243253080),
        &free_ctx(),
    );
    assert_eq!(reply_of(&a).0.chaddr()[..6], MAC.0);
    assert_eq!(reply_of(&b).0.chaddr()[..6], OTHER.0);
    assert!(matches!(a.lease_op, Some(LeaseOp::Offer { mac, .. }) if mac == MAC));
    assert!(matches!(b.lease_op, Some(LeaseOp::Offer { mac, .. }) if mac == OTHER));
}

#[test]
fn request_ack_nak_and_destinations() {
    let c = cfg(DhcpMode::Full);
    let req = || RequestBuilder::new(MessageType::Request, MAC, 9);
    let offered = LeaseContext {
        by_mac: Some(lease(FREE, MAC, LeaseState::Offered, 20)),
        requested_holder: Some(lease(FREE, MAC, LeaseState::Offered, 20)),
        free: None,
    };
    let bound = |ip| {
        Some(LeaseOp::Bind {
            ip,
            mac: MAC,
            expires: now() + Duration::from_secs(600),
        })
    };
    let ciaddr_dest = Destination::Unicast(SocketAddrV4::new(FREE, 68));
    // (name, request, context, expected type, expected dest, expected op)
    let cases: Vec<(
        &str,
        RequestBuilder,
        LeaseContext,
        MessageType,
        Destination,
        Option<LeaseOp>,
    )> = vec![
        (
            "selecting",
            req().pxe(0).server_id(SERVER).requested(FREE),
            offered.clone(),
            MessageType::Ack,
            BCAST68,
            bound(FREE),
        ),
        (
            "init-reboot, free address",
            req().requested(Ipv4Addr::new(10, 9, 0, 101)),
            LeaseContext::default(),
            MessageType::Ack,
            BCAST68,
            bound(Ipv4Addr::new(10, 9, 0, 101)),
        ),
        (
            "init-reboot, address of another",
            req().requested(FREE),
            LeaseContext {
                requested_holder: Some(lease(FREE, OTHER, LeaseState::Bound, 100)),
                ..Default::default()
            },
            MessageType::Nak,
            BCAST68,
            None,
        ),
        (
            "init-reboot, wrong subnet",
            req().requested(Ipv4Addr::new(192, 168, 1, 5)),
            LeaseContext::default(),
            MessageType::Nak,
            BCAST68,
            None,
        ),
        (
            "another's reservation",
            req().requested(RESERVED_IP),
            LeaseContext::default(),
            MessageType::Nak,
            BCAST68,
            None,
        ),
        (
            "renewing",
            req().ciaddr(FREE),
            LeaseContext {
                by_mac: Some(lease(FREE, MAC, LeaseState::Bound, 100)),
                ..Default::default()
            },
            MessageType::Ack,
            ciaddr_dest,
            bound(FREE),
        ),
        (
            "renewing an address that is not the client's",
            req().ciaddr(Ipv4Addr::new(10, 9, 0, 101)),
            LeaseContext {
                by_mac: Some(lease(FREE, MAC, LeaseState::Bound, 100)),
                ..Default::default()
            },
            MessageType::Nak,
            BCAST68,
            None,
        ),
        (
            "rebinding (broadcast) an address another client holds",
            req().ciaddr(FREE).broadcast(),
            LeaseContext {
                requested_holder: Some(lease(FREE, OTHER, LeaseState::Bound, 100)),
                ..Default::default()
            },
            MessageType::Nak,
            BCAST68,
            None,
        ),
        (
            "init-reboot with an old address while bound to another",
            req().requested(Ipv4Addr::new(10, 9, 0, 101)),
            LeaseContext {
                by_mac: Some(lease(FREE, MAC, LeaseState::Bound, 100)),
                ..Default::default()
            },
            MessageType::Nak,
            BCAST68,
            None,
        ),
        (
            "selecting an address that was not offered",
            req()
                .server_id(SERVER)
                .requested(Ipv4Addr::new(10, 9, 0, 101)),
            LeaseContext {
                by_mac: Some(lease(FREE, MAC, LeaseState::Offered, 20)),
                ..Default::default()
            },
            MessageType::Nak,
            BCAST68,
            None,
        ),
        (
            "renewing after the own binding expired: a free address is granted",
            req().ciaddr(Ipv4Addr::new(10, 9, 0, 101)),
            LeaseContext {
                by_mac: Some(lease(FREE, MAC, LeaseState::Bound, -10)),
                ..Default::default()
            },
            MessageType::Ack,
            Destination::Unicast(SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 101), 68)),
            bound(Ipv4Addr::new(10, 9, 0, 101)),
        ),
        (
            "relayed",
            req().requested(FREE).giaddr(Ipv4Addr::new(10, 9, 0, 254)),
            offered.clone(),
            MessageType::Ack,
            Destination::Unicast(SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 254), 67)),
            bound(FREE),
        ),
    ];
    for (name, r, ctx, want_type, want_dest, want_op) in cases {
        let d = run(&c, r, &ctx);
        let (m, dest) = reply_of(&d);
        assert_eq!(msg_type(m), Some(want_type), "{name}");
        assert_eq!(dest, want_dest, "{name}");
        assert_eq!(d.lease_op, want_op, "{name}");
        if want_type == MessageType::Nak {
            assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED, "{name}");
            assert_eq!(file(m), None, "{name}");
        }
    }
    // The reserved client gets its reservation.
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Request, RESERVED_MAC, 1).requested(RESERVED_IP),
        &LeaseContext::default(),
    );
    assert_eq!(msg_type(reply_of(&d).0), Some(MessageType::Ack));
    // The ACK carries the boot file too (iPXE reads it from the ACK).
    let d = run(&c, req().pxe(7).server_id(SERVER).requested(FREE), &offered);
    assert_eq!(file(reply_of(&d).0).as_deref(), Some("snponly.efi"));
}

#[test]
fn t1_and_t2_are_half_and_seven_eighths_of_the_lease() {
    // (lease seconds, T1, T2)
    let cases = [
        (600, 300, 525),
        (86_400, 43_200, 75_600),
        (8, 4, 7),
        (4, 2, 3),
        (1, 0, 0),
    ];
    for (secs, t1, t2) in cases {
        let mut c = cfg(DhcpMode::Full);
        if let Some(p) = c.pool.as_mut() {
            p.lease_time = Duration::from_secs(secs);
        }
        let d = run(
            &c,
            RequestBuilder::new(MessageType::Discover, MAC, 1),
            &free_ctx(),
        );
        let o = reply_of(&d).0.opts();
        let got = match (o.get(OptionCode::Renewal), o.get(OptionCode::Rebinding)) {
            (Some(DhcpOption::Renewal(a)), Some(DhcpOption::Rebinding(b))) => (*a, *b),
            other => panic!("no T1/T2: {other:?}"),
        };
        assert_eq!(got, (t1, t2), "lease {secs} s");
    }
}

#[test]
fn request_edge_cases() {
    let c = cfg(DhcpMode::Full);
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Request, MAC, 1)
            .server_id(Ipv4Addr::new(10, 9, 0, 2))
            .requested(FREE),
        &free_ctx(),
    );
    assert_eq!(d.outcome, Outcome::Drop(DropReason::OtherServer));
    assert_eq!(d.lease_op, Some(LeaseOp::ForgetOffer { mac: MAC }));
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Request, MAC, 1),
        &free_ctx(),
    );
    assert_eq!(d, Decision::drop(DropReason::NoRequestedAddress));
}

#[test]
fn release_decline_inform() {
    let c = cfg(DhcpMode::Full);
    let held = LeaseContext {
        by_mac: Some(lease(FREE, MAC, LeaseState::Bound, 100)),
        ..Default::default()
    };
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Release, MAC, 1)
            .ciaddr(FREE)
            .server_id(SERVER),
        &held,
    );
    assert_eq!(d.outcome, Outcome::Handled);
    assert_eq!(d.lease_op, Some(LeaseOp::Release { ip: FREE, mac: MAC }));
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Release, MAC, 1).ciaddr(Ipv4Addr::new(10, 9, 0, 101)),
        &held,
    );
    assert_eq!(d, Decision::drop(DropReason::NotLeased));
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Release, MAC, 1)
            .ciaddr(FREE)
            .server_id(Ipv4Addr::new(1, 1, 1, 1)),
        &held,
    );
    assert_eq!(d, Decision::drop(DropReason::OtherServer));

    let d = run(
        &c,
        RequestBuilder::new(MessageType::Decline, MAC, 1)
            .requested(FREE)
            .server_id(SERVER),
        &held,
    );
    assert_eq!(d.outcome, Outcome::Handled);
    assert_eq!(
        d.lease_op,
        Some(LeaseOp::Decline {
            ip: FREE,
            mac: MAC,
            until: now() + Duration::from_secs(900)
        })
    );
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Decline, MAC, 1).requested(FREE),
        &LeaseContext::default(),
    );
    assert_eq!(d, Decision::drop(DropReason::NotLeased));

    let d = run(
        &c,
        RequestBuilder::new(MessageType::Inform, MAC, 1)
            .ciaddr(FREE)
            .pxe(0),
        &LeaseContext::default(),
    );
    let (m, dest) = reply_of(&d);
    assert_eq!(msg_type(m), Some(MessageType::Ack));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(!m.opts().contains(OptionCode::AddressLeaseTime));
    assert_eq!(file(m).as_deref(), Some("undionly.kpxe"));
    assert_eq!(dest, Destination::Unicast(SocketAddrV4::new(FREE, 68)));
    assert_eq!(d.lease_op, None);
}

#[test]
fn configured_router_and_dns_are_sent() {
    let mut c = cfg(DhcpMode::Full);
    if let Some(p) = c.pool.as_mut() {
        p.routers = vec![Ipv4Addr::new(10, 9, 0, 254)];
        p.dns = vec![Ipv4Addr::new(10, 9, 0, 253)];
    }
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Discover, MAC, 1),
        &free_ctx(),
    );
    let m = reply_of(&d).0;
    assert!(
        matches!(m.opts().get(OptionCode::Router), Some(DhcpOption::Router(r)) if r == &[Ipv4Addr::new(10, 9, 0, 254)])
    );
    assert!(
        matches!(m.opts().get(OptionCode::DomainNameServer), Some(DhcpOption::DomainNameServer(r)) if r == &[Ipv4Addr::new(10, 9, 0, 253)])
    );
}

mod more;
mod reserved;
