//! The web console (`/ui`) in a real browser: Debian's headless `chromium` driven by
//! Playwright (`playwright-core`, pinned in `tests/ui/package-lock.json`, installed by
//! `npm ci` under a lock into `<target>/ui-tests`) against a real `ingot serve` with the
//! `fake-hardware` and `manual` types, SQLite, `http_basic` with an admin and a reader, and
//! discovery with fast track on a loopback provisioning listener, a flavor and a stored
//! image (`/v1/ingot/servers`). This test plays the agent
//! of a machine that discovers itself (lookup, heartbeats, a wipe, a deploy with progress
//! reports, through the real agent API); `tests/ui/console.test.mjs` drives the page.
//! Screenshots go to `<target>/ui-screenshots/`; this test checks they are PNGs of the
//! expected size.
//!
//! `ui_first_paint_10k` (ignored; `cargo nextest run -p controller --test it ui_browser::
//! --run-ignored only --no-capture`) prints the time to first paint of the rack with 10,000
//! nodes.

use crate::support;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use proto::protocol::{
    AgentState, Command, EventReport, HeartbeatRequest, HeartbeatResponse, LookupRequest,
    LookupResponse, PATH_EVENTS, PATH_HEARTBEAT, PATH_LOOKUP, Report, TOKEN_HEADER,
};
use proto::{AgentEvent, Disk, Interface, Inventory, PROTOCOL_VERSION, Phase, ProgressEvent};
use support::{Serve, dummy_agent_files, free_port, htpasswd};
use uuid::Uuid;

const ADMIN: (&str, &str) = ("admin", "Console-admin-pass-4411");
const READER: (&str, &str) = ("viewer", "Console-reader-pass-9912");
const MAC: &str = "52:54:00:c0:ff:ee";
const DISK_SERIAL: &str = "DSK-UI-7781";

/// The target directory this test was built into (`<target>/tmp`'s parent).
fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(Path::to_path_buf).unwrap_or(tmp)
}

/// The pinned Playwright with this test's scripts (`tests/ui/*.mjs`).
fn playwright() -> PathBuf {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    qemu_tests::browser::playwright(&[&scripts]).expect("Playwright")
}

fn chromium() -> &'static str {
    qemu_tests::browser::chromium().expect("chromium")
}

/// `ingot image import` of a small raw disk into the state dir, for the flavor form's image
/// list (an MBR boot signature is all a raw import checks; the fake deploy downloads
/// nothing).
fn import_image(dir: &Path, name: &str) {
    let raw = dir.join("disk.raw");
    let mut disk = vec![0u8; 1 << 20];
    disk[510] = 0x55;
    disk[511] = 0xAA;
    std::fs::write(&raw, disk).expect("raw disk");
    let out = Process::new(support::INGOT)
        .args(["image", "import", "--name", name, "--state-dir"])
        .arg(dir)
        .arg(&raw)
        .output()
        .expect("ingot image import");
    assert!(
        out.status.success(),
        "ingot image import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rack's config: http_basic (admin + reader), discovery with fast track on a loopback
/// provisioning listener, agent heartbeats answered within a second.
fn config(dir: &Path, api_port: u16, boot_port: u16) -> String {
    let (kernel, initramfs) = dummy_agent_files(dir);
    import_image(dir, "debian-12");
    htpasswd(&dir.join("htpasswd"), &[ADMIN, READER]);
    format!(
        r#"api_listen = "127.0.0.1:{api_port}"
database = "sqlite://{db}"
state_dir = "{dir}"
auth_strategy = "http_basic"
http_basic_auth_user_file = "{dir}/htpasswd"
enabled_hardware_types = ["fake-hardware", "manual", "ipmi", "redfish"]

[auth.users.{reader}]
role = "reader"

[netboot]
mode = "off"
http_listen = "127.0.0.1:{boot_port}"
agent_kernel = "{kernel}"
agent_initramfs = "{initramfs}"

[discovery]
enabled = true
heartbeat_timeout_secs = 1

[deploy]
fast_track = true

[[flavors]]
name = "ui-small"
resource_class = "baremetal"
cpus = 2
memory_mb = 2048
local_gb = 10
cpu_arch = "x86_64"
"#,
        db = dir.join("ingot.db").display(),
        dir = dir.display(),
        reader = READER.0,
        kernel = kernel.display(),
        initramfs = initramfs.display(),
    )
}

fn lookup_request() -> LookupRequest {
    let mut inventory = Inventory {
        interfaces: vec![Interface {
            name: "eth0".into(),
            mac_address: MAC.into(),
            has_carrier: true,
            speed_mbps: Some(10_000),
            lldp: Some(proto::LldpNeighbor {
                chassis_id: "00:1c:73:aa:bb:cc".into(),
                chassis_id_subtype: 4,
                port_id: "Ethernet12".into(),
                port_id_subtype: 5,
                ttl: 120,
                system_name: Some("leaf-07".into()),
                port_vlan_id: Some(100),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    inventory.cpu.count = 16;
    inventory.cpu.architecture = "x86_64".into();
    inventory.cpu.model_name = "Console Test CPU".into();
    inventory.memory.total = 64 * 1024 * 1024 * 1024;
    inventory.disks = vec![Disk {
        name: "/dev/nvme0n1".into(),
        model: Some("Console NVMe".into()),
        size: 960 * 1000 * 1000 * 1000,
        serial: Some(DISK_SERIAL.into()),
        ..Default::default()
    }];
    inventory.system_vendor.manufacturer = Some("Ingot Labs".into());
    inventory.system_vendor.product_name = Some("Console 1U".into());
    inventory.system_vendor.serial_number = Some("UI-DISC-1".into());
    LookupRequest {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "console-test".into(),
        macs: vec![MAC.into()],
        boot_mac: Some(MAC.into()),
        system_uuid: Some("5c0f5c0f-0000-4000-8000-00000000c0de".into()),
        system_serial: Some("UI-DISC-1".into()),
        inventory,
        steps: Vec::new(),
    }
}

fn wiped() -> Report {
    let report = proto::WipeReport {
        ok: true,
        disks: vec![proto::WipeDiskResult {
            device: "/dev/nvme0n1".into(),
            mode: proto::WipeMode::Metadata,
            ok: true,
            method: Some("signatures".into()),
            cleared: vec![],
            skipped: None,
            error: None,
            elapsed_ms: 5,
            id: proto::DiskId {
                serial: Some(DISK_SERIAL.into()),
                ..Default::default()
            },
        }],
    };
    Report::Succeeded {
        inventory: None,
        detail: serde_json::to_value(report).ok(),
    }
}

/// The agent of the discovered machine, over the real agent API: looks up (enrolling the
/// machine), heartbeats, wipes in under a second, and writes an image in ~10 s with a
/// progress report every half second; looks up again whenever its session ends.
async fn agent(boot: String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let req = lookup_request();
    let mut session: Option<(Uuid, String)> = None;
    loop {
        let Some((node, token)) = session.clone() else {
            let resp = http
                .post(format!("{boot}{PATH_LOOKUP}"))
                .json(&req)
                .send()
                .await;
            match resp {
                Ok(r) if r.status() == 200 => {
                    if let Ok(LookupResponse {
                        node_uuid,
                        token: Some(token),
                        ..
                    }) = r.json().await
                    {
                        session = Some((node_uuid, token));
                        continue;
                    }
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let hb = http
            .post(format!("{boot}{PATH_HEARTBEAT}"))
            .header(TOKEN_HEADER, &token)
            .json(&HeartbeatRequest {
                node_uuid: node,
                state: AgentState::Idle,
            })
            .send()
            .await;
        let hb: HeartbeatResponse = match hb {
            Ok(r) if r.status() == 200 => match r.json().await {
                Ok(hb) => hb,
                Err(_) => continue,
            },
            _ => {
                session = None;
                continue;
            }
        };
        let report = |report: Report| {
            let http = http.clone();
            let boot = boot.clone();
            let token = token.clone();
            async move {
                let _ = http
                    .post(format!("{boot}{PATH_EVENTS}"))
                    .header(TOKEN_HEADER, &token)
                    .json(&EventReport {
                        node_uuid: node,
                        command_id: hb.command_id,
                        report,
                    })
                    .send()
                    .await;
            }
        };
        match hb.command {
            Command::Wait { .. } => {}
            Command::Wipe { .. } => {
                tokio::time::sleep(Duration::from_millis(800)).await;
                report(wiped()).await;
            }
            Command::Deploy(_) => {
                const TOTAL: u64 = 2 * 1024 * 1024 * 1024;
                const STEPS: u64 = 20;
                for step in 1..=STEPS {
                    let event = ProgressEvent {
                        phase: Phase::Stream,
                        bytes_fetched: TOTAL * step / STEPS,
                        bytes_written: TOTAL * step / STEPS * 3,
                        bytes_total: Some(TOTAL),
                        rate_bps: 400_000_000,
                        elapsed_ms: 500 * step,
                    };
                    report(Report::Event {
                        event: AgentEvent::Progress(event),
                    })
                    .await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                report(Report::Succeeded {
                    inventory: None,
                    detail: None,
                })
                .await;
            }
            Command::Inspect => {
                report(Report::Succeeded {
                    inventory: Some(Box::new(req.inventory.clone())),
                    detail: None,
                })
                .await;
            }
            Command::Reboot | Command::PowerOff => {
                report(Report::Succeeded {
                    inventory: None,
                    detail: None,
                })
                .await;
                session = None;
            }
            Command::EnrollBmc { .. } | Command::RunStep { .. } => {
                report(Report::Failed {
                    error: proto::ErrorReport {
                        phase: None,
                        message: "this browser test's machine has no BMC and offers no steps"
                            .into(),
                        causes: vec![],
                    },
                })
                .await;
            }
        }
    }
}

/// Runs a script of `ui-tests` with node; each stdout line goes to `on_line`.
fn run_node(
    dir: &Path,
    script: &str,
    envs: &[(&str, String)],
    mut on_line: impl FnMut(&str),
) -> bool {
    let user_data = tempfile::tempdir().expect("chromium profile");
    let mut child = Process::new("node")
        .arg(dir.join(script))
        .current_dir(dir)
        .env("CHROMIUM", chromium())
        .env("USER_DATA_DIR", user_data.path())
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (Debian package nodejs)");
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{line}");
        on_line(&line);
    }
    child.wait().expect("node").success()
}

#[test]
fn console_in_a_real_browser() {
    test_needs::need!(
        test_needs::Need::Program("chromium"),
        test_needs::Need::Program("npm")
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let modules = playwright();
    let dir = tempfile::tempdir().expect("tempdir");
    let (api_port, boot_port) = (free_port(), free_port());
    let serve = Serve::start(
        dir.path(),
        &config(dir.path(), api_port, boot_port),
        api_port,
    );
    let shots = target_dir().join("ui-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    for f in ["rack.png", "node.png", "rack-390.png"] {
        let _ = std::fs::remove_file(shots.join(f));
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let boot = format!("http://127.0.0.1:{boot_port}");
    let mut agent_started = false;
    let started = Instant::now();
    let ok = run_node(
        &modules,
        "console.test.mjs",
        &[
            ("INGOT_URL", serve.url.clone()),
            ("SHOTS", shots.display().to_string()),
            ("ADMIN_USER", ADMIN.0.into()),
            ("ADMIN_PASSWORD", ADMIN.1.into()),
            ("READER_USER", READER.0.into()),
            ("READER_PASSWORD", READER.1.into()),
        ],
        |line| {
            if line == "STEP discover" && !agent_started {
                agent_started = true;
                rt.spawn(agent(boot.clone()));
            }
        },
    );
    if !ok {
        let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
        panic!(
            "the console test failed after {:?} (screenshots in {}); ingot serve's log:\n{log}",
            started.elapsed(),
            shots.display()
        );
    }
    assert!(
        agent_started,
        "the script never asked for the discovered machine"
    );
    for (file, size) in [
        ("rack.png", (1280, 800)),
        ("node.png", (1280, 800)),
        ("rack-390.png", (390, 844)),
    ] {
        let bytes = std::fs::read(shots.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            qemu_tests::browser::png_size(&bytes),
            Some(size),
            "{file} is not a {size:?} PNG"
        );
    }
    // An open event stream does not hold up a clean shutdown.
    let stream = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/v1/ingot/events", serve.url))
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .send()
            .await
            .expect("events")
    });
    assert_eq!(stream.status(), 200);
    serve.stop(Duration::from_secs(10));
    drop(stream);
}

/// Time to first paint of the rack with 10,000 nodes (written straight into the store, each
/// with a port and an inventory), three page loads as the browser measured them, and the
/// rack's searches and filter timed from the page. A benchmark: prints, asserts nothing
/// about the figure.
#[test]
#[ignore = "benchmark: cargo nextest run -p controller --test it ui_browser:: --run-ignored only --no-capture"]
fn ui_first_paint_10k() {
    test_needs::need!(
        test_needs::Need::Program("chromium"),
        test_needs::Need::Program("npm")
    );
    const NODES: usize = 10_000;
    let modules = playwright();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("ingot.db").display());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let t0 = Instant::now();
    rt.block_on(async {
        let store = controller::store::SqlStore::connect(&db)
            .await
            .expect("store");
        let states = [
            "available",
            "active",
            "manageable",
            "enroll",
            "deploy failed",
        ];
        for i in 0..NODES {
            let mut node =
                controller::model::Node::new(Uuid::new_v4(), "fake-hardware", chrono::Utc::now());
            node.name = Some(format!("rack-{:05}", i));
            node.resource_class = Some("baremetal".into());
            node.provision_state = states[i % states.len()].into();
            node.power_state = Some("power on".into());
            controller::store::Store::create_node(&store, &node)
                .await
                .expect("create");
            // A port and an inventory each, so searches by MAC and serial scan real rows.
            let port = controller::model::Port::new(
                Uuid::new_v4(),
                node.uuid,
                format!("52:54:01:{:02x}:{:02x}:{:02x}", i >> 16, (i >> 8) & 0xff, i & 0xff),
                chrono::Utc::now(),
            );
            controller::store::Store::create_port(&store, &port)
                .await
                .expect("port");
            let inventory = serde_json::json!({"inventory": {
                "disks": [{"name": "/dev/sda", "size": 960_000_000_000u64, "serial": format!("SN{i:08}")},
                          {"name": "/dev/sdb", "size": 960_000_000_000u64, "serial": format!("SM{i:08}")}],
                "system_vendor": {"manufacturer": "Rack", "serial_number": format!("SYS{i:06}")},
                "cpu": {"count": 64, "architecture": "x86_64"}}, "plugin_data": {}});
            controller::store::Store::put_inventory(&store, node.uuid, &inventory)
                .await
                .expect("inventory");
        }
        store.close().await;
    });
    println!(
        "{NODES} nodes (with a port and an inventory each) written in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let api_port = free_port();
    let config = format!(
        "api_listen = \"127.0.0.1:{api_port}\"\ndatabase = \"{db}\"\nstate_dir = \"{}\"\n",
        dir.path().display()
    );
    let serve = Serve::start(dir.path(), &config, api_port);
    let mut figures = Vec::new();
    let ok = run_node(
        &modules,
        "first-paint.mjs",
        &[("INGOT_URL", serve.url.clone())],
        |line| {
            if let Some(v) = line.strip_prefix("FIRST_PAINT_MS ") {
                figures.push(v.to_owned());
            }
        },
    );
    assert!(ok, "first-paint.mjs failed");
    println!("rack first paint with {NODES} nodes (ms, per load): {figures:?}");
    drop(serve);
}
