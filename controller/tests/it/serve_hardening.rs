//! `ingot serve` against an attacker on the loopback and an operator's mistakes: the `qemu`
//! hardware type is absent unless enabled and, enabled, cannot reach a file outside its
//! `[qemu] allowed_dir`; a second `ingot serve` on the same SQLite database exits at once
//! and changes no node; the state dir and database are private; a netboot failure exits
//! non-zero with the cause.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{call, free_port, wait_state};
use serde_json::{Value, json};

const INGOT: &str = env!("CARGO_BIN_EXE_ingot");

fn serve_command(state: &Path, port: u16) -> Command {
    let mut c = Command::new(INGOT);
    c.args(["serve", "--api-listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(state)
        .env_remove("INGOT_CONFIG")
        .env_remove("INGOT_DATABASE")
        .env_remove("INGOT_ENABLED_HARDWARE_TYPES")
        .env("INGOT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(mut cmd: Command, port: u16) -> Server {
        let mut child = cmd.stderr(Stdio::inherit()).spawn().expect("spawn ingot");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = child.try_wait().expect("wait") {
                panic!("ingot serve exited with {st} before listening");
            }
            assert!(Instant::now() < deadline, "ingot serve did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command that must end by itself within `secs`; kills it otherwise.
fn run_to_end(mut cmd: Command, secs: u64) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after {secs} s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

async fn create_node(c: &reqwest::Client, url: &str, body: Value) -> String {
    let (s, n) = call(
        c,
        reqwest::Method::POST,
        format!("{url}/v1/nodes"),
        Some(body),
    )
    .await;
    assert_eq!(s, 201, "{n}");
    n["uuid"].as_str().expect("uuid").to_owned()
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn driver_names(c: &reqwest::Client, url: &str) -> Vec<String> {
    let (s, d) = call(c, reqwest::Method::GET, format!("{url}/v1/drivers"), None).await;
    assert_eq!(s, 200, "{d}");
    d["drivers"]
        .as_array()
        .expect("drivers")
        .iter()
        .filter_map(|d| d["name"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until the node's power request ended with a `last_error` and returns it.
async fn power_on_error(c: &reqwest::Client, url: &str, node: &str) -> String {
    let (s, b) = call(
        c,
        reqwest::Method::PUT,
        format!("{url}/v1/nodes/{node}/states/power"),
        Some(json!({"target": "power on"})),
    )
    .await;
    if s == 400 {
        return b.to_string();
    }
    assert_eq!(s, 202, "{b}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, n) = call(
            c,
            reqwest::Method::GET,
            format!("{url}/v1/nodes/{node}"),
            None,
        )
        .await;
        if n["target_power_state"].is_null()
            && let Some(e) = n["last_error"].as_str()
        {
            return e.to_owned();
        }
        assert!(Instant::now() < deadline, "no power result: {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn qemu_type_is_absent_by_default() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = client();

    // Default: not offered, and a node of it is refused as Ironic refuses an unknown driver.
    let port = free_port();
    let server = Server::start(serve_command(&tmp.path().join("s1"), port), port);
    let names = driver_names(&c, &server.url).await;
    assert!(!names.iter().any(|n| n == "qemu"), "{names:?}");
    assert!(names.iter().any(|n| n == "ipmi"), "{names:?}");
    let (s, b) = call(
        &c,
        reqwest::Method::POST,
        format!("{}/v1/nodes", server.url),
        Some(json!({"driver": "qemu", "driver_info": {"qemu_qmp_socket": "/tmp/x.sock"}})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("No valid host was found"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn qemu_type_enabled_cannot_leave_its_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = client();
    // Enabled (from the environment) with its directory.
    let vms = tmp.path().join("vms");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(vms.join("vm1")).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::os::unix::fs::symlink(&outside, vms.join("link")).expect("symlink");
    let pwned = outside.join("pwned");
    let evil = json!(["/bin/sh", "-c", format!("touch {}", pwned.display())]).to_string();
    std::fs::write(outside.join("evil.json"), &evil).expect("write");
    std::fs::write(outside.join("qemu.json"), &evil).expect("write");
    std::fs::write(outside.join("victim"), "precious").expect("write");
    std::fs::write(outside.join("bootdev"), "precious").expect("write");

    let port = free_port();
    let mut cmd = serve_command(&tmp.path().join("s2"), port);
    cmd.env("INGOT_ENABLED_HARDWARE_TYPES", "qemu,fake-hardware")
        .env("INGOT_QEMU__ALLOWED_DIR", &vms);
    let server = Server::start(cmd, port);
    let url = server.url.clone();
    let names = driver_names(&c, &url).await;
    assert!(names.iter().any(|n| n == "qemu"), "{names:?}");

    let inside_sock = vms.join("vm1/qmp.sock");
    let attacks = [
        (
            json!({"qemu_qmp_socket": inside_sock, "qemu_boot_file": outside.join("victim"),
                   "qemu_command_file": outside.join("evil.json")}),
            "is not accepted",
        ),
        (
            json!({"qemu_qmp_socket": outside.join("qmp.sock")}),
            "outside [qemu] allowed_dir",
        ),
        (
            json!({"qemu_qmp_socket": vms.join("link/qmp.sock")}),
            "outside [qemu] allowed_dir",
        ),
        (
            json!({"qemu_qmp_socket": vms.join("vm1/../../outside/qmp.sock")}),
            ". or ..",
        ),
    ];
    for (info, want) in attacks {
        let node = create_node(&c, &url, json!({"driver": "qemu", "driver_info": info})).await;
        let (s, b) = call(
            &c,
            reqwest::Method::PUT,
            format!("{url}/v1/nodes/{node}/management/boot_device"),
            Some(json!({"boot_device": "pxe"})),
        )
        .await;
        assert_eq!(s, 400, "{info}: {b}");
        assert!(b.to_string().contains(want), "{info}: {b}");
        let err = power_on_error(&c, &url, &node).await;
        assert!(err.contains(want), "{info}: {err}");
    }
    assert_eq!(
        std::fs::read_to_string(outside.join("victim")).expect("victim"),
        "precious"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("bootdev")).expect("bootdev"),
        "precious"
    );
    assert!(!pwned.exists(), "the attacker's argv ran");
    assert!(!vms.join("vm1/bootdev").exists());

    // Inside its directory the type works: the boot device is kept in the VM's directory.
    let node = create_node(
        &c,
        &url,
        json!({"driver": "qemu", "driver_info": {"qemu_qmp_socket": inside_sock}}),
    )
    .await;
    let (s, b) = call(
        &c,
        reqwest::Method::PUT,
        format!("{url}/v1/nodes/{node}/management/boot_device"),
        Some(json!({"boot_device": "pxe"})),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(
        std::fs::read_to_string(vms.join("vm1/bootdev")).expect("bootdev"),
        "pxe\n"
    );
    // Off, with no qemu.json of the operator: nothing to run.
    let err = power_on_error(&c, &url, &node).await;
    assert!(err.contains("no qemu.json"), "{err}");
    assert!(!pwned.exists());

    // The operator's qemu.json (as qemu-tests' racks write it): the VM powers on and off.
    write_vm_argv(&vms.join("vm1"));
    let _vm = KillVm(vms.join("vm1"));
    for (target, want) in [("power on", "power on"), ("power off", "power off")] {
        let (s, b) = call(
            &c,
            reqwest::Method::PUT,
            format!("{url}/v1/nodes/{node}/states/power"),
            Some(json!({"target": target})),
        )
        .await;
        assert_eq!(s, 202, "{b}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, n) = call(
                &c,
                reqwest::Method::GET,
                format!("{url}/v1/nodes/{node}"),
                None,
            )
            .await;
            if n["target_power_state"].is_null() && n["power_state"] == want {
                break;
            }
            assert!(Instant::now() < deadline, "{target}: {n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Exactly the enabled types are offered.
    assert_eq!(driver_names(&c, &url).await, vec!["fake-hardware", "qemu"]);
}

/// Kills the VM of a directory (by its pid file, if that process is ours) when dropped,
/// whatever a failed assertion left running.
struct KillVm(std::path::PathBuf);

impl Drop for KillVm {
    fn drop(&mut self) {
        let Some(pid) = std::fs::read_to_string(self.0.join("qemu.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        else {
            return;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let needle = self.0.as_os_str().as_encoded_bytes();
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// A small TCG VM's argv in `dir/qemu.json` (the boot devices the driver orders: `nic0`,
/// `disk0`); QEMU's pid file is in `dir` too.
fn write_vm_argv(dir: &Path) {
    let p = |n: &str| dir.join(n).display().to_string();
    std::fs::write(dir.join("disk.img"), vec![0u8; 1 << 20]).expect("disk");
    let argv = json!({"argv": [
        "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc,graphics=off", "-m", "64",
        "-nodefaults", "-no-user-config", "-display", "none",
        "-qmp", format!("unix:{},server=on,wait=off", p("qmp.sock")),
        "-pidfile", p("qemu.pid"),
        "-drive", format!("file={},format=raw,if=none,id=d0", p("disk.img")),
        "-device", "virtio-blk-pci,drive=d0,id=disk0,bootindex=1",
        "-netdev", "hubport,id=n0,hubid=0",
        "-device", "e1000,netdev=n0,id=nic0,bootindex=2"
    ]});
    std::fs::write(dir.join("qemu.json"), argv.to_string()).expect("argv");
}

#[test]
fn qemu_without_its_directory_is_a_start_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = serve_command(tmp.path(), free_port());
    cmd.args(["--enabled-hardware-types", "qemu,ipmi"]);
    let out = run_to_end(cmd, 20);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[qemu] allowed_dir is not set"), "{err}");
    assert!(
        !tmp.path().join("ingot.db").exists(),
        "touched the database"
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_on_the_same_database_exits_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let c = client();
    let port = free_port();
    let first = Server::start(serve_command(&state, port), port);
    let url = first.url.clone();

    // A node the first instance is working on: cleaning waits for an agent.
    let node = create_node(&c, &url, json!({"driver": "manual", "name": "busy"})).await;
    for (verb, state) in [("manage", "manageable"), ("provide", "clean wait")] {
        let (s, b) = call(
            &c,
            reqwest::Method::PUT,
            format!("{url}/v1/nodes/{node}/states/provision"),
            Some(json!({"target": verb})),
        )
        .await;
        assert_eq!(s, 202, "{b}");
        wait_state(&c, &url, &node, state).await;
    }

    let started = Instant::now();
    let out = run_to_end(serve_command(&state, free_port()), 20);
    assert!(!out.status.success(), "the second instance ran");
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    let db = state.join("ingot.db");
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    assert!(err.contains("SQLite"), "{err}");

    // What the second one's recovery did within 4 s before: fail the node.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = wait_state(&c, &url, &node, "clean wait").await;
    assert!(n["last_error"].is_null(), "{n}");
}

#[test]
fn state_dir_and_database_are_private() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let port = free_port();
    let server = Server::start(serve_command(&state, port), port);
    // Dir 0700, database and its WAL files 0600 (SQLite gives them the database's mode).
    assert_eq!(mode(&state), 0o700);
    for f in ["ingot.db", "ingot.db-wal", "ingot.db-shm"] {
        assert_eq!(mode(&state.join(f)), 0o600, "{f}");
    }
    drop(server);
}

#[test]
fn a_netboot_service_that_cannot_start_exits_non_zero_with_the_cause() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("ingot.toml");
    std::fs::write(
        &config,
        "[netboot]\nmode = \"full\"\ninterfaces = [\"nosuch0\"]\nserver_ip = \"127.0.0.1\"\n\
         pool_start = \"127.0.0.100\"\npool_end = \"127.0.0.199\"\nrouter_advertisements = false\n\
         tftp = false\n",
    )
    .expect("config");
    let mut cmd = serve_command(&tmp.path().join("state"), free_port());
    cmd.arg("--config").arg(&config);
    let out = run_to_end(cmd, 20);
    assert!(!out.status.success(), "exit status {}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nosuch0"), "{err}");
}
