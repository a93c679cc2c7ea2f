//! `ipmi`: one UDP datagram from a BMC into the controller's own RMCP+ client
//! (`drivers::ipmi::wire` and `crypto`): the session wrapper outside a session and inside
//! sessions of cipher suites 3 and 17 (integrity check, AES-CBC decryption), the IPMI
//! response message, the Open Session and RAKP 2/4 payloads, and the RAKP 2 code check the
//! client makes on them.
//!
//! Invariants (round trips): the input as a payload sealed by `encode_v20` under a session's
//! keys decodes back to itself, as does an IPMI 1.5 packet from `encode_v15`; a packet whose
//! session part was changed after sealing fails the integrity check.

use controller::drivers::ipmi::crypto::{CipherSuite, RakpParams, SessionKeys};
use controller::drivers::ipmi::wire;

const SUITES: [CipherSuite; 2] = [CipherSuite::Suite3, CipherSuite::Suite17];

/// What `Session::authenticate` does with a RAKP 2 reply: the length check, then the code.
fn rakp2_check(suite: CipherSuite, rest: &[u8]) -> bool {
    if rest.len() < 32 + suite.rakp_len() {
        return false;
    }
    let mut bmc_rand = [0u8; 16];
    bmc_rand.copy_from_slice(&rest[..16]);
    let mut bmc_guid = [0u8; 16];
    bmc_guid.copy_from_slice(&rest[16..32]);
    let params = RakpParams {
        suite,
        console_sid: 0x0102_0305,
        bmc_sid: 0x0a0b_0c0d,
        console_rand: [0x11; 16],
        bmc_rand,
        bmc_guid,
        role: 0x14,
        username: b"admin",
    };
    let code = params.rakp2_code(b"password");
    let sik = params.sik(b"password");
    let _ = params.rakp4_icv(&sik);
    code == rest[32..32 + suite.rakp_len()]
}

fn payloads(payload: &[u8]) {
    let _ = wire::decode_response(payload);
    let _ = wire::parse_open_session_response(payload);
    if let Ok(r) = wire::parse_rakp_reply(payload) {
        for suite in SUITES {
            let _ = rakp2_check(suite, &r.rest);
        }
    }
}

/// Entry point.
pub fn run(data: &[u8]) {
    if let Ok(p) = wire::decode(data, None) {
        payloads(&p.payload);
    }
    for suite in SUITES {
        let keys = SessionKeys::derive(suite, &[0x5a; 20]);
        if let Ok(p) = wire::decode(data, Some(&keys)) {
            payloads(&p.payload);
        }
        // The decryption on its own (the integrity check keeps the fuzzer out of it above).
        if let Some(plain) = keys.decrypt(data) {
            payloads(&plain);
        }
        // Payloads of a datagram are far below 64 KiB (the length field is 16 bits).
        if data.len() <= 1024 {
            let iv: [u8; 16] = std::array::from_fn(|i| data.get(i).copied().unwrap_or(0));
            let sealed = wire::encode_v20(wire::PAYLOAD_IPMI, 0x1234, 7, data, Some((&keys, iv)));
            let back = wire::decode(&sealed, Some(&keys)).expect("a sealed packet decodes");
            assert_eq!(back.payload, data, "sealed payload round trip");
            assert_eq!((back.session_id, back.seq), (0x1234, 7));
            let mut tampered = sealed.clone();
            tampered[8] ^= 0x01; // a byte of the session id, under the AuthCode
            assert!(
                wire::decode(&tampered, Some(&keys)).is_err(),
                "tampered packet accepted"
            );
        }
    }
    if data.len() <= 255 {
        let back = wire::decode(&wire::encode_v15(data), None).expect("a v1.5 packet decodes");
        assert_eq!(back.payload, data, "IPMI 1.5 round trip");
    }
}
