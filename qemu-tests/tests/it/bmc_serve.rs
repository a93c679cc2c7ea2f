//! `ingot serve` in a rack manages lab machines through their BMCs, given only the
//! `driver_info` an operator would, all through the real `baremetal` CLI: an IPMI SeaBIOS
//! machine and a Redfish OVMF machine are enrolled, `manage` reads their power state
//! through the BMC, the boot device is set to PXE and they are powered on (the firmware
//! tries the NIC first), then off (QEMU gone, the API says `power off`).

use std::time::Duration;

use anyhow::{Context, ensure};
use qemu_tests::power::BootDevice;
use qemu_tests::rack::steps::driver_info_args;
use qemu_tests::rack::{Rack, RackOptions};
use qemu_tests::vm::{Firmware, VmSpec, tail};

#[test]
fn ingot_serve_manages_lab_machines_through_ipmi_and_redfish() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let mut rack = Rack::start(RackOptions::default())?;
    let ipmi = rack.add_ipmi_machine(VmSpec::numbered(1, Firmware::Bios))?;
    let redfish = rack.add_redfish_machine(VmSpec::numbered(2, Firmware::Uefi))?;
    let bmcs = [&ipmi, &redfish];

    let result = (|| -> anyhow::Result<()> {
        let mut nodes = Vec::new();
        for b in bmcs {
            let m = b.machine();
            let caps = format!("capabilities=boot_mode:{}", m.boot_mode());
            let info = driver_info_args(&b.driver_info());
            let node = rack.enroll(&m.spec().name, b.driver(), &info, &[caps], &m.spec().mac)?;
            let n = rack.manage(&node)?;
            ensure!(n["power_state"] == "power off", "{n}");
            ensure!(
                n["driver_info"][format!("{}_password", b.driver())] == "******",
                "{}",
                n["driver_info"]
            );
            rack.baremetal(&[
                "node",
                "boot",
                "device",
                "set",
                &node,
                "pxe",
                "--persistent",
            ])?;
            ensure!(
                m.boot_device().0 == BootDevice::Pxe,
                "{:?}",
                m.boot_device()
            );
            nodes.push(node);
        }
        let marks: Vec<usize> = bmcs.iter().map(|b| b.machine().serial_mark()).collect();
        for node in &nodes {
            rack.baremetal(&["node", "power", "on", node])?;
        }
        for ((node, b), mark) in nodes.iter().zip(bmcs).zip(marks) {
            let m = b.machine();
            rack.wait_power_state(node, "power on", Duration::from_secs(60))?;
            let (first, t) = m.wait_first_boot(mark, Duration::from_secs(90))?;
            ensure!(
                first == BootDevice::Pxe,
                "{}: first boot {first:?}",
                m.spec().name
            );
            println!(
                "{}: network boot tried {:.1} s after QEMU started",
                m.spec().name,
                t.as_secs_f64()
            );
        }
        for (node, b) in nodes.iter().zip(bmcs) {
            let m = b.machine();
            let pid = m.pid().context("pid")?;
            rack.power_off(node)?;
            ensure!(!m.is_on(), "{} still on", m.spec().name);
            ensure!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "QEMU {pid} still runs"
            );
        }
        Ok(())
    })();
    result.map_err(|e| {
        e.context(format!(
            "--- ingot ---\n{}\n--- sushy ---\n{}",
            tail(&rack.ingot_log(), 30),
            tail(&redfish.log(), 20)
        ))
    })
}
