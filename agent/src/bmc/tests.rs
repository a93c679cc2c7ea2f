//! Enrolment against [`FakeBmc`]: slot choice, reset, channel choice, password sizes,
//! refusals, and no password in any error.

use super::fake::{FAKE_MAC, FakeBmc, FakeChannel};
use super::*;

fn pw(s: &str) -> Password {
    Password::parse(s).expect("a valid password")
}

const PW1: &str = "Abcdefgh12345678";
const PW2: &str = "Zyxwvuts87654321";

/// The user ids every write (Set User Name, Set User Password, Set User Access) went to.
fn written_ids(bmc: &FakeBmc) -> Vec<u8> {
    bmc.calls
        .iter()
        .filter_map(|(cmd, d)| match *cmd {
            wire::CMD_SET_USER_NAME | wire::CMD_SET_USER_PASSWORD => d.first().map(|b| b & 0x3f),
            wire::CMD_SET_USER_ACCESS => d.get(1).map(|b| b & 0x3f),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_user_goes_to_the_first_free_slot_as_administrator() {
    let mut bmc = FakeBmc::new(10).with_user(2, "admin", "password");
    let e = enroll_with(&mut bmc, "ingot", pw(PW1)).expect("enrolled");
    assert_eq!((e.channel, e.user_id, e.reset), (1, 3, false));
    assert_eq!(e.username, "ingot");
    assert_eq!(e.address, Some(Ipv4Addr::new(192, 0, 2, 10)));
    assert_eq!(e.mac.as_deref(), Some("52:54:00:be:ef:01"));
    assert_eq!(e.password.expose(), PW1);
    assert_eq!(
        bmc.login(1, "ingot", PW1),
        Some(wire::PRIV_ADMINISTRATOR),
        "the new credentials work on the LAN channel"
    );
    let access = bmc.users[3].access[&1];
    assert!(access.link_auth && access.ipmi_messaging && !access.callback_only);
    assert_eq!(
        bmc.login(1, "admin", "password"),
        Some(4),
        "admin untouched"
    );
    assert!(
        written_ids(&bmc).iter().all(|&id| id == 3),
        "{:?}",
        written_ids(&bmc)
    );
    // IPMI 2.0: the 20-byte form, and the password was tested.
    let pw_ops: Vec<(u8, u8)> = bmc
        .calls
        .iter()
        .filter(|(c, _)| *c == wire::CMD_SET_USER_PASSWORD)
        .map(|(_, d)| (d[0], d[1]))
        .collect();
    assert_eq!(pw_ops, vec![(0x83, 2), (0x03, 1), (0x83, 3)]);
    let doc = serde_json::to_value(e.document()).expect("json");
    assert_eq!(
        doc,
        serde_json::json!({
            "bmc_address": "192.0.2.10",
            "bmc_mac": "52:54:00:be:ef:01",
            "channel": 1,
            "user_id": 3,
            "username": "ingot",
            "password": PW1,
        })
    );
}

#[test]
fn a_second_enrolment_resets_the_same_slot() {
    let mut bmc = FakeBmc::new(10).with_user(2, "admin", "password");
    let first = enroll_with(&mut bmc, "ingot", pw(PW1)).expect("first");
    bmc.calls.clear();
    let second = enroll_with(&mut bmc, "ingot", pw(PW2)).expect("second");
    assert_eq!(second.user_id, first.user_id);
    assert!(second.reset);
    assert_eq!(bmc.login(1, "ingot", PW2), Some(4));
    assert_eq!(bmc.login(1, "ingot", PW1), None, "the old password is gone");
    assert!(
        !bmc.calls.iter().any(|(c, _)| *c == wire::CMD_SET_USER_NAME),
        "a reset keeps the name"
    );
}

#[test]
fn an_existing_user_wins_over_an_earlier_free_slot_and_is_enabled_again() {
    let mut bmc = FakeBmc::new(10).with_user(7, "ingot", "OldPassword12345");
    bmc.users[7].enabled = false;
    let e = enroll_with(&mut bmc, "ingot", pw(PW1)).expect("enrolled");
    assert_eq!((e.user_id, e.reset), (7, true));
    assert_eq!(bmc.login(1, "ingot", PW1), Some(4));
    assert!(bmc.users[3].name.is_empty(), "slot 3 left alone");
}

#[test]
fn named_and_enabled_slots_are_never_taken() {
    // Slot 2 named, slot 3 unnamed but in use on the channel, slot 4 free.
    let mut bmc = FakeBmc::new(4).with_user(2, "root", "calvin");
    bmc.users[3].enabled = true;
    bmc.users[3].access.insert(
        1,
        fake::FakeAccess {
            ipmi_messaging: true,
            privilege: 2,
            ..Default::default()
        },
    );
    let e = enroll_with(&mut bmc, "ingot", pw(PW1)).expect("enrolled");
    assert_eq!(e.user_id, 4);
    assert!(written_ids(&bmc).iter().all(|&id| id == 4));

    let mut full = FakeBmc::new(3)
        .with_user(2, "root", "calvin")
        .with_user(3, "ops", "secret");
    let err = enroll_with(&mut full, "ingot", pw(PW1)).expect_err("no slot");
    assert!(matches!(err, EnrollError::NoFreeSlot { max_users: 3, .. }));
    assert_eq!(
        err.to_string(),
        "no free BMC user slot: no user is named \"ingot\" and every one of users 2 to 3 \
         has a name or IPMI messaging enabled"
    );
    assert!(written_ids(&full).is_empty(), "nothing written");
}

#[test]
fn the_slot_rule() {
    let n = |s: &str| Some(s.as_bytes().to_vec());
    type Names = Vec<(u8, Option<Vec<u8>>)>;
    let table: Vec<(Names, SlotPlan)> = vec![
        (
            vec![(2, n("admin")), (3, n("")), (4, n(""))],
            SlotPlan::Candidates(vec![3, 4]),
        ),
        (
            vec![(2, n("")), (3, n("x")), (4, n("ingot"))],
            SlotPlan::Reset(4),
        ),
        // A slot whose name could not be read is neither matched nor taken.
        (vec![(2, None), (3, n(""))], SlotPlan::Candidates(vec![3])),
        // Slots 0 and 1 never, even when named so.
        (
            vec![(1, n("ingot")), (0, n(""))],
            SlotPlan::Candidates(vec![]),
        ),
        // Names compare exactly.
        (
            vec![(2, n("Ingot")), (3, n("ingot2"))],
            SlotPlan::Candidates(vec![]),
        ),
    ];
    for (names, want) in table {
        assert_eq!(plan_slot(b"ingot", &names), want, "{names:?}");
    }
}

#[test]
fn the_lan_channel_with_an_address_is_chosen() {
    let lan = |a: [u8; 4]| FakeChannel {
        medium: wire::MEDIUM_LAN,
        address: Ipv4Addr::from(a),
        mac: FAKE_MAC,
    };
    // Channel 1 LAN without an address, channel 8 LAN with one.
    let mut bmc = FakeBmc::new(4);
    bmc.channels.insert(1, lan([0, 0, 0, 0]));
    bmc.channels.insert(8, lan([10, 1, 2, 3]));
    assert_eq!(
        lan_channel(&mut bmc).expect("lan"),
        LanChannel {
            channel: 8,
            address: Some(Ipv4Addr::new(10, 1, 2, 3))
        }
    );
    let e = enroll_with(&mut bmc, "ingot", pw(PW1)).expect("enrolled");
    assert_eq!(e.channel, 8);
    assert_eq!(bmc.login(8, "ingot", PW1), Some(4));
    // No address anywhere: the first LAN channel.
    bmc.channels.insert(8, lan([0, 0, 0, 0]));
    assert_eq!(
        lan_channel(&mut bmc).expect("lan"),
        LanChannel {
            channel: 1,
            address: None
        }
    );
    // No LAN channel at all.
    bmc.channels.retain(|_, c| c.medium != wire::MEDIUM_LAN);
    assert!(matches!(
        lan_channel(&mut bmc),
        Err(EnrollError::NoLanChannel)
    ));
    let err = enroll_with(&mut bmc, "ingot", pw(PW1)).expect_err("no LAN");
    assert_eq!(
        err.to_string(),
        "no LAN channel: none of channels 1 to 11 is an 802.3 LAN channel"
    );
}

#[test]
fn an_ipmi_15_bmc_gets_16_byte_passwords() {
    let mut bmc = FakeBmc::new(4);
    bmc.ipmi_version = 0x51;
    enroll_with(&mut bmc, "ingot", pw(PW1)).expect("enrolled");
    assert_eq!(bmc.login(1, "ingot", PW1), Some(4));
    for (c, d) in &bmc.calls {
        if *c == wire::CMD_SET_USER_PASSWORD && d[1] >= 2 {
            assert_eq!((d[0] & 0x80, d.len()), (0, 18));
        }
    }
}

#[test]
fn a_bmc_refusing_the_20_byte_form_gets_16_bytes() {
    // Get Device ID says IPMI 2.0, Set User Password takes 16 bytes only (0xc7).
    let mut bmc = FakeBmc::new(4);
    bmc.ipmi_version = 0x51;
    let e = enroll_with(&mut TwoPointOh(&mut bmc), "ingot", pw(PW1)).expect("16 bytes");
    assert_eq!(e.user_id, 2);
    assert_eq!(bmc.login(1, "ingot", PW1), Some(4));
    let sets: Vec<(u8, usize)> = bmc
        .calls
        .iter()
        .filter(|(c, d)| *c == wire::CMD_SET_USER_PASSWORD && d[1] & 0x02 != 0)
        .map(|(_, d)| (d[1], d.len()))
        .collect();
    assert_eq!(
        sets,
        vec![(2, 22), (2, 18), (3, 18)],
        "set, set again, test"
    );
}

/// Answers Get Device ID as IPMI 2.0 in front of a fake that is 1.5 otherwise.
struct TwoPointOh<'a>(&'a mut FakeBmc);

impl Bmc for TwoPointOh<'_> {
    fn call(&mut self, req: &wire::Request) -> io::Result<Vec<u8>> {
        let mut r = self.0.call(req)?;
        if req.cmd == wire::CMD_GET_DEVICE_ID && r.len() > 5 {
            r[5] = 0x02;
        }
        Ok(r)
    }
}

#[test]
fn a_refusal_names_the_command_and_code_and_undoes_a_new_slot() {
    let mut bmc = FakeBmc::new(4).with_user(2, "admin", "password");
    bmc.refuse.push((wire::CMD_SET_USER_ACCESS, 0xd4));
    let err = enroll_with(&mut bmc, "ingot", pw(PW1)).expect_err("refused");
    let text = crate::error_chain(&err);
    assert_eq!(
        text,
        "Set User Access (channel 1, user 3): completion code 0xd4 (insufficient privilege \
         level)"
    );
    assert!(!format!("{err:?}").contains(PW1));
    assert!(
        bmc.users[3].name.is_empty() && !bmc.users[3].enabled,
        "undone"
    );
    assert_eq!(bmc.login(1, "admin", "password"), Some(4));

    // A reset that fails keeps the user's name.
    let mut bmc = FakeBmc::new(4).with_user(3, "ingot", "OldPassword12345");
    bmc.refuse.push((wire::CMD_SET_USER_ACCESS, 0xd4));
    assert!(enroll_with(&mut bmc, "ingot", pw(PW1)).is_err());
    assert_eq!(bmc.users[3].name, b"ingot");
}

#[test]
fn a_failed_password_test_is_an_error() {
    // A BMC that stores something else than it was given (here: nothing).
    struct Forgetful(FakeBmc);
    impl Bmc for Forgetful {
        fn call(&mut self, req: &wire::Request) -> io::Result<Vec<u8>> {
            if req.cmd == wire::CMD_SET_USER_PASSWORD && req.data.get(1) == Some(&2) {
                return Ok(vec![0]);
            }
            self.0.call(req)
        }
    }
    let mut bmc = Forgetful(FakeBmc::new(4));
    let err = enroll_with(&mut bmc, "ingot", pw(PW1)).expect_err("test fails");
    let text = crate::error_chain(&err);
    assert_eq!(
        text,
        "Set User Password (test password, user 2): completion code 0x80 (command-specific)"
    );
    assert!(!text.contains(PW1) && !format!("{err:?}").contains(PW1));
}

#[test]
fn no_answer_is_an_error_naming_the_command() {
    let mut bmc = FakeBmc::new(4);
    bmc.silent = true;
    let err = enroll_with(&mut bmc, "ingot", pw(PW1)).expect_err("silent");
    assert_eq!(
        crate::error_chain(&err),
        "Get Device ID: no answer from the BMC"
    );
    assert!(matches!(lan_channel(&mut bmc), Err(EnrollError::Io { .. })));
}

#[test]
fn user_names_are_checked_before_anything_is_sent() {
    for bad in [
        "",
        "0123456789abcdefg",
        "in got",
        "ingöt",
        "ingot\n",
        "\u{0}",
    ] {
        let mut bmc = FakeBmc::new(4);
        let err = enroll_with(&mut bmc, bad, pw(PW1)).expect_err(bad);
        assert!(matches!(err, EnrollError::InvalidUser { .. }), "{bad:?}");
        assert!(
            err.to_string()
                .contains("must be 1 to 16 printable ASCII characters without spaces"),
            "{err}"
        );
        assert!(bmc.calls.is_empty(), "{bad:?}");
        assert!(
            enroll(Path::new("/nonexistent/ipmi0"), bad)
                .is_err_and(|e| matches!(e, EnrollError::InvalidUser { .. }))
        );
    }
    for good in ["ingot", "0123456789abcdef", "a", "ops_bmc-1.x"] {
        assert!(check_user_name(good).is_ok(), "{good}");
    }
}

#[test]
fn no_device_is_a_clear_error_and_no_address() {
    let err = enroll(Path::new("/nonexistent/ipmi0"), "ingot").expect_err("no device");
    assert_eq!(
        crate::error_chain(&err),
        "no IPMI device at /nonexistent/ipmi0 (no BMC, or ipmi_si/ipmi_devintf did not \
         load): No such file or directory (os error 2)"
    );
    let t = std::time::Instant::now();
    assert_eq!(address(Path::new("/nonexistent/ipmi0")), None);
    assert!(t.elapsed() < Duration::from_millis(100));
}

#[test]
fn enrolled_debug_hides_the_password() {
    let mut bmc = FakeBmc::new(4);
    let e = enroll_with(&mut bmc, "ingot", pw(PW1)).expect("enrolled");
    let shown = format!("{e:?} {:?} {bmc:?}", e.document());
    assert!(!shown.contains(PW1), "{shown}");
}
