//! Kernel module coldplug without udev: read every `/sys/bus/*/devices/*/modalias`, match
//! the aliases against `modules.alias` (shell globs), load each match after its dependencies
//! (`modules.dep`, soft `pre:` dependencies from `modules.softdep`), and repeat until no new
//! alias shows up. Bus drivers are matched like any other module (virtio_pci by its PCI
//! alias), and devices they create (virtio-net, virtio-blk on the virtio bus) only appear
//! after they probed: hence the passes (gotcha G4).
//!
//! The matching and the pass loop are pure over a sysfs root and a [`ModuleLoader`]; only
//! [`FinitLoader`] calls the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Shell-glob match as `modules.alias` uses it: `*`, `?` and `[...]` classes (with `!`/`^`
/// negation and `a-z` ranges).
pub fn glob_match(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = s.chars().collect();
    // Iterative matcher with backtracking to the last `*`.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, next)) = class(&p, pi, t[ti])
                        && ok
                    {
                        pi = next;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[i] == '['`; returns (matched, index after `]`),
/// or None when the class is not closed (then `[` is an ordinary character that did not match).
fn class(p: &[char], i: usize, c: char) -> Option<(bool, usize)> {
    let mut j = i + 1;
    let negate = matches!(p.get(j), Some('!') | Some('^'));
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < p.len() {
        if p[j] == ']' && !first {
            return Some((matched != negate, j + 1));
        }
        first = false;
        if j + 2 < p.len() && p[j + 1] == '-' && p[j + 2] != ']' {
            if p[j] <= c && c <= p[j + 2] {
                matched = true;
            }
            j += 3;
        } else {
            if p[j] == c {
                matched = true;
            }
            j += 1;
        }
    }
    None
}

/// `modules.dep`, `modules.alias` and `modules.softdep` of the running kernel.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// Module name (`-` as `_`) -> path relative to the modules directory.
    pub paths: BTreeMap<String, String>,
    /// Path -> dependency paths, as listed (the last must load first).
    pub deps: BTreeMap<String, Vec<String>>,
    /// (pattern, module name) in file order.
    pub aliases: Vec<(String, String)>,
    /// Module name -> soft `pre:` dependencies (names).
    pub softdeps: BTreeMap<String, Vec<String>>,
}

/// `kernel/x/virtio-net.ko.xz` -> `virtio_net`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

impl ModuleIndex {
    /// Parses the three files' text.
    pub fn parse(dep: &str, alias: &str, softdep: &str) -> Self {
        let mut idx = ModuleIndex::default();
        for line in dep.lines() {
            if let Some((path, rest)) = line.split_once(':') {
                let path = path.trim().to_owned();
                idx.paths.insert(module_name(&path), path.clone());
                idx.deps
                    .insert(path, rest.split_whitespace().map(str::to_owned).collect());
            }
        }
        for line in alias.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(pat), Some(m)) = (w.next(), w.next(), w.next()) {
                idx.aliases.push((pat.to_owned(), m.replace('-', "_")));
            }
        }
        for line in softdep.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(m) = w.next() else { continue };
            let mut pre = Vec::new();
            let mut in_pre = false;
            for t in w {
                match t {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    n if in_pre => pre.push(n.replace('-', "_")),
                    _ => {}
                }
            }
            idx.softdeps.insert(m.replace('-', "_"), pre);
        }
        idx
    }

    /// Reads the index from a modules directory (`/lib/modules/KVER`).
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let read = |f: &str| std::fs::read_to_string(dir.join(f));
        Ok(Self::parse(
            &read("modules.dep")?,
            &read("modules.alias").unwrap_or_default(),
            &read("modules.softdep").unwrap_or_default(),
        ))
    }

    /// Module names whose alias pattern matches `modalias`, in file order, without repeats.
    pub fn matches(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (pat, m) in &self.aliases {
            if glob_match(pat, modalias) && !out.contains(m) {
                out.push(m.clone());
            }
        }
        out
    }

    /// The paths to load for `name`, dependencies first, `name` last.
    pub fn load_order(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        self.order_into(name, &mut out, &mut seen);
        out
    }

    fn order_into(&self, name: &str, out: &mut Vec<String>, seen: &mut BTreeSet<String>) {
        let n = name.replace('-', "_");
        if !seen.insert(n.clone()) {
            return;
        }
        for s in self.softdeps.get(&n).into_iter().flatten() {
            self.order_into(s, out, seen);
        }
        let Some(path) = self.paths.get(&n) else {
            return;
        };
        // modules.dep lists a module's dependencies so that the last one loads first.
        for d in self.deps.get(path).into_iter().flatten().rev() {
            self.order_into(&module_name(d), out, seen);
        }
        if !out.contains(path) {
            out.push(path.clone());
        }
    }
}

/// Loads one module file. Implementations treat "already loaded / built in" as success.
pub trait ModuleLoader {
    fn load(&mut self, rel_path: &str) -> std::io::Result<()>;
}

/// The real loader: `finit_module(2)` on files under the modules directory.
#[derive(Debug)]
pub struct FinitLoader {
    pub dir: PathBuf,
}

impl ModuleLoader for FinitLoader {
    fn load(&mut self, rel_path: &str) -> std::io::Result<()> {
        let f = std::fs::File::open(self.dir.join(rel_path))?;
        match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(std::io::Error::from(e)),
        }
    }
}

/// Every modalias under `sys/bus/*/devices/*/modalias`.
pub fn modaliases(sys: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(buses) = std::fs::read_dir(sys.join("bus")) else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devs) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devs.flatten() {
            if let Ok(a) = std::fs::read_to_string(dev.path().join("modalias")) {
                let a = a.trim();
                if !a.is_empty() {
                    out.insert(a.to_owned());
                }
            }
        }
    }
    out
}

/// What coldplug did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ColdplugReport {
    /// Passes that found new aliases.
    pub passes: u32,
    /// Module paths loaded, in order.
    pub loaded: Vec<String>,
    /// (module path, error) for modules that failed to load.
    pub failed: Vec<(String, String)>,
}

/// Runs passes until no new modalias appears (at most `max_passes`).
pub fn coldplug(
    sys: &Path,
    idx: &ModuleIndex,
    loader: &mut dyn ModuleLoader,
    max_passes: u32,
) -> ColdplugReport {
    let mut report = ColdplugReport::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut tried: BTreeSet<String> = BTreeSet::new();
    while report.passes < max_passes {
        let now = modaliases(sys);
        let new: Vec<String> = now.difference(&seen).cloned().collect();
        if new.is_empty() {
            break;
        }
        report.passes += 1;
        for alias in &new {
            for m in idx.matches(alias) {
                for path in idx.load_order(&m) {
                    if !tried.insert(path.clone()) {
                        continue;
                    }
                    match loader.load(&path) {
                        Ok(()) => report.loaded.push(path),
                        Err(e) => report.failed.push((path, e.to_string())),
                    }
                }
            }
        }
        seen.extend(new);
    }
    report
}

#[cfg(test)]
mod tests {
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

    /// A fake kernel: loading virtio_pci makes the virtio devices appear in the sysfs tree.
    struct FakeKernel {
        sys: PathBuf,
        loaded: Vec<String>,
    }

    impl ModuleLoader for FakeKernel {
        fn load(&mut self, rel: &str) -> std::io::Result<()> {
            self.loaded.push(rel.to_owned());
            if rel.ends_with("virtio_pci.ko") {
                for (n, a) in [
                    ("virtio0", "virtio:d00000001v00001AF4"),
                    ("virtio1", "virtio:d00000002v00001AF4"),
                ] {
                    let d = self.sys.join("bus/virtio/devices").join(n);
                    std::fs::create_dir_all(&d)?;
                    std::fs::write(d.join("modalias"), format!("{a}\n"))?;
                }
            }
            if rel.ends_with("failover.ko") && !rel.contains("net_") {
                return Err(std::io::Error::other("Unknown symbol in module"));
            }
            Ok(())
        }
    }

    #[test]
    fn coldplug_needs_a_second_pass_for_virtio_devices() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path().join("sys");
        let pci = sys.join("bus/pci/devices/0000:00:03.0");
        std::fs::create_dir_all(&pci).expect("mkdir");
        std::fs::write(
            pci.join("modalias"),
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n",
        )
        .expect("write");
        let host = sys.join("bus/pci/devices/0000:00:00.0");
        std::fs::create_dir_all(&host).expect("mkdir");
        std::fs::write(
            host.join("modalias"),
            "pci:v00008086d00001237sv0sd0bc06sc00i00\n",
        )
        .expect("write");
        std::fs::create_dir_all(sys.join("bus/cpu/devices/cpu0")).expect("no modalias");

        let idx = ModuleIndex::parse(DEP, ALIAS, SOFT);
        let mut k = FakeKernel {
            sys: sys.clone(),
            loaded: vec![],
        };
        let r = coldplug(&sys, &idx, &mut k, 10);
        assert_eq!(r.passes, 2);
        assert_eq!(
            k.loaded,
            vec![
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko",
                "kernel/drivers/block/virtio_blk.ko",
            ],
            "each module once, dependencies first"
        );
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].0, "kernel/net/core/failover.ko");
        // Nothing new: a further run does nothing.
        let r2 = coldplug(&sys, &idx, &mut k, 1);
        assert_eq!(r2.passes, 1, "every device is there already");
        assert_eq!(
            r2.loaded.len(),
            7,
            "a fresh run loads again (EEXIST is success)"
        );
    }
}
