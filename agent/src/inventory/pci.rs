//! PCI functions from `sys/bus/pci/devices` under a root (IPA's `pci-devices` fields, plus
//! the bound driver, the NUMA node and what the class says the device is).

use std::path::Path;

use proto::PciDevice;

/// At most this many functions are reported (a large server has a few hundred).
const MAX_DEVICES: usize = 4096;

/// A sysfs hex attribute (`0x1af4\n`) without `0x`, lower case; `None` when unreadable or
/// not hex.
fn hex_attr(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    let digits = text.trim().trim_start_matches("0x").to_ascii_lowercase();
    (!digits.is_empty() && digits.len() <= 8 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(digits)
}

/// PURE: what a six-digit class code names.
pub fn kind_of(class: Option<&str>) -> &'static str {
    match class.map(|c| c.get(..2).unwrap_or("")) {
        Some("02") => "nic",
        Some("03") => "gpu",
        Some("01") => "storage",
        Some("06") => "bridge",
        Some("0c") if class.is_some_and(|c| c.starts_with("0c03")) => "usb",
        _ => "other",
    }
}

/// Every PCI function under `root`, by bus address.
pub fn devices(root: &Path) -> Vec<PciDevice> {
    let dir = root.join("sys/bus/pci/devices");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .take(MAX_DEVICES)
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|bus| {
            let dev = dir.join(&bus);
            let vendor_id = hex_attr(&dev, "vendor")?;
            let product_id = hex_attr(&dev, "device")?;
            let class = hex_attr(&dev, "class");
            let numa_node = std::fs::read_to_string(dev.join("numa_node"))
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
                .and_then(|n| u32::try_from(n).ok());
            Some(PciDevice {
                kind: kind_of(class.as_deref()).to_owned(),
                bus,
                vendor_id,
                product_id,
                class,
                revision: hex_attr(&dev, "revision"),
                driver: std::fs::read_link(dev.join("driver"))
                    .ok()
                    .and_then(|l| l.file_name()?.to_str().map(str::to_owned)),
                numa_node,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join(name), text).expect("write");
    }

    #[test]
    fn reads_functions_with_class_driver_and_node() {
        let root = tempfile::tempdir().expect("tempdir");
        let devs = root.path().join("sys/bus/pci/devices");
        let gpu = devs.join("0000:41:00.0");
        write(&gpu, "vendor", "0x10de\n");
        write(&gpu, "device", "0x2330\n");
        write(&gpu, "class", "0x030200\n");
        write(&gpu, "revision", "0xa1\n");
        write(&gpu, "numa_node", "1\n");
        let drivers = root.path().join("sys/bus/pci/drivers/nvidia");
        std::fs::create_dir_all(&drivers).expect("mkdir");
        std::os::unix::fs::symlink(&drivers, gpu.join("driver")).expect("link");
        let nic = devs.join("0000:00:03.0");
        write(&nic, "vendor", "0x1AF4\n");
        write(&nic, "device", "0x1000\n");
        write(&nic, "class", "0x020000\n");
        write(&nic, "numa_node", "-1\n");
        // Not a PCI function: no vendor.
        write(&devs.join("0000:00:04.0"), "class", "0x060000\n");
        let got = devices(root.path());
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].bus, "0000:00:03.0");
        assert_eq!(got[0].vendor_id, "1af4");
        assert_eq!(got[0].kind, "nic");
        assert_eq!(got[0].numa_node, None, "-1: no NUMA affinity");
        assert_eq!(got[1].kind, "gpu");
        assert_eq!(got[1].class.as_deref(), Some("030200"));
        assert_eq!(got[1].revision.as_deref(), Some("a1"));
        assert_eq!(got[1].driver.as_deref(), Some("nvidia"));
        assert_eq!(got[1].numa_node, Some(1));
    }

    #[test]
    fn classes_name_kinds() {
        for (class, kind) in [
            (Some("020000"), "nic"),
            (Some("030000"), "gpu"),
            (Some("010802"), "storage"),
            (Some("060400"), "bridge"),
            (Some("0c0330"), "usb"),
            (Some("0c0500"), "other"),
            (None, "other"),
        ] {
            assert_eq!(kind_of(class), kind, "{class:?}");
        }
    }
}
