//! The `ipmi` driver against OpenIPMI's `ipmi_sim` on 127.0.0.1 (a chassis_control script
//! written here records power and boot device in files), ipmitool as an independent
//! check, and cipher suite 17's cryptography against values Python and openssl compute.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use controller::drivers::ipmi::crypto::{CipherSuite, RakpParams, SessionKeys, aes_cbc_encrypt};
use controller::drivers::ipmi::session::Session;
use controller::drivers::ipmi::{IpmiHardware, IpmiInfo, wire};
use controller::drivers::{
    BootDevice, DriverError, ManagementInterface, PowerInterface, PowerState, PowerTarget,
};
use controller::model::Node;
use serde_json::json;
use uuid::Uuid;

const PASSWORD: &str = "Sup3r-s3cret!";

/// A process killed (by PID) and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

fn udp_listening(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    std::fs::read_to_string("/proc/net/udp")
        .map(|t| t.lines().any(|l| l.contains(&needle)))
        .unwrap_or(false)
}

/// One ipmi_sim with users admin/PASSWORD (admin) and op/oppass (operator).
struct Sim {
    _proc: Proc,
    port: u16,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sim {
    fn start() -> Sim {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("chassis");
        std::fs::create_dir(&state).expect("mkdir");
        let script = dir.path().join("chassis_control.sh");
        // ipmi_sim runs "PROG get power boot" / "PROG set NAME VALUE" through a shell.
        std::fs::write(
            &script,
            r#"#!/bin/sh
d=$1; shift
case "$1" in
get) shift; for n in "$@"; do case $n in
    power) echo "power:$(cat "$d/power" 2>/dev/null || echo 0)";;
    boot) echo "boot:$(cat "$d/boot" 2>/dev/null || echo default)";;
  esac; done;;
set) echo "$2 $3" >> "$d/calls"
  case "$2" in
    power) echo "$3" > "$d/power";;
    boot) echo "$3" > "$d/boot";;
    shutdown) echo 0 > "$d/power";;
  esac;;
esac
exit 0
"#,
        )
        .expect("write script");
        Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .expect("chmod");
        let port = free_udp_port();
        let conf = dir.path().join("lan.conf");
        std::fs::write(
            &conf,
            format!(
                "name \"test\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    \
                 priv_limit admin\n    allowed_auths_callback none md5 straight\n    \
                 allowed_auths_user none md5 straight\n    allowed_auths_operator none md5 straight\n    \
                 allowed_auths_admin none md5 straight\n    guid 1ab0c0de000040008000000000000042\n  \
                 endlan\n  chassis_control \"{} {}\"\n  \
                 user 2 true \"admin\" \"{PASSWORD}\" admin 10 none md5 straight\n  \
                 user 3 true \"op\" \"oppass\" operator 10 none md5 straight\n",
                script.display(),
                state.display()
            ),
        )
        .expect("write lan.conf");
        let emu = dir.path().join("bmc.emu");
        std::fs::write(
            &emu,
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             mc_enable 0x20\n",
        )
        .expect("write emu");
        let simstate = dir.path().join("simstate");
        std::fs::create_dir(&simstate).expect("mkdir");
        let child = Command::new("ipmi_sim")
            .args(["-n", "-c"])
            .arg(&conf)
            .arg("-f")
            .arg(&emu)
            .arg("-s")
            .arg(&simstate)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ipmi_sim (Debian package openipmi) must be installed");
        let proc = Proc(child);
        let t0 = Instant::now();
        while !udp_listening(port) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "ipmi_sim did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Sim {
            _proc: proc,
            port,
            state,
            _dir: dir,
        }
    }

    fn node(&self, extra: serde_json::Value) -> Node {
        let mut n = Node::new(Uuid::new_v4(), "ipmi", Utc::now());
        let mut info = json!({
            "ipmi_address": "127.0.0.1", "ipmi_port": self.port,
            "ipmi_username": "admin", "ipmi_password": PASSWORD, "ipmi_timeout": 1,
        });
        if let (Some(i), Some(e)) = (info.as_object_mut(), extra.as_object()) {
            i.extend(e.clone());
        }
        n.driver_info = info.as_object().cloned().unwrap_or_default();
        n
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.join(name))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    fn calls(&self) -> Vec<String> {
        self.file("calls").lines().map(str::to_owned).collect()
    }

    fn ipmitool(&self, args: &[&str]) -> String {
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "admin", "-P", PASSWORD])
            .args(args)
            .output()
            .expect("ipmitool (Debian package ipmitool) must be installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_and_boot_device_against_ipmi_sim() {
    test_needs::need!(
        test_needs::Need::Program("ipmi_sim"),
        test_needs::Need::Program("ipmitool")
    );
    let sim = Sim::start();
    let hw = IpmiHardware::with_poll_interval(Duration::from_millis(200));
    let node = sim.node(json!({}));
    hw.validate_power(&node);

    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::Off)));
    assert!(sim.ipmitool(&["power", "status"]).contains("is off"));

    hw.set_boot_device(&node, BootDevice::Pxe, false)
        .await
        .expect("bootdev pxe");
    assert_eq!(sim.file("boot"), "pxe");
    assert_eq!(
        hw.get_boot_device(&node).await.expect("get boot").0,
        Some(BootDevice::Pxe)
    );
    // ipmitool reads the same flags back.
    assert!(
        sim.ipmitool(&["chassis", "bootparam", "get", "5"])
            .contains("Force PXE")
    );

    hw.set_power_state(&node, PowerTarget::On, Some(Duration::from_secs(10)))
        .await
        .expect("power on");
    assert_eq!(sim.file("power"), "1");
    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::On)));
    assert!(sim.ipmitool(&["power", "status"]).contains("is on"));

    hw.set_boot_device(&node, BootDevice::Disk, true)
        .await
        .expect("bootdev disk");
    assert_eq!(sim.file("boot"), "default");
    assert_eq!(
        hw.get_boot_device(&node).await.expect("get boot").0,
        Some(BootDevice::Disk)
    );

    // Reboot is a hard off followed by on.
    let before = sim.calls().len();
    hw.set_power_state(&node, PowerTarget::Reboot, Some(Duration::from_secs(10)))
        .await
        .expect("reboot");
    assert_eq!(sim.calls()[before..], ["power 0", "power 1"]);
    assert_eq!(sim.file("power"), "1");

    hw.set_power_state(&node, PowerTarget::SoftOff, Some(Duration::from_secs(10)))
        .await
        .expect("soft off");
    assert_eq!(sim.calls().last().map(String::as_str), Some("shutdown 1"));
    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::Off)));

    // Already off: nothing is sent.
    let before = sim.calls().len();
    hw.set_power_state(&node, PowerTarget::Off, None)
        .await
        .expect("off");
    assert_eq!(sim.calls().len(), before);

    // The operator user may control power at OPERATOR privilege.
    let op = sim.node(json!({"ipmi_username": "op", "ipmi_password": "oppass",
                             "ipmi_priv_level": "OPERATOR"}));
    hw.set_power_state(&op, PowerTarget::On, Some(Duration::from_secs(10)))
        .await
        .expect("operator power on");
    assert_eq!(sim.file("power"), "1");
}

trait ValidateExt {
    fn validate_power(&self, node: &Node);
}

impl ValidateExt for IpmiHardware {
    fn validate_power(&self, node: &Node) {
        PowerInterface::validate(self, node).expect("power validate");
        ManagementInterface::validate(self, node).expect("management validate");
    }
}

#[tokio::test]
async fn cipher_suite_negotiation_against_ipmi_sim() {
    test_needs::need!(
        test_needs::Need::Program("ipmi_sim"),
        test_needs::Need::Program("ipmitool")
    );
    let sim = Sim::start();
    // Default: suite 17 is proposed, ipmi_sim refuses it, suite 3 is used.
    let info = IpmiInfo::parse(&sim.node(json!({}))).expect("info");
    let s = Session::open(&info.session).await.expect("session");
    assert_eq!(s.suite(), CipherSuite::Suite3);
    s.close().await;

    let info = IpmiInfo::parse(&sim.node(json!({"ipmi_cipher_suite": 3}))).expect("info");
    let s = Session::open(&info.session).await.expect("session");
    assert_eq!(s.suite(), CipherSuite::Suite3);
    s.close().await;

    let hw = IpmiHardware::new();
    let err = hw
        .get_power_state(&sim.node(json!({"ipmi_cipher_suite": 17})))
        .await
        .expect_err("ipmi_sim has no suite 17");
    let text = err.to_string();
    assert!(
        text.contains("invalid authentication algorithm") && text.contains("cipher suite 17"),
        "{text}"
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_fail_clearly() {
    test_needs::need!(
        test_needs::Need::Program("ipmi_sim"),
        test_needs::Need::Program("ipmitool")
    );
    let sim = Sim::start();
    let hw = IpmiHardware::new();
    let wrong = "Wr0ng-Pa55word";
    let err = hw
        .get_power_state(&sim.node(json!({"ipmi_password": wrong})))
        .await
        .expect_err("wrong password");
    let text = err.to_string();
    assert!(matches!(err, DriverError::Failed(_)), "{err:?}");
    assert!(text.contains("wrong username or password"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{}", sim.port)), "{text}");
    assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
    assert!(!format!("{err:?}").contains(wrong));

    let err = hw
        .set_power_state(
            &sim.node(json!({"ipmi_username": "nobody"})),
            PowerTarget::On,
            None,
        )
        .await
        .expect_err("unknown user");
    assert!(
        err.to_string().contains("wrong username or password"),
        "{err}"
    );
    assert!(!err.to_string().contains(PASSWORD));
    assert_eq!(sim.file("power"), "", "nothing may reach the chassis");
}

#[tokio::test]
async fn unreachable_bmc_fails_clearly_and_in_bounded_time() {
    test_needs::need!(
        test_needs::Need::Program("ipmi_sim"),
        test_needs::Need::Program("ipmitool")
    );
    let hw = IpmiHardware::new();
    let node = |port: u16| {
        let mut n = Node::new(Uuid::new_v4(), "ipmi", Utc::now());
        n.driver_info = json!({
            "ipmi_address": "127.0.0.1", "ipmi_port": port, "ipmi_username": "admin",
            "ipmi_password": PASSWORD, "ipmi_timeout": 1, "ipmi_retries": 1,
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        n
    };
    // Nobody on the port: the ICMP port unreachable turns into "connection refused".
    let t0 = Instant::now();
    let err = hw
        .get_power_state(&node(free_udp_port()))
        .await
        .expect_err("closed port");
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2));

    // A peer that swallows every datagram: a timeout after 2 attempts of 1 s.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let t0 = Instant::now();
    let err = hw.get_power_state(&node(port)).await.expect_err("silent");
    let elapsed = t0.elapsed();
    assert!(matches!(err, DriverError::Timeout { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("2 attempts") && text.contains("timed out"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD));
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
}

fn python(script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn openssl_aes_cbc(key: &[u8; 16], iv: &[u8; 16], padded: &[u8], dir: &Path) -> Vec<u8> {
    let input = dir.join("plain.bin");
    std::fs::write(&input, padded).expect("write");
    let out = Command::new("openssl")
        .args(["enc", "-aes-128-cbc", "-nopad", "-K"])
        .arg(hex::encode(key))
        .arg("-iv")
        .arg(hex::encode(iv))
        .arg("-in")
        .arg(&input)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    out.stdout
}

/// RAKP codes, SIK, K1/K2, a packet AuthCode and AES-CBC, for both suites, each computed
/// here and independently by Python's hmac/hashlib (and openssl for AES) from the IPMI
/// 2.0 definitions.
#[test]
fn suite_17_and_3_crypto_known_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (suite, hash, icv) in [
        (CipherSuite::Suite17, "sha256", 16),
        (CipherSuite::Suite3, "sha1", 12),
    ] {
        let console_rand: [u8; 16] = std::array::from_fn(|i| i as u8);
        let bmc_rand: [u8; 16] = std::array::from_fn(|i| 0xA0 + i as u8);
        let bmc_guid: [u8; 16] = std::array::from_fn(|i| 0x10 * (i as u8 % 16));
        let p = RakpParams {
            suite,
            console_sid: 0x0A0B_0C0D,
            bmc_sid: 0x1122_3344,
            console_rand,
            bmc_rand,
            bmc_guid,
            role: 0x14,
            username: b"admin",
        };
        let pw = b"password";
        let sik = p.sik(pw);
        let keys = SessionKeys::derive(suite, &sik);
        let packet = wire::encode_v20(0, 0x1122_3344, 5, b"\x20\x18\xc8", Some((&keys, [7; 16])));
        let ours = [
            hex::encode(p.rakp2_code(pw)),
            hex::encode(p.rakp3_code(pw)),
            hex::encode(&sik),
            hex::encode(p.rakp4_icv(&sik)),
            hex::encode(&keys.k1),
            hex::encode(keys.aes_key),
            hex::encode(&packet[packet.len() - icv..]),
        ]
        .join("\n");
        let signed = hex::encode(&packet[4..packet.len() - icv]);
        let theirs = python(&format!(
            r#"
import hmac, hashlib, struct
H = hashlib.{hash}
def mac(k, m): return hmac.new(k, m, H).digest()
rc = bytes(range(16)); rb = bytes(0xa0 + i for i in range(16))
guid = bytes(0x10 * (i % 16) for i in range(16))
sidc = struct.pack('<I', 0x0A0B0C0D); sidb = struct.pack('<I', 0x11223344)
pw = b'password'; role_name = bytes([0x14, 5]) + b'admin'
rakp2 = mac(pw, sidc + sidb + rc + rb + guid + role_name)
rakp3 = mac(pw, rb + sidc + role_name)
sik = mac(pw, rc + rb + role_name)
icv = mac(sik, rc + sidb + guid)[:{icv}]
k1 = mac(sik, b'\x01' * 20); k2 = mac(sik, b'\x02' * 20)
auth = mac(k1, bytes.fromhex('{signed}'))[:{icv}]
print('\n'.join(x.hex() for x in [rakp2, rakp3, sik, icv, k1, k2[:16], auth]))
"#
        ));
        assert_eq!(ours, theirs, "suite {}", suite.id());

        // The encrypted payload of the same packet, against openssl.
        let body = b"\x20\x18\xc8";
        let enc = aes_cbc_encrypt(&keys.aes_key, [7; 16], body);
        let mut padded = body.to_vec();
        padded.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        padded.push(12);
        let expect = openssl_aes_cbc(&keys.aes_key, &[7; 16], &padded, dir.path());
        assert_eq!(enc[16..], expect[..]);
        assert_eq!(enc[..16], [7; 16]);
        assert_eq!(
            packet[16..16 + 32],
            enc[..],
            "the packet carries IV + ciphertext"
        );
    }
}
