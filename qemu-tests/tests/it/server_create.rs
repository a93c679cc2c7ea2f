//! A machine requested the way a dashboard user does, in a rack: the operator enrolls,
//! inspects and provides one SeaBIOS machine (`qemu` type), and configures two flavors. A
//! user first runs `ingot server create --flavor too-big ...`: the machine is below it, so
//! the server ends in `error` with nothing deployed and the machine stays `available`
//! (`ingot server delete` removes it). Then, in the web console in headless chromium
//! (`tests/ui/request-server.mjs`, run inside the lab namespace, pinning the rack's server
//! key), the user picks the flavor `lab` and the image `debian-12` (the Debian 12 image of
//! `cargo xtask image debian`, imported with `ingot image import`), pastes an SSH public
//! key and cloud-config user data, and follows the server page to `active`; the machine is
//! deployed with `ingot://debian-12` and a config drive of the key and user data. The test
//! logs in over SSH with that key at the address the page shows (the controller's DHCP lease
//! of the machine's MAC) and reads the user-data marker; the console's Delete, confirmed in
//! its dialog, undeploys the machine back to `available`. Screenshots of the form and of
//! the active server go to `<target>/ui-screenshots/lab/`. One machine, to save CI time
//! (~4-6 min under TCG).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use qemu_tests::rack::{Rack, RackOptions, Timeline};
use qemu_tests::ssh::SshKey;
use qemu_tests::vm::{Firmware, VmSpec, tail};
use serde_json::Value;

/// Power-on (after the deploy's reboot) to an SSH login that shows the marker (TCG).
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Inspect, clean, deploy or undeploy of one machine (the agent boots each time it is not
/// already running).
const STEP_TIMEOUT: Duration = Duration::from_secs(900);
const OS_USER: &str = "debian";
const MARKER_FILE: &str = "/var/lib/ingot-marker";

const FLAVORS: &str = r#"
[[flavors]]
name = "lab"
cpus = 1
memory_mb = 512
local_gb = 1
cpu_arch = "x86_64"

[[flavors]]
name = "too-big"
cpus = 64
memory_mb = 1048576
"#;

/// Polls `GET /v1/ingot/servers/{id}` until `done` holds.
fn wait_server(
    rack: &Rack,
    id: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = rack
            .api_get(&format!("/v1/ingot/servers/{id}"))?
            .with_context(|| format!("GET /v1/ingot/servers/{id} failed"))?;
        if done(&s) {
            return Ok(s);
        }
        ensure!(Instant::now() < deadline, "server {id} stuck: {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Where the console's screenshots go.
fn shots_dir() -> std::path::PathBuf {
    qemu_tests::build::target_dir().join("ui-screenshots/lab")
}

/// Runs `tests/ui/request-server.mjs` (`ACTION` request or delete of server `lab-1`) in
/// headless chromium inside the lab namespace; returns its output.
fn console(rack: &Rack, action: &str, vars: &[(&str, &str)]) -> anyhow::Result<String> {
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let dir = qemu_tests::browser::playwright(&[&scripts])?;
    let shots = shots_dir();
    if action == "request" {
        // No screenshot of an earlier run can pass for this one's.
        let _ = std::fs::remove_dir_all(&shots);
    }
    std::fs::create_dir_all(&shots)?;
    let profile = rack.dir().join(format!("chromium-{action}"));
    let mut cmd = rack.lab_command("node");
    cmd.arg("request-server.mjs")
        .current_dir(&dir)
        .env("CHROMIUM", qemu_tests::browser::chromium()?)
        .env("USER_DATA_DIR", &profile)
        .env("SHOTS", &shots)
        .env("SERVER_NAME", "lab-1")
        .env("ACTION", action)
        .env("ACTIVE_TIMEOUT_MS", STEP_TIMEOUT.as_millis().to_string());
    rack.access().browser_env(&mut cmd);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .context("running node (Debian package nodejs)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    ensure!(
        out.status.success(),
        "the console test failed ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        !rack.access().leaks_password(&text),
        "the console test printed the password"
    );
    Ok(text)
}

/// The value of the script's `KEY value` line.
fn console_line(out: &str, key: &str) -> anyhow::Result<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .map(str::to_owned)
        .with_context(|| format!("the console printed no {key}: {out}"))
}

fn scenario(rack: &Rack, m: &qemu_tests::rack::Machine, t: &mut Timeline) -> anyhow::Result<()> {
    let info = m.qemu_driver_info();
    let node = t.phase("enroll", || {
        rack.enroll(&m.spec.name, "qemu", &info, &[], &m.spec.mac)
    })?;
    let node = node.as_str();
    t.phase("manage", || rack.manage(node))?;
    let inspected = t.phase("inspect", || rack.inspect(node))?;
    println!("inspected properties: {}", inspected["properties"]);
    t.phase("provide (clean)", || rack.provide(node))?;

    let key = SshKey::generate(rack.dir(), "ingot-server-create-test")?;
    let public = rack.dir().join("id_ed25519.pub");
    let marker = format!("INGOT-SERVER-MARKER-{}", uuid::Uuid::new_v4().simple());
    let user_data = rack.dir().join("user-data");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config\nwrite_files:\n  - path: {MARKER_FILE}\n    permissions: '0644'\n    content: |\n      {marker}\n"
        ),
    )?;
    let public = public.to_str().context("key path")?;
    let user_data = user_data.to_str().context("user data path")?;

    // Below the flavor: error with the reason, and the machine stays available.
    let big: Value = serde_json::from_str(&rack.ingot_cli(&[
        "server",
        "create",
        "--flavor",
        "too-big",
        "--image",
        "debian-12",
        "--key",
        public,
        "--json",
    ])?)?;
    let big_id = big["uuid"].as_str().context("server uuid")?.to_owned();
    let big = wait_server(rack, &big_id, Duration::from_secs(60), |s| {
        s["state"] != "allocating"
    })?;
    ensure!(big["state"] == "error", "too-big: {big}");
    ensure!(
        big["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("minimum properties cpus >= 64")),
        "too-big: {big}"
    );
    ensure!(
        rack.node(node)?["provision_state"] == "available",
        "the machine left available for a flavor it does not meet"
    );
    rack.ingot_cli(&["server", "delete", &big_id])?;

    // The flavor it meets, requested from the web console: claimed, deployed with the
    // image and the key, followed to active on the server page.
    let out = t.phase("console request to active", || {
        console(
            rack,
            "request",
            &[
                ("FLAVOR", "lab"),
                ("IMAGE", "debian-12"),
                ("SSH_KEY_FILE", public),
                ("USER_DATA_FILE", user_data),
            ],
        )
    })?;
    let addr = console_line(&out, "ADDRESS")?;
    let uuid = console_line(&out, "SERVER")?;
    let server = rack
        .api_get(&format!("/v1/ingot/servers/{uuid}"))?
        .context("GET the console's server")?;
    ensure!(server["state"] == "active", "{server}");
    ensure!(server["name"] == "lab-1", "{server}");
    ensure!(server["flavor"] == "lab", "{server}");
    ensure!(server["node_uuid"] == node, "{server}");
    ensure!(
        server["addresses"][0] == addr.as_str(),
        "the console shows {addr}: {server}"
    );
    let n = rack.node(node)?;
    ensure!(
        n["instance_info"]["image_source"] == "ingot://debian-12",
        "{}",
        n["instance_info"]
    );
    ensure!(
        n["instance_info"]["configdrive"] == "******",
        "the config drive is shown: {}",
        n["instance_info"]["configdrive"]
    );
    println!("server lab-1 is active on {addr}");
    t.phase("boot Debian to SSH", || {
        key.wait_for(
            rack.lab_name(),
            OS_USER,
            &addr,
            &format!("cat {MARKER_FILE}"),
            &marker,
            BOOT_TIMEOUT,
            &|| m.qemu_pid().is_some(),
        )
    })?;
    // The address the server shows is still the one leased to its MAC.
    let shown = rack
        .api_get("/v1/ingot/servers/lab-1")?
        .context("GET server")?;
    ensure!(shown["addresses"][0] == addr.as_str(), "{shown}");
    let log = rack.ingot_log();
    ensure!(
        !log.contains(&marker),
        "the user data is in the controller's log"
    );

    t.phase("console delete (undeploy, clean)", || {
        console(rack, "delete", &[])?;
        rack.wait_provision_state(node, "available", STEP_TIMEOUT)
    })?;
    for shot in ["lab-request-form.png", "lab-server-active.png"] {
        let (w, h) = qemu_tests::browser::png_file_size(&shots_dir().join(shot))?;
        ensure!((w, h) == (1280, 800), "{shot} is {w}x{h}");
    }
    ensure!(
        rack.api_get("/v1/ingot/servers/lab-1")?.is_none(),
        "the server outlived its undeploy"
    );
    rack.ensure_no_error(node)
}

#[test]
fn a_user_requests_a_machine_by_flavor_and_logs_in() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let debian = qemu_tests::build::debian_image()?;
    let mut rack = Rack::start(RackOptions {
        extra_config: FLAVORS.to_owned(),
        ..RackOptions::default()
    })?;
    let image = rack.import_image(&debian, "debian-12")?;
    println!(
        "image {} imported ({} MiB raw)",
        image.name,
        image.size >> 20
    );
    let mut spec = VmSpec::numbered(1, Firmware::Bios);
    // Debian with cloud-init (python) wants more than the agent's 512 MiB.
    spec.mem_mib = 768;
    let m = rack.add_machine(spec)?;
    let mut t = Timeline::new("SeaBIOS/qemu server");
    let mut failures = Vec::new();
    if let Err(e) = scenario(&rack, &m, &mut t) {
        failures.push(format!(
            "{e:#}\n--- {} serial ---\n{}",
            m.spec.name,
            tail(&m.serial(), 40)
        ));
    }
    rack.conclude(&[t], &failures)
}
