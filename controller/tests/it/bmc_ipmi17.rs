//! Cipher suite 17 end to end: a small stateful IPMI 2.0 BMC written here (UDP on
//! 127.0.0.1, built on the crypto module) that ipmitool — an independent implementation —
//! must be able to use with `-C 17`, and that the `ipmi` driver then drives. The BMC
//! refuses chassis control until Set Session Privilege Level was sent (gotcha G2).

use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use controller::drivers::ipmi::crypto::{CipherSuite, RakpParams, SessionKeys};
use controller::drivers::ipmi::session::Session;
use controller::drivers::ipmi::{IpmiHardware, IpmiInfo, wire};
use controller::drivers::{
    BootDevice, ManagementInterface, PowerInterface, PowerState, PowerTarget,
};
use controller::model::Node;
use serde_json::json;
use uuid::Uuid;

const USER: &[u8] = b"admin";
const PASSWORD: &str = "suite17-Pass";
const GUID: [u8; 16] = *b"ingot-test-bmc-1";

#[derive(Default)]
struct Chassis {
    power: bool,
    boot_flags: [u8; 2],
    privilege_refusals: usize,
    suites_used: Vec<u8>,
}

struct Pending {
    suite: CipherSuite,
    console_sid: u32,
    console_rand: [u8; 16],
    bmc_rand: [u8; 16],
    role: u8,
}

struct Active {
    keys: SessionKeys,
    console_sid: u32,
    privilege: u8,
    seq: u32,
}

fn checksum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x)).wrapping_neg()
}

fn reply_msg(req: &[u8], cc: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![req[3], ((req[1] >> 2) + 1) << 2 | (req[4] & 3)];
    m.push(checksum(&m));
    m.extend_from_slice(&[req[0], req[4] & 0xFC, req[5], cc]);
    m.extend_from_slice(data);
    m.push(checksum(&m[3..]));
    m
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

struct Bmc {
    chassis: Arc<Mutex<Chassis>>,
    stop: Arc<AtomicBool>,
    port: u16,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Bmc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Bmc {
    fn start(suites: &'static [CipherSuite]) -> Bmc {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let port = sock.local_addr().expect("addr").port();
        let chassis = Arc::new(Mutex::new(Chassis::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (chassis.clone(), stop.clone());
        let thread = std::thread::spawn(move || serve(sock, suites, c, s));
        Bmc {
            chassis,
            stop,
            port,
            thread: Some(thread),
        }
    }

    fn node(&self, extra: serde_json::Value) -> Node {
        let mut n = Node::new(Uuid::new_v4(), "ipmi", Utc::now());
        let mut info = json!({"ipmi_address": "127.0.0.1", "ipmi_port": self.port,
            "ipmi_username": "admin", "ipmi_password": PASSWORD, "ipmi_timeout": 1});
        if let (Some(i), Some(e)) = (info.as_object_mut(), extra.as_object()) {
            i.extend(e.clone());
        }
        n.driver_info = info.as_object().cloned().unwrap_or_default();
        n
    }

    fn ipmitool(&self, suite: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new("ipmitool")
            .args([
                "-I",
                "lanplus",
                "-C",
                suite,
                "-N",
                "1",
                "-R",
                "2",
                "-H",
                "127.0.0.1",
                "-p",
            ])
            .arg(self.port.to_string())
            .args(["-U", "admin", "-P", PASSWORD])
            .args(args)
            .output()
            .expect("ipmitool (Debian package ipmitool) must be installed");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

fn serve(
    sock: UdpSocket,
    suites: &[CipherSuite],
    chassis: Arc<Mutex<Chassis>>,
    stop: Arc<AtomicBool>,
) {
    let mut pending: HashMap<u32, Pending> = HashMap::new();
    let mut active: HashMap<u32, Active> = HashMap::new();
    let mut next_sid = 0x5000_0000u32;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let pkt = &buf[..n];
        if pkt.len() < 6 || pkt[..4] != wire::RMCP_HEADER {
            continue;
        }
        let send = |b: Vec<u8>| {
            let _ = sock.send_to(&b, peer);
        };
        if pkt[4] == 0x00 {
            // IPMI 1.5, no session: only Get Channel Authentication Capabilities.
            let Ok(p) = wire::decode(pkt, None) else {
                continue;
            };
            let req = &p.payload;
            if req.len() >= 7 && req[5] == 0x38 {
                let data = [0x01, 0x80 | 0x04, 0x04, 0x02, 0, 0, 0, 0];
                send(wire::encode_v15(&reply_msg(req, 0, &data)));
            } else if req.len() >= 7 {
                send(wire::encode_v15(&reply_msg(req, 0xC1, &[])));
            }
            continue;
        }
        let sid = if pkt.len() >= 10 {
            le32(&pkt[6..10])
        } else {
            continue;
        };
        let ptype = pkt[5] & 0x3F;
        match ptype {
            wire::PAYLOAD_OPEN_SESSION_REQ => {
                let Ok(p) = wire::decode(pkt, None) else {
                    continue;
                };
                let r = &p.payload;
                if r.len() < 32 {
                    continue;
                }
                let console_sid = le32(&r[4..8]);
                let algs = (r[12], r[20], r[28]);
                let suite = suites
                    .iter()
                    .copied()
                    .find(|s| algs == (s.auth_alg(), s.integrity_alg(), s.confidentiality_alg()));
                let mut out = vec![r[0]];
                match suite {
                    None => out.extend_from_slice(&[0x11, 0, 0]),
                    Some(suite) => {
                        next_sid += 1;
                        pending.insert(
                            next_sid,
                            Pending {
                                suite,
                                console_sid,
                                console_rand: [0; 16],
                                bmc_rand: rand_bytes(next_sid),
                                role: 0,
                            },
                        );
                        out.extend_from_slice(&[0, 4, 0]);
                    }
                }
                out.extend_from_slice(&console_sid.to_le_bytes());
                if suite.is_some() {
                    out.extend_from_slice(&next_sid.to_le_bytes());
                    out.extend_from_slice(&r[8..32]);
                }
                send(wire::encode_v20(
                    wire::PAYLOAD_OPEN_SESSION_RESP,
                    0,
                    0,
                    &out,
                    None,
                ));
            }
            wire::PAYLOAD_RAKP1 => {
                let Ok(p) = wire::decode(pkt, None) else {
                    continue;
                };
                let r = &p.payload;
                if r.len() < 28 {
                    continue;
                }
                let bmc_sid = le32(&r[4..8]);
                let Some(pend) = pending.get_mut(&bmc_sid) else {
                    continue;
                };
                pend.console_rand.copy_from_slice(&r[8..24]);
                pend.role = r[24];
                let name = r.get(28..28 + usize::from(r[27])).unwrap_or_default();
                let mut out = vec![r[0]];
                if name != USER {
                    out.extend_from_slice(&[0x0D, 0, 0]);
                    out.extend_from_slice(&pend.console_sid.to_le_bytes());
                } else {
                    let params = params(pend, bmc_sid);
                    out.extend_from_slice(&[0, 0, 0]);
                    out.extend_from_slice(&pend.console_sid.to_le_bytes());
                    out.extend_from_slice(&pend.bmc_rand);
                    out.extend_from_slice(&GUID);
                    out.extend_from_slice(&params.rakp2_code(PASSWORD.as_bytes()));
                }
                send(wire::encode_v20(wire::PAYLOAD_RAKP2, 0, 0, &out, None));
            }
            wire::PAYLOAD_RAKP3 => {
                let Ok(p) = wire::decode(pkt, None) else {
                    continue;
                };
                let r = &p.payload;
                if r.len() < 8 {
                    continue;
                }
                let bmc_sid = le32(&r[4..8]);
                let Some(pend) = pending.remove(&bmc_sid) else {
                    continue;
                };
                if r[1] != 0 {
                    continue; // the console gave up (e.g. our RAKP 2 code did not match)
                }
                let params = params(&pend, bmc_sid);
                let mut out = vec![r[0]];
                if r[8..] != params.rakp3_code(PASSWORD.as_bytes())[..] {
                    out.extend_from_slice(&[0x0F, 0, 0]);
                    out.extend_from_slice(&pend.console_sid.to_le_bytes());
                } else {
                    let sik = params.sik(PASSWORD.as_bytes());
                    out.extend_from_slice(&[0, 0, 0]);
                    out.extend_from_slice(&pend.console_sid.to_le_bytes());
                    out.extend_from_slice(&params.rakp4_icv(&sik));
                    chassis
                        .lock()
                        .expect("lock")
                        .suites_used
                        .push(pend.suite.id());
                    active.insert(
                        bmc_sid,
                        Active {
                            keys: SessionKeys::derive(pend.suite, &sik),
                            console_sid: pend.console_sid,
                            privilege: 2,
                            seq: 0,
                        },
                    );
                }
                send(wire::encode_v20(wire::PAYLOAD_RAKP4, 0, 0, &out, None));
            }
            wire::PAYLOAD_IPMI => {
                let Some(sess) = active.get_mut(&sid) else {
                    continue;
                };
                let Ok(p) = wire::decode(pkt, Some(&sess.keys)) else {
                    continue;
                };
                let req = p.payload;
                if req.len() < 7 {
                    continue;
                }
                let (netfn, cmd, data) = (req[1] >> 2, req[5], &req[6..req.len() - 1]);
                let mut ch = chassis.lock().expect("lock");
                let (cc, out): (u8, Vec<u8>) = match (netfn, cmd) {
                    (0x06, 0x3B) => {
                        sess.privilege = data.first().copied().unwrap_or(2) & 0x0F;
                        (0, vec![sess.privilege])
                    }
                    (0x06, 0x3C) => (0, vec![]),
                    (0x00, 0x01) => (0, vec![u8::from(ch.power), 0, 0, 0]),
                    (0x00, 0x02) if sess.privilege < 3 => {
                        ch.privilege_refusals += 1;
                        (0xD4, vec![])
                    }
                    (0x00, 0x02) => {
                        match data.first() {
                            Some(0x00) | Some(0x05) => ch.power = false,
                            Some(_) => ch.power = true,
                            None => {}
                        }
                        (0, vec![])
                    }
                    (0x00, 0x08) if data.first() == Some(&0x05) && data.len() >= 3 => {
                        ch.boot_flags = [data[1], data[2]];
                        (0, vec![])
                    }
                    (0x00, 0x08) => (0, vec![]),
                    (0x00, 0x09) => (
                        0,
                        vec![0x01, 0x05, ch.boot_flags[0], ch.boot_flags[1], 0, 0, 0],
                    ),
                    _ => (0xC1, vec![]),
                };
                drop(ch);
                sess.seq = sess.seq.wrapping_add(1);
                let msg = reply_msg(&req, cc, &out);
                let iv = rand_bytes(sess.seq ^ sid);
                send(wire::encode_v20(
                    wire::PAYLOAD_IPMI,
                    sess.console_sid,
                    sess.seq,
                    &msg,
                    Some((&sess.keys, iv)),
                ));
                if (netfn, cmd) == (0x06, 0x3C) {
                    active.remove(&sid);
                }
            }
            _ => {}
        }
    }
}

fn params(p: &Pending, bmc_sid: u32) -> RakpParams<'static> {
    RakpParams {
        suite: p.suite,
        console_sid: p.console_sid,
        bmc_sid,
        console_rand: p.console_rand,
        bmc_rand: p.bmc_rand,
        bmc_guid: GUID,
        role: p.role,
        username: USER,
    }
}

fn rand_bytes(seed: u32) -> [u8; 16] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::array::from_fn(|i| (seed.rotate_left(i as u32 * 3) ^ nanos.rotate_right(i as u32)) as u8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmitool_and_the_driver_agree_on_suite_17() {
    test_needs::need!(
        test_needs::Need::Program("ipmi_sim"),
        test_needs::Need::Program("ipmitool")
    );
    let bmc = Bmc::start(&[CipherSuite::Suite17]);

    // ipmitool, with its own RAKP-HMAC-SHA256 / HMAC-SHA256-128 / AES-CBC-128 code.
    let (ok, out) = bmc.ipmitool("17", &["power", "status"]);
    assert!(ok && out.contains("Chassis Power is off"), "{out}");
    let (ok, out) = bmc.ipmitool("17", &["power", "on"]);
    assert!(ok, "{out}");
    assert!(bmc.chassis.lock().expect("lock").power);

    // The driver, on the same BMC: negotiation picks 17 on its own.
    let hw = IpmiHardware::with_poll_interval(Duration::from_millis(100));
    let node = bmc.node(json!({}));
    let info = IpmiInfo::parse(&node).expect("info");
    let s = Session::open(&info.session).await.expect("session");
    assert_eq!(s.suite(), CipherSuite::Suite17);
    s.close().await;
    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::On)));
    hw.set_power_state(&node, PowerTarget::Off, Some(Duration::from_secs(5)))
        .await
        .expect("off");
    hw.set_boot_device(&node, BootDevice::Pxe, true)
        .await
        .expect("pxe");

    // ipmitool reads back what the driver set.
    let (ok, out) = bmc.ipmitool("17", &["power", "status"]);
    assert!(ok && out.contains("Chassis Power is off"), "{out}");
    let (ok, out) = bmc.ipmitool("17", &["chassis", "bootparam", "get", "5"]);
    assert!(ok && out.contains("Force PXE"), "{out}");
    assert!(
        out.contains("persistent") || out.contains("all future boots"),
        "{out}"
    );
    assert_eq!(
        hw.get_boot_device(&node).await,
        Ok((Some(BootDevice::Pxe), true))
    );

    let ch = bmc.chassis.lock().expect("lock");
    assert_eq!(
        ch.privilege_refusals, 0,
        "the driver set the session privilege"
    );
    assert!(ch.suites_used.iter().all(|s| *s == 17));
}

#[tokio::test]
async fn suite_17_wrong_password_and_suite_3_only_bmc() {
    test_needs::need!(
        test_needs::Need::Program("ipmi_sim"),
        test_needs::Need::Program("ipmitool")
    );
    let bmc = Bmc::start(&[CipherSuite::Suite17]);
    let hw = IpmiHardware::new();
    let err = hw
        .get_power_state(&bmc.node(json!({"ipmi_password": "nope-nope"})))
        .await
        .expect_err("wrong password");
    assert!(
        err.to_string().contains("wrong username or password"),
        "{err}"
    );
    assert!(!err.to_string().contains("nope-nope"));
    let err = hw
        .get_power_state(&bmc.node(json!({"ipmi_cipher_suite": 3})))
        .await
        .expect_err("suite 3 refused");
    assert!(err.to_string().contains("cipher suite 3"), "{err}");

    // A BMC with suite 3 only: the default falls back to it.
    let bmc3 = Bmc::start(&[CipherSuite::Suite3]);
    let node = bmc3.node(json!({}));
    hw.set_power_state(&node, PowerTarget::On, Some(Duration::from_secs(5)))
        .await
        .expect("on");
    assert_eq!(bmc3.chassis.lock().expect("lock").suites_used, [3]);
}
