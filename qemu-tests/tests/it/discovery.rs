//! Zero-touch discovery on the lab network, with `ingot serve` inside the lab namespace
//! (DHCP, TFTP and the boot/agent listener on the bridge, discovery on).
//!
//! `ingot serve` runs with TLS on its provisioning listener (`qemu_tests::tls`): each agent
//! looks up over HTTPS with the CA its iPXE script pins.
//!
//! - [`three_unknown_machines_register_then_one_is_inspected`]: full DHCP. Three unknown
//!   machines are powered on together: SeaBIOS with the iPXE NIC ROM, OVMF with the iPXE EFI
//!   ROM, and OVMF with its own PXE (no option ROM: TFTP chainload of `snponly.efi`, as on
//!   real servers). Each has its own MAC, disk size and serial, memory, CPU count and SMBIOS
//!   identity, and each must appear as a node with all of them. Then an operator drives one
//!   of them through the API while its agent still heartbeats (fast track): `manage`, then
//!   `inspect`, back to `manageable` with its port and properties refreshed.
//! - [`proxy_dhcp_discovers_a_machine`]: a site DHCP server (dnsmasq in a second namespace)
//!   hands out the addresses, `ingot serve` runs in proxy mode, and an unknown OVMF machine
//!   with the firmware's own PXE (the port 4011 exchange) registers itself.
//!
//! Each prints power-on -> registered per firmware against the time budget (the lab recipe's
//! busybox stand-in + 3 s), the agent's own part (`/init` -> registered, from its console
//! log) and what the agent uses in RAM. Only a generous ceiling is asserted: TCG on a loaded
//! 2-core machine varies.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use qemu_tests::netns::{BRIDGE_ADDR, Lab};
use qemu_tests::site_dhcp::SiteDhcp;
use qemu_tests::vm::{Firmware, Vm, VmSpec, tail};
use serde_json::{Value, json};

/// The API's address inside the lab (HTTPS when the test's `[tls]` serves it, see
/// [`API_CA`]).
const API_ADDR: &str = "127.0.0.1:6385";

/// The CA of the running test's `ingot serve` when it has `[tls]` (its API is then HTTPS).
static API_CA: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

fn api_ca() -> Option<PathBuf> {
    API_CA.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `scheme://127.0.0.1:6385` of the running test's API.
fn api_base() -> String {
    let scheme = if api_ca().is_some() { "https" } else { "http" };
    format!("{scheme}://{API_ADDR}")
}
const API_VERSION: &str = "X-OpenStack-Ironic-API-Version: 1.115";
/// Longest a machine may take from power-on to registered before the test fails.
const REGISTER_CEILING: Duration = Duration::from_secs(240);
const GIB: u64 = 1 << 30;

/// Serializes the lab tests of this file across nextest's processes, so the boot figures of
/// one are not taken while the other boots machines too.
fn lab_lock() -> anyhow::Result<std::fs::File> {
    let path = std::env::temp_dir().join("ingot-qemu-tests-discovery.lock");
    let f = std::fs::File::create(&path).with_context(|| format!("creating {path:?}"))?;
    f.lock().context("locking the discovery lab")?;
    Ok(f)
}

/// Runs curl inside the lab (the API listens on the lab's loopback); returns the status and
/// the JSON body, if any.
fn curl(lab: &Lab, args: &[&str]) -> anyhow::Result<(u16, Option<Value>)> {
    let mut cmd = lab.command("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-H", API_VERSION]);
    if let Some(ca) = api_ca() {
        cmd.arg("--cacert").arg(ca);
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running curl in the lab")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code: u16 = code.trim().parse().unwrap_or(0);
    Ok((code, serde_json::from_str(body).ok()))
}

/// GETs an API path; `None` unless it answers 200.
fn api_get(lab: &Lab, path: &str) -> anyhow::Result<Option<Value>> {
    let (code, body) = curl(lab, &[&format!("{}{path}", api_base())])?;
    Ok(if code == 200 { body } else { None })
}

/// Sends a JSON body with `method`; returns the status and the answer.
fn api_send(
    lab: &Lab,
    method: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<(u16, Option<Value>)> {
    curl(
        lab,
        &[
            "-X",
            method,
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
            &format!("{}{path}", api_base()),
        ],
    )
}

/// Writes the config and starts `ingot serve` in the lab; `netboot` is the mode-specific
/// part of `[netboot]`. Returns the path of its log.
fn start_ingot(lab: &mut Lab, dir: &Path, netboot: &str) -> anyhow::Result<PathBuf> {
    let (kernel, initrd) = qemu_tests::build::agent_initramfs()?;
    let ingot = qemu_tests::build::ingot_binary()?;
    let config = dir.join("ingot.toml");
    // TLS on the provisioning listener, as in every lab: the agent looks up over HTTPS with
    // the CA the iPXE script pins (the plain listener refuses `/agent/v1/*`).
    // One [tls] serves the operator API too: curl then trusts the test's CA.
    let tls = if qemu_tests::tls::enabled_by_env() {
        let t = qemu_tests::tls::provisioning_tls(&ingot, &dir.join("tls"))?;
        *API_CA.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.join("tls/ca.pem"));
        t
    } else {
        *API_CA.lock().unwrap_or_else(|e| e.into_inner()) = None;
        String::new()
    };
    std::fs::write(
        &config,
        format!(
            "api_listen = \"127.0.0.1:6385\"\n\
             database = \"sqlite://{db}\"\n\
             state_dir = \"{state}\"\n\
             [netboot]\n\
             {netboot}\
             interfaces = [\"br0\"]\n\
             server_ip = \"{BRIDGE_ADDR}\"\n\
             http_listen = \"{BRIDGE_ADDR}:8080\"\n\
             agent_kernel = \"{kernel}\"\n\
             agent_initramfs = \"{initrd}\"\n\
             [discovery]\n\
             enabled = true\n\
             allowed_subnets = [\"172.31.250.0/24\"]\n\
             [deploy]\n\
             fast_track = true\n\
             {tls}",
            db = dir.join("ingot.db").display(),
            state = dir.display(),
            kernel = kernel.display(),
            initrd = initrd.display(),
        ),
    )?;
    let log_path = dir.join("ingot.log");
    let log = std::fs::File::create(&log_path)?;
    let server = lab
        .command(ingot.to_str().context("ingot path")?)
        .args(["serve", "--config"])
        .arg(&config)
        .env("INGOT_LOG", "info,controller::netboot::dhcp=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting ingot serve in the lab")?;
    lab.adopt(server);
    qemu_tests::wait::until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        "the API",
        || api_get(lab, "/v1"),
    )
    .with_context(|| format!("--- ingot serve log ---\n{}", read(&log_path)))?;
    Ok(log_path)
}

fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// One machine of a test, with what it should look like and when it registered.
struct Machine {
    label: &'static str,
    /// The lab recipe's busybox stand-in reached its marker at this many seconds.
    stand_in_secs: u64,
    vm: Vm,
    /// Power-on -> its port appeared in the API, and the node's UUID.
    registered: Option<(Duration, String)>,
}

impl Machine {
    fn start(
        lab: &mut Lab,
        dir: &Path,
        label: &'static str,
        stand_in_secs: u64,
        spec: VmSpec,
    ) -> anyhow::Result<Machine> {
        Ok(Machine {
            label,
            stand_in_secs,
            vm: Vm::start(lab, spec, dir)?,
            registered: None,
        })
    }

    fn node(&self) -> anyhow::Result<&str> {
        self.registered
            .as_ref()
            .map(|(_, n)| n.as_str())
            .with_context(|| format!("{} has not registered", self.label))
    }
}

/// Polls the port list until every machine's MAC has a port (or the ceiling passes).
fn wait_registered(lab: &Lab, machines: &mut [Machine], ingot_log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + REGISTER_CEILING;
    let failure = |machines: &[Machine], why: String| {
        let mut text = why;
        for m in machines.iter().filter(|m| m.registered.is_none()) {
            text.push_str(&format!(
                "\n--- serial of {} ({}) ---\n{}",
                m.label,
                m.vm.spec.name,
                tail(&m.vm.serial(), 30)
            ));
        }
        text.push_str(&format!("\n--- ingot ---\n{}", tail(&read(ingot_log), 40)));
        anyhow::anyhow!(text)
    };
    loop {
        for m in machines.iter_mut() {
            if m.registered.is_none() && !m.vm.running() {
                let why = format!("{} stopped before registering", m.label);
                return Err(failure(machines, why));
            }
        }
        let ports = api_get(lab, "/v1/ports/detail")?.unwrap_or(Value::Null);
        for p in ports["ports"].as_array().into_iter().flatten() {
            let address = p["address"].as_str().unwrap_or_default();
            for m in machines.iter_mut() {
                if m.registered.is_none() && m.vm.spec.mac.eq_ignore_ascii_case(address) {
                    let node = p["node_uuid"].as_str().unwrap_or_default().to_owned();
                    m.registered = Some((m.vm.started.elapsed(), node));
                }
            }
        }
        if machines.iter().all(|m| m.registered.is_some()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let why = format!("not every machine registered within {REGISTER_CEILING:?}");
            return Err(failure(machines, why));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Checks that a machine's node carries its identity and hardware; returns the node.
fn check_node(lab: &Lab, m: &Machine) -> anyhow::Result<Value> {
    let spec = &m.vm.spec;
    let uuid = m.node()?;
    let node = api_get(lab, &format!("/v1/nodes/{uuid}"))?.context("node")?;
    let ctx = format!("{} node {node}", m.label);
    ensure!(node["provision_state"] == "enroll", "{ctx}");
    ensure!(node["driver"] == "manual", "{ctx}");
    let props = &node["properties"];
    ensure!(props["cpus"] == spec.cpus, "cpus: {ctx}");
    let mem = props["memory_mb"].as_u64().unwrap_or(0);
    let want = u64::from(spec.mem_mib);
    ensure!(
        (want * 3 / 4..=want).contains(&mem),
        "memory_mb {mem} for a {want} MiB machine: {ctx}"
    );
    ensure!(
        props["local_gb"] == spec.disk_bytes / GIB - 1,
        "local_gb: {ctx}"
    );
    ensure!(props["cpu_arch"] == "x86_64", "cpu_arch: {ctx}");
    ensure!(
        props["system_uuid"] == spec.smbios_uuid.as_str(),
        "system_uuid: {ctx}"
    );

    let ports = api_get(lab, &format!("/v1/nodes/{uuid}/ports/detail"))?.context("ports")?;
    let ports = ports["ports"].as_array().cloned().unwrap_or_default();
    ensure!(
        ports.len() == 1,
        "{}: one port expected: {ports:?}",
        m.label
    );
    ensure!(ports[0]["address"] == spec.mac.as_str(), "{ports:?}");
    ensure!(ports[0]["pxe_enabled"] == true, "{ports:?}");

    let inv = api_get(lab, &format!("/v1/nodes/{uuid}/inventory"))?.context("inventory")?;
    let inv = &inv["inventory"];
    let ctx = format!("{} inventory {inv}", m.label);
    let disks = inv["disks"].as_array().cloned().unwrap_or_default();
    let disk = disks
        .iter()
        .find(|d| d["serial"] == spec.disk_serial.as_str())
        .with_context(|| format!("no disk with serial {}: {ctx}", spec.disk_serial))?;
    ensure!(disk["size"] == spec.disk_bytes, "disk size: {ctx}");
    let sv = &inv["system_vendor"];
    ensure!(sv["serial_number"] == spec.smbios_serial.as_str(), "{ctx}");
    ensure!(
        sv["uuid"].as_str().map(str::to_ascii_lowercase) == Some(spec.smbios_uuid.clone()),
        "{ctx}"
    );
    ensure!(sv["manufacturer"] == "Ingot-Lab", "{ctx}");
    ensure!(inv["cpu"]["count"] == spec.cpus, "{ctx}");
    let mode = match spec.firmware {
        Firmware::Bios => "bios",
        Firmware::Uefi | Firmware::UefiNativePxe => "uefi",
    };
    ensure!(inv["boot"]["current_boot_mode"] == mode, "boot mode: {ctx}");
    let node = api_get(lab, &format!("/v1/nodes/{uuid}"))?.context("node")?;
    ensure!(
        node["boot_mode"] == mode,
        "the node's boot_mode follows the agent: {}",
        node["boot_mode"]
    );
    ensure!(
        inv["pci_devices"]
            .as_array()
            .is_some_and(|p| p.iter().any(|d| d["kind"] == "nic")),
        "a NIC among the PCI devices: {ctx}"
    );
    let macs: Vec<&str> = inv["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["mac_address"].as_str())
        .collect();
    ensure!(macs.contains(&spec.mac.as_str()), "interfaces: {ctx}");
    if qemu_tests::tls::enabled_by_env() {
        let serial = m.vm.serial();
        ensure!(
            serial.contains(&format!("url=https://{BRIDGE_ADDR}:8443"))
                && serial.contains("pinned=true"),
            "{}: the agent did not talk HTTPS under the pinned CA:\n{}",
            m.label,
            tail(&serial, 20)
        );
    }
    Ok(node)
}

/// A number from the serial log: the digits after `key` on the first line with `marker`.
fn figure(serial: &str, marker: &str, key: &str) -> Option<f64> {
    let line = serial.lines().find(|l| l.contains(marker))?;
    let rest = &line[line.find(key)? + key.len()..];
    let num: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

/// What the agent's console says about itself: `/init` start and lookup (registered) in
/// seconds of uptime, and VmRSS of PID 1 and of the agent in KiB at the lookup.
#[derive(Debug, Default)]
struct AgentFigures {
    init_start: Option<f64>,
    registered: Option<f64>,
    pid1_rss_kib: Option<f64>,
    agent_rss_kib: Option<f64>,
}

impl AgentFigures {
    fn from_serial(serial: &str) -> Self {
        // The agent's own marker, else the kernel's timestamp of the same moment.
        let init_start = figure(serial, "PID 1 start at uptime", "uptime ")
            .or_else(|| figure(serial, "Run /init as init process", "["));
        Self {
            init_start,
            registered: figure(serial, "lookup done", "uptime_ms=").map(|ms| ms / 1000.0),
            pid1_rss_kib: figure(serial, "lookup done", "pid1_rss_kib="),
            agent_rss_kib: figure(serial, "lookup done", "self_rss_kib="),
        }
    }

    fn agent_part(&self) -> Option<f64> {
        Some(self.registered? - self.init_start?)
    }
}

fn opt(v: Option<f64>, unit: &str, scale: f64, prec: usize) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{:.prec$} {unit}", v / scale))
}

/// Prints the figures of every machine; returns whether every target was met.
fn report(title: &str, machines: &[Machine]) -> bool {
    let mut all_met = true;
    println!("\n{title}");
    println!(
        "  {:<30} {:>13}  {:>22}  {:>15}  {:>9}  {:>9}",
        "firmware",
        "on->registered",
        "target (stand-in+3 s)",
        "/init->registered",
        "RSS PID1",
        "RSS agent"
    );
    for m in machines {
        let Some((took, _)) = &m.registered else {
            continue;
        };
        let target = m.stand_in_secs + 3;
        let met = took.as_secs_f64() <= target as f64;
        all_met &= met;
        let a = AgentFigures::from_serial(&m.vm.serial());
        let agent_met = a.agent_part().map(|s| if s < 2.0 { "" } else { " (>2 s)" });
        println!(
            "  {:<30} {:>11.1} s  {:>6} s {:<14}  {:>10}{:<7}  {:>9}  {:>9}",
            m.label,
            took.as_secs_f64(),
            target,
            if met { "met" } else { "MISSED" },
            opt(a.agent_part(), "s", 1.0, 2),
            agent_met.unwrap_or(""),
            opt(a.pid1_rss_kib, "MiB", 1024.0, 1),
            opt(a.agent_rss_kib, "MiB", 1024.0, 1),
        );
    }
    println!(
        "  time budget: {}",
        if all_met {
            "every target met"
        } else {
            "target MISSED (asserted only: registered within the ceiling)"
        }
    );
    all_met
}

/// Waits until the node is `state` with no target; returns it.
fn wait_state(lab: &Lab, uuid: &str, state: &str, timeout: Duration) -> anyhow::Result<Value> {
    qemu_tests::wait::until(timeout, Duration::from_millis(200), state, || {
        let node = api_get(lab, &format!("/v1/nodes/{uuid}"))?.context("node")?;
        let s = node["provision_state"].as_str().unwrap_or_default();
        if s.ends_with("failed") {
            bail!("node {uuid} is {s}: {}", node["last_error"]);
        }
        Ok((s == state && node["target_provision_state"].is_null()).then_some(node))
    })
}

fn provision(lab: &Lab, uuid: &str, target: &str) -> anyhow::Result<()> {
    let (code, body) = api_send(
        lab,
        "PUT",
        &format!("/v1/nodes/{uuid}/states/provision"),
        &json!({ "target": target }),
    )?;
    ensure!(code == 202, "{target}: HTTP {code} {body:?}");
    Ok(())
}

/// The operator's part on a discovered node whose agent still heartbeats: `manage`, then
/// `inspect`, back to `manageable` with the port and properties the operator removed
/// restored from the fresh inventory, and no second boot of the machine (fast track).
fn manage_and_inspect(lab: &Lab, m: &Machine, ingot_log: &Path) -> anyhow::Result<()> {
    let uuid = m.node()?;
    let spec = &m.vm.spec;
    let (code, v) = curl(lab, &[&format!("{}/v1/nodes/{uuid}/validate", api_base())])?;
    ensure!(code == 200, "validate: HTTP {code} {v:?}");
    let v = v.unwrap_or(Value::Null);
    ensure!(v["power"]["result"] == true, "validate: {v}");
    ensure!(v["inspect"]["result"] == true, "validate: {v}");

    // What inspection must bring back: the port and two properties.
    let ports = api_get(lab, &format!("/v1/nodes/{uuid}/ports"))?.context("ports")?;
    let port = ports["ports"][0]["uuid"].as_str().context("port uuid")?;
    let (code, _) = curl(
        lab,
        &["-X", "DELETE", &format!("{}/v1/ports/{port}", api_base())],
    )?;
    ensure!(code == 204, "deleting the port: HTTP {code}");
    let (code, body) = api_send(
        lab,
        "PATCH",
        &format!("/v1/nodes/{uuid}"),
        &json!([
            {"op": "remove", "path": "/properties/cpus"},
            {"op": "remove", "path": "/properties/memory_mb"},
        ]),
    )?;
    ensure!(code == 200, "patch: HTTP {code} {body:?}");

    let t = Instant::now();
    provision(lab, uuid, "manage")?;
    wait_state(lab, uuid, "manageable", Duration::from_secs(30))?;
    let managed = t.elapsed();
    let t = Instant::now();
    provision(lab, uuid, "inspect")?;
    let node = wait_state(lab, uuid, "manageable", Duration::from_secs(120)).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n--- serial ---\n{}\n--- ingot ---\n{}",
            tail(&m.vm.serial(), 20),
            tail(&read(ingot_log), 30)
        )
    })?;
    let inspected = t.elapsed();
    println!(
        "  {}: manage {:.2} s, inspect (fast track) {:.2} s",
        m.label,
        managed.as_secs_f64(),
        inspected.as_secs_f64()
    );
    let ctx = format!("after inspect: {node}");
    ensure!(node["last_error"].is_null(), "{ctx}");
    ensure!(node["inspection_started_at"].is_string(), "{ctx}");
    ensure!(node["inspection_finished_at"].is_string(), "{ctx}");
    ensure!(node["properties"]["cpus"] == spec.cpus, "{ctx}");
    let mem = node["properties"]["memory_mb"].as_u64().unwrap_or(0);
    ensure!(mem > 0 && mem <= u64::from(spec.mem_mib), "{ctx}");
    let ports = api_get(lab, &format!("/v1/nodes/{uuid}/ports/detail"))?.context("ports")?;
    ensure!(
        ports["ports"]
            .as_array()
            .is_some_and(|p| p.len() == 1 && p[0]["address"] == spec.mac.as_str()),
        "port not restored by inspection: {ports}"
    );
    let serial = m.vm.serial();
    ensure!(
        serial.contains("running command") && serial.contains("inspect"),
        "the agent ran no inspect command:\n{}",
        tail(&serial, 20)
    );
    ensure!(
        serial.matches("PID 1 start at uptime").count() <= 1
            && serial.matches("Run /init as init process").count() == 1,
        "the machine booted again: inspection was not fast-tracked"
    );
    Ok(())
}

#[test]
fn three_unknown_machines_register_then_one_is_inspected() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let _lock = lab_lock()?;
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::new()?;
    let ingot_log = start_ingot(
        &mut lab,
        dir.path(),
        "mode = \"full\"\n\
         pool_start = \"172.31.250.100\"\n\
         pool_end = \"172.31.250.199\"\n\
         netmask = \"255.255.255.0\"\n",
    )?;

    let bios = VmSpec {
        disk_bytes: 2 * GIB,
        ..VmSpec::numbered(1, Firmware::Bios)
    };
    let uefi = VmSpec {
        mem_mib: 768,
        cpus: 2,
        disk_bytes: 3 * GIB,
        ..VmSpec::numbered(2, Firmware::Uefi)
    };
    let native = VmSpec {
        mem_mib: 640,
        disk_bytes: 5 * GIB,
        ..VmSpec::numbered(3, Firmware::UefiNativePxe)
    };
    let mut machines = vec![
        Machine::start(&mut lab, dir.path(), "SeaBIOS + iPXE ROM (e1000)", 23, bios)?,
        Machine::start(
            &mut lab,
            dir.path(),
            "OVMF + iPXE ROM (virtio-net)",
            28,
            uefi,
        )?,
        Machine::start(
            &mut lab,
            dir.path(),
            "OVMF native PXE -> snponly.efi",
            28,
            native,
        )?,
    ];
    wait_registered(&lab, &mut machines, &ingot_log)?;
    report(
        "three unknown machines powered on together, full DHCP:",
        &machines,
    );
    let mut nodes = Vec::new();
    for m in &machines {
        check_node(&lab, m)?;
        nodes.push(m.node()?.to_owned());
    }
    nodes.sort();
    nodes.dedup();
    ensure!(nodes.len() == 3, "three distinct nodes expected: {nodes:?}");
    let log = read(&ingot_log);
    ensure!(
        log.contains("tftp transfer") && log.contains("snponly.efi"),
        "the native PXE machine did not fetch snponly.efi over TFTP:\n{}",
        tail(&log, 40)
    );

    manage_and_inspect(&lab, &machines[0], &ingot_log)?;
    Ok(())
}

#[test]
fn proxy_dhcp_discovers_a_machine() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let _lock = lab_lock()?;
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::new()?;
    let site = SiteDhcp::start(&lab, dir.path())?;
    let ingot_log = start_ingot(&mut lab, dir.path(), "mode = \"proxy\"\n")?;

    let spec = VmSpec {
        disk_bytes: 4 * GIB,
        ..VmSpec::numbered(4, Firmware::UefiNativePxe)
    };
    let mac = spec.mac.clone();
    let mut machines = vec![Machine::start(
        &mut lab,
        dir.path(),
        "OVMF native PXE, proxyDHCP",
        28,
        spec,
    )?];
    wait_registered(&lab, &mut machines, &ingot_log).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n--- site dnsmasq ---\n{}",
            tail(&read(&site.log), 30)
        )
    })?;
    report(
        "one unknown machine, site DHCP + ingot proxyDHCP:",
        &machines,
    );
    check_node(&lab, &machines[0])?;

    let lease = site
        .lease_of(&mac)
        .with_context(|| format!("the site server leased nothing to {mac}: {}", site.leases()))?;
    ensure!(
        lease.starts_with("172.31.250.")
            && lease
                .split('.')
                .nth(3)
                .and_then(|o| o.parse::<u8>().ok())
                .is_some_and(|o| (50..=99).contains(&o)),
        "lease {lease} is not from the site range"
    );
    let log = read(&ingot_log);
    ensure!(
        log.contains(":4011"),
        "no proxyDHCP reply on port 4011 in the ingot log:\n{}",
        tail(&log, 40)
    );
    ensure!(
        log.contains("snponly.efi"),
        "no TFTP chainload of snponly.efi:\n{}",
        tail(&log, 40)
    );
    ensure!(
        !log.contains("yiaddr=172."),
        "ingot handed out an address in proxy mode:\n{}",
        tail(&log, 40)
    );
    Ok(())
}
