//! Lab machines powered and boot-steered only through BMC simulators, driven by the
//! controller's own `ipmi` and `redfish` drivers from inside the lab namespace: power on
//! (the firmware network-boots: iPXE on the serial console), boot device disk (QEMU's
//! bootindex changes, the next boot tries the disk first), reset, power off (QEMU gone).

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use controller::drivers::ipmi::IpmiHardware;
use controller::drivers::redfish::RedfishHardware;
use controller::drivers::{
    BootDevice, ManagementInterface, PowerInterface, PowerState, PowerTarget,
};
use controller::model::Node;
use qemu_tests::bmc::{IpmiBmc, RedfishBmc, in_lab};
use qemu_tests::netns::Lab;
use qemu_tests::power::{self, Machine, PowerEvent};
use qemu_tests::vm::{Firmware, VmSpec};
use serde_json::{Value, json};
use uuid::Uuid;

const POWER_WAIT: Option<Duration> = Some(Duration::from_secs(30));
const BOOT_WAIT: Duration = Duration::from_secs(90);

fn node(driver: &str, info: Value, firmware: Firmware) -> Node {
    let mut n = Node::new(Uuid::new_v4(), driver, Utc::now());
    n.driver_info = info.as_object().cloned().unwrap_or_default();
    let mode = if firmware == Firmware::Bios {
        "bios"
    } else {
        "uefi"
    };
    n.properties
        .insert("capabilities".into(), json!(format!("boot_mode:{mode}")));
    n
}

/// A current-thread runtime for driver calls made from a thread inside the lab.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Polls the driver until it reports `want` (sushy shows a change 1-11 s after it).
async fn wait_power<H: PowerInterface>(
    hw: &H,
    node: &Node,
    want: PowerState,
) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    while hw.get_power_state(node).await? != Some(want) {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "the BMC does not report {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Power on, boot device, reboot and off through a power/management driver; the machine
/// must follow every step. `reset` is how the BMC is asked for a warm reset (it keeps the
/// QEMU process).
async fn drive<H: PowerInterface + ManagementInterface>(
    hw: &H,
    node: &Node,
    m: &Machine,
    reset: &(dyn Fn() -> anyhow::Result<()> + Sync),
) -> anyhow::Result<()> {
    assert_eq!(hw.get_power_state(node).await?, Some(PowerState::Off));
    assert!(!m.is_on());

    // PXE first, then power on: the firmware starts iPXE from the NIC.
    hw.set_boot_device(node, BootDevice::Pxe, true).await?;
    assert_eq!(m.boot_device().0, power::BootDevice::Pxe);
    let mark = m.serial_mark();
    hw.set_power_state(node, PowerTarget::On, POWER_WAIT)
        .await?;
    assert!(m.is_on());
    let first_pid = m.pid().context("QEMU pid")?;
    let (first, t) = m.wait_first_boot(mark, BOOT_WAIT)?;
    assert_eq!(first, power::BootDevice::Pxe);
    println!(
        "{}: network boot tried {:.1} s after QEMU started",
        m.spec().name,
        t.as_secs_f64()
    );
    m.wait_serial(mark, "iPXE", BOOT_WAIT)?;
    assert_eq!(m.bootindex()?, (1, 2), "nic0 first");
    assert_eq!(hw.get_power_state(node).await?, Some(PowerState::On));

    // Disk while running: QEMU's boot order changes at once, for the next boot.
    hw.set_boot_device(node, BootDevice::Disk, true).await?;
    assert_eq!(m.boot_device().0, power::BootDevice::Disk);
    assert_eq!(m.bootindex()?, (2, 1), "disk0 first");

    // Warm reset: the same QEMU boots again, disk first.
    let mark = m.serial_mark();
    reset()?;
    let (first, t) = m.wait_first_boot(mark, BOOT_WAIT)?;
    assert_eq!(first, power::BootDevice::Disk);
    println!(
        "{}: disk tried {:.1} s after the reset",
        m.spec().name,
        t.as_secs_f64()
    );
    assert_eq!(m.pid(), Some(first_pid), "a reset keeps the process");
    wait_power(hw, node, PowerState::On).await?;

    // Reboot through the driver (a power cycle for IPMI, ForceRestart for Redfish), disk
    // first.
    let mark = m.serial_mark();
    hw.set_power_state(node, PowerTarget::Reboot, POWER_WAIT)
        .await?;
    let second_pid = m.pid().context("QEMU pid after reboot")?;
    assert_eq!(
        m.wait_first_boot(mark, BOOT_WAIT)?.0,
        power::BootDevice::Disk
    );
    assert_eq!(m.bootindex()?, (2, 1));

    // Off: QEMU is gone (reaped, not a zombie).
    hw.set_power_state(node, PowerTarget::Off, POWER_WAIT)
        .await?;
    assert!(!m.is_on());
    assert!(!pid_alive(second_pid) && !pid_alive(first_pid));
    assert_eq!(hw.get_power_state(node).await?, Some(PowerState::Off));
    println!("{}: power events {:?}", m.spec().name, m.events());
    Ok(())
}

#[test]
fn ipmi_driver_powers_and_steers_a_bios_lab_vm() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::new()?;
    let bmc = IpmiBmc::start(&mut lab, VmSpec::numbered(1, Firmware::Bios), dir.path())?;
    let node = node("ipmi", bmc.driver_info(), Firmware::Bios);
    let ns = lab.name.clone();
    // ipmitool's warm reset (the driver reboots with a power cycle).
    let reset = || -> anyhow::Result<()> {
        let out = lab.exec_ok(&[
            "ipmitool",
            "-I",
            "lanplus",
            "-C",
            "3",
            "-H",
            bmc.address(),
            "-U",
            qemu_tests::bmc::USERNAME,
            "-P",
            qemu_tests::bmc::PASSWORD,
            "power",
            "reset",
        ])?;
        anyhow::ensure!(out.contains("Reset"), "ipmitool power reset: {out}");
        Ok(())
    };
    let hw = IpmiHardware::with_poll_interval(Duration::from_millis(200));
    in_lab(&ns, || {
        runtime().block_on(drive(&*hw, &node, bmc.machine(), &reset))
    })?
    .map_err(|e| e.context(format!("ipmi_sim log:\n{}", bmc.log())))?;
    let events = bmc.machine().events();
    assert!(
        events.contains(&PowerEvent::Reset(power::BootDevice::Disk)),
        "{events:?}"
    );
    Ok(())
}

#[test]
fn redfish_driver_powers_and_steers_a_uefi_lab_vm_through_sushy() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::new()?;
    let bmc = RedfishBmc::start(&mut lab, VmSpec::numbered(3, Firmware::Uefi), dir.path())?;
    let node = node("redfish", bmc.driver_info(), Firmware::Uefi);
    let ns = lab.name.clone();
    let system = bmc.driver_info()["redfish_system_id"]
        .as_str()
        .context("system id")?
        .to_owned();
    // A warm reset through the emulator's API, with curl inside the lab.
    let reset = || -> anyhow::Result<()> {
        lab.exec_ok(&[
            "curl",
            "-sS",
            "-f",
            "--cacert",
            &bmc.ca_path().display().to_string(),
            "-u",
            &format!(
                "{}:{}",
                qemu_tests::bmc::USERNAME,
                qemu_tests::bmc::PASSWORD
            ),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"ResetType":"GracefulRestart"}"#,
            &format!(
                "https://{}{system}/Actions/ComputerSystem.Reset",
                bmc.address()
            ),
        ])
        .map(drop)
    };
    let hw = RedfishHardware::with_poll_interval(Duration::from_millis(300));
    let m = bmc.machine();
    in_lab(&ns, || {
        runtime().block_on(async {
            drive(&*hw, &node, m, &reset).await?;
            // The guest powers off by itself: sushy is told and reports Off.
            hw.set_power_state(&node, PowerTarget::On, POWER_WAIT)
                .await?;
            let pid = m.pid().context("pid")?;
            let _ = m.qmp("quit", None);
            let t0 = std::time::Instant::now();
            wait_power(&*hw, &node, PowerState::Off).await?;
            println!(
                "sushy reports the power loss after {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            assert!(!pid_alive(pid));
            anyhow::Ok(())
        })
    })?
    .map_err(|e| e.context(format!("sushy log:\n{}", vm_tail(&bmc.log()))))?;
    let events = m.events();
    assert!(
        events.contains(&PowerEvent::Reset(power::BootDevice::Disk)),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(PowerEvent::Exited(_))),
        "{events:?}"
    );
    // Every change reached the harness as sushy's own notification.
    let notes = bmc.notifications();
    assert!(
        notes
            .iter()
            .any(|n| n["pending_power"]["power_state"] == "ForceRestart"),
        "{notes:?}"
    );
    Ok(())
}

fn vm_tail(s: &str) -> String {
    qemu_tests::vm::tail(s, 40)
}

/// The power socket and `lab-chassis` on their own: one-time boot devices go back to the
/// persistent one after the boot they were for, a guest power-off is noticed, and an OVMF
/// machine keeps its boot order across power cycles.
#[test]
fn power_socket_one_time_boot_and_power_loss() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::new()?;
    let m = Machine::create(&mut lab, VmSpec::numbered(2, Firmware::Uefi), dir.path())?;
    let chassis = qemu_tests::bmc::chassis_binary()?;
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = std::process::Command::new(&chassis)
            .arg(m.socket_path())
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "lab-chassis {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(run(&["get", "power", "boot"])?, "power:0\nboot:default\n");
    let err = run(&["set", "boot", "cdrom"]).expect_err("no cdrom");
    assert!(err.to_string().contains("not supported"), "{err}");

    let (lost_tx, lost_rx) = std::sync::mpsc::channel();
    m.on_power_loss(move || {
        let _ = lost_tx.send(());
    });

    // Once pxe over persistent disk: this boot tries the NIC, QEMU is set back at once.
    run(&["bootdev", "pxe", "once"])?;
    assert_eq!(run(&["get", "boot"])?, "boot:pxe\n");
    let mark = m.serial_mark();
    run(&["on"])?;
    assert_eq!(run(&["status"])?, "on");
    assert_eq!(
        m.wait_first_boot(mark, BOOT_WAIT)?.0,
        power::BootDevice::Pxe
    );
    assert_eq!(m.bootindex()?, (2, 1), "back to disk first");
    assert_eq!(m.boot_device(), (power::BootDevice::Disk, None));

    // Once pxe while running: the reset uses it, then disk first again.
    run(&["bootdev", "pxe", "once"])?;
    assert_eq!(m.bootindex()?, (1, 2));
    let mark = m.serial_mark();
    run(&["reset"])?;
    assert_eq!(m.bootindex()?, (2, 1));
    assert_eq!(
        m.wait_first_boot(mark, BOOT_WAIT)?.0,
        power::BootDevice::Pxe
    );
    // The next reset tries the disk first again.
    let mark = m.serial_mark();
    run(&["reset"])?;
    assert_eq!(
        m.wait_first_boot(mark, BOOT_WAIT)?.0,
        power::BootDevice::Disk
    );
    assert_eq!(
        m.events()
            .iter()
            .filter(|e| matches!(e, PowerEvent::Reset(power::BootDevice::Pxe)))
            .count(),
        1
    );

    // The guest powers itself off (here: QMP quit behind the power manager's back).
    let pid = m.pid().context("pid")?;
    let _ = m.qmp("quit", None);
    lost_rx
        .recv_timeout(Duration::from_secs(10))
        .context("power loss not noticed")?;
    assert!(!pid_alive(pid));
    assert_eq!(run(&["get", "power"])?, "power:0\n");
    assert!(
        matches!(m.events().last(), Some(PowerEvent::Exited(_))),
        "{:?}",
        m.events()
    );
    Ok(())
}
