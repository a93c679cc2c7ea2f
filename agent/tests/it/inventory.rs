//! Inventory parsers over captured/crafted sysfs + SMBIOS trees
//! (`tests/fixtures/inventory/*.gen.sh` made them), compared with golden JSON,
//! plus the live command on this machine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use proto::{BootMode, Inventory};

fn fixture(name: &str) -> Inventory {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inventory");
    let inv = agent::inventory::collect(&base.join(name), "x86_64", &BTreeMap::new());
    let golden = base.join(format!("{name}.expected.json"));
    let text = serde_json::to_string_pretty(&inv).expect("json") + "\n";
    if std::env::var("EXPECTORATE").as_deref() == Ok("overwrite") {
        std::fs::write(&golden, &text).expect("write golden");
    }
    let want =
        std::fs::read_to_string(&golden).expect("golden file (EXPECTORATE=overwrite to create)");
    assert_eq!(
        want,
        text,
        "{name} inventory differs from {}",
        golden.display()
    );
    inv
}

#[test]
fn qemu_virtio_guest() {
    let inv = fixture("qemu-virtio");
    let vda = inv
        .disks
        .iter()
        .find(|d| d.name == "/dev/vda")
        .expect("vda");
    assert_eq!(vda.transport.as_deref(), Some("virtio"));
    assert_eq!(
        vda.by_path.as_deref(),
        Some("/dev/disk/by-path/pci-0000:00:02.0")
    );
    assert_eq!(inv.interfaces.len(), 1, "only the virtio NIC, not lo/ifb");
    assert_eq!(inv.interfaces[0].driver.as_deref(), Some("virtio_net"));
    assert_eq!(inv.interfaces[0].vendor.as_deref(), Some("0x1af4"));
    assert_eq!(inv.system_vendor.manufacturer.as_deref(), Some("QEMU"));
    assert_eq!(
        inv.system_vendor.serial_number.as_deref(),
        Some("QEMU-SN-0001")
    );
    assert_eq!(
        inv.system_vendor.uuid.as_deref(),
        Some("2b7e1516-28ae-4d2a-8f0e-1f2e3d4c5b6a")
    );
    assert_eq!(
        inv.system_vendor
            .firmware
            .as_ref()
            .and_then(|f| f.vendor.as_deref()),
        Some("SeaBIOS")
    );
    assert_eq!(
        inv.baseboard
            .as_ref()
            .and_then(|b| b.serial_number.as_deref()),
        Some("QEMU-BB-0001")
    );
    assert_eq!(inv.chassis.as_ref().and_then(|c| c.chassis_type), Some(1));
    assert_eq!(inv.memory.physical_mb, Some(2048));
    assert_eq!(inv.boot.current_boot_mode, BootMode::Bios);
}

#[test]
fn nvme_server() {
    let inv = fixture("nvme");
    let d = &inv.disks[0];
    assert_eq!(d.name, "/dev/nvme0n1");
    assert_eq!(d.serial.as_deref(), Some("S5GXNX0R123456"));
    assert_eq!(d.model.as_deref(), Some("Samsung SSD 980 PRO 1TB"));
    assert_eq!(d.wwn.as_deref(), Some("eui.002538b111b2c3d4"));
    assert_eq!(d.transport.as_deref(), Some("nvme"));
    assert_eq!(
        d.by_path.as_deref(),
        Some("/dev/disk/by-path/pci-0000:3b:00.0-nvme-1")
    );
    assert_eq!(d.size, 1_000_204_886_016);
    assert!(!d.rotational);
    assert_eq!((inv.cpu.count, inv.cpu.socket_count), (4, 2));
    assert_eq!(inv.interfaces[0].speed_mbps, Some(25000));
    assert_eq!(inv.interfaces[0].driver.as_deref(), Some("mlx5_core"));
    assert_eq!(
        inv.interfaces[0].pci_address.as_deref(),
        Some("0000:5e:00.0")
    );
    assert_eq!(inv.boot.current_boot_mode, BootMode::Uefi);
    assert_eq!(inv.boot.secure_boot, Some(false));
}

#[test]
fn sata_server() {
    let inv = fixture("sata");
    let sda = inv
        .disks
        .iter()
        .find(|d| d.name == "/dev/sda")
        .expect("sda");
    assert_eq!(
        sda.serial.as_deref(),
        Some("ZC1ABCDE"),
        "serial from VPD page 0x80"
    );
    assert_eq!(sda.wwn.as_deref(), Some("0x5000c500a1b2c3d4"));
    assert_eq!(sda.hctl.as_deref(), Some("2:0:0:0"));
    assert_eq!(sda.transport.as_deref(), Some("sata"));
    assert_eq!(sda.vendor.as_deref(), Some("ATA"));
    assert_eq!(
        (sda.logical_sector_size, sda.physical_sector_size),
        (512, 4096)
    );
    assert!(sda.rotational);
    assert_eq!(
        sda.by_path.as_deref(),
        Some("/dev/disk/by-path/pci-0000:00:17.0-ata-3")
    );
    let sr0 = inv
        .disks
        .iter()
        .find(|d| d.name == "/dev/sr0")
        .expect("sr0");
    assert!(sr0.read_only && sr0.removable);
    assert_eq!(sr0.transport.as_deref(), Some("usb"));
    assert_eq!(
        agent::wipe::select::skip_reason(sr0, &[]).as_deref(),
        Some("virtual media")
    );
    let nic = &inv.interfaces[0];
    assert_eq!(
        (nic.name.as_str(), nic.has_carrier, nic.speed_mbps),
        ("eno1", false, None)
    );
    assert_eq!(inv.boot.secure_boot, Some(true));
    assert_eq!(inv.memory.physical_mb, None, "no SMBIOS in this tree");
    // Root device hints pick the SATA disk by its serial and size.
    let hints: proto::RootDeviceHints =
        serde_json::from_str(r#"{"serial": "ZC1ABCDE", "size": ">= 3000"}"#).expect("hints");
    assert_eq!(
        agent::hints::choose(&hints, &inv.disks).map(|d| d.name.as_str()),
        Some("/dev/sda")
    );
}

#[test]
fn live_inventory_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_ingot-agent"))
        .args(["inventory", "--json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inv: Inventory = serde_json::from_slice(&out.stdout).expect("inventory json");
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .expect("cpuinfo")
        .matches("processor\t:")
        .count();
    assert_eq!(inv.cpu.count as usize, cpus);
    assert!(inv.memory.total > 0);
    assert_eq!(inv.cpu.architecture, std::env::consts::ARCH);
    for d in &inv.disks {
        assert!(d.size > 0 && d.name.starts_with("/dev/"), "{d:?}");
    }
    // Every NIC with an IPv4 address reports it in both fields.
    for n in &inv.interfaces {
        if let Some(a) = &n.ipv4_address {
            assert!(n.addresses.iter().any(|x| x.starts_with(a.as_str())));
        }
    }
}
