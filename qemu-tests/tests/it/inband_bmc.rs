//! The agent reads and sets up its machine's BMC in-band: QEMU's KCS system interface
//! (`isa-ipmi-kcs` on `ipmi-bmc-extern`) wired to an OpenIPMI `ipmi_sim` through its
//! `serial ... codec VM` socket, the BMC's LAN address and MAC set over IPMI LAN with
//! ipmitool beforehand, as a site would; the agent (PID 1 of the ramdisk, booted directly)
//! loads the IPMI modules for the KCS device, reads the address through `/dev/ipmi0` and
//! reports it as `bmc_address` in its lookup. Asked to `enroll_bmc`, it creates the BMC user
//! through the same device, and ipmitool logs in over the simulator's LAN side with the
//! credentials the agent reported (IPMI 2.0 `lanplus` and IPMI 1.5 `lan`); a second
//! enrolment resets the same slot. Loopback only: ipmi_sim listens on 127.0.0.1, the VM is
//! on QEMU's user network.

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use proto::protocol::{BmcEnrolled, Command as AgentCommand, Report};
use qemu_tests::fake_controller::FakeController;
use test_needs::Need;

/// The address the site gives the BMC (what Ironic's `ipmi_address` would be).
const BMC_ADDRESS: &str = "10.11.12.13";
/// The MAC the site gives the BMC's LAN channel.
const BMC_MAC: &str = "52:54:00:b3:c0:01";

/// Kills a child (ipmi_sim, QEMU) by its own handle when dropped.
struct Reaped(Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_tcp() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `ipmi_sim` with a LAN channel on `lan_port` and the VM serial interface on `vm_port`.
fn start_bmc(dir: &std::path::Path, lan_port: u16, vm_port: u16) -> anyhow::Result<Reaped> {
    std::fs::create_dir_all(dir.join("state"))?;
    std::fs::write(
        dir.join("lan.conf"),
        format!(
            "name \"inband\"\n\
             set_working_mc 0x20\n\
             \x20 startlan 1\n\
             \x20   addr 127.0.0.1 {lan_port}\n\
             \x20   priv_limit admin\n\
             \x20   allowed_auths_callback none md5 straight\n\
             \x20   allowed_auths_user none md5 straight\n\
             \x20   allowed_auths_operator none md5 straight\n\
             \x20   allowed_auths_admin none md5 straight\n\
             \x20   guid a123456789abcdefa123456789abcdef\n\
             \x20 endlan\n\
             \x20 serial 15 127.0.0.1 {vm_port} codec VM\n\
             \x20 user 2 true \"admin\" \"password\" admin 10 none md5 straight\n"
        ),
    )?;
    std::fs::write(
        dir.join("bmc.emu"),
        "mc_setbmc 0x20\n\
         mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
         mc_enable 0x20\n",
    )?;
    let log = std::fs::File::create(dir.join("ipmi_sim.log"))?;
    let child = Command::new("ipmi_sim")
        .arg("-n")
        .arg("-c")
        .arg(dir.join("lan.conf"))
        .arg("-f")
        .arg(dir.join("bmc.emu"))
        .arg("-s")
        .arg(dir.join("state"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting ipmi_sim (Debian package openipmi)")?;
    // Ready when ipmitool gets an answer (`set_bmc_address` retries). A connection to the
    // VM socket as a probe would be taken for the machine and end the BMC when it closes.
    let mut bmc = Reaped(child);
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = bmc.0.try_wait()? {
        bail!(
            "ipmi_sim exited ({status}): {}",
            std::fs::read_to_string(dir.join("ipmi_sim.log")).unwrap_or_default()
        );
    }
    Ok(bmc)
}

/// Sets the BMC's LAN address over IPMI LAN, as a site's provisioning would.
fn set_bmc_address(dir: &std::path::Path, lan_port: u16) -> anyhow::Result<()> {
    let port = lan_port.to_string();
    let ipmitool = |args: &[&str]| {
        Command::new("ipmitool")
            .args(["-I", "lan", "-H", "127.0.0.1", "-p", &port])
            .args(["-U", "admin", "-P", "password"])
            .args(args)
            .output()
            .context("running ipmitool")
    };
    // The LAN side may start a moment after the serial one: try for a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let set = ipmitool(&["lan", "set", "1", "ipaddr", BMC_ADDRESS])?;
        if set.status.success() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "ipmitool lan set: {}\n--- ipmi_sim ---\n{}\n--- lan.conf ---\n{}\n--- sockets ---\n{}",
                String::from_utf8_lossy(&set.stderr),
                std::fs::read_to_string(dir.join("ipmi_sim.log")).unwrap_or_default(),
                std::fs::read_to_string(dir.join("lan.conf")).unwrap_or_default(),
                Command::new("ss")
                    .arg("-lunp")
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mac = ipmitool(&["lan", "set", "1", "macaddr", BMC_MAC])?;
    anyhow::ensure!(
        mac.status.success(),
        "lan set macaddr: {}",
        String::from_utf8_lossy(&mac.stderr)
    );
    let print = ipmitool(&["lan", "print", "1"])?;
    let text = String::from_utf8_lossy(&print.stdout);
    anyhow::ensure!(
        text.contains(BMC_ADDRESS) && text.contains(BMC_MAC),
        "lan print: {text}"
    );
    Ok(())
}

/// QEMU with the agent booted directly, its KCS BMC on ipmi_sim's VM socket `vm_port`.
fn boot_vm(
    append: &str,
    vm_port: u16,
    serial_log: &std::path::Path,
    mac: &str,
) -> anyhow::Result<Reaped> {
    let (kernel, initrd) = qemu_tests::build::agent_initramfs()?;
    let qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "2"])
        .args(qemu_tests::vm::direct_kernel_args(
            &kernel, &initrd, append, serial_log,
        ))
        .args(["-nic", &format!("user,model=virtio-net-pci,mac={mac}")])
        .args([
            "-chardev",
            &format!("socket,id=ipmi0,host=127.0.0.1,port={vm_port},reconnect=2"),
        ])
        .args(["-device", "ipmi-bmc-extern,chardev=ipmi0,id=bmc0"])
        .args(["-device", "isa-ipmi-kcs,bmc=bmc0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting qemu")?;
    Ok(Reaped(qemu))
}

#[test]
fn the_agent_reports_the_bmc_address_it_reads_in_band() -> anyhow::Result<()> {
    test_needs::need!(
        Need::Program("qemu-system-x86_64"),
        Need::Program("ipmi_sim"),
        Need::Program("ipmitool")
    );
    let dir = tempfile::tempdir()?;
    let (lan_port, vm_port) = (free_udp()?, free_tcp()?);
    let bmc_dir = dir.path().join("bmc");
    let _bmc = start_bmc(&bmc_dir, lan_port, vm_port)?;
    set_bmc_address(&bmc_dir, lan_port)?;
    let ctl = FakeController::start(vec![])?;
    let serial_log = dir.path().join("serial.log");
    let append = format!(
        "console=ttyS0 quiet ingot.url=http://10.0.2.2:{} ingot.on_fatal=poweroff ingot.fatal_delay=1",
        ctl.port
    );
    // Built before the clock starts: the time below is the VM's.
    qemu_tests::build::agent_initramfs()?;
    let started = Instant::now();
    let mut qemu = boot_vm(&append, vm_port, &serial_log, "52:54:00:d1:0b:01")?;
    let console = qemu_tests::serial::SerialLog::new("inband-bmc", &serial_log);
    let (_, req) = ctl.wait_lookup(&mut qemu.0, started, Duration::from_secs(90), &console)?;
    let serial = console.text();
    anyhow::ensure!(
        req.inventory.bmc_address.as_deref() == Some(BMC_ADDRESS),
        "bmc_address {:?}, want {BMC_ADDRESS}\n--- serial ---\n{serial}",
        req.inventory.bmc_address
    );
    // Every module loaded (the IPMI ones once failed on symbols of a module loaded late).
    anyhow::ensure!(
        !serial.contains("module not loaded"),
        "a module failed to load:\n{serial}"
    );
    println!(
        "in-band BMC address {BMC_ADDRESS} in the lookup {:.1} s after QEMU started",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// ipmitool over the simulator's LAN side as `user`/`password`: `power status`, over
/// `interface` (`lanplus`: IPMI 2.0 RMCP+ with cipher suite 3; `lan`: IPMI 1.5). True when
/// the BMC answered it.
fn lan_login(lan_port: u16, interface: &str, user: &str, password: &str) -> anyhow::Result<bool> {
    let mut cmd = Command::new("ipmitool");
    cmd.args([
        "-I",
        interface,
        "-H",
        "127.0.0.1",
        "-p",
        &lan_port.to_string(),
    ]);
    if interface == "lanplus" {
        cmd.args(["-C", "3"]);
    }
    let out = cmd
        .args(["-R", "2", "-N", "2", "-U", user, "-E", "power", "status"])
        // -E: the password from IPMI_PASSWORD, not the command line.
        .env("IPMI_PASSWORD", password)
        .output()
        .context("running ipmitool")?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Chassis Power is"))
}

/// The `enroll_bmc` result document in a report.
fn enrolled(report: &Report, serial: &str) -> anyhow::Result<BmcEnrolled> {
    match report {
        Report::Succeeded {
            detail: Some(d), ..
        } => Ok(serde_json::from_value(d.clone())?),
        other => bail!("enroll_bmc did not succeed: {other:?}\n--- serial ---\n{serial}"),
    }
}

/// The agent, asked by the controller, creates the BMC user `ingot` through `/dev/ipmi0`
/// and reports its credentials; ipmitool logs in with them over the BMC's LAN side. A
/// second enrolment resets the same user: same slot, new password, the old one refused.
/// The site's `admin` user keeps working, and neither password reaches the console.
#[test]
fn the_agent_enrols_a_bmc_user_in_band_that_works_over_lan() -> anyhow::Result<()> {
    test_needs::need!(
        Need::Program("qemu-system-x86_64"),
        Need::Program("ipmi_sim"),
        Need::Program("ipmitool")
    );
    let enroll = || AgentCommand::EnrollBmc {
        user: "ingot".into(),
    };
    let dir = tempfile::tempdir()?;
    let (lan_port, vm_port) = (free_udp()?, free_tcp()?);
    let bmc_dir = dir.path().join("bmc");
    let _bmc = start_bmc(&bmc_dir, lan_port, vm_port)?;
    set_bmc_address(&bmc_dir, lan_port)?;
    let ctl = FakeController::start_held(vec![enroll()])?;
    let serial_log = dir.path().join("serial.log");
    let append = format!(
        "console=ttyS0 quiet ingot.url=http://10.0.2.2:{} ingot.on_fatal=poweroff ingot.fatal_delay=1 ingot.log=info,agent=debug",
        ctl.port
    );
    // Built before the clock starts: the timings below are the VM's.
    qemu_tests::build::agent_initramfs()?;
    let started = Instant::now();
    let mut qemu = boot_vm(&append, vm_port, &serial_log, "52:54:00:d1:0b:02")?;
    let console = qemu_tests::serial::SerialLog::new("inband-bmc-enrol", &serial_log);
    let (looked_up, _) =
        ctl.wait_lookup(&mut qemu.0, started, Duration::from_secs(90), &console)?;
    let t_lookup = looked_up - started;

    let r1 = ctl.wait_result(1, &mut qemu.0, Duration::from_secs(120), &console)?;
    let t_first = started.elapsed();
    let first = enrolled(&r1, &console.text())?;
    // Slot 1 is the null user and slot 2 the site's admin: the first free one is 3.
    anyhow::ensure!(
        (first.username.as_str(), first.channel, first.user_id) == ("ingot", 1, 3),
        "{first:?}"
    );
    anyhow::ensure!(
        first.bmc_address.as_deref() == Some(BMC_ADDRESS),
        "{first:?}"
    );
    anyhow::ensure!(first.bmc_mac.as_deref() == Some(BMC_MAC), "{first:?}");
    let lan_start = Instant::now();
    for interface in ["lanplus", "lan"] {
        anyhow::ensure!(
            lan_login(lan_port, interface, "ingot", &first.password)?,
            "{interface}: the enrolled credentials do not work"
        );
    }
    let t_lan = lan_start.elapsed();

    ctl.queue(enroll())?;
    let reset_start = Instant::now();
    let r2 = ctl.wait_result(2, &mut qemu.0, Duration::from_secs(120), &console)?;
    let t_reset = reset_start.elapsed();
    let second = enrolled(&r2, &console.text())?;
    anyhow::ensure!(
        second.user_id == first.user_id && second.channel == first.channel,
        "the reset moved the user: {first:?} then {second:?}"
    );
    anyhow::ensure!(
        second.password != first.password,
        "the password did not change"
    );
    for interface in ["lanplus", "lan"] {
        anyhow::ensure!(
            lan_login(lan_port, interface, "ingot", &second.password)?,
            "{interface}: the new password does not work"
        );
        anyhow::ensure!(
            !lan_login(lan_port, interface, "ingot", &first.password)?,
            "{interface}: the old password still works"
        );
        anyhow::ensure!(
            lan_login(lan_port, interface, "admin", "password")?,
            "{interface}: the site's admin user no longer works"
        );
    }

    ctl.release()?;
    let stop = Instant::now() + Duration::from_secs(60);
    while qemu.0.try_wait()?.is_none() {
        anyhow::ensure!(Instant::now() < stop, "the VM did not power off");
        std::thread::sleep(Duration::from_millis(100));
    }
    let serial = console.text();
    anyhow::ensure!(
        serial.contains("BMC user enrolled"),
        "no enrolment logged:\n{serial}"
    );
    for pw in [&first.password, &second.password] {
        anyhow::ensure!(
            !serial.contains(pw.as_str()),
            "a password on the console:\n{serial}"
        );
    }
    println!(
        "lookup {:.1} s after QEMU started; first enrolment reported at {:.1} s; ipmitool \
         lanplus + lan logins {:.1} s; reset {:.1} s after it was queued",
        t_lookup.as_secs_f64(),
        t_first.as_secs_f64(),
        t_lan.as_secs_f64(),
        t_reset.as_secs_f64()
    );
    Ok(())
}
