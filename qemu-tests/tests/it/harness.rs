//! The harness itself: a lab namespace with no route out, and both firmwares reaching their
//! network boot ROM on a lab tap.

use std::time::Duration;

use qemu_tests::netns::Lab;
use qemu_tests::vm::{Firmware, Vm, VmSpec};

#[test]
fn lab_has_no_route_out_and_firmwares_reach_ipxe() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::new()?;
    let routes = lab.exec_ok(&["ip", "route", "show"])?;
    assert!(
        !routes.contains("default"),
        "a lab must have no default route: {routes}"
    );
    let links = lab.exec_ok(&["ip", "-o", "link", "show"])?;
    assert!(
        !links.contains("veth"),
        "a lab must have no veth to the outside: {links}"
    );

    let mut bios = Vm::start(&mut lab, VmSpec::numbered(1, Firmware::Bios), dir.path())?;
    let mut uefi = Vm::start(&mut lab, VmSpec::numbered(2, Firmware::Uefi), dir.path())?;
    let t_bios = bios.wait_serial("iPXE", Duration::from_secs(60))?;
    let t_uefi = uefi.wait_serial("iPXE", Duration::from_secs(90))?;
    println!(
        "iPXE banner: SeaBIOS {:.1} s, OVMF {:.1} s",
        t_bios.as_secs_f64(),
        t_uefi.as_secs_f64()
    );
    let status = bios.qmp("query-status", None)?;
    assert_eq!(status["status"], "running");
    assert!(bios.running() && uefi.running());
    Ok(())
}
