//! Kernel module coldplug without udev: read every `/sys/bus/*/devices/*/modalias`, match
//! the aliases against `modules.alias` (shell globs), load each match after its dependencies
//! (`modules.dep`, soft `pre:` dependencies from `modules.softdep`), and repeat until no new
//! alias shows up. Bus drivers are matched like any other module (virtio_pci by its PCI
//! alias), and devices they create (virtio-net, virtio-blk on the virtio bus) only appear
//! after they probed: hence the passes (gotcha G4).
//!
//! Loads run in parallel (a module starts once its prerequisites are in), and the tree is
//! scanned again after every load, so a slow probe (ata_piix on an empty IDE controller)
//! does not hold back the NIC driver.
//!
//! The matching and the scheduling are pure over a sysfs root and a [`ModuleLoader`]; only
//! [`FinitLoader`] calls the kernel.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Shell-glob match as `modules.alias` uses it: `*`, `?` and `[...]` classes (with `!`/`^`
/// negation and `a-z` ranges). Works on bytes (aliases are ASCII) without allocating: the
/// generic ramdisk matches every device against thousands of patterns.
pub fn glob_match(pat: &str, s: &str) -> bool {
    let (p, t) = (pat.as_bytes(), s.as_bytes());
    // Iterative matcher with backtracking to the last `*`.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(p, pi, t[ti])
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
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `p[i] == '['`; returns (matched, index after `]`),
/// or None when the class is not closed (then `[` is an ordinary character that did not match).
fn class(p: &[u8], i: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = i + 1;
    let negate = matches!(p.get(j), Some(b'!') | Some(b'^'));
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < p.len() {
        if p[j] == b']' && !first {
            return Some((matched != negate, j + 1));
        }
        first = false;
        if j + 2 < p.len() && p[j + 1] == b'-' && p[j + 2] != b']' {
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

/// The literal start of a pattern (up to its first wildcard): a cheap first test.
fn literal_prefix(pat: &str) -> &str {
    let end = pat.find(['*', '?', '[']).unwrap_or(pat.len());
    &pat[..end]
}

/// The running kernel's module index (parsed by `kmod-index`, shared with the initramfs
/// builder).
pub use kmod_index::{ModuleIndex, module_name};

/// What coldplug asks of the index.
pub trait Lookup {
    /// Module names whose alias pattern matches `modalias`, in file order, without repeats.
    fn matches(&self, modalias: &str) -> Vec<String>;
    /// The paths to load for `name`, dependencies first, `name` last.
    fn load_order(&self, name: &str) -> Vec<String>;
}

impl Lookup for ModuleIndex {
    fn matches(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (pat, m) in &self.aliases {
            if modalias.starts_with(literal_prefix(pat))
                && glob_match(pat, modalias)
                && !out.contains(m)
            {
                out.push(m.clone());
            }
        }
        out
    }

    fn load_order(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        order_into(self, name, &mut out, &mut seen);
        out
    }
}

fn order_into(idx: &ModuleIndex, name: &str, out: &mut Vec<String>, seen: &mut BTreeSet<String>) {
    let n = kmod_index::normalise(name);
    if !seen.insert(n.clone()) {
        return;
    }
    let path = idx.paths.get(&n);
    let mut after = Vec::new();
    for s in idx.soft(&n).into_iter().flat_map(|s| &s.pre) {
        // A soft dependency may name an alias (`crypto-crc32c`).
        let m = idx.resolve(s).unwrap_or_else(|| s.clone());
        if path.is_some_and(|p| needs(idx, &m, p)) {
            after.push(m);
        } else {
            order_into(idx, &m, out, seen);
        }
    }
    let Some(path) = path else {
        return;
    };
    // modules.dep lists a module's dependencies so that the last one loads first.
    for d in idx.deps.get(path).into_iter().flatten().rev() {
        order_into(idx, &module_name(d), out, seen);
    }
    if !out.contains(path) {
        out.push(path.clone());
    }
    for m in after {
        order_into(idx, &m, out, seen);
    }
}

/// Whether module `name` needs the module file `path` (modules.dep lists every dependency,
/// transitive ones too). A soft pre-dependency that needs the module naming it cannot load
/// first: Debian's `softdep ipmi_msghandler pre: ipmi_devintf` with `ipmi_devintf`
/// depending on `ipmi_msghandler` (modprobe loads the handler first, as the soft one's
/// dependency); such a soft dependency loads right after instead.
fn needs(idx: &ModuleIndex, name: &str, path: &str) -> bool {
    idx.paths
        .get(&kmod_index::normalise(name))
        .and_then(|p| idx.deps.get(p))
        .is_some_and(|deps| deps.iter().any(|d| d == path))
}

/// Loads one module file. Implementations treat "already loaded / built in" as success.
/// Several loads may run at once (from different threads).
pub trait ModuleLoader: Sync {
    /// `urgent` loads serve a NIC (the critical path to the network); the others may yield
    /// the CPU to them.
    fn load(&self, rel_path: &str, urgent: bool) -> std::io::Result<()>;
}

/// The real loader: `finit_module(2)` on files under the modules directory.
#[derive(Debug)]
pub struct FinitLoader {
    pub dir: PathBuf,
}

impl ModuleLoader for FinitLoader {
    fn load(&self, rel_path: &str, urgent: bool) -> std::io::Result<()> {
        if !urgent {
            // This thread only loads this module: a lower priority for it lets the NIC
            // driver's load and probe have the CPUs first.
            // SAFETY: plain setpriority(2) on the calling thread (who 0 = this thread).
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
        }
        let f = std::fs::File::open(self.dir.join(rel_path))?;
        match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(std::io::Error::from(e)),
        }
    }
}

/// Whether a device alias is a network controller: PCI class 02 (`bc02`) or a virtio
/// network device (`virtio:d00000001`). Pure.
pub fn is_network_alias(alias: &str) -> bool {
    if let Some(rest) = alias.strip_prefix("pci:") {
        return rest.contains("bc02sc");
    }
    alias.starts_with("virtio:d00000001v")
}

/// Enables every PCI network controller (class 02) that has no driver yet, through
/// `sys/bus/pci/devices/*/enable`; returns how many. Enabling evaluates the firmware's ACPI
/// `_PRT` for the device's interrupt (QEMU's builds its table in an AML loop: 0.1-1 s under
/// TCG); done here, beside the NIC driver's load, the driver's own `pci_enable_device`
/// finds the device enabled and returns at once.
pub fn enable_nics(sys: &Path) -> usize {
    let Ok(devs) = std::fs::read_dir(sys.join("bus/pci/devices")) else {
        return 0;
    };
    let mut n = 0;
    for d in devs.flatten() {
        let p = d.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        if read("class").trim().starts_with("0x02")
            && read("enable").trim() == "0"
            && !p.join("driver").exists()
            && std::fs::write(p.join("enable"), "1").is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Whether a PCI network controller (class 02) is not enabled yet: the firmware's ACPI
/// `_PRT` for it is still to be evaluated (see [`enable_nics`]) under the kernel's one ACPI
/// interpreter lock, which a storage driver's probe would contend for.
pub fn nic_enable_pending(sys: &Path) -> bool {
    let Ok(devs) = std::fs::read_dir(sys.join("bus/pci/devices")) else {
        return false;
    };
    devs.flatten().any(|d| {
        let read = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap_or_default();
        read("class").trim().starts_with("0x02") && read("enable").trim() == "0"
    })
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
    /// Scans of the sysfs tree that found new aliases.
    pub passes: u32,
    /// Module paths loaded, in completion order.
    pub loaded: Vec<String>,
    /// (module path, error) for modules that failed to load.
    pub failed: Vec<(String, String)>,
    /// (module path, time `load` took), slowest first.
    pub timings: Vec<(String, Duration)>,
}

/// One module to load and the module paths that must be loaded before it.
#[derive(Debug)]
struct Job {
    path: String,
    after: Vec<String>,
    urgent: bool,
}

/// The direct prerequisites of `path` (hard dependencies and soft `pre:` ones that are
/// modules), as paths.
fn prerequisites(idx: &ModuleIndex, path: &str) -> Vec<String> {
    let mut out: Vec<String> = idx.deps.get(path).cloned().unwrap_or_default();
    for s in idx
        .soft(&module_name(path))
        .into_iter()
        .flat_map(|s| &s.pre)
    {
        // Not one that needs this module itself (it loads after, see `needs`).
        if let Some(m) = idx.resolve(s).filter(|m| !needs(idx, m, path))
            && let Some(p) = idx.paths.get(&m)
        {
            out.push(p.clone());
        }
    }
    out.retain(|p| p != path);
    out
}

/// How long the loads for non-network devices wait at most for the NIC drivers' loads.
pub const NIC_FIRST_MAX: Duration = Duration::from_millis(1500);

/// Loads the modules of every present device, in parallel: a module starts as soon as its
/// prerequisites are loaded (or failed), and the sysfs tree is scanned again after each
/// load, so devices a bus driver creates (virtio) are matched without waiting for the
/// other loads. Stops when no load runs and the last scan found nothing new, or after
/// `max_passes` scans with new aliases.
///
/// The loads that serve a NIC (urgent) go first: the others start once no urgent load is
/// queued or running or every PCI NIC is enabled ([`nic_enable_pending`]), or after
/// `nic_first` at the latest. A PCI driver's probe enables its
/// device, which evaluates the firmware's ACPI `_PRT` method under the kernel's one ACPI
/// interpreter lock (QEMU's builds its table in an AML loop: 0.1-1 s under TCG), and the
/// NIC driver's probe would otherwise queue behind the storage drivers' ones.
pub fn coldplug(
    sys: &Path,
    idx: &ModuleIndex,
    loader: &dyn ModuleLoader,
    max_passes: u32,
    nic_first: Duration,
) -> ColdplugReport {
    let began = Instant::now();
    let mut report = ColdplugReport::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    // Every path ever queued; `done` holds the finished ones.
    let mut queued: BTreeSet<String> = BTreeSet::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut waiting: Vec<Job> = Vec::new();
    let mut running = 0usize;
    let mut urgent_running = 0usize;
    let (tx, rx) = std::sync::mpsc::channel::<(String, bool, std::io::Result<()>, Duration)>();
    std::thread::scope(|scope| {
        let mut rescan = true;
        loop {
            if rescan && report.passes < max_passes {
                let now = modaliases(sys);
                let mut new: Vec<String> = now.difference(&seen).cloned().collect();
                // NICs first: a module shared with other devices (virtio_pci) is urgent then.
                new.sort_by_key(|a| !is_network_alias(a));
                if !new.is_empty() {
                    report.passes += 1;
                    for alias in &new {
                        for m in idx.matches(alias) {
                            for path in idx.load_order(&m) {
                                if queued.insert(path.clone()) {
                                    let after = prerequisites(idx, &path);
                                    let urgent = is_network_alias(alias);
                                    waiting.push(Job {
                                        path,
                                        after,
                                        urgent,
                                    });
                                }
                            }
                        }
                    }
                    seen.extend(new);
                }
            }
            // Start every job whose prerequisites are finished (or never queued: not a
            // module of this kernel, the load will tell); non-urgent ones only once the
            // urgent ones are over (or `nic_first` has passed).
            // A module an urgent one needs is urgent too (libata queued for the IDE
            // controller before a NIC driver that needs it).
            let needed: BTreeSet<String> = waiting
                .iter()
                .filter(|j| j.urgent)
                .flat_map(|j| j.after.iter().cloned())
                .collect();
            for j in waiting.iter_mut() {
                j.urgent |= needed.contains(&j.path);
            }
            let urgent_open = waiting.iter().any(|j| j.urgent) || urgent_running > 0;
            let hold = urgent_open && began.elapsed() < nic_first && nic_enable_pending(sys);
            let (ready, rest): (Vec<Job>, Vec<Job>) =
                std::mem::take(&mut waiting).into_iter().partition(|j| {
                    (j.urgent || !hold)
                        && j.after
                            .iter()
                            .all(|a| done.contains(a) || !queued.contains(a))
                });
            waiting = rest;
            for job in ready {
                running += 1;
                if job.urgent {
                    urgent_running += 1;
                }
                let tx = tx.clone();
                scope.spawn(move || {
                    let t = Instant::now();
                    let r = loader.load(&job.path, job.urgent);
                    let _ = tx.send((job.path, job.urgent, r, t.elapsed()));
                });
            }
            if running == 0 {
                if waiting.is_empty() {
                    break;
                }
                // Unreachable with a sane modules.dep (no cycles); load the rest anyway.
                for j in &mut waiting {
                    j.after.clear();
                }
                rescan = false;
                continue;
            }
            let got = if hold && !waiting.is_empty() {
                // Held jobs start when the urgent loads end, when the NICs are enabled or
                // when `nic_first` is over: look again every 10 ms.
                let left = nic_first.saturating_sub(began.elapsed());
                match rx.recv_timeout(left.min(Duration::from_millis(10))) {
                    Ok(m) => m,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        rescan = false;
                        continue;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                let Ok(m) = rx.recv() else {
                    break;
                };
                m
            };
            let (path, was_urgent, r, took) = got;
            running -= 1;
            if was_urgent {
                urgent_running -= 1;
            }
            match r {
                Ok(()) => report.loaded.push(path.clone()),
                Err(e) => report.failed.push((path.clone(), e.to_string())),
            }
            report.timings.push((path.clone(), took));
            done.insert(path);
            rescan = true;
        }
    });
    report.timings.sort_by_key(|t| std::cmp::Reverse(t.1));
    report
}

#[cfg(test)]
mod tests;
