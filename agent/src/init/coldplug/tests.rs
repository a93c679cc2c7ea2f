//! Tests of the coldplug scan and loader ordering against a fake sysfs and kernel.

use super::*;

#[test]
fn glob_table() {
    let cases = [
        (
            "pci:v00001AF4d*sv*sd*bc*sc*i*",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
            true,
        ),
        (
            "pci:v00001AF4d*sv*sd*bc*sc*i*",
            "pci:v00008086d0000100Esv00001AF4sd00000001bc02sc00i00",
            false,
        ),
        ("virtio:d00000001v*", "virtio:d00000001v00001AF4", true),
        ("virtio:d00000001v*", "virtio:d00000002v00001AF4", false),
        (
            "pci:v00008086d0000100[EF]sv*",
            "pci:v00008086d0000100Esv0000",
            true,
        ),
        (
            "pci:v00008086d0000100[EF]sv*",
            "pci:v00008086d0000100Dsv0000",
            false,
        ),
        ("a[!0-9]c", "abc", true),
        ("a[!0-9]c", "a1c", false),
        ("a[0-9]c", "a5c", true),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("*", "", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("acpi*:PNP0A0[38]:*", "acpi:PNP0A03:", true),
        ("a[b", "a[b", false),
        (
            "usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*",
            "usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00",
            true,
        ),
    ];
    for (p, s, want) in cases {
        assert_eq!(glob_match(p, s), want, "{p} vs {s}");
    }
}

const DEP: &str = "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/drivers/virtio/virtio.ko:\n\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
kernel/net/core/failover.ko:\n\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
kernel/crypto/crc32c_generic.ko:\n";
const ALIAS: &str = "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
alias virtio:d00000001v* virtio_net\n\
alias virtio:d00000002v* virtio_blk\n\
alias crypto-crc32c crc32c_generic\n";
const SOFT: &str = "softdep virtio_blk pre: crc32c post: whatever\n";

#[test]
fn literal_prefixes() {
    assert_eq!(
        literal_prefix("pci:v00008086d0000100[EF]sv*"),
        "pci:v00008086d0000100"
    );
    assert_eq!(literal_prefix("acpi*:PNP0A03:*"), "acpi");
    assert_eq!(literal_prefix("fs-ext4"), "fs-ext4");
    assert_eq!(literal_prefix("*"), "");
}

#[test]
fn network_aliases() {
    assert!(is_network_alias(
        "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"
    ));
    assert!(is_network_alias("virtio:d00000001v00001AF4"));
    assert!(!is_network_alias(
        "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80"
    ));
    assert!(!is_network_alias("virtio:d00000002v00001AF4"));
    assert!(!is_network_alias("acpi:PNP0A03:"));
}

#[test]
fn load_order_puts_dependencies_first() {
    let idx = ModuleIndex::parse(DEP, ALIAS, SOFT);
    assert_eq!(
        idx.load_order("virtio-net"),
        vec![
            "kernel/drivers/virtio/virtio.ko",
            "kernel/drivers/virtio/virtio_ring.ko",
            "kernel/net/core/failover.ko",
            "kernel/drivers/net/net_failover.ko",
            "kernel/drivers/net/virtio_net.ko",
        ]
    );
    // A soft dependency that is not a module name (an alias here) is skipped quietly.
    assert_eq!(
        idx.load_order("virtio_blk").last().map(String::as_str),
        Some("kernel/drivers/block/virtio_blk.ko")
    );
}

/// Debian's IPMI modules: `ipmi_msghandler` names `ipmi_devintf` as a soft pre-dependency,
/// and `ipmi_devintf` depends on `ipmi_msghandler`. The handler must load first, or every
/// other IPMI module fails with unknown symbols (seen on QEMU's KCS BMC: no /dev/ipmi0).
#[test]
fn a_soft_dependency_that_needs_its_module_loads_after_it() {
    let dep = "kernel/drivers/char/ipmi/ipmi_devintf.ko: kernel/drivers/char/ipmi/ipmi_msghandler.ko\n\
kernel/drivers/char/ipmi/ipmi_msghandler.ko:\n\
kernel/drivers/char/ipmi/ipmi_si.ko: kernel/drivers/char/ipmi/ipmi_msghandler.ko\n";
    let soft = "softdep ipmi_msghandler pre: ipmi_devintf\n";
    let idx = ModuleIndex::parse(dep, "", soft);
    let (h, d, si) = (
        "kernel/drivers/char/ipmi/ipmi_msghandler.ko",
        "kernel/drivers/char/ipmi/ipmi_devintf.ko",
        "kernel/drivers/char/ipmi/ipmi_si.ko",
    );
    assert_eq!(idx.load_order("ipmi_si"), vec![h, d, si]);
    assert_eq!(idx.load_order("ipmi_devintf"), vec![h, d]);
    assert_eq!(idx.load_order("ipmi_msghandler"), vec![h, d]);
    // The parallel loader waits for the hard dependency only (no cycle to break).
    assert_eq!(prerequisites(&idx, h), Vec::<String>::new());
    assert_eq!(prerequisites(&idx, d), vec![h.to_owned()]);
    // An ordinary soft dependency still loads first.
    let idx = ModuleIndex::parse(DEP, ALIAS, "softdep virtio_blk pre: crc32c_generic\n");
    assert_eq!(
        idx.load_order("virtio_blk").first().map(String::as_str),
        Some("kernel/crypto/crc32c_generic.ko")
    );
}

/// A fake kernel: loading virtio_pci makes the virtio devices appear in the sysfs tree;
/// `slow` takes 300 ms to "probe".
struct FakeKernel {
    sys: PathBuf,
    /// (event, path): "start" or "end" of each load, in time order.
    log: std::sync::Mutex<Vec<(&'static str, String)>>,
    slow: &'static str,
    /// The NIC driver (virtio_pci) enables the NIC's PCI device when its load starts
    /// (the slow part of its probe comes after) rather than when it ends.
    enable_early: bool,
}

impl FakeKernel {
    fn note(&self, what: &'static str, rel: &str) {
        if let Ok(mut l) = self.log.lock() {
            l.push((what, rel.to_owned()));
        }
    }

    fn starts(&self) -> Vec<String> {
        let l = self.log.lock().expect("log");
        l.iter()
            .filter(|(w, _)| *w == "start")
            .map(|(_, p)| p.clone())
            .collect()
    }

    fn position(&self, what: &str, suffix: &str) -> usize {
        let l = self.log.lock().expect("log");
        l.iter()
            .position(|(w, p)| *w == what && p.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {what} of {suffix} in {l:?}"))
    }
}

impl ModuleLoader for FakeKernel {
    fn load(&self, rel: &str, urgent: bool) -> std::io::Result<()> {
        self.note("start", rel);
        if urgent {
            self.note("urgent", rel);
        }
        let nic_enable = self.sys.join("bus/pci/devices/0000:00:03.0/enable");
        if self.enable_early && rel.ends_with("virtio_pci.ko") {
            std::fs::write(&nic_enable, "1\n")?;
        }
        if rel.ends_with(self.slow) {
            std::thread::sleep(Duration::from_millis(300));
        }
        if rel.ends_with("virtio_pci.ko") {
            std::fs::write(&nic_enable, "1\n")?;
            for (n, a) in [
                ("virtio0", "virtio:d00000001v00001AF4"),
                ("virtio1", "virtio:d00000002v00001AF4"),
            ] {
                let d = self.sys.join("bus/virtio/devices").join(n);
                std::fs::create_dir_all(&d)?;
                std::fs::write(d.join("modalias"), format!("{a}\n"))?;
            }
        }
        self.note("end", rel);
        if rel.ends_with("failover.ko") && !rel.contains("net_") {
            return Err(std::io::Error::other("Unknown symbol in module"));
        }
        Ok(())
    }
}

fn fake_sys(dir: &Path) -> PathBuf {
    let sys = dir.join("sys");
    for (dev, alias, class) in [
        (
            "0000:00:03.0",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
            "0x020000",
        ),
        (
            "0000:00:00.0",
            "pci:v00008086d00001237sv0sd0bc06sc00i00",
            "0x060000",
        ),
        (
            "0000:00:01.1",
            "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80",
            "0x010180",
        ),
    ] {
        let d = sys.join("bus/pci/devices").join(dev);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("modalias"), format!("{alias}\n")).expect("write");
        std::fs::write(d.join("class"), format!("{class}\n")).expect("write");
        std::fs::write(d.join("enable"), "0\n").expect("write");
    }
    std::fs::create_dir_all(sys.join("bus/cpu/devices/cpu0")).expect("no modalias");
    sys
}

const IDE_ALIAS: &str = "alias pci:v00008086d00007010sv*sd*bc*sc*i* ata_piix\n";
const IDE_DEP: &str = "kernel/drivers/ata/ata_piix.ko: kernel/drivers/ata/libata.ko\n\
kernel/drivers/ata/libata.ko:\n";

#[test]
fn coldplug_loads_dependencies_first_and_finds_virtio_devices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = fake_sys(dir.path());
    let idx = ModuleIndex::parse(
        &format!("{DEP}{IDE_DEP}"),
        &format!("{ALIAS}{IDE_ALIAS}"),
        SOFT,
    );
    let k = FakeKernel {
        sys: sys.clone(),
        log: Default::default(),
        slow: "ata_piix.ko",
        enable_early: false,
    };
    let r = coldplug(&sys, &idx, &k, 10, NIC_FIRST_MAX);
    let mut starts = k.starts();
    starts.sort();
    let mut want = vec![
        "kernel/drivers/ata/ata_piix.ko",
        "kernel/drivers/ata/libata.ko",
        "kernel/drivers/block/virtio_blk.ko",
        "kernel/drivers/net/net_failover.ko",
        "kernel/drivers/net/virtio_net.ko",
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_pci.ko",
        "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/net/core/failover.ko",
    ];
    want.sort();
    assert_eq!(starts, want, "each module once");
    // Every module starts only after its prerequisites ended.
    for (m, dep) in [
        ("virtio_pci.ko", "virtio.ko"),
        ("virtio_pci.ko", "virtio_ring.ko"),
        ("virtio_pci.ko", "virtio_pci_modern_dev.ko"),
        ("virtio_net.ko", "net_failover.ko"),
        ("net_failover.ko", "/failover.ko"),
        ("virtio_net.ko", "virtio_pci.ko"),
        ("ata_piix.ko", "libata.ko"),
    ] {
        assert!(
            k.position("end", dep) < k.position("start", m),
            "{dep} before {m}"
        );
    }
    // The slow IDE probe did not hold back the NIC driver.
    assert!(
        k.position("end", "virtio_net.ko") < k.position("end", "ata_piix.ko"),
        "virtio_net waited for ata_piix"
    );
    // The storage loads waited for the NIC driver: none starts before the NIC's PCI
    // device is enabled (the end of virtio_pci's load here).
    for m in ["libata.ko", "ata_piix.ko", "virtio_blk.ko"] {
        assert!(
            k.position("end", "virtio_pci.ko") < k.position("start", m),
            "{m} started before the NIC was enabled"
        );
    }
    // The NIC's chain is urgent (virtio_pci serves the NIC here), the IDE driver is not.
    for m in ["virtio_pci.ko", "virtio.ko", "virtio_net.ko", "failover.ko"] {
        k.position("urgent", m);
    }
    assert!(
        !k.log
            .lock()
            .expect("log")
            .iter()
            .any(|(w, p)| *w == "urgent" && (p.contains("ata") || p.contains("virtio_blk"))),
        "storage loads are not urgent"
    );
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].0, "kernel/net/core/failover.ko");
    assert_eq!(r.loaded.len(), 9);
    assert_eq!(r.timings.len(), 10);
    assert!(r.timings[0].0.ends_with("ata_piix.ko"), "slowest first");
    assert!(r.passes >= 2, "virtio devices are found by a later scan");

    // Nothing new: a further run loads the same set again (EEXIST is success).
    let r2 = coldplug(&sys, &idx, &k, 10, NIC_FIRST_MAX);
    assert_eq!(r2.loaded.len(), 9);
}

#[test]
fn storage_loads_wait_for_a_slow_nic_driver_only_so_long() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = fake_sys(dir.path());
    let idx = ModuleIndex::parse(
        &format!("{DEP}{IDE_DEP}"),
        &format!("{ALIAS}{IDE_ALIAS}"),
        SOFT,
    );
    let k = FakeKernel {
        sys: sys.clone(),
        log: Default::default(),
        slow: "virtio_pci.ko",
        enable_early: false,
    };
    let r = coldplug(&sys, &idx, &k, 10, Duration::from_millis(50));
    assert!(
        k.position("start", "libata.ko") < k.position("end", "virtio_pci.ko"),
        "the IDE driver's load waited past the limit"
    );
    assert_eq!(r.loaded.len(), 9);
}

#[test]
fn storage_loads_start_once_the_nic_is_enabled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = fake_sys(dir.path());
    let idx = ModuleIndex::parse(
        &format!("{DEP}{IDE_DEP}"),
        &format!("{ALIAS}{IDE_ALIAS}"),
        SOFT,
    );
    assert!(nic_enable_pending(&sys));
    let k = FakeKernel {
        sys: sys.clone(),
        log: Default::default(),
        slow: "virtio_pci.ko",
        enable_early: true,
    };
    let r = coldplug(&sys, &idx, &k, 10, NIC_FIRST_MAX);
    // The NIC was enabled at once; its driver's slow rest did not hold the IDE driver.
    assert!(
        k.position("start", "libata.ko") < k.position("end", "virtio_pci.ko"),
        "the IDE driver waited for the whole NIC driver load"
    );
    assert!(!nic_enable_pending(&sys));
    assert_eq!(r.loaded.len(), 9);
}

#[test]
fn only_driverless_disabled_nics_are_enabled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pci = dir.path().join("bus/pci/devices");
    // (device, class, enable, has a driver, enabled afterwards)
    let devs = [
        ("0000:00:02.0", "0x020000", "0", false, "1"),
        ("0000:00:03.0", "0x020000", "1", false, "1"),
        ("0000:00:04.0", "0x020000", "0", true, "0"),
        ("0000:00:05.0", "0x010601", "0", false, "0"),
    ];
    for (d, class, enable, driver, _) in devs {
        let p = pci.join(d);
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::write(p.join("class"), format!("{class}\n")).expect("w");
        std::fs::write(p.join("enable"), format!("{enable}\n")).expect("w");
        if driver {
            std::fs::create_dir_all(p.join("driver")).expect("mkdir");
        }
    }
    assert_eq!(enable_nics(dir.path()), 1);
    for (d, _, _, _, want) in devs {
        let got = std::fs::read_to_string(pci.join(d).join("enable")).expect("r");
        assert_eq!(got.trim(), want, "{d}");
    }
    assert_eq!(enable_nics(&dir.path().join("nothing")), 0);
}

#[test]
fn coldplug_stops_after_max_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = fake_sys(dir.path());
    let idx = ModuleIndex::parse(DEP, ALIAS, SOFT);
    let k = FakeKernel {
        sys: sys.clone(),
        log: Default::default(),
        slow: "none",
        enable_early: false,
    };
    let r = coldplug(&sys, &idx, &k, 1, NIC_FIRST_MAX);
    assert_eq!(r.passes, 1);
    assert!(
        !k.starts().iter().any(|p| p.ends_with("virtio_net.ko")),
        "the second scan was not allowed"
    );
}
