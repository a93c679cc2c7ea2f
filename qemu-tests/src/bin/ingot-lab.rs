//! `ingot-lab`: the virtual rack a newcomer runs (`cargo xtask lab`, as root).
//!
//! One lab network namespace with `ingot serve` in it (full DHCP, TFTP, iPXE, discovery),
//! two machines nobody registered, each behind a real BMC simulator: a SeaBIOS machine
//! behind `ipmi_sim` and an OVMF machine behind sushy-tools (Redfish over HTTPS). The
//! operator powers them on at their BMCs; they PXE-boot the agent and register themselves.
//! The IPMI machine's BMC is also wired to it in-band (QEMU's KCS interface): with
//! `[discovery] enroll_bmc`, its agent creates a BMC user with a random password through
//! `/dev/ipmi0` and the node is managed with it, nobody typing an address or a password.
//! The Redfish machine gets its BMC credentials from the operator with the real `baremetal`
//! CLI, and is managed. Then each is cleaned (`provide`), deployed with a disk image and a
//! config drive, boots that image from its disk, and is released (undeploy: cleaning
//! again) and powered off. Every phase is timed; a table closes the run.
//!
//! The API is HTTPS with http_basic, as on a real network; the run ends with `ingot node
//! list` through it. `--keep` leaves the rack running afterwards (until Enter is pressed)
//! and prints how to use the `baremetal` CLI inside it (the settings are in the rack's
//! `openrc`, 0600; the password is never printed) and the web console's URL on the host's
//! loopback, forwarded into the lab (`qemu_tests::forward`), with its user.

use std::io::BufRead as _;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use qemu_tests::marker_disk::{self, BIOS_MARKER, UEFI_MARKER};
use qemu_tests::metrics_check;
use qemu_tests::power::Machine;
use qemu_tests::rack::bmc::BmcMachine;
use qemu_tests::rack::steps::{self, driver_info_args};
use qemu_tests::rack::{Rack, RackOptions, Timeline};
use qemu_tests::vm::{Firmware, VmSpec, tail};
use serde_json::json;

const IMAGE_MIB: u64 = 64;
const USER_DATA: &str = "#cloud-config\nruncmd:\n  - echo INGOT-LAB-USER-DATA\n";

/// One machine of the demo behind its BMC, and what its deployed image prints.
struct Rackmate<'a> {
    label: String,
    bmc: &'a BmcMachine,
    machine: &'a Machine,
    marker: &'static str,
}

fn main() -> ExitCode {
    let keep = std::env::args().skip(1).any(|a| a == "--keep");
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("usage: ingot-lab [--keep]   (as root; see the README)");
        return ExitCode::SUCCESS;
    }
    match run(keep) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingot-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(keep: bool) -> anyhow::Result<()> {
    qemu_tests::require_lab()?;
    println!("building the agent ramdisk and the controller (first run: a few minutes)");
    let mut rack = Rack::start(RackOptions {
        discovery: true,
        enroll_bmc: true,
        keep_dir: keep,
        ..RackOptions::default()
    })?;
    println!(
        "ingot serve runs in network namespace {} (API {} inside it, http_basic; client \
         settings in {})",
        rack.lab_name(),
        qemu_tests::rack::API,
        rack.access().openrc.display()
    );
    let disk = marker_disk::build(&rack.dir().join("image"), IMAGE_MIB)?;
    let url = rack.publish(&disk.zst, "marker-disk.img.zst")?;
    let ipmi = rack.add_ipmi_machine_in_band(VmSpec::numbered(1, Firmware::Bios))?;
    let redfish = rack.add_redfish_machine(VmSpec::numbered(2, Firmware::Uefi))?;
    let mates = [(&ipmi, BIOS_MARKER), (&redfish, UEFI_MARKER)].map(|(bmc, marker)| Rackmate {
        label: bmc.label(),
        bmc,
        machine: bmc.machine(),
        marker,
    });

    // The operator presses "power on" at each BMC; nobody told ingot about the machines.
    power_on_at_bmc(&rack, &ipmi, &redfish)?;
    let started = Instant::now();
    let rack = &rack;
    let (checksum, url) = (&disk.zst_sha256, &url);
    let results = steps::side_by_side(&mates, |m| lifecycle(rack, m, started, url, checksum));
    let mut timelines = Vec::new();
    let mut failures = Vec::new();
    for (r, m) in results.into_iter().zip(&mates) {
        match r {
            Ok(t) => timelines.push(t),
            Err(e) => failures.push(format!(
                "{e:#}\n--- {} serial ---\n{}",
                m.label,
                tail(&m.machine.serial(), 30)
            )),
        }
    }
    rack.conclude(&timelines, &failures)?;
    check_metrics(rack, mates.len())?;
    println!(
        "\n$ ingot node list\n{}",
        rack.ingot_cli(&["node", "list"])?
    );
    if keep {
        let ns = rack.lab_name();
        println!(
            "The rack stays up. In another shell (as root):\n  \
             . {openrc}\n  \
             ip netns exec {ns} {venv}/bin/baremetal node list\n  \
             ip netns exec {ns} {ingot} node list\n\
             Working directory: {dir}",
            openrc = rack.access().openrc.display(),
            venv = qemu_tests::rack::clients_venv()?.display(),
            ingot = qemu_tests::build::ingot_binary()?.display(),
            dir = rack.dir().display(),
        );
        print_console(rack)?;
        println!("Press Enter to tear it down.");
        let _ = std::io::stdin().lock().lines().next();
    }
    Ok(())
}

/// Forwards the host's 127.0.0.1:6385 (another port when taken) to the rack's API and
/// prints the web console's URL and login (the password stays in `openrc`: never printed).
fn print_console(rack: &Rack) -> anyhow::Result<()> {
    let api: std::net::SocketAddr = qemu_tests::rack::API
        .trim_start_matches("https://")
        .parse()
        .context("the rack's API address")?;
    let host = qemu_tests::forward::forward_into_lab(rack.lab_name(), api, api)?;
    println!(
        "Web console: https://{host}/ui/ (forwarded into the lab)\n  \
         user {user}; password: sed -n 's/.*OS_PASSWORD=\\([^ ]*\\).*/\\1/p' {openrc}\n  \
         the certificate is the lab's own CA: trust {ca} in the browser, or accept the warning",
        user = qemu_tests::rack::USER,
        openrc = rack.access().openrc.display(),
        ca = rack.access().ca.display(),
    );
    Ok(())
}

/// Scrapes `/metrics` (as the operator) and checks that every family shows the run.
fn check_metrics(rack: &Rack, machines: usize) -> anyhow::Result<()> {
    let text = rack
        .api_get_text("/metrics")?
        .context("GET /metrics failed")?;
    let samples = metrics_check::parse(&text).map_err(anyhow::Error::msg)?;
    let missing = metrics_check::lab_shortfalls(&samples, machines as f64);
    let sum = |name: &str, with: &[(&str, &str)]| metrics_check::sum(&samples, name, with);
    println!(
        "/metrics after the run: {} samples; agents wrote {:.1} MiB of images; {} IPMI and {} \
         Redfish calls; DHCP {} offers, {} acks, pool {} of {} free",
        samples.len(),
        sum("ingot_agent_bytes_written_total", &[("phase", "stream")]) / 1048576.0,
        sum(
            "ingot_bmc_call_duration_seconds_count",
            &[("driver", "ipmitool")]
        ),
        sum(
            "ingot_bmc_call_duration_seconds_count",
            &[("driver", "redfish")]
        ),
        sum("ingot_dhcp_packets_total", &[("kind", "offer")]),
        sum("ingot_dhcp_packets_total", &[("kind", "ack")]),
        sum("ingot_dhcp_pool_addresses", &[("state", "free")]),
        sum("ingot_dhcp_pool_addresses", &[("state", "total")]),
    );
    if !missing.is_empty() {
        bail!(
            "/metrics does not show the run:\n  {}",
            missing.join("\n  ")
        );
    }
    Ok(())
}

/// Sets the boot device to PXE and powers each machine on through its own BMC, as an
/// operator at the BMC's interface would (ipmitool and curl inside the lab namespace).
fn power_on_at_bmc(rack: &Rack, ipmi: &BmcMachine, redfish: &BmcMachine) -> anyhow::Result<()> {
    let (BmcMachine::Ipmi(ipmi), BmcMachine::Redfish(redfish)) = (ipmi, redfish) else {
        bail!("want an IPMI and a Redfish machine");
    };
    let info = ipmi.driver_info();
    let user = info["ipmi_username"].as_str().unwrap_or_default();
    let pass = info["ipmi_password"].as_str().unwrap_or_default();
    for args in [&["chassis", "bootdev", "pxe"][..], &["power", "on"][..]] {
        let out = rack
            .lab_command("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", ipmi.address()])
            .args(["-U", user, "-P", pass])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running ipmitool in the lab")?;
        ensure!(
            out.status.success(),
            "ipmitool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let info = redfish.driver_info();
    let system = format!(
        "{}{}",
        info["redfish_address"].as_str().unwrap_or_default(),
        info["redfish_system_id"].as_str().unwrap_or_default()
    );
    let auth = format!(
        "{}:{}",
        info["redfish_username"].as_str().unwrap_or_default(),
        info["redfish_password"].as_str().unwrap_or_default()
    );
    let calls = [
        (
            "PATCH",
            system.clone(),
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}}),
        ),
        (
            "POST",
            format!("{system}/Actions/ComputerSystem.Reset"),
            json!({"ResetType": "On"}),
        ),
    ];
    for (method, url, body) in calls {
        let out = rack
            .lab_command("curl")
            .args(["-sS", "-f", "--cacert"])
            .arg(redfish.ca_path())
            .args([
                "-u",
                &auth,
                "-X",
                method,
                "-H",
                "Content-Type: application/json",
            ])
            .args(["-d", &body.to_string(), &url])
            .stdin(Stdio::null())
            .output()
            .context("running curl in the lab")?;
        ensure!(
            out.status.success(),
            "Redfish {method} {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("both machines powered on at their BMCs (boot device: network)");
    Ok(())
}

/// Discovery, then the operator's lifecycle for one machine.
fn lifecycle(
    rack: &Rack,
    m: &Rackmate<'_>,
    powered_on: Instant,
    url: &str,
    checksum: &str,
) -> anyhow::Result<Timeline> {
    let mut t = Timeline::new(&m.label);
    let mac = &m.machine.spec().mac;
    let node = t.phase("power-on to discovered", || {
        let found = qemu_tests::wait::until(
            Duration::from_secs(300),
            Duration::from_millis(500),
            &format!("{mac} to register"),
            || {
                let ports = rack.api_get(&format!("/v1/ports/detail?address={mac}"))?;
                Ok(ports
                    .and_then(|p| p["ports"].get(0).cloned())
                    .and_then(|p| p["node_uuid"].as_str().map(str::to_owned)))
            },
        )?;
        println!(
            "  [{}] discovered as node {found} {:.1} s after power-on",
            m.label,
            powered_on.elapsed().as_secs_f64()
        );
        Ok(found)
    })?;
    let node = node.as_str();
    let shown = rack.node(node)?;
    println!("  [{}] properties: {}", m.label, shown["properties"]);
    match m.bmc {
        BmcMachine::Ipmi(bmc) => {
            let managed = t.phase("BMC enrolled in-band + manage", || {
                rack.wait_provision_state(node, "manageable", Duration::from_secs(120))
            })?;
            let info = &managed["driver_info"];
            ensure!(
                managed["driver"] == "ipmi"
                    && info["ipmi_address"] == bmc.address()
                    && info["ipmi_username"] == "ingot",
                "the node is not managed through its in-band BMC user: {managed}"
            );
            ensure!(
                info["ipmi_password"] == "******",
                "the API shows the BMC password"
            );
            println!(
                "  [{}] BMC {} enrolled in-band as user \"ingot\" (random password, sealed)",
                m.label,
                bmc.address()
            );
        }
        BmcMachine::Redfish(_) => {
            let info = driver_info_args(&m.bmc.driver_info());
            t.phase("set BMC + manage", || {
                rack.set_driver(node, m.bmc.driver(), &info)?;
                rack.manage(node)
            })?;
        }
    }
    t.phase("provide (clean)", || rack.provide(node))?;
    let instance_info = [
        format!("image_source={url}"),
        format!("image_checksum=sha256:{checksum}"),
    ];
    let configdrive = json!({
        "meta_data": {"uuid": node, "hostname": m.machine.spec().name},
        "user_data": USER_DATA,
    });
    let mark = m.machine.serial_mark();
    t.phase("deploy", || rack.deploy(node, &instance_info, &configdrive))?;
    t.phase("boot from disk", || {
        m.machine
            .wait_serial(mark, m.marker, Duration::from_secs(300))
            .map(|_| ())
    })?;
    println!("  [{}] booted the deployed image from its disk", m.label);
    t.phase("undeploy (clean)", || rack.undeploy(node))?;
    t.phase("power off", || rack.power_off(node))?;
    rack.ensure_no_error(node)?;
    Ok(t)
}
