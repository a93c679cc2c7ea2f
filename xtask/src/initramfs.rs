//! `cargo xtask initramfs --profile qemu|generic`: builds the agent ramdisk.
//!
//! Steps: build the static agent (dist profile, `+crt-static`), find (or install) Debian's
//! kernel and modules, take the profile's modules with their dependency closure, write a
//! cpio newc archive (device nodes included, no root needed), compress it with zstd, copy the
//! kernel beside it, print every part's size and check the profile's budget and the agent
//! binary's own budget. A module the profile names that the kernel has neither as a module
//! nor built in fails the task. The third-party notice (`notice`) goes into the archive.

mod notice;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Deserialize;

/// `initramfs/profiles.toml`: the agent binary's budget and the profiles by name.
#[derive(Debug, Deserialize)]
pub struct Recipe {
    /// The largest static agent binary (`/init`) the task accepts, in KiB.
    pub agent_budget_kib: u64,
    #[serde(flatten)]
    pub profiles: BTreeMap<String, Profile>,
}

impl Recipe {
    pub fn load(root: &Path) -> anyhow::Result<Self> {
        toml::from_str(
            &std::fs::read_to_string(root.join("initramfs/profiles.toml"))
                .context("reading initramfs/profiles.toml")?,
        )
        .context("parsing initramfs/profiles.toml")
    }
}

/// One profile of `initramfs/profiles.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub budget_mib: u64,
    pub modules: Vec<String>,
    pub dirs: Vec<String>,
}

/// Options of the task.
#[derive(Debug)]
pub struct Options {
    pub profile: String,
    pub kver: Option<String>,
    pub agent: Option<PathBuf>,
    pub level: i32,
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut o = Options {
            profile: "qemu".into(),
            kver: None,
            agent: None,
            level: 19,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || {
                it.next()
                    .cloned()
                    .with_context(|| format!("{a} needs a value"))
            };
            match a.as_str() {
                "--profile" => o.profile = val()?,
                "--kver" => o.kver = Some(val()?),
                "--agent" => o.agent = Some(PathBuf::from(val()?)),
                "--level" => o.level = val()?.parse().context("--level takes a number")?,
                other => {
                    bail!("unknown argument {other} (use --profile, --kver, --agent, --level)")
                }
            }
        }
        Ok(o)
    }
}

/// The kernel's module index (`kmod-index`, shared with the agent's coldplug).
pub use kmod_index::{ModuleIndex, module_name};

/// What the builder asks of the index: which modules a profile needs.
pub trait Closure {
    /// The closure of `roots` over hard and soft dependencies, as relative paths.
    /// Names that are not modules (built into the kernel) are returned separately.
    fn closure(&self, roots: &[String]) -> (BTreeSet<String>, Vec<String>);
    /// `modules.dep`, `modules.alias` and `modules.softdep` restricted to `shipped`.
    fn subset_files(&self, shipped: &BTreeSet<String>) -> (String, String, String);
}

impl Closure for ModuleIndex {
    fn closure(&self, roots: &[String]) -> (BTreeSet<String>, Vec<String>) {
        let mut out = BTreeSet::new();
        let mut missing = Vec::new();
        let mut todo: Vec<String> = roots.to_vec();
        while let Some(name) = todo.pop() {
            let Some(m) = self.resolve(&name) else {
                missing.push(name);
                continue;
            };
            let Some(path) = self.paths.get(&m) else {
                continue;
            };
            if !out.insert(path.clone()) {
                continue;
            }
            for d in self.deps.get(path).into_iter().flatten() {
                todo.push(module_name(d));
            }
            for s in self
                .soft(&m)
                .into_iter()
                .flat_map(|s| s.pre.iter().chain(&s.post))
            {
                // Soft dependencies are optional: only follow the ones that exist as modules.
                if self.resolve(s).is_some() {
                    todo.push(s.clone());
                }
            }
        }
        (out, missing)
    }

    fn subset_files(&self, shipped: &BTreeSet<String>) -> (String, String, String) {
        let names: BTreeSet<String> = shipped.iter().map(|p| module_name(p)).collect();
        let mut dep = String::new();
        for p in shipped {
            let deps = self.deps.get(p).cloned().unwrap_or_default();
            dep.push_str(&format!("{p}: {}\n", deps.join(" ")).replace(": \n", ":\n"));
        }
        let mut alias = String::new();
        for (pat, m) in &self.aliases {
            if names.contains(m) {
                alias.push_str(&format!("alias {pat} {m}\n"));
            }
        }
        let mut soft = String::new();
        for (m, s) in &self.softdeps {
            if names.contains(m) {
                let post = if s.post.is_empty() {
                    String::new()
                } else {
                    format!(" post: {}", s.post.join(" "))
                };
                soft.push_str(&format!("softdep {m} pre: {}{post}\n", s.pre.join(" ")));
            }
        }
        (dep, alias, soft)
    }
}

/// Splits the names a profile gives that [`ModuleIndex::closure`] could not resolve into
/// those built into the kernel (`modules.builtin`, returned) and the rest, which fail: a
/// module the kernel lacks is a typo or the wrong kernel, and a ramdisk without it would boot
/// and then miss its disks or NICs.
pub fn check_unresolved(
    unresolved: &[String],
    modules_builtin: &str,
    kver: &str,
    profile: &str,
) -> anyhow::Result<Vec<String>> {
    let builtin: BTreeSet<String> = modules_builtin.lines().map(module_name).collect();
    let (built_in, absent): (Vec<String>, Vec<String>) = unresolved
        .iter()
        .cloned()
        .partition(|m| builtin.contains(&module_name(m)));
    if !absent.is_empty() {
        bail!(
            "profile {profile} names {} that kernel {kver} has neither as a module nor built in \
             (/lib/modules/{kver}): fix initramfs/profiles.toml or build for another kernel (--kver)",
            absent.join(", ")
        );
    }
    Ok(built_in)
}

/// A cpio newc archive being written in memory.
struct Archive {
    w: Vec<u8>,
    ino: u32,
}

impl Archive {
    fn new() -> Self {
        Archive {
            w: Vec::new(),
            ino: 1,
        }
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        data: &[u8],
        rdev: Option<(u32, u32)>,
    ) -> anyhow::Result<()> {
        let size = u32::try_from(data.len()).context("file larger than 4 GiB in the initramfs")?;
        let mut b = cpio::NewcBuilder::new(name)
            .ino(self.ino)
            .mode(mode)
            .uid(0)
            .gid(0)
            .nlink(if mode & 0o170000 == 0o040000 { 2 } else { 1 });
        if let Some((maj, min)) = rdev {
            b = b.rdev_major(maj).rdev_minor(min);
        }
        self.ino += 1;
        let mut w = b.write(&mut self.w, size);
        w.write_all(data)?;
        w.finish()?;
        Ok(())
    }

    fn dir(&mut self, name: &str) -> anyhow::Result<()> {
        self.entry(name, 0o040755, &[], None)
    }

    fn finish(self) -> anyhow::Result<Vec<u8>> {
        Ok(cpio::newc::trailer(self.w)?)
    }
}

fn newest_kernel() -> anyhow::Result<Option<String>> {
    let mut kvers: Vec<String> = match std::fs::read_dir("/lib/modules") {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|k| Path::new(&format!("/boot/vmlinuz-{k}")).exists())
            .collect(),
        Err(_) => Vec::new(),
    };
    kvers.sort_by_key(|k| version_key(k));
    Ok(kvers.pop())
}

fn version_key(k: &str) -> Vec<u64> {
    k.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn install_kernel() -> anyhow::Result<()> {
    eprintln!(
        "initramfs: no kernel in /boot + /lib/modules: installing linux-image-amd64 (INITRD=No)"
    );
    let status = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "linux-image-amd64",
        ])
        .env("INITRD", "No")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get install linux-image-amd64 failed ({status}); run it as root");
    }
    Ok(())
}

/// Builds the static agent and returns its path.
pub fn build_static_agent(root: &Path) -> anyhow::Result<PathBuf> {
    // Shared with the other builds (CARGO_TARGET_DIR), in its own directory because the
    // RUSTFLAGS differ.
    let target_dir = crate::paths::target_dir().join("static");
    let status = crate::paths::cargo()
        .current_dir(root)
        .args([
            "build",
            "--profile",
            "dist",
            "-p",
            "agent",
            "--bin",
            "ingot-agent",
        ])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .context("running cargo build for the static agent")?;
    if !status.success() {
        bail!("building the static agent failed ({status})");
    }
    Ok(target_dir.join("x86_64-unknown-linux-gnu/dist/ingot-agent"))
}

fn mib(n: u64) -> String {
    format!("{:.2} MiB", n as f64 / (1024.0 * 1024.0))
}

/// Runs the task from the workspace root.
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let opts = Options::parse(args)?;
    let recipe = Recipe::load(root)?;
    let profile = recipe.profiles.get(&opts.profile).with_context(|| {
        format!(
            "no profile {:?} in initramfs/profiles.toml (have: {:?})",
            opts.profile,
            recipe.profiles.keys().collect::<Vec<_>>()
        )
    })?;

    let agent = match &opts.agent {
        Some(a) => a.clone(),
        None => build_static_agent(root)?,
    };
    let agent_bytes =
        std::fs::read(&agent).with_context(|| format!("reading agent {}", agent.display()))?;

    let kver = match opts.kver.clone() {
        Some(k) => k,
        None => match newest_kernel()? {
            Some(k) => k,
            None => {
                install_kernel()?;
                newest_kernel()?.context("linux-image-amd64 installed but no kernel found")?
            }
        },
    };
    let mdir = PathBuf::from(format!("/lib/modules/{kver}"));
    let read = |f: &str| {
        std::fs::read_to_string(mdir.join(f))
            .with_context(|| format!("reading {}/{f}", mdir.display()))
    };
    let idx = ModuleIndex::parse(
        &read("modules.dep")?,
        &read("modules.alias")?,
        &read("modules.softdep").unwrap_or_default(),
    );

    let mut roots = profile.modules.clone();
    for d in &profile.dirs {
        let prefix = format!("{}/", d.trim_end_matches('/'));
        roots.extend(
            idx.paths
                .iter()
                .filter(|(_, p)| p.starts_with(&prefix))
                .map(|(n, _)| n.clone()),
        );
    }
    let (shipped, unresolved) = idx.closure(&roots);
    let built_in = check_unresolved(
        &unresolved,
        &read("modules.builtin").unwrap_or_default(),
        &kver,
        &opts.profile,
    )?;
    if !built_in.is_empty() {
        eprintln!(
            "initramfs: built into kernel {kver}: {}",
            built_in.join(" ")
        );
    }
    let shipped_notice = notice::Shipped {
        kver: kver.clone(),
        kernel: notice::deb_package_of(Path::new(&format!("/boot/vmlinuz-{kver}"))),
        libc: notice::deb_package_of(Path::new("/usr/lib/x86_64-linux-gnu/libc.a")),
        crates: notice::agent_crates(root)?,
    };
    let notice_text = notice::render(
        &std::fs::read_to_string(root.join("THIRD-PARTY-NOTICES"))
            .context("reading THIRD-PARTY-NOTICES")?,
        &shipped_notice,
    );

    let mut ar = Archive::new();
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "etc",
        "mnt",
        "lib",
        "lib/modules",
        "usr",
        "usr/share",
        "usr/share/doc",
        "usr/share/doc/ingot",
    ] {
        ar.dir(d)?;
    }
    ar.entry(notice::PATH, 0o100644, notice_text.as_bytes(), None)?;
    ar.entry("dev/console", 0o020600, &[], Some((5, 1)))?;
    ar.entry("dev/null", 0o020666, &[], Some((1, 3)))?;
    ar.entry("init", 0o100755, &agent_bytes, None)?;
    let base = format!("lib/modules/{kver}");
    ar.dir(&base)?;
    let mut made: BTreeSet<String> = BTreeSet::new();
    let mut module_bytes = 0u64;
    for rel in &shipped {
        let mut acc = base.clone();
        for part in Path::new(rel).parent().into_iter().flat_map(|p| p.iter()) {
            acc = format!("{acc}/{}", part.to_string_lossy());
            if made.insert(acc.clone()) {
                ar.dir(&acc)?;
            }
        }
        let data =
            std::fs::read(mdir.join(rel)).with_context(|| format!("reading module {rel}"))?;
        module_bytes += data.len() as u64;
        ar.entry(&format!("{base}/{rel}"), 0o100644, &data, None)?;
    }
    let (dep, alias, soft) = idx.subset_files(&shipped);
    ar.entry(
        &format!("{base}/modules.dep"),
        0o100644,
        dep.as_bytes(),
        None,
    )?;
    ar.entry(
        &format!("{base}/modules.alias"),
        0o100644,
        alias.as_bytes(),
        None,
    )?;
    ar.entry(
        &format!("{base}/modules.softdep"),
        0o100644,
        soft.as_bytes(),
        None,
    )?;
    let cpio = ar.finish()?;

    let out_dir = crate::paths::target_dir()
        .join("initramfs")
        .join(&opts.profile);
    std::fs::create_dir_all(&out_dir)?;
    let started = std::time::Instant::now();
    let mut enc = zstd::Encoder::new(Vec::new(), opts.level)?;
    enc.multithread(
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
    )?;
    enc.write_all(&cpio)?;
    let packed = enc.finish()?;
    let out = out_dir.join("initramfs.cpio.zst");
    // Written aside and renamed, so a reader never sees a half-written archive.
    let tmp = out_dir.join(".initramfs.cpio.zst.tmp");
    std::fs::write(&tmp, &packed).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming to {}", out.display()))?;
    let kernel_src = PathBuf::from(format!("/boot/vmlinuz-{kver}"));
    let kernel_dst = out_dir.join("vmlinuz");
    std::fs::copy(&kernel_src, &kernel_dst)
        .with_context(|| format!("copying {}", kernel_src.display()))?;
    let kernel_len = std::fs::metadata(&kernel_dst)?.len();

    println!("initramfs profile {} (kernel {kver})", opts.profile);
    let agent_len = agent_bytes.len() as u64;
    println!(
        "  agent /init        {:>12}  ({agent_len} bytes)",
        mib(agent_len)
    );
    println!(
        "  modules            {:>12}  ({} files)",
        mib(module_bytes),
        shipped.len()
    );
    println!("  cpio (raw)         {:>12}", mib(cpio.len() as u64));
    println!(
        "  initramfs (zstd {}) {:>11}  -> {}  ({:.1} s)",
        opts.level,
        mib(packed.len() as u64),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  kernel             {:>12}  -> {}",
        mib(kernel_len),
        kernel_dst.display()
    );
    let over = over_budget(
        agent_len,
        recipe.agent_budget_kib,
        packed.len() as u64,
        profile.budget_mib,
        &opts.profile,
    );
    println!(
        "  agent budget       {:>12}  {}",
        format!("{} KiB", recipe.agent_budget_kib),
        if agent_len > recipe.agent_budget_kib * 1024 {
            "OVER"
        } else {
            "ok"
        }
    );
    println!(
        "  budget             {:>12}  {}",
        format!("{} MiB", profile.budget_mib),
        if packed.len() as u64 > profile.budget_mib * 1024 * 1024 {
            "OVER"
        } else {
            "ok"
        }
    );
    if !over.is_empty() {
        bail!("{}", over.join("; "));
    }
    Ok(())
}

/// The budgets exceeded, as messages: the agent binary against `agent_budget_kib`, the
/// compressed initramfs against the profile's `budget_mib`.
fn over_budget(
    agent_len: u64,
    agent_budget_kib: u64,
    initramfs_len: u64,
    budget_mib: u64,
    profile: &str,
) -> Vec<String> {
    let mut over = Vec::new();
    if agent_len > agent_budget_kib * 1024 {
        over.push(format!(
            "the agent binary is {agent_len} bytes ({:.0} KiB) but its budget is {agent_budget_kib} KiB \
             (agent_budget_kib in initramfs/profiles.toml)",
            agent_len as f64 / 1024.0
        ));
    }
    if initramfs_len > budget_mib * 1024 * 1024 {
        over.push(format!(
            "initramfs is {} but the {profile} profile's budget is {budget_mib} MiB",
            mib(initramfs_len)
        ));
    }
    over
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
kernel/net/core/failover.ko:\n\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko\n\
kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
kernel/crypto/crc32c_generic.ko:\n\
kernel/fs/ext4/ext4.ko:\n";
    const ALIAS: &str = "alias virtio:d00000001v* virtio_net\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\nalias crypto-crc32c crc32c_generic\nalias fs-ext4 ext4\n";
    const SOFT: &str = "# comment\nsoftdep ext4 pre: crypto-crc32c\n";

    #[test]
    fn closure_follows_hard_and_soft_deps() {
        let idx = ModuleIndex::parse(DEP, ALIAS, SOFT);
        let (set, missing) =
            idx.closure(&["virtio-net".into(), "ext4".into(), "not_a_module".into()]);
        let want: BTreeSet<String> = [
            "kernel/drivers/net/virtio_net.ko",
            "kernel/drivers/net/net_failover.ko",
            "kernel/net/core/failover.ko",
            "kernel/fs/ext4/ext4.ko",
            "kernel/crypto/crc32c_generic.ko",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(set, want);
        assert_eq!(missing, vec!["not_a_module".to_string()]);
    }

    #[test]
    fn subset_files_only_name_shipped_modules() {
        let idx = ModuleIndex::parse(DEP, ALIAS, SOFT);
        let (set, _) = idx.closure(&["virtio_pci".into()]);
        let (dep, alias, soft) = idx.subset_files(&set);
        assert_eq!(
            dep,
            "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko\nkernel/drivers/virtio/virtio_pci_modern_dev.ko:\n"
        );
        assert_eq!(alias, "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n");
        assert_eq!(soft, "");
    }

    #[test]
    fn archive_has_device_nodes_and_trailer() {
        let mut ar = Archive::new();
        ar.dir("dev").expect("dir");
        ar.entry("dev/console", 0o020600, &[], Some((5, 1)))
            .expect("node");
        ar.entry("init", 0o100755, b"#!", None).expect("file");
        let bytes = ar.finish().expect("finish");
        let mut r = std::io::Cursor::new(bytes);
        let mut seen = Vec::new();
        loop {
            let e = cpio::NewcReader::new(r).expect("entry");
            if e.entry().is_trailer() {
                break;
            }
            seen.push((
                e.entry().name().to_owned(),
                e.entry().mode(),
                e.entry().rdev_major(),
                e.entry().rdev_minor(),
            ));
            r = e.finish().expect("next");
        }
        assert_eq!(seen[1], ("dev/console".to_owned(), 0o020600, 5, 1));
        assert_eq!(seen[2].0, "init");
    }

    /// Every module a profile names exists in this machine's kernel (as a module or built
    /// in), so a typo in profiles.toml fails here as it fails `cargo xtask initramfs`.
    #[test]
    fn profile_modules_exist_in_the_host_kernel() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let recipe = Recipe::load(&root).expect("profiles.toml parses");
        assert!(recipe.profiles.contains_key("qemu") && recipe.profiles.contains_key("generic"));
        assert!(recipe.agent_budget_kib > 0);
        let kver = newest_kernel()
            .expect("list kernels")
            .expect("a kernel in /boot and /lib/modules (installed by .ci/setup)");
        let mdir = PathBuf::from(format!("/lib/modules/{kver}"));
        let read = |f: &str| std::fs::read_to_string(mdir.join(f)).expect("modules.* file");
        let idx = ModuleIndex::parse(
            &read("modules.dep"),
            &read("modules.alias"),
            &read("modules.softdep"),
        );
        for (name, profile) in &recipe.profiles {
            let (_, unresolved) = idx.closure(&profile.modules);
            if let Err(e) = check_unresolved(&unresolved, &read("modules.builtin"), &kver, name) {
                panic!("{e:#}");
            }
            for d in &profile.dirs {
                assert!(mdir.join(d).is_dir(), "profile {name}: no directory {d}");
            }
        }
    }

    #[test]
    fn a_missing_module_fails_and_a_built_in_one_does_not() {
        let builtin =
            "kernel/drivers/tty/serial/8250/8250.ko\nkernel/drivers/block/virtio-blk.ko\n";
        let got = check_unresolved(
            &["8250".into(), "virtio_blk".into()],
            builtin,
            "6.1.0-57-amd64",
            "qemu",
        )
        .expect("built-in names pass");
        assert_eq!(got, vec!["8250".to_string(), "virtio_blk".to_string()]);
        let err = check_unresolved(
            &["8250".into(), "e1000x".into()],
            builtin,
            "6.1.0-57-amd64",
            "qemu",
        )
        .expect_err("an unknown module fails");
        let msg = format!("{err:#}");
        assert!(msg.contains("e1000x"), "{msg}");
        assert!(msg.contains("kernel 6.1.0-57-amd64"), "{msg}");
        assert!(!msg.contains("8250"), "{msg}");
    }

    #[test]
    fn budgets_name_what_is_over() {
        assert!(over_budget(1024 * 1024, 1024, 6 * 1024 * 1024, 6, "qemu").is_empty());
        let over = over_budget(1024 * 1024 + 1, 1024, 6 * 1024 * 1024 + 1, 6, "qemu");
        assert_eq!(over.len(), 2);
        assert!(
            over[0].contains("agent binary is 1048577 bytes"),
            "{over:?}"
        );
        assert!(
            over[1].contains("qemu profile's budget is 6 MiB"),
            "{over:?}"
        );
    }

    #[test]
    fn module_names_normalise() {
        assert_eq!(module_name("kernel/x/crc-t10dif.ko.xz"), "crc_t10dif");
        assert_eq!(module_name("a.ko"), "a");
    }
}
