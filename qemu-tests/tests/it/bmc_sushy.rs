//! The `redfish` driver against the real sushy-tools emulator (its fake systems backend),
//! over HTTPS with a test CA and bcrypt basic auth, on 127.0.0.1.
//!
//! sushy-tools is installed from PyPI into a venv under the target directory the first
//! time (`qemu_tests::bmc::redfish::sushy_venv`, pinned version); later runs reuse it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use controller::drivers::redfish::RedfishHardware;
use controller::drivers::{
    BootDevice, BootMode, DriverError, ManagementInterface, PowerInterface, PowerState, PowerTarget,
};
use controller::model::Node;
use qemu_tests::bmc::redfish::{make_certs, sushy_venv};
use serde_json::{Value, json};
use uuid::Uuid;

const PASSWORD: &str = "Sushy-s3cret";
const SYSTEM: &str = "1ab0c0de-0000-4000-8000-000000000077";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Sushy {
    _proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sushy {
    /// Starts sushy-emulator with fake systems of the given initial power states.
    fn start(power_states: &[&str]) -> Sushy {
        let bin = sushy_venv().expect("sushy-tools venv");
        let dir = tempfile::tempdir().expect("tempdir");
        make_certs(dir.path(), "127.0.0.1").expect("certificates");
        let hash = Command::new(bin.join("python"))
            .args([
                "-c",
                &format!(
                    "import bcrypt; print(bcrypt.hashpw(b'{PASSWORD}', bcrypt.gensalt(rounds=4)).decode())"
                ),
            ])
            .output()
            .expect("bcrypt");
        let hash = String::from_utf8_lossy(&hash.stdout).trim().to_owned();
        std::fs::write(dir.path().join("htpasswd"), format!("admin:{hash}\n")).expect("htpasswd");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let systems: Vec<String> = power_states
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let uuid = if i == 0 {
                    SYSTEM.to_owned()
                } else {
                    format!("1ab0c0de-0000-4000-8000-0000000001{i:02}")
                };
                format!(
                    "{{'uuid': '{uuid}', 'name': 'vm{i}', 'power_state': '{p}', \
                     'external_notifier': False, 'nics': []}}"
                )
            })
            .collect();
        let d = dir.path().display();
        let conf = dir.path().join("sushy.conf");
        std::fs::write(
            &conf,
            format!(
                "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = {port}\n\
                 SUSHY_EMULATOR_SSL_CERT = '{d}/srv.pem'\nSUSHY_EMULATOR_SSL_KEY = '{d}/srv.key'\n\
                 SUSHY_EMULATOR_AUTH_FILE = '{d}/htpasswd'\nSUSHY_EMULATOR_FAKE_DRIVER = True\n\
                 SUSHY_EMULATOR_STATE_DIR = '{d}/state'\n\
                 SUSHY_EMULATOR_FAKE_SYSTEMS = [{}]\n",
                systems.join(", ")
            ),
        )
        .expect("conf");
        let log = std::fs::File::create(dir.path().join("sushy.log")).expect("log");
        let child = Command::new(bin.join("sushy-emulator"))
            .arg("--config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("sushy-emulator");
        let proc = Proc(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "sushy-emulator did not listen: {}",
                std::fs::read_to_string(dir.path().join("sushy.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Sushy {
            _proc: proc,
            port,
            dir,
        }
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    fn node(&self, extra: Value) -> Node {
        let mut n = Node::new(Uuid::new_v4(), "redfish", Utc::now());
        let mut info = json!({
            "redfish_address": format!("https://127.0.0.1:{}", self.port),
            "redfish_username": "admin", "redfish_password": PASSWORD,
            "redfish_verify_ca": self.ca(),
        });
        if let (Some(i), Some(e)) = (info.as_object_mut(), extra.as_object()) {
            i.extend(e.clone());
        }
        n.driver_info = info.as_object().cloned().unwrap_or_default();
        n
    }
}

fn hw() -> std::sync::Arc<RedfishHardware> {
    RedfishHardware::with_poll_interval(Duration::from_millis(300))
}

/// sushy's fake systems apply power changes 1-11 s after the request.
const POWER_WAIT: Option<Duration> = Some(Duration::from_secs(15));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_device_and_power_on_over_https_with_a_ca_file() {
    test_needs::need!(test_needs::Need::Program("python3"));
    let sushy = Sushy::start(&["Off"]);
    let hw = hw();
    let node = sushy.node(json!({}));
    ManagementInterface::validate(hw.as_ref(), &node).expect("validate");

    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::Off)));
    hw.set_boot_device(&node, BootDevice::Pxe, false)
        .await
        .expect("pxe");
    // sushy stores every override as Continuous.
    assert_eq!(
        hw.get_boot_device(&node).await,
        Ok((Some(BootDevice::Pxe), true))
    );
    assert_eq!(hw.get_boot_mode(&node).await, Ok(Some(BootMode::Uefi)));
    hw.set_boot_mode(&node, BootMode::Bios)
        .await
        .expect("legacy");
    assert_eq!(hw.get_boot_mode(&node).await, Ok(Some(BootMode::Bios)));
    // A UEFI node switches the mode back along with the device.
    hw.set_boot_device(&node, BootDevice::Disk, true)
        .await
        .expect("disk");
    assert_eq!(
        hw.get_boot_device(&node).await,
        Ok((Some(BootDevice::Disk), true))
    );
    assert_eq!(hw.get_boot_mode(&node).await, Ok(Some(BootMode::Uefi)));

    let t0 = Instant::now();
    hw.set_power_state(&node, PowerTarget::On, POWER_WAIT)
        .await
        .expect("power on");
    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::On)));
    eprintln!("sushy power on took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_power_off_and_reboot_through_sushy() {
    test_needs::need!(test_needs::Need::Program("python3"));
    let sushy = Sushy::start(&["On"]);
    let hw = hw();
    let node = sushy.node(json!({"redfish_system_id": format!("/redfish/v1/Systems/{SYSTEM}")}));
    hw.set_power_state(&node, PowerTarget::SoftOff, POWER_WAIT)
        .await
        .expect("soft off");
    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::Off)));
    // Rebooting an off machine powers it on.
    hw.set_power_state(&node, PowerTarget::Reboot, POWER_WAIT)
        .await
        .expect("reboot");
    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::On)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_checks_credentials_and_system_choice() {
    test_needs::need!(test_needs::Need::Program("python3"));
    let sushy = Sushy::start(&["Off", "On"]);
    let hw = hw();
    let one = json!({"redfish_system_id": SYSTEM});

    // Verification against the system store fails: the test CA is unknown there.
    let err = hw
        .get_power_state(
            &sushy.node(json!({"redfish_verify_ca": true, "redfish_system_id": SYSTEM})),
        )
        .await
        .expect_err("unknown CA");
    let text = err.to_string();
    assert!(
        text.contains("cannot reach Redfish BMC") && text.contains("certificate"),
        "{text}"
    );

    // Opting out per node works, and so does the CA file.
    let off = sushy.node(json!({"redfish_verify_ca": "false", "redfish_system_id": SYSTEM}));
    assert_eq!(hw.get_power_state(&off).await, Ok(Some(PowerState::Off)));
    assert_eq!(
        hw.get_power_state(&sushy.node(one.clone())).await,
        Ok(Some(PowerState::Off))
    );

    // Two systems and no redfish_system_id.
    let err = hw
        .get_power_state(&sushy.node(json!({})))
        .await
        .expect_err("two systems");
    assert!(err.to_string().contains("has 2 systems"), "{err}");

    // Wrong password, for basic and auto (sushy has no session service).
    let wrong = "wrong-Pa55";
    for auth in ["basic", "auto"] {
        let node = sushy.node(
            json!({"redfish_system_id": SYSTEM, "redfish_password": wrong,
                                     "redfish_auth_type": auth}),
        );
        let err = hw.get_power_state(&node).await.expect_err("401");
        let text = err.to_string();
        assert!(matches!(err, DriverError::Failed(_)));
        assert!(
            text.contains("wrong username or password"),
            "{auth}: {text}"
        );
        assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
    }

    // Nothing listening on the port any more.
    let port = sushy.port;
    drop(sushy);
    let node = {
        let mut n = Node::new(Uuid::new_v4(), "redfish", Utc::now());
        n.driver_info = json!({"redfish_address": format!("https://127.0.0.1:{port}"),
            "redfish_username": "admin", "redfish_password": PASSWORD,
            "redfish_verify_ca": false, "redfish_system_id": SYSTEM})
        .as_object()
        .cloned()
        .unwrap_or_default();
        n
    };
    let err = hw.get_power_state(&node).await.expect_err("gone");
    assert!(
        err.to_string().contains("cannot reach Redfish BMC"),
        "{err}"
    );
    assert!(!err.to_string().contains(PASSWORD));
}
