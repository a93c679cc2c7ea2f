//! Policy tables: reservations kept in the lease store (a port's `extra.dhcp_address`).

use super::*;

/// A store reservation of `ip` for `mac`, as `by_mac`/`requested_holder` return it.
fn reserved(ip: Ipv4Addr, mac: MacAddr) -> Lease {
    Lease {
        ip,
        mac,
        state: LeaseState::Reserved,
        // Reservations never expire, whatever the row says.
        expires: now() - Duration::from_secs(1),
    }
}

/// Inside the pool range and outside it (but on the subnet).
const FIXED_IN_POOL: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 101);
const FIXED_OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 60);

#[test]
fn discover_offers_the_store_reservation_without_touching_it() {
    let c = cfg(DhcpMode::Full);
    let disc = |mac| RequestBuilder::new(MessageType::Discover, mac, 3);
    // (name, request, context, offered address, lease op expected)
    let cases: Vec<(&str, RequestBuilder, LeaseContext, Option<Ipv4Addr>, bool)> = vec![
        (
            "reservation inside the pool wins over free",
            disc(MAC),
            LeaseContext {
                by_mac: Some(reserved(FIXED_IN_POOL, MAC)),
                free: Some(FREE),
                ..Default::default()
            },
            Some(FIXED_IN_POOL),
            false,
        ),
        (
            "reservation outside the pool range is fine",
            disc(MAC),
            LeaseContext {
                by_mac: Some(reserved(FIXED_OUTSIDE, MAC)),
                free: Some(FREE),
                ..Default::default()
            },
            Some(FIXED_OUTSIDE),
            false,
        ),
        (
            "reservation wins over a requested address",
            disc(MAC).requested(Ipv4Addr::new(10, 9, 0, 102)),
            LeaseContext {
                by_mac: Some(reserved(FIXED_OUTSIDE, MAC)),
                free: Some(FREE),
                ..Default::default()
            },
            Some(FIXED_OUTSIDE),
            false,
        ),
        (
            "reservation on another subnet is ignored",
            disc(MAC),
            LeaseContext {
                by_mac: Some(reserved(Ipv4Addr::new(192, 168, 7, 7), MAC)),
                free: Some(FREE),
                ..Default::default()
            },
            Some(FREE),
            true,
        ),
        (
            "reservation of our own address is ignored",
            disc(MAC),
            LeaseContext {
                by_mac: Some(reserved(SERVER, MAC)),
                free: Some(FREE),
                ..Default::default()
            },
            Some(FREE),
            true,
        ),
        (
            "reservation of a configured reserved address is ignored",
            disc(MAC),
            LeaseContext {
                by_mac: Some(reserved(RESERVED_IP, MAC)),
                free: Some(FREE),
                ..Default::default()
            },
            Some(FREE),
            true,
        ),
        (
            "configuration wins over the store",
            disc(RESERVED_MAC),
            LeaseContext {
                by_mac: Some(reserved(FIXED_OUTSIDE, RESERVED_MAC)),
                free: Some(FREE),
                ..Default::default()
            },
            Some(RESERVED_IP),
            true,
        ),
        (
            "another's reservation is not offered when requested",
            disc(OTHER).requested(FIXED_IN_POOL),
            LeaseContext {
                requested_holder: Some(reserved(FIXED_IN_POOL, MAC)),
                free: Some(FREE),
                ..Default::default()
            },
            Some(FREE),
            true,
        ),
    ];
    for (name, req, ctx, want, op) in cases {
        let d = run(&c, req, &ctx);
        assert_eq!(reply_of(&d).0.yiaddr(), want.expect("an address"), "{name}");
        assert_eq!(d.lease_op.is_some(), op, "{name}: {:?}", d.lease_op);
    }
}

#[test]
fn request_release_decline_with_a_store_reservation() {
    let c = cfg(DhcpMode::Full);
    let mine = LeaseContext {
        by_mac: Some(reserved(FIXED_OUTSIDE, MAC)),
        requested_holder: Some(reserved(FIXED_OUTSIDE, MAC)),
        free: None,
    };
    let req = |mac| RequestBuilder::new(MessageType::Request, mac, 5);
    // Own reservation: ACK, and the row stays as it is (no Bind).
    let d = run(
        &c,
        req(MAC).requested(FIXED_OUTSIDE).server_id(SERVER),
        &mine,
    );
    assert_eq!(msg_type(reply_of(&d).0), Some(MessageType::Ack));
    assert_eq!(reply_of(&d).0.yiaddr(), FIXED_OUTSIDE);
    assert_eq!(d.lease_op, None);
    // Asking for any other address: NAK, so the client restarts and gets its reservation.
    let d = run(
        &c,
        req(MAC).requested(FREE),
        &LeaseContext {
            by_mac: Some(reserved(FIXED_OUTSIDE, MAC)),
            ..Default::default()
        },
    );
    assert_eq!(msg_type(reply_of(&d).0), Some(MessageType::Nak));
    // Another client asking for the reserved address (INIT-REBOOT after a restart): NAK.
    let d = run(
        &c,
        req(OTHER).requested(FIXED_IN_POOL),
        &LeaseContext {
            requested_holder: Some(reserved(FIXED_IN_POOL, MAC)),
            ..Default::default()
        },
    );
    assert_eq!(msg_type(reply_of(&d).0), Some(MessageType::Nak));
    assert_eq!(d.lease_op, None);
    // RELEASE and DECLINE are handled but never drop the reservation.
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Release, MAC, 1)
            .ciaddr(FIXED_OUTSIDE)
            .server_id(SERVER),
        &mine,
    );
    assert_eq!((d.outcome, d.lease_op), (Outcome::Handled, None));
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Decline, MAC, 1)
            .requested(FIXED_OUTSIDE)
            .server_id(SERVER),
        &mine,
    );
    assert_eq!((d.outcome, d.lease_op), (Outcome::Handled, None));
}
