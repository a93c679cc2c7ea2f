//! Network interfaces from sysfs (pure over a root), plus addresses from the
//! live system (getifaddrs) when running for real.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use proto::Interface;

fn read(p: &Path) -> Option<String> {
    let s = fs::read_to_string(p).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn is_pci_addr(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.'
}

/// Whether the interface at `iface` (a `sys/class/net/NAME` directory) is physical: backed
/// by a device (a `device` link), so not `lo`, a bridge, a tap, a VLAN or a bond. The one
/// rule for "a NIC" in the agent: the inventory (and so the lookup's MACs) and the ramdisk's
/// network bring-up (`init::net::physical_nics`, which also wants Ethernet) both use it.
pub fn is_physical(iface: &Path) -> bool {
    iface.join("device").exists()
}

/// Physical interfaces ([`is_physical`]) under `root/sys/class/net`.
/// `addrs` maps interface name to its addresses with prefix length.
pub fn interfaces(root: &Path, addrs: &BTreeMap<String, Vec<String>>) -> Vec<Interface> {
    let dir = root.join("sys/class/net");
    let Ok(rd) = fs::read_dir(&dir) else {
        return vec![];
    };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let base = dir.join(&name);
        if !is_physical(&base) {
            continue;
        }
        let dev = base.join("device");
        let real = super::block::sys_path(root, &dev);
        let pci = real
            .split('/')
            .rfind(|c| is_pci_addr(c))
            .map(str::to_string);
        let pci_dir = pci
            .as_ref()
            .map(|p| root.join("sys/bus/pci/devices").join(p));
        let list = addrs.get(&name).cloned().unwrap_or_default();
        let first = |v6: bool| {
            list.iter()
                .map(|a| a.split('/').next().unwrap_or(a))
                .find(|a| a.contains(':') == v6 && !(v6 && a.starts_with("fe80")))
                .map(str::to_string)
        };
        out.push(Interface {
            mac_address: read(&base.join("address")).unwrap_or_default(),
            has_carrier: read(&base.join("carrier")).as_deref() == Some("1"),
            speed_mbps: read(&base.join("speed"))
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|s| u32::try_from(s).ok()),
            driver: fs::read_link(dev.join("driver"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned())),
            vendor: pci_dir.as_ref().and_then(|d| read(&d.join("vendor"))),
            product: pci_dir.as_ref().and_then(|d| read(&d.join("device"))),
            pci_address: pci,
            ipv4_address: first(false),
            ipv6_address: first(true),
            addresses: list,
            name,
            lldp: None,
        });
    }
    out
}

/// Addresses of the running system, by interface.
pub fn live_addresses() -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(ifs) = nix::ifaddrs::getifaddrs() else {
        return m;
    };
    for ifa in ifs {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let text = if let (Some(a), Some(n)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            format!("{}/{}", a.ip(), u32::from(n.ip()).count_ones())
        } else if let (Some(a), Some(n)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            format!("{}/{}", a.ip(), u128::from(n.ip()).count_ones())
        } else {
            continue;
        };
        m.entry(ifa.interface_name).or_default().push(text);
    }
    m
}
