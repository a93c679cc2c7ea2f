//! `agent_dhcp`: one DHCP server message into the agent's DHCP client, as the ramdisk
//! receives it: the IPv4/UDP frame of the `AF_PACKET` socket (`init::dhcp::dhcp_payload`),
//! the payload decoder, the lease it carries (`lease_of`, `machine::timers`), and the pure
//! client machine (`init::dhcp::machine::Client`) taken through SELECTING, REQUESTING, BOUND,
//! RENEWING and REBINDING: the message is fed as the answer to the client's current
//! transaction (xid and chaddr set) as OFFER, ACK and NAK in turn, with time moved to each
//! event the client asks for in between.
//!
//! Invariants: lease timers are ordered (T1 <= T2 <= expiry); a configured lease has a
//! prefix of at most 32 bits.

use std::time::Duration;

use agent::init::dhcp::machine::{Action, Client, timers};
use agent::init::dhcp::{decode, dhcp_payload, lease_of};
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn check(actions: &[Action]) {
    for a in actions {
        if let Action::Configure { lease, .. } | Action::Extended { lease, .. } = a {
            assert!(lease.prefix <= 32, "prefix {}", lease.prefix);
        }
    }
}

fn answer(c: &mut Client, now: Duration, m: &Message, kind: MessageType) {
    let mut m = m.clone();
    m.set_opcode(Opcode::BootReply);
    m.set_xid(c.xid());
    m.set_chaddr(&MAC);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    check(&c.receive(now, &m));
}

/// Entry point.
pub fn run(data: &[u8]) {
    let payload = dhcp_payload(data).unwrap_or(data);
    let Some(m) = decode(payload) else {
        return;
    };
    let lease = lease_of(&m);
    if let Some(t) = timers(&lease, Duration::from_secs(5)) {
        assert!(t.t1 <= t.t2 && t.t2 <= t.expiry, "{t:?}");
    }

    let mut c = Client::new(MAC, 7);
    let mut now = Duration::ZERO;
    check(&c.tick(now));
    check(&c.receive(now, &m));
    let script = [
        MessageType::Offer,
        MessageType::Ack,
        MessageType::Ack,
        MessageType::Ack,
        MessageType::Nak,
        MessageType::Offer,
        MessageType::Ack,
        MessageType::Nak,
    ];
    for kind in script {
        now += Duration::from_millis(300);
        answer(&mut c, now, &m, kind);
        for _ in 0..3 {
            let Some(at) = c.next_event() else { break };
            now = now.max(at);
            check(&c.tick(now));
        }
        if let Some(t) = c.timers() {
            assert!(t.t1 <= t.t2 && t.t2 <= t.expiry, "{t:?}");
        }
    }
}
