//! Table tests for the DHCP client machine: each case is a script of (time, input) steps
//! with the actions and the state expected after each.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};

use super::*;

const MAC: [u8; 6] = [0x52, 0x54, 0, 0xaa, 0, 1];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 6);

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// What a step feeds the client.
#[derive(Debug, Clone, Copy)]
enum In {
    Tick,
    /// A reply of this type for `addr` with lease (secs, T1, T2), to the current xid.
    Reply(
        MessageType,
        Ipv4Addr,
        Option<(u32, Option<u32>, Option<u32>)>,
    ),
    /// An ACK to another transaction.
    StaleAck,
}

fn reply(
    xid: u32,
    kind: MessageType,
    addr: Ipv4Addr,
    lease: Option<(u32, Option<u32>, Option<u32>)>,
) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let yiaddr = if kind == MessageType::Nak { z } else { addr };
    let mut m = Message::new_with_id(xid, z, yiaddr, z, z, &MAC);
    m.set_opcode(Opcode::BootReply);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(SERVER));
    if kind != MessageType::Nak {
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![SERVER]));
    }
    if let Some((secs, t1, t2)) = lease {
        o.insert(DhcpOption::AddressLeaseTime(secs));
        if let Some(t) = t1 {
            o.insert(DhcpOption::Renewal(t));
        }
        if let Some(t) = t2 {
            o.insert(DhcpOption::Rebinding(t));
        }
    }
    m
}

fn opt_addr(m: &Message, code: OptionCode) -> Option<Ipv4Addr> {
    match m.opts().get(code) {
        Some(DhcpOption::RequestedIpAddress(a)) | Some(DhcpOption::ServerIdentifier(a)) => Some(*a),
        _ => None,
    }
}

/// A short text for an action, to compare in tables.
fn show(a: &Action) -> String {
    match a {
        Action::Send { msg, via } => {
            let kind = match msg.opts().msg_type() {
                Some(MessageType::Discover) => "DISCOVER",
                Some(MessageType::Request) => "REQUEST",
                _ => "?",
            };
            let via = match via {
                Via::Raw => "raw".to_owned(),
                Via::Unicast(s) => format!("to {s}"),
                Via::Broadcast => "bcast".to_owned(),
            };
            let mut s = format!("{kind} {via}");
            if !msg.ciaddr().is_unspecified() {
                s.push_str(&format!(" ciaddr={}", msg.ciaddr()));
            }
            if let Some(r) = opt_addr(msg, OptionCode::RequestedIpAddress) {
                s.push_str(&format!(" req={r}"));
            }
            if let Some(r) = opt_addr(msg, OptionCode::ServerIdentifier) {
                s.push_str(&format!(" sid={r}"));
            }
            if msg.flags().broadcast() {
                s.push_str(" B");
            }
            s
        }
        Action::Configure { lease, previous } => match previous {
            Some(p) => format!("configure {} was {}", lease.addr, p.addr),
            None => format!("configure {}", lease.addr),
        },
        Action::Extended { lease, rebound } => {
            format!(
                "{} {}",
                if *rebound { "rebound" } else { "renewed" },
                lease.addr
            )
        }
        Action::Deconfigure { addr, why } => format!("deconfigure {addr} {why:?}"),
    }
}

type Step = (u64, In, &'static [&'static str], State);

fn run(name: &str, c: &mut Client, steps: &[Step]) {
    for (i, (t, input, want, state)) in steps.iter().enumerate() {
        let now = ms(*t);
        let got = match *input {
            In::Tick => c.tick(now),
            In::Reply(kind, addr, lease) => c.receive(now, &reply(c.xid(), kind, addr, lease)),
            In::StaleAck => c.receive(
                now,
                &reply(
                    c.xid().wrapping_add(1),
                    MessageType::Ack,
                    ADDR,
                    Some((100, None, None)),
                ),
            ),
        };
        let got: Vec<String> = got.iter().map(show).collect();
        assert_eq!(got, *want, "{name}: step {i} at {t} ms ({input:?})");
        assert_eq!(c.state(), *state, "{name}: state after step {i}");
    }
}

const LEASE100: Option<(u32, Option<u32>, Option<u32>)> = Some((100, None, None));

/// From a fresh client to BOUND on ADDR (lease 100 s, starting at 300 ms).
fn bound() -> Client {
    let mut c = Client::new(MAC, 7);
    run(
        "to bound",
        &mut c,
        &[
            (0, In::Tick, &["DISCOVER raw B"], State::Selecting),
            (100, In::Tick, &[], State::Selecting),
            (250, In::Tick, &["DISCOVER raw B"], State::Selecting),
            (
                300,
                In::Reply(MessageType::Offer, ADDR, LEASE100),
                &["REQUEST raw req=10.0.0.5 sid=10.0.0.1 B"],
                State::Requesting,
            ),
            // A second offer (another server) is ignored.
            (
                310,
                In::Reply(MessageType::Offer, OTHER, LEASE100),
                &[],
                State::Requesting,
            ),
            (
                400,
                In::Reply(MessageType::Ack, ADDR, LEASE100),
                &["configure 10.0.0.5"],
                State::Bound,
            ),
        ],
    );
    c
}

#[test]
fn renews_at_t1_rebinds_at_t2_and_starts_over_at_expiry() {
    let mut c = bound();
    let t = c.timers().expect("finite lease");
    assert_eq!(
        (t.t1, t.t2, t.expiry),
        (ms(50_300), ms(87_800), ms(100_300))
    );
    let steps: &[Step] = &[
        (50_299, In::Tick, &[], State::Bound),
        (
            50_300,
            In::Tick,
            &["REQUEST to 10.0.0.1 ciaddr=10.0.0.5"],
            State::Renewing,
        ),
        (50_350, In::StaleAck, &[], State::Renewing),
        (
            50_400,
            In::Reply(MessageType::Ack, ADDR, LEASE100),
            &["renewed 10.0.0.5"],
            State::Bound,
        ),
        // The renewed lease counts from the renewal REQUEST: T1 at 100.3 s.
        (100_299, In::Tick, &[], State::Bound),
        (
            100_300,
            In::Tick,
            &["REQUEST to 10.0.0.1 ciaddr=10.0.0.5"],
            State::Renewing,
        ),
        // Half the time to T2 (137.8 s): 18.75 s, then 9.375 s raised to the 10 s floor.
        (119_049, In::Tick, &[], State::Renewing),
        (
            119_050,
            In::Tick,
            &["REQUEST to 10.0.0.1 ciaddr=10.0.0.5"],
            State::Renewing,
        ),
        (
            129_050,
            In::Tick,
            &["REQUEST to 10.0.0.1 ciaddr=10.0.0.5"],
            State::Renewing,
        ),
        // The next one would be after T2: rebinding takes over, by broadcast.
        (
            137_800,
            In::Tick,
            &["REQUEST bcast ciaddr=10.0.0.5"],
            State::Rebinding,
        ),
        (
            147_800,
            In::Tick,
            &["REQUEST bcast ciaddr=10.0.0.5"],
            State::Rebinding,
        ),
        (150_299, In::Tick, &[], State::Rebinding),
        (
            150_300,
            In::Tick,
            &[
                "deconfigure 10.0.0.5 Expired",
                "DISCOVER raw req=10.0.0.5 B",
            ],
            State::Selecting,
        ),
        (
            150_400,
            In::Reply(MessageType::Offer, ADDR, LEASE100),
            &["REQUEST raw req=10.0.0.5 sid=10.0.0.1 B"],
            State::Requesting,
        ),
        (
            150_500,
            In::Reply(MessageType::Ack, ADDR, LEASE100),
            &["configure 10.0.0.5"],
            State::Bound,
        ),
    ];
    run("renew, rebind, expire", &mut c, steps);
}

#[test]
fn rebind_answer_and_naks() {
    // (name, steps after `bound()`)
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "answered rebind",
            vec![
                (
                    50_300,
                    In::Tick,
                    &["REQUEST to 10.0.0.1 ciaddr=10.0.0.5"],
                    State::Renewing,
                ),
                (
                    87_800,
                    In::Tick,
                    &["REQUEST bcast ciaddr=10.0.0.5"],
                    State::Rebinding,
                ),
                (
                    87_900,
                    In::Reply(MessageType::Ack, ADDR, LEASE100),
                    &["rebound 10.0.0.5"],
                    State::Bound,
                ),
                (137_799, In::Tick, &[], State::Bound),
                (
                    137_800,
                    In::Tick,
                    &["REQUEST to 10.0.0.1 ciaddr=10.0.0.5"],
                    State::Renewing,
                ),
            ],
        ),
        (
            "NAK while renewing: address dropped, DISCOVER asks for it again",
            vec![
                (
                    50_300,
                    In::Tick,
                    &["REQUEST to 10.0.0.1 ciaddr=10.0.0.5"],
                    State::Renewing,
                ),
                (
                    50_310,
                    In::Reply(MessageType::Nak, ADDR, None),
                    &["deconfigure 10.0.0.5 Nak", "DISCOVER raw req=10.0.0.5 B"],
                    State::Selecting,
                ),
                (
                    50_320,
                    In::Reply(MessageType::Offer, ADDR, LEASE100),
                    &["REQUEST raw req=10.0.0.5 sid=10.0.0.1 B"],
                    State::Requesting,
                ),
                (
                    50_330,
                    In::Reply(MessageType::Ack, ADDR, LEASE100),
                    &["configure 10.0.0.5"],
                    State::Bound,
                ),
            ],
        ),
        (
            "NAK while rebinding",
            vec![
                (
                    50_300,
                    In::Tick,
                    &["REQUEST to 10.0.0.1 ciaddr=10.0.0.5"],
                    State::Renewing,
                ),
                (
                    87_800,
                    In::Tick,
                    &["REQUEST bcast ciaddr=10.0.0.5"],
                    State::Rebinding,
                ),
                (
                    87_810,
                    In::Reply(MessageType::Nak, ADDR, None),
                    &["deconfigure 10.0.0.5 Nak", "DISCOVER raw req=10.0.0.5 B"],
                    State::Selecting,
                ),
            ],
        ),
        (
            "a NAK or an ACK while bound changes nothing",
            vec![
                (
                    1_000,
                    In::Reply(MessageType::Nak, ADDR, None),
                    &[],
                    State::Bound,
                ),
                (
                    1_000,
                    In::Reply(MessageType::Ack, OTHER, LEASE100),
                    &[],
                    State::Bound,
                ),
            ],
        ),
        (
            "the server moves the client: the new address replaces the old",
            vec![
                (
                    50_300,
                    In::Tick,
                    &["REQUEST to 10.0.0.1 ciaddr=10.0.0.5"],
                    State::Renewing,
                ),
                (
                    50_310,
                    In::Reply(MessageType::Ack, OTHER, LEASE100),
                    &["configure 10.0.0.6 was 10.0.0.5"],
                    State::Bound,
                ),
                (
                    100_310,
                    In::Tick,
                    &["REQUEST to 10.0.0.1 ciaddr=10.0.0.6"],
                    State::Renewing,
                ),
            ],
        ),
    ];
    for (name, steps) in cases {
        let mut c = bound();
        run(name, &mut c, &steps);
    }
}

#[test]
fn selecting_and_requesting_failures() {
    let mut c = Client::new(MAC, 1);
    run(
        "NAK to the REQUEST, then no ACK at all",
        &mut c,
        &[
            (0, In::Tick, &["DISCOVER raw B"], State::Selecting),
            (
                10,
                In::Reply(MessageType::Offer, ADDR, LEASE100),
                &["REQUEST raw req=10.0.0.5 sid=10.0.0.1 B"],
                State::Requesting,
            ),
            (
                20,
                In::Reply(MessageType::Nak, ADDR, None),
                &[],
                State::Init,
            ),
            (1_019, In::Tick, &[], State::Init),
            (1_020, In::Tick, &["DISCOVER raw B"], State::Selecting),
            (
                1_030,
                In::Reply(MessageType::Offer, ADDR, LEASE100),
                &["REQUEST raw req=10.0.0.5 sid=10.0.0.1 B"],
                State::Requesting,
            ),
            (
                1_280,
                In::Tick,
                &["REQUEST raw req=10.0.0.5 sid=10.0.0.1 B"],
                State::Requesting,
            ),
            (
                1_780,
                In::Tick,
                &["REQUEST raw req=10.0.0.5 sid=10.0.0.1 B"],
                State::Requesting,
            ),
            (
                2_780,
                In::Tick,
                &["REQUEST raw req=10.0.0.5 sid=10.0.0.1 B"],
                State::Requesting,
            ),
            (
                4_780,
                In::Tick,
                &["REQUEST raw req=10.0.0.5 sid=10.0.0.1 B"],
                State::Requesting,
            ),
            (
                8_780,
                In::Tick,
                &["REQUEST raw req=10.0.0.5 sid=10.0.0.1 B"],
                State::Requesting,
            ),
            // Six REQUESTs without an answer: start over.
            (12_780, In::Tick, &["DISCOVER raw B"], State::Selecting),
        ],
    );
    // Each new exchange has a new transaction id.
    let mut c = Client::new(MAC, 1);
    c.tick(ms(0));
    let first = c.xid();
    c.receive(ms(1), &reply(first, MessageType::Offer, ADDR, LEASE100));
    c.receive(ms(2), &reply(first, MessageType::Ack, ADDR, LEASE100));
    c.tick(ms(50_002));
    assert_ne!(c.xid(), first);
}

#[test]
fn lease_times_from_options_or_defaults() {
    let lease = |secs: Option<u32>, t1: Option<u32>, t2: Option<u32>| Lease {
        addr: ADDR,
        prefix: 24,
        router: None,
        dns: vec![],
        domain: None,
        hostname: None,
        server: Some(SERVER),
        lease_secs: secs,
        renewal_secs: t1,
        rebinding_secs: t2,
    };
    let s = Duration::from_secs;
    let start = s(1000);
    // (lease, T1, T2, expiry after start), or None for an infinite lease.
    let cases = [
        (lease(Some(600), None, None), Some((s(300), s(525), s(600)))),
        (
            lease(Some(600), Some(100), Some(200)),
            Some((s(100), s(200), s(600))),
        ),
        // Out of order: the defaults.
        (
            lease(Some(600), Some(500), Some(200)),
            Some((s(300), s(525), s(600))),
        ),
        (
            lease(Some(600), Some(100), Some(700)),
            Some((s(300), s(525), s(600))),
        ),
        (
            lease(Some(7), None, None),
            Some((ms(3_500), ms(6_125), s(7))),
        ),
        (lease(Some(u32::MAX), None, None), None),
        (lease(None, None, None), None),
    ];
    for (i, (l, want)) in cases.iter().enumerate() {
        let got = timers(l, start).map(|t| (t.t1 - start, t.t2 - start, t.expiry - start));
        assert_eq!(got, *want, "case {i}");
    }
    // An infinite lease is never renewed.
    let mut c = Client::new(MAC, 3);
    c.tick(ms(0));
    c.receive(ms(1), &reply(c.xid(), MessageType::Offer, ADDR, None));
    c.receive(ms(2), &reply(c.xid(), MessageType::Ack, ADDR, None));
    assert_eq!(c.state(), State::Bound);
    assert_eq!(c.next_event(), None);
    assert!(c.tick(s(1_000_000)).is_empty());
}

#[test]
fn retransmission_floor_and_spacing() {
    let s = Duration::from_secs;
    // (lease length, floor): the RFC's 60 s from a 10-minute lease up, a tenth below.
    let floors = [
        (s(86_400), s(60)),
        (s(600), s(60)),
        (s(120), s(12)),
        (s(5), s(1)),
    ];
    for (len, want) in floors {
        assert_eq!(retransmit_floor(len), want, "{len:?}");
    }
    // (now, until, floor, next)
    let next = [
        (s(0), s(100), s(10), s(50)),
        (s(80), s(100), s(10), s(90)),
        (s(95), s(100), s(10), s(105)),
    ];
    for (now, until, floor, want) in next {
        assert_eq!(next_retransmit(now, until, floor), want);
    }
}

#[test]
fn a_reply_with_an_overlong_hlen_is_ignored() {
    let mut c = Client::new(MAC, 1);
    c.tick(ms(0));
    let offer = reply(c.xid(), MessageType::Offer, ADDR, Some((600, None, None)));
    // hlen 22 on the wire: dhcproto's chaddr() would slice past its 16 bytes.
    let mut wire = dhcproto::Encodable::to_vec(&offer).expect("encodes");
    wire[2] = 22;
    let m = super::super::decode(&wire).expect("dhcproto decodes it");
    assert!(c.receive(ms(10), &m).is_empty());
    assert_eq!(c.state(), State::Selecting);
    // The same offer with hlen 6 is taken.
    assert!(!c.receive(ms(20), &offer).is_empty());
    assert_eq!(c.state(), State::Requesting);
}
