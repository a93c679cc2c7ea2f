//! `ipmi_inband`: what the machine's own BMC answers the agent through `/dev/ipmi0`
//! (`agent::bmc`): every answer parser of `wire` on the whole input, then a whole BMC user
//! enrolment (`enroll_with`) and the LAN channel search against a BMC that answers each
//! request with the next piece of the input (a length byte, then that many bytes; no
//! answer once the input is used up).
//!
//! Invariants: parsed values stay in their fields' ranges (user ids and counts 6 bits,
//! privilege 4 bits, names at most 16 bytes without NUL, MACs in `xx:xx:xx:xx:xx:xx`); an
//! enrolment never writes to user 0 or 1 (Set User Name, Set User Password, Set User
//! Access), succeeds only with a slot from 2 to 63 and the password it was given, and
//! neither its error nor the `Debug` of its result holds the password.

use agent::bmc::wire::{self, Request};
use agent::bmc::{Bmc, Password, enroll_with, lan_channel};

/// The password every fuzzed enrolment sets.
const PASSWORD: &str = "Fz9qT2wLm7XcR4vB";

/// Answers each request with the next length-prefixed piece of the input; records writes.
struct Scripted<'a> {
    rest: &'a [u8],
    written_ids: Vec<u8>,
}

impl Bmc for Scripted<'_> {
    fn call(&mut self, req: &Request) -> std::io::Result<Vec<u8>> {
        let id = match req.cmd {
            wire::CMD_SET_USER_NAME | wire::CMD_SET_USER_PASSWORD => req.data.first(),
            wire::CMD_SET_USER_ACCESS => req.data.get(1),
            _ => None,
        };
        if let Some(id) = id {
            self.written_ids.push(id & 0x3f);
        }
        let Some((&n, rest)) = self.rest.split_first() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer from the BMC",
            ));
        };
        let n = usize::from(n).min(rest.len());
        let (answer, rest) = rest.split_at(n);
        self.rest = rest;
        Ok(answer.to_vec())
    }
}

fn parsers(data: &[u8]) {
    let _ = wire::parse_device_id(data);
    let _ = wire::check_ok(data);
    let _ = wire::parse_lan_ip(data);
    if let Ok(c) = wire::parse_channel_info(data) {
        assert!(c.channel <= 0x0f && c.medium <= 0x7f && c.protocol <= 0x1f);
    }
    if let Some(mac) = wire::parse_lan_mac(data) {
        assert_eq!(mac.len(), 17, "{mac}");
        assert!(
            mac.split(':')
                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()))
        );
    }
    if let Ok(a) = wire::parse_user_access(data) {
        assert!(a.max_users <= 63 && a.enabled <= 63 && a.fixed_names <= 63);
        assert!(a.privilege <= 0x0f);
    }
    if let Ok(name) = wire::parse_user_name(data) {
        assert!(name.len() <= wire::USER_NAME_LEN && !name.contains(&0));
    }
}

/// Entry point.
pub fn run(data: &[u8]) {
    parsers(data);
    let password = Password::parse(PASSWORD).expect("a valid password");
    let mut bmc = Scripted {
        rest: data,
        written_ids: Vec::new(),
    };
    match enroll_with(&mut bmc, "ingot", password) {
        Ok(e) => {
            assert!((2..=63).contains(&e.user_id), "{e:?}");
            assert!((1..=11).contains(&e.channel), "{e:?}");
            assert_eq!(e.password.expose(), PASSWORD);
            assert_eq!(e.document().password, PASSWORD);
            assert!(!format!("{e:?}").contains(PASSWORD));
            assert!(!format!("{:?}", e.document()).contains(PASSWORD));
        }
        Err(e) => {
            let text = format!("{} {e:?}", agent::error_chain(&e));
            assert!(!text.contains(PASSWORD), "{text}");
        }
    }
    assert!(
        bmc.written_ids.iter().all(|&id| id >= 2),
        "a write to user 0 or 1: {:?}",
        bmc.written_ids
    );
    let mut bmc = Scripted {
        rest: data,
        written_ids: Vec::new(),
    };
    if let Ok(lan) = lan_channel(&mut bmc) {
        assert!((1..=11).contains(&lan.channel));
    }
    assert!(bmc.written_ids.is_empty());
}
