//! The `qemu` driver against a real QEMU (TCG, SeaBIOS, no network backend but an isolated
//! hub): power on from the argv file, boot order over QMP `bootindex`, reset, quit, and
//! the SeaBIOS serial log as the independent witness of which device booted first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use controller::drivers::qemu::{QemuHardware, QemuSettings};
use controller::drivers::{
    BootDevice, DriverError, ManagementInterface, PowerInterface, PowerState, PowerTarget,
};
use controller::model::Node;
use serde_json::json;
use uuid::Uuid;

struct Vm {
    dir: tempfile::TempDir,
}

impl Vm {
    fn new() -> Vm {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).display().to_string();
        std::fs::write(dir.path().join("disk.img"), vec![0u8; 1 << 20]).expect("disk");
        let argv = json!([
            "qemu-system-x86_64",
            "-name",
            "ingot-test",
            "-accel",
            "tcg",
            "-machine",
            "pc,graphics=off",
            "-m",
            "64",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-chardev",
            format!("file,id=con0,path={},append=on", p("serial.log")),
            "-serial",
            "chardev:con0",
            "-qmp",
            format!("unix:{},server=on,wait=off", p("qmp.sock")),
            "-pidfile",
            p("qemu.pid"),
            "-drive",
            format!("file={},format=raw,if=none,id=d0", p("disk.img")),
            "-device",
            "virtio-blk-pci,drive=d0,id=disk0,bootindex=1",
            "-netdev",
            "hubport,id=n0,hubid=0",
            "-device",
            "e1000,netdev=n0,id=nic0,mac=52:54:00:fa:00:77,bootindex=2"
        ]);
        std::fs::write(dir.path().join("qemu.json"), argv.to_string()).expect("argv");
        Vm { dir }
    }

    /// The `qemu` type confined to this VM's directory.
    fn hardware(&self) -> Arc<QemuHardware> {
        QemuHardware::with_poll_interval(self.settings(), Duration::from_millis(100))
    }

    fn settings(&self) -> QemuSettings {
        QemuSettings::new(self.dir.path()).expect("settings")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn node(&self) -> Node {
        let mut n = Node::new(Uuid::new_v4(), "qemu", Utc::now());
        n.driver_info = json!({
            "qemu_qmp_socket": self.path("qmp.sock"),
            "qemu_timeout": 5,
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        n
    }

    fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.path("serial.log")).unwrap_or_default())
            .into_owned()
    }

    /// Waits for the first "Booting from" line after byte `from` of the serial log.
    fn first_boot_after(&self, from: usize) -> String {
        let t0 = Instant::now();
        loop {
            let log = self.serial();
            if let Some(line) = log.get(from..).and_then(|tail| {
                // Only a finished line: the firmware may be mid-write.
                tail.split_inclusive('\n')
                    .find(|l| l.contains("Booting from") && l.ends_with('\n'))
            }) {
                return line.trim().to_owned();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "no boot after byte {from}: {log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.path("qemu.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }
}

/// Whether `pid` is a live (not zombie) process running this VM.
fn alive(pid: i32, socket: &Path) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = socket.as_os_str().as_encoded_bytes();
    !matches!(state, None | Some("Z") | Some("X"))
        && cmdline.windows(needle.len()).any(|w| w == needle)
}

impl Drop for Vm {
    fn drop(&mut self) {
        // Whatever a failed assertion left running: kill our QEMU by its pid.
        if let Some(pid) = self.pid()
            && alive(pid, &self.path("qmp.sock"))
        {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_and_boot_order_of_a_real_vm() {
    test_needs::need!(test_needs::Need::Program("qemu-system-x86_64"));
    let vm = Vm::new();
    let hw = vm.hardware();
    let node = vm.node();
    PowerInterface::validate(hw.as_ref(), &node).expect("validate");

    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::Off)));
    assert_eq!(hw.get_boot_device(&node).await, Ok((None, true)));

    // PXE first while off: applied when the VM starts (the argv says disk first).
    hw.set_boot_device(&node, BootDevice::Pxe, false)
        .await
        .expect("pxe");
    assert_eq!(
        std::fs::read_to_string(vm.path("bootdev")).expect("bootdev"),
        "pxe\n"
    );
    hw.set_power_state(&node, PowerTarget::On, None)
        .await
        .expect("on");
    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::On)));
    let pid = vm.pid().expect("pid file");
    assert!(alive(pid, &vm.path("qmp.sock")));
    assert_eq!(vm.first_boot_after(0), "Booting from ROM...");

    // Disk first, then a reset of the same process boots the disk.
    hw.set_boot_device(&node, BootDevice::Disk, true)
        .await
        .expect("disk");
    assert_eq!(
        hw.get_boot_device(&node).await,
        Ok((Some(BootDevice::Disk), true))
    );
    let mark = vm.serial().len();
    hw.set_power_state(&node, PowerTarget::Reboot, None)
        .await
        .expect("reboot");
    assert_eq!(vm.first_boot_after(mark), "Booting from Hard Disk...");
    assert_eq!(vm.pid(), Some(pid), "a reset keeps the QEMU process");

    // SeaBIOS with no OS ignores the ACPI power button: soft off times out.
    let err = hw
        .set_power_state(&node, PowerTarget::SoftOff, Some(Duration::from_secs(1)))
        .await
        .expect_err("no OS to shut down");
    assert!(matches!(err, DriverError::Timeout { .. }), "{err:?}");

    hw.set_power_state(&node, PowerTarget::Off, None)
        .await
        .expect("off");
    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::Off)));
    let t0 = Instant::now();
    while alive(pid, &vm.path("qmp.sock")) {
        assert!(t0.elapsed() < Duration::from_secs(5), "QEMU still running");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Reboot from off starts a new process, with the stored device (disk) first.
    let mark = vm.serial().len();
    hw.set_power_state(&node, PowerTarget::Reboot, None)
        .await
        .expect("reboot from off");
    assert_ne!(vm.pid(), Some(pid));
    assert_eq!(vm.first_boot_after(mark), "Booting from Hard Disk...");
    hw.set_power_state(&node, PowerTarget::Off, None)
        .await
        .expect("off");
    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::Off)));
}

#[tokio::test]
async fn errors_name_the_problem() {
    test_needs::need!(test_needs::Need::Program("qemu-system-x86_64"));
    let vm = Vm::new();
    let hw = QemuHardware::new(vm.settings());
    let mut node = vm.node();
    std::fs::remove_file(vm.path("qemu.json")).expect("rm argv");
    let err = hw
        .set_power_state(&node, PowerTarget::On, None)
        .await
        .expect_err("no argv");
    assert!(matches!(err, DriverError::Unsupported(_)));
    assert!(err.to_string().contains("qemu.json"), "{err}");

    node.driver_info
        .insert("qemu_qmp_socket".into(), json!("relative.sock"));
    let err = PowerInterface::validate(hw.as_ref(), &node).expect_err("relative");
    assert!(err.to_string().contains("absolute path"), "{err}");

    let err = hw
        .set_boot_device(&vm.node(), BootDevice::Cdrom, false)
        .await
        .expect_err("cdrom");
    assert!(matches!(err, DriverError::InvalidParameter(_)));

    // A broken argv: QEMU's own message comes back.
    std::fs::write(
        vm.path("qemu.json"),
        json!(["qemu-system-x86_64", "-no-such-option"]).to_string(),
    )
    .expect("argv");
    let err = hw
        .set_power_state(&vm.node(), PowerTarget::On, None)
        .await
        .expect_err("bad argv");
    assert!(err.to_string().contains("no-such-option"), "{err}");
}
