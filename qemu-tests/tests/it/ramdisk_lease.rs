//! The ramdisk agent (PID 1) keeps its DHCP lease: booted directly on a tap of a lab (a
//! network namespace with a bridge and no route out) where dnsmasq hands out 2-minute
//! leases with T1 3 s and T2 6 s, the agent's console shows the lease renewed at T1 again
//! and again with the same address, and dnsmasq's log shows the renewal REQUESTs (each in a
//! transaction of its own, no DISCOVER) acked, while the agent waits for a controller that
//! never answers (nothing listens on the bridge: only DHCP matters here).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use qemu_tests::netns::{BRIDGE_ADDR, Lab};

struct Qemu(std::process::Child);
impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value after `key` on `line`, up to the next space.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()
}

#[test]
fn ramdisk_agent_renews_its_lease_at_t1() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let (kernel, initrd) = qemu_tests::build::agent_initramfs()?;
    let mut lab = Lab::new()?;
    lab.add_tap("tap0")?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("dnsmasq.log");
    let dnsmasq = lab
        .command("dnsmasq")
        .args(["--keep-in-foreground", "--conf-file=/dev/null", "--port=0"])
        .args(["--no-resolv", "--no-hosts", "--no-ping", "--user=root"])
        .args(["--interface=br0", "--bind-interfaces", "--log-dhcp"])
        .args(["--dhcp-range=172.31.250.50,172.31.250.99,255.255.255.0,2m"])
        // dnsmasq's shortest lease is 2 minutes; T1 and T2 are set short instead.
        .args(["--dhcp-option=58,3", "--dhcp-option=59,6"])
        .arg(format!("--log-facility={}", log.display()))
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.path().join("leases").display()
        ))
        .arg(format!("--pid-file={}", dir.path().join("pid").display()))
        .stdin(Stdio::null())
        .spawn()
        .context("starting dnsmasq (dnsmasq-base)")?;
    lab.adopt(dnsmasq);

    let serial_log = dir.path().join("serial.log");
    let mac = "52:54:00:d1:06:01";
    let child = lab
        .command("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "256"])
        .args(qemu_tests::vm::direct_kernel_args(
            &kernel,
            &initrd,
            &format!("console=ttyS0 quiet ingot.url=http://{BRIDGE_ADDR}:9"),
            &serial_log,
        ))
        .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu")?;
    let mut qemu = Qemu(child);
    let console = qemu_tests::serial::SerialLog::new("ramdisk-lease", &serial_log);
    let read_serial = || console.text();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (addr, renewals) = loop {
        let s = read_serial();
        let addr = s
            .lines()
            .find(|l| l.contains("dhcp lease nic=eth0"))
            .and_then(|l| field(l, "addr="))
            .map(str::to_owned);
        let renewed: Vec<String> = s
            .lines()
            .filter(|l| l.contains("dhcp lease renewed"))
            .map(str::to_owned)
            .collect();
        if let Some(a) = addr
            && renewed.len() >= 3
        {
            break (a, renewed);
        }
        if Instant::now() > deadline || qemu.0.try_wait()?.is_some() {
            bail!("fewer than 3 renewals after the lease\n--- serial ---\n{s}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(qemu);
    for r in &renewals {
        println!("{}", r.trim());
        ensure!(
            field(r, "addr=") == Some(addr.as_str()) && r.contains("rebound=false"),
            "renewal {r} is not of {addr} at T1"
        );
    }
    // dnsmasq saw the renewals as REQUESTs for the leased address in transactions of their
    // own (no DISCOVER before them: RENEWING, not SELECTING) and acked each. Its lines
    // read `dnsmasq-dhcp[PID]: XID DHCPREQUEST(br0) ADDR MAC`.
    let text = std::fs::read_to_string(&log)?;
    let xid_of = |l: &str| {
        l.split_whitespace()
            .skip_while(|w| !w.starts_with("dnsmasq-dhcp"))
            .nth(1)
            .map(str::to_owned)
    };
    let discovers: Vec<String> = text
        .lines()
        .filter(|l| l.contains("DHCPDISCOVER(br0)"))
        .filter_map(xid_of)
        .collect();
    let renew_requests = text
        .lines()
        .filter(|l| l.contains(&format!("DHCPREQUEST(br0) {addr} ")))
        .filter_map(xid_of)
        .filter(|x| !discovers.contains(x))
        .count();
    let acks = text
        .lines()
        .filter(|l| l.contains(&format!("DHCPACK(br0) {addr} ")))
        .count();
    ensure!(
        renew_requests >= 3 && acks >= 4,
        "dnsmasq: {renew_requests} renewal REQUESTs, {acks} ACKs for {addr}\n{text}"
    );
    println!("lease {addr} renewed {} times at T1", renewals.len());
    Ok(())
}
