//! A MAC spoofer on the provisioning network (issue 11). A second VM on the lab bridge
//! clones a real machine's MAC and boots the very same agent ramdisk (direct kernel boot,
//! with the `ingot.url=` and `ingot.ca=` anyone can read in the public iPXE script) while the
//! real machine is cleaned and deployed; it must get nothing, and the real machine must not
//! notice.
//!
//! What a clone of the MAC on the same bridge brings the spoofer, and how the test keeps it
//! deterministic:
//!
//! - DHCP: leases belong to the MAC, so the controller hands the spoofer the real machine's
//!   own address (asserted). Two hosts then share a MAC and an address; the bridge sends
//!   frames for the MAC to whichever port spoke last, so while the spoofer talks, some of the
//!   real machine's segments reach it and it resets those connections. No controller rule can
//!   stop that (it is a denial of service any host on the segment can do); what the test
//!   proves is that the agent protocol recovers from it (heartbeats retry, lost commands are
//!   handed to the same session again, reports are idempotent, downloads resume) and that the
//!   spoofer never gets a session. The spoofer's lookups back off to one every 30 s, so it
//!   speaks rarely.
//! - ARP: both answer for the same address with the same MAC, so neighbours see no change.
//! - The session: the spoofer starts only after the real agent's session began (inspection),
//!   so every lookup it makes while the real agent lives gets 409 (`second agent session
//!   refused`), and once the machine is `active` 404 (no agent expected there); each is
//!   logged with the spoofer's source address. It is stopped before the undeploy reboots the
//!   real machine: a spoofer already looking up when the controller opens a boot window
//!   would race the real agent for that boot's token, which no MAC-level rule can tell apart
//!   (Ironic hands its agent token to the first lookup too). The test proves the rules for a
//!   live session and for a machine with no agent expected, not that race.
//!
//! Fast track is on (as in the lab): the agent that inspected the machine also cleans and
//! deploys it, so the spoofer is live during a cleaning and a deploy of one session. The
//! token count in the controller log proves the spoofer never had one: exactly two sessions
//! for the node, the real machine's inspection boot and its undeploy boot.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use qemu_tests::disk_check::{check_wiped, mbr_partitions, read_config_drive};
use qemu_tests::marker_disk::{self, BIOS_MARKER, MarkerDisk};
use qemu_tests::netns::BRIDGE_ADDR;
use qemu_tests::rack::{Machine, Rack, RackOptions, Timeline};
use qemu_tests::vm::{Firmware, Vm, VmSpec, tail};
use serde_json::json;

const IMAGE_MIB: u64 = 64;
const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISpoofTestKeyOnlyForTheLabNotForTheSpoofer lab@ingot";
const USER_DATA: &str = "#cloud-config\nruncmd:\n  - echo INGOT-SPOOF-USER-DATA\n";
/// How long the spoofer may take from power-on to its first refused lookup (TCG).
const SPOOFER_BOOT: Duration = Duration::from_secs(180);
/// The spoofer's lookups back off to one every 30 s.
const SPOOFER_LOOKUP_EVERY: Duration = Duration::from_secs(30);

/// The `ingot.url=` and `ingot.ca=` arguments of the agent's kernel line in the public iPXE
/// script for `mac` (what any machine on the network can fetch).
fn agent_arguments(rack: &Rack, mac: &str) -> anyhow::Result<Vec<String>> {
    let out = rack
        .lab_command("curl")
        .args(["-s", "-f"])
        .arg(format!("http://{BRIDGE_ADDR}:8080/boot/ipxe?mac={mac}"))
        .stdin(Stdio::null())
        .output()
        .context("running curl in the lab")?;
    let script = String::from_utf8_lossy(&out.stdout);
    let kernel = script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .with_context(|| format!("no agent kernel line in the iPXE script:\n{script}"))?;
    let args: Vec<String> = kernel
        .split_whitespace()
        .filter(|w| w.starts_with("ingot.url=") || w.starts_with("ingot.ca="))
        .map(str::to_owned)
        .collect();
    ensure!(args.iter().any(|a| a.starts_with("ingot.url=")), "{kernel}");
    Ok(args)
}

/// Boots the spoofer: the real machine's MAC, its own SMBIOS identity and disk, the agent
/// ramdisk by direct kernel boot on its own tap on the lab bridge.
fn start_spoofer(rack: &mut Rack, real: &Machine) -> anyhow::Result<Vm> {
    let (kernel, initrd) = qemu_tests::build::agent_initramfs()?;
    let mut append = vec!["console=ttyS0,115200".to_owned()];
    append.extend(agent_arguments(rack, &real.spec.mac)?);
    append.push(format!("BOOTIF=01-{}", real.spec.mac.replace(':', "-")));
    append.push("ingot.on_fatal=poweroff".to_owned());
    let spec = VmSpec {
        name: "spoofer".to_owned(),
        mac: real.spec.mac.clone(),
        disk_bytes: 1 << 30,
        direct_kernel: Some((kernel, initrd, append.join(" "))),
        ..VmSpec::numbered(9, Firmware::Bios)
    };
    let dir = rack.dir().join("spoofer");
    Vm::start(rack.lab(), spec, &dir)
}

/// The address the spoofer's agent leased (`dhcp lease ... addr=A`), once it has one.
fn leased_address(serial: &str) -> Option<String> {
    let line = serial.lines().find(|l| l.contains("dhcp lease"))?;
    let rest = &line[line.find(" addr=")? + " addr=".len()..];
    Some(rest.split_whitespace().next()?.to_owned())
}

/// Lines of the controller's log after byte `mark` that contain every one of `needles`.
fn log_lines(rack: &Rack, mark: usize, needles: &[&str]) -> Vec<String> {
    let log = rack.ingot_log();
    log.get(mark..)
        .unwrap_or_default()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// Waits until the controller logged a line after `mark` with every one of `needles`.
fn wait_log(
    rack: &Rack,
    mark: usize,
    needles: &[&str],
    timeout: Duration,
) -> anyhow::Result<String> {
    qemu_tests::wait::until(
        timeout,
        Duration::from_millis(500),
        &format!("{needles:?} in the ingot log"),
        || Ok(log_lines(rack, mark, needles).into_iter().next()),
    )
    .with_context(|| format!("ingot log:\n{}", tail(&rack.ingot_log(), 30)))
}

/// The deployed disk holds the image (its boot code and every byte after the MBR) and the
/// config drive with the test's key; returns the config drive's offset.
fn check_deployed_disk(m: &Machine, image: &MarkerDisk) -> anyhow::Result<u64> {
    let want = std::fs::read(&image.raw)?;
    let mut got = vec![0u8; want.len()];
    std::io::Read::read_exact(&mut std::fs::File::open(&m.disk)?, &mut got)?;
    ensure!(
        got[..446] == want[..446],
        "boot code differs from the image"
    );
    let first_diff = (512..want.len()).find(|&i| got[i] != want[i]);
    ensure!(first_diff.is_none(), "disk differs at byte {first_diff:?}");
    let parts = mbr_partitions(&got);
    let cd = *parts.last().context("no partitions")?;
    let (meta, user) = read_config_drive(&m.disk, cd.start, cd.len, &m.dir.join("configdrive"))?;
    ensure!(meta.contains(SSH_KEY), "public key missing: {meta}");
    ensure!(user == USER_DATA, "user_data differs: {user:?}");
    Ok(cd.start)
}

/// The real machine's steps with the spoofer live from inspection to `active`.
fn scenario(
    rack: &mut Rack,
    real: &Machine,
    image: &MarkerDisk,
    url: &str,
    t: &mut Timeline,
) -> anyhow::Result<()> {
    let info = real.qemu_driver_info();
    let node = t.phase("enroll", || {
        rack.enroll(&real.spec.name, "qemu", &info, &[], &real.spec.mac)
    })?;
    let node = node.as_str();
    t.phase("manage", || rack.manage(node).map(|_| ()))?;
    t.phase("inspect (session begins)", || {
        rack.inspect(node).map(|_| ())
    })?;

    // The spoofer comes up while the real agent idles in its session (fast track).
    let mark = rack.ingot_log().len();
    let real_mark = real.serial_mark();
    let mut spoofer = start_spoofer(rack, real)?;
    let refused = t.phase("spoofer boots, refused (409)", || {
        wait_log(
            rack,
            mark,
            &["second agent session refused", node],
            SPOOFER_BOOT,
        )
    })?;
    let address = leased_address(&spoofer.serial()).with_context(|| {
        format!(
            "the spoofer logged no lease\n{}",
            tail(&spoofer.serial(), 20)
        )
    })?;
    ensure!(
        refused.contains(&format!("peer={address}:")),
        "the refusal does not name the spoofer's address {address}: {refused}"
    );
    let real_address = leased_address(&real.serial()).context("the real agent logged no lease")?;
    ensure!(
        address == real_address,
        "the spoofer leased {address}, the real machine {real_address}: leases are the MAC's"
    );
    println!("spoofer leased {address}, the real machine's address; refused: {refused}");

    t.phase("provide (clean, spoofer live)", || {
        rack.provide(node).map(|_| ())
    })?;
    let configdrive = json!({
        "meta_data": {"uuid": node, "hostname": real.spec.name, "public_keys": {"lab": SSH_KEY}},
        "user_data": USER_DATA,
    });
    let instance_info = [
        format!("image_source={url}"),
        format!("image_checksum=sha256:{}", image.zst_sha256),
    ];
    let serial_mark = real.serial_mark();
    t.phase("deploy (spoofer live)", || {
        rack.deploy(node, &instance_info, &configdrive).map(|_| ())
    })?;
    t.phase("boot from disk", || {
        real.wait_serial_after(serial_mark, BIOS_MARKER, Duration::from_secs(300))
    })?;
    let cd_offset = check_deployed_disk(real, image)?;

    // Deployed: no agent belongs to the machine any more, the spoofer's lookup is a 404.
    let active_mark = rack.ingot_log().len();
    t.phase("spoofer refused on active (404)", || {
        wait_log(
            rack,
            active_mark,
            &["lookup refused: no agent is expected", node, "state=active"],
            SPOOFER_LOOKUP_EVERY * 3,
        )
    })?;
    ensure!(
        !log_lines(rack, active_mark, &["lookup refused", node, "state=active"])
            .iter()
            .any(|l| !l.contains(&format!("peer={address}:"))),
        "a refusal on active without the spoofer's address"
    );

    // What the spoofer got: refusals only (no token, no command, no config drive).
    let serial = spoofer.serial();
    ensure!(
        spoofer.running(),
        "the spoofer stopped:\n{}",
        tail(&serial, 30)
    );
    ensure!(
        serial.contains("lookup failed") && !serial.contains("lookup done"),
        "the spoofer's lookups were not all refused:\n{}",
        tail(&serial, 30)
    );
    for leak in ["running command", SSH_KEY, "INGOT-SPOOF-USER-DATA", url] {
        ensure!(
            !serial.contains(leak),
            "the spoofer saw {leak:?}:\n{}",
            tail(&serial, 30)
        );
    }
    let conflicts = log_lines(rack, mark, &["second agent session refused", node]);
    // What sharing the MAC and address cost the real agent (recovered by its retries).
    let real_serial = real.serial();
    let resets = real_serial
        .get(real_mark..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("failed error=") || l.contains("not delivered"))
        .count();
    println!(
        "spoofer: {} lookups refused with 409 while the session lived; the real agent retried {resets} calls meanwhile",
        conflicts.len()
    );
    // Before the undeploy opens a boot window (see the module doc).
    drop(spoofer);

    t.phase("undeploy (clean)", || rack.undeploy(node).map(|_| ()))?;
    t.phase("power off", || rack.power_off(node))?;
    check_wiped(&real.disk, &[1 << 20, cd_offset])?;
    rack.ensure_no_error(node)?;

    // Exactly two sessions began for the node: the inspection boot and the undeploy boot,
    // both the real machine's.
    let sessions = log_lines(rack, 0, &["agent looked up", node, "new_session=true"]);
    ensure!(
        sessions.len() == 2,
        "want 2 agent sessions (inspection, undeploy), got {}:\n{}",
        sessions.len(),
        sessions.join("\n")
    );
    Ok(())
}

#[test]
fn a_spoofed_mac_gets_no_session_and_the_real_machine_deploys_and_cleans() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let mut rack = Rack::start(RackOptions::default())?;
    let image = marker_disk::build(&rack.dir().join("image"), IMAGE_MIB)?;
    let url = rack.publish(&image.zst, "marker-disk.img.zst")?;
    let real = rack.add_machine(VmSpec::numbered(1, Firmware::Bios))?;
    let mut t = Timeline::new("SeaBIOS/qemu + spoofer");
    let r = scenario(&mut rack, &real, &image, &url, &mut t);
    let failures = match r {
        Ok(()) => Vec::new(),
        Err(e) => vec![format!(
            "{e:#}\n--- {} serial ---\n{}",
            real.spec.name,
            tail(&real.serial(), 40)
        )],
    };
    rack.conclude(&[t], &failures)
}
