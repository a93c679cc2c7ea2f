//! Hardware inventory, built by pure parsers over a root directory so that
//! captured sysfs/procfs/SMBIOS trees in `tests/fixtures/` exercise them.
//! [`collect`] reads a root; [`collect_live`] adds what only the running
//! system can tell (addresses, host name, the BMC address over `/dev/ipmi0`).

pub mod block;
pub mod cpu;
pub mod lldp;
pub mod net;
pub mod numa;
pub mod pci;
pub mod smbios;

use std::collections::BTreeMap;
use std::path::Path;

use proto::{Boot, BootMode, Inventory};

const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Boot mode and Secure Boot state from `root/sys/firmware/efi`.
pub fn boot(root: &Path) -> Boot {
    let efi = root.join("sys/firmware/efi");
    if !efi.exists() {
        return Boot {
            current_boot_mode: BootMode::Bios,
            pxe_interface: None,
            secure_boot: None,
        };
    }
    // efivarfs files are 4 bytes of attributes followed by the value.
    let sb = std::fs::read(efi.join(format!("efivars/SecureBoot-{EFI_GLOBAL}")))
        .ok()
        .and_then(|b| b.get(4).map(|&v| v == 1));
    Boot {
        current_boot_mode: BootMode::Uefi,
        pxe_interface: None,
        secure_boot: Some(sb.unwrap_or(false)),
    }
}

/// Inventory from a root directory; `addrs` are interface addresses.
pub fn collect(root: &Path, arch: &str, addrs: &BTreeMap<String, Vec<String>>) -> Inventory {
    let cpu = cpu::parse_cpuinfo(
        &std::fs::read_to_string(root.join("proc/cpuinfo")).unwrap_or_default(),
        arch,
    );
    let mut memory =
        cpu::parse_meminfo(&std::fs::read_to_string(root.join("proc/meminfo")).unwrap_or_default());
    let sm = smbios::read(root).unwrap_or_default();
    memory.physical_mb = sm.physical_mb;
    let interfaces = net::interfaces(root, addrs);
    Inventory {
        numa_topology: numa::topology(root, &interfaces),
        pci_devices: pci::devices(root),
        interfaces,
        cpu,
        memory,
        disks: block::disks(root).unwrap_or_default(),
        system_vendor: sm.system,
        boot: boot(root),
        bmc_address: None,
        baseboard: sm.baseboard,
        chassis: sm.chassis,
        hostname: None,
    }
}

/// Inventory of the running machine.
pub fn collect_live() -> Inventory {
    let mut inv = collect(
        Path::new("/"),
        std::env::consts::ARCH,
        &net::live_addresses(),
    );
    inv.bmc_address = crate::bmc::address(Path::new(crate::bmc::IPMI_DEVICE));
    cpu::refresh_live(&mut inv.cpu, &mut inv.memory);
    refresh_live(&mut inv);
    inv
}

/// Re-reads what changes once the network is up (interface addresses, host name) in an
/// inventory collected before: PID 1 collects the rest while DHCP runs.
pub fn refresh_live(inv: &mut Inventory) {
    inv.interfaces = net::interfaces(Path::new("/"), &net::live_addresses());
    inv.hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string());
}
