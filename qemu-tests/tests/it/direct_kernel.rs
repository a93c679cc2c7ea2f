//! The agent ramdisk booted directly (`qemu -kernel -initrd -append`) on QEMU's user network
//! in 256 MiB: the agent (PID 1) loads its modules, gets a DHCP lease from QEMU, and its
//! lookup reaches a fake controller on 127.0.0.1 (10.0.2.2 from the guest) with the VM's
//! identity and inventory; `power_off` then stops the VM.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qemu_tests::fake_controller::FakeController;

const DISK_BYTES: u64 = 1 << 30;

fn initramfs() -> anyhow::Result<(PathBuf, PathBuf)> {
    qemu_tests::build::agent_initramfs()
}

/// A seconds figure from the serial log: the number after `key` on the line containing `marker`.
fn figure(serial: &str, marker: &str, key: &str) -> Option<f64> {
    let line = serial.lines().find(|l| l.contains(marker))?;
    let rest = &line[line.find(key)? + key.len()..];
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

struct Qemu(std::process::Child);
impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn boot(nic_model: &str, n: u8) -> anyhow::Result<()> {
    if !std::path::Path::new("/usr/bin/qemu-system-x86_64").exists() {
        bail!("qemu-system-x86_64 is missing: install qemu-system-x86");
    }
    let (kernel, initrd) = initramfs()?;
    let ctl = FakeController::start(vec![])?;
    let dir = tempfile::tempdir()?;
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)?.set_len(DISK_BYTES)?;
    let serial_log = dir.path().join("serial.log");
    let mac = format!("52:54:00:d1:00:{n:02x}");
    let uuid = format!("d1d1d1d1-0000-4000-8000-{n:012x}");
    let serial = format!("DIRECT-{n:02}");
    let disk_serial = format!("DDISK-{n:02}");
    let append = format!(
        "console=ttyS0 quiet ingot.url=http://10.0.2.2:{} ingot.on_fatal=poweroff ingot.fatal_delay=1",
        ctl.port
    );
    let started = Instant::now();
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "2"])
        .args(qemu_tests::vm::direct_kernel_args(
            &kernel,
            &initrd,
            &append,
            &serial_log,
        ))
        .args(["-nic", &format!("user,model={nic_model},mac={mac}")])
        .args([
            "-smbios",
            &format!("type=1,manufacturer=Ingot,product=direct-boot,uuid={uuid},serial={serial}"),
        ])
        .args([
            "-drive",
            &format!("file={},format=raw,if=none,id=d0", disk.display()),
        ])
        .args([
            "-device",
            &format!("virtio-blk-pci,drive=d0,serial={disk_serial}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu")?;
    let mut qemu = Qemu(child);
    let console = qemu_tests::serial::SerialLog::new(nic_model, &serial_log);
    let read_serial = || console.text();
    let (at, req) = ctl.wait_lookup(&mut qemu.0, started, Duration::from_secs(60), &console)?;
    let total = at.duration_since(started);

    assert!(req.macs.contains(&mac), "macs {:?} lack {mac}", req.macs);
    assert_eq!(req.system_uuid.as_deref(), Some(uuid.as_str()));
    assert_eq!(req.system_serial.as_deref(), Some(serial.as_str()));
    let d = req
        .inventory
        .disks
        .iter()
        .find(|d| d.serial.as_deref() == Some(disk_serial.as_str()))
        .with_context(|| {
            format!(
                "no disk with serial {disk_serial}: {:?}",
                req.inventory.disks
            )
        })?;
    assert_eq!(d.size, DISK_BYTES);
    assert_eq!(req.inventory.cpu.count, 2);
    // PCI: the NIC the agent booted on, with its driver; NUMA: QEMU's one node, both CPUs.
    let nics: Vec<_> = req
        .inventory
        .pci_devices
        .iter()
        .filter(|p| p.kind == "nic")
        .collect();
    assert!(
        nics.iter().any(|p| p.driver.is_some() && p.class.is_some()),
        "no NIC among the PCI devices: {:?}",
        req.inventory.pci_devices
    );
    let numa = req
        .inventory
        .numa_topology
        .as_ref()
        .context("no NUMA topology")?;
    assert_eq!(numa.cpus.len(), 2, "{numa:?}");
    assert!(
        numa.ram.first().is_some_and(|r| r.size_kb > 100_000),
        "{numa:?}"
    );
    let mem = req.inventory.memory.total;
    assert!(
        mem > 150 << 20 && mem <= 256 << 20,
        "memory total {mem} is not about 256 MiB"
    );

    // power_off after the lookup: the VM stops by itself.
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
    let init_start =
        figure(&log, "PID 1 start at uptime", "uptime ").context("no PID 1 start line")?;
    let lookup_uptime_ms = figure(&log, "lookup done", "uptime_ms=").context("no lookup line")?;
    let rss = figure(&log, "lookup done", "pid1_rss_kib=");
    let self_rss = figure(&log, "lookup done", "self_rss_kib=");
    println!(
        "{nic_model}: QEMU start -> lookup {:.2} s; /init start at {:.3} s uptime -> lookup at {:.3} s uptime: agent part {:.3} s; VmRSS PID 1 {:?} KiB, agent {:?} KiB",
        total.as_secs_f64(),
        init_start,
        lookup_uptime_ms / 1000.0,
        lookup_uptime_ms / 1000.0 - init_start,
        rss,
        self_rss
    );
    // The agent's own per-stage timings (mounts, coldplug, link, DHCP, inventory, lookup).
    for l in log.lines().filter(|l| l.contains("stage=")) {
        println!("{nic_model}: {}", l.trim());
    }
    let stages = log
        .lines()
        .find(|l| l.contains("boot stages"))
        .context("no boot stages line")?;
    println!("{nic_model}: {}", stages.trim());
    for stage in ["mounts", "coldplug", "link", "dhcp", "inventory", "lookup"] {
        assert!(
            stages.contains(&format!("; {stage} ")),
            "no {stage} in {stages}"
        );
    }
    let events = ctl.seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    assert!(
        events.events.iter().any(|e| e.command_id.as_u128() == 1),
        "the power_off was acknowledged before halting"
    );
    assert!(total < Duration::from_secs(60));
    Ok(())
}

#[test]
fn direct_boot_virtio_net_lookup_reaches_controller() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    boot("virtio-net-pci", 1)
}

#[test]
fn direct_boot_e1000_lookup_reaches_controller() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    boot("e1000", 2)
}

/// The `secure` wipe on QEMU's SATA (AHCI) and NVMe disks, by the agent as PID 1 against the
/// fake controller: each disk gets markers, then the drive's own erase where it has one.
/// QEMU's NVMe controller offers Format NVM with user-data erase (no crypto erase); its ATA
/// disk reports no security feature set to IDENTIFY DEVICE (read through SG_IO) and has no
/// Write Zeroes, so the SATA disk falls back to overwriting. Both are proven by the markers, and the disk files
/// read as zeroes at every marker from the host.
#[test]
fn direct_boot_secure_erase_of_sata_and_nvme() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    use proto::protocol::{Command as AgentCommand, Report};
    use proto::{AgentEvent, WipeMode};
    const SIZE: u64 = 64 << 20;
    let (kernel, initrd) = initramfs()?;
    let ctl = FakeController::start(vec![AgentCommand::Wipe {
        mode: WipeMode::Secure,
        devices: vec!["/dev/sda".into(), "/dev/nvme0n1".into()],
    }])?;
    let dir = tempfile::tempdir()?;
    let (sata, nvme) = (dir.path().join("sata.img"), dir.path().join("nvme.img"));
    for f in [&sata, &nvme] {
        std::fs::write(f, vec![0x5au8; usize::try_from(SIZE)?])?;
    }
    let serial_log = dir.path().join("serial.log");
    let append = format!(
        "console=ttyS0 quiet ingot.url=http://10.0.2.2:{} ingot.on_fatal=poweroff ingot.fatal_delay=1",
        ctl.port
    );
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "2"])
        .args(qemu_tests::vm::direct_kernel_args(
            &kernel,
            &initrd,
            &append,
            &serial_log,
        ))
        .args(["-nic", "user,model=virtio-net-pci,mac=52:54:00:d1:00:33"])
        .args([
            "-drive",
            &format!("file={},format=raw,if=none,id=sata0", sata.display()),
        ])
        .args([
            "-device",
            "ahci,id=ahci0",
            "-device",
            "ide-hd,drive=sata0,bus=ahci0.0,serial=SATA-33",
        ])
        .args([
            "-drive",
            &format!("file={},format=raw,if=none,id=nvme0", nvme.display()),
        ])
        .args(["-device", "nvme,drive=nvme0,serial=NVME-33"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu")?;
    let mut qemu = Qemu(child);
    let read_serial = || std::fs::read_to_string(&serial_log).unwrap_or_default();
    let stop = Instant::now() + Duration::from_secs(240);
    while qemu.0.try_wait()?.is_none() {
        if Instant::now() > stop {
            bail!("the VM did not finish\n--- serial ---\n{}", read_serial());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = ctl.seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let report = seen
        .events
        .iter()
        .find_map(|e| match &e.report {
            Report::Event {
                event: AgentEvent::WipeDone(r),
            } => Some(r.clone()),
            _ => None,
        })
        .with_context(|| format!("no wipe report\n--- serial ---\n{}", read_serial()))?;
    let log = read_serial();
    assert!(report.ok, "{report:?}\n{log}");
    for (dev, method, file) in [
        ("/dev/sda", "overwrite", &sata),
        ("/dev/nvme0n1", "nvme_user_data_erase", &nvme),
    ] {
        let d = report
            .disks
            .iter()
            .find(|d| d.device == dev)
            .with_context(|| format!("no result for {dev}: {report:?}"))?;
        assert!(d.ok, "{dev}: {d:?}");
        assert_eq!(d.method.as_deref(), Some(method), "{dev}: {d:?}\n{log}");
        let offsets: Vec<u64> = d
            .cleared
            .iter()
            .filter_map(|c| c.strip_prefix("marker@")?.parse().ok())
            .collect();
        assert_eq!(offsets.len(), 4, "{d:?}");
        qemu_tests::disk_check::ensure_zero_at(file, &offsets, 4096)?;
        println!("{dev}: {method} in {} ms", d.elapsed_ms);
    }
    assert!(
        log.contains("no ATA security erase"),
        "the SATA disk was not asked through SG_IO:\n{log}"
    );
    Ok(())
}
