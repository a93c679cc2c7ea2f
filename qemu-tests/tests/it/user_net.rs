//! The agent ramdisk booted directly on QEMU's user networking (slirp), as a user would
//! try it by hand (issue 10): the only DHCP server is slirp's, which answers and never
//! speaks first, and the controller is reached through slirp's gateway 10.0.2.2. The
//! guest CPU is QEMU's default `qemu64` (no RDRAND) and there is no virtio-rng, so the
//! kernel's random pool is not ready when the agent starts: the DHCP client must not wait
//! for it (it used to block in getrandom(2) before its first DISCOVER and never sent one).
//!
//! Network rule: QEMU and the fake controller run inside a fresh network namespace with
//! only `lo` up and no route, so slirp's 10.0.2.2 reaches the namespace's 127.0.0.1 (the
//! controller) and nothing else. This was chosen over `restrict=on` with a `guestfwd`
//! because the guest's view stays exactly the user-networking setup being tested
//! (slirp's DHCP, gateway, NAT to a host port), and no traffic can leave the namespace
//! whatever the guest sends.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use qemu_tests::fake_controller::FakeController;

/// A network namespace with only `lo` up; deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> anyhow::Result<Netns> {
        let name = format!("ingot-usernet-{}", std::process::id());
        let run = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .context("running ip")?;
            ensure!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(())
        };
        run(&["netns", "add", &name])?;
        let ns = Netns(name);
        run(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Starts the fake controller on the namespace's 127.0.0.1 (from a thread that entered
    /// it; the listener and its threads stay there).
    fn fake_controller(&self) -> anyhow::Result<FakeController> {
        let path = format!("/run/netns/{}", self.0);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let go = || -> anyhow::Result<FakeController> {
                let f = std::fs::File::open(&path).context("opening the netns")?;
                use std::os::fd::AsRawFd;
                // SAFETY: f is an open namespace file; setns moves only this thread.
                let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
                ensure!(r == 0, "setns: {}", std::io::Error::last_os_error());
                FakeController::start(vec![])
            };
            let _ = tx.send(go().map_err(|e| format!("{e:#}")));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .context("fake controller thread")?
            .map_err(|e| anyhow::anyhow!(e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Qemu(std::process::Child);
impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn direct_boot_on_user_networking_registers_through_slirp() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    if !std::path::Path::new("/usr/bin/qemu-system-x86_64").exists() {
        bail!("qemu-system-x86_64 is missing: install qemu-system-x86");
    }
    let (kernel, initrd) = qemu_tests::build::agent_initramfs()?;
    let ns = Netns::new()?;
    let ctl = ns.fake_controller()?;
    let dir = tempfile::tempdir()?;
    let serial_log = dir.path().join("serial.log");
    let mac = "52:54:00:d1:05:01";
    let append = format!(
        "console=ttyS0 ingot.url=http://10.0.2.2:{} ingot.on_fatal=poweroff ingot.fatal_delay=1",
        ctl.port
    );
    let started = Instant::now();
    // `ip netns exec` execs QEMU: the child is QEMU itself.
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.0, "qemu-system-x86_64"])
        // The default CPU model on purpose (no RDRAND), and no RNG device.
        .args(["-accel", "tcg", "-m", "256"])
        .args(qemu_tests::vm::direct_kernel_args(
            &kernel,
            &initrd,
            &append,
            &serial_log,
        ))
        .args(["-netdev", "user,id=n0"])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu")?;
    let mut qemu = Qemu(child);
    let console = qemu_tests::serial::SerialLog::new("user-net", &serial_log);
    let read_serial = || console.text();
    let (at, req) = ctl.wait_lookup(&mut qemu.0, started, Duration::from_secs(60), &console)?;
    let total = at.duration_since(started);
    ensure!(
        req.macs.iter().any(|m| m == mac),
        "macs {:?} lack {mac}",
        req.macs
    );

    // The fake answers the heartbeat with power_off: the VM stops by itself.
    let stop = Instant::now() + Duration::from_secs(30);
    while qemu.0.try_wait()?.is_none() {
        if Instant::now() > stop {
            bail!(
                "the VM did not power off\n--- serial ---\n{}",
                read_serial()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = read_serial();
    // The lease is slirp's (10.0.2.15 is the first address it hands out).
    let dhcp = log
        .lines()
        .find(|l| l.contains("stage=\"dhcp\""))
        .context("no dhcp stage line")?;
    ensure!(
        dhcp.contains("lease 10.0.2.15 on eth0"),
        "dhcp stage: {dhcp}"
    );
    println!(
        "user networking: QEMU start -> lookup {:.2} s",
        total.as_secs_f64()
    );
    for l in log
        .lines()
        .filter(|l| l.contains("stage=") || l.contains("boot stages"))
    {
        println!("user networking: {}", l.trim());
    }
    Ok(())
}
