//! The kernel's module index: `modules.dep`, `modules.alias` and `modules.softdep` of one
//! `/lib/modules/KVER`, parsed once for both readers: the agent's coldplug (PID 1 loads
//! modules in dependency order) and `cargo xtask initramfs` (which modules the ramdisk
//! ships). Module names are normalised the kernel's way, `-` as `_`, everywhere (paths'
//! file names, aliases' targets, soft dependencies on both sides). No dependencies: the
//! agent is a static binary.

use std::collections::BTreeMap;
use std::path::Path;

/// A module's soft dependencies (`softdep NAME pre: A B post: C`): names, not paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoftDeps {
    /// Loaded before the module.
    pub pre: Vec<String>,
    /// Loaded after it.
    pub post: Vec<String>,
}

/// The three index files of one kernel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModuleIndex {
    /// Module name -> path relative to the modules directory.
    pub paths: BTreeMap<String, String>,
    /// Path -> dependency paths, as `modules.dep` lists them (the last must load first).
    pub deps: BTreeMap<String, Vec<String>>,
    /// (alias pattern, module name) in file order.
    pub aliases: Vec<(String, String)>,
    /// Module name -> its soft dependencies.
    pub softdeps: BTreeMap<String, SoftDeps>,
}

/// A module name the kernel's way: `-` as `_`.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// `kernel/drivers/net/virtio-net.ko.xz` -> `virtio_net`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    normalise(file.split(".ko").next().unwrap_or(file))
}

impl ModuleIndex {
    /// Parses the three files' text (lines that are not entries are skipped).
    pub fn parse(dep: &str, alias: &str, softdep: &str) -> Self {
        let mut idx = ModuleIndex::default();
        for line in dep.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim().to_owned();
            idx.paths.insert(module_name(&path), path.clone());
            idx.deps
                .insert(path, rest.split_whitespace().map(str::to_owned).collect());
        }
        for line in alias.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(pat), Some(m)) = (w.next(), w.next(), w.next()) {
                idx.aliases.push((pat.to_owned(), normalise(m)));
            }
        }
        for line in softdep.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(m) = w.next() else { continue };
            let mut soft = SoftDeps::default();
            // Names before any `pre:`/`post:` are pre dependencies (modprobe.d(5)).
            let mut post = false;
            for t in w {
                match t {
                    "pre:" => post = false,
                    "post:" => post = true,
                    n if post => soft.post.push(normalise(n)),
                    n => soft.pre.push(normalise(n)),
                }
            }
            idx.softdeps.insert(normalise(m), soft);
        }
        idx
    }

    /// Reads the index from a modules directory (`/lib/modules/KVER`); `modules.dep` must
    /// be there, the other two may be missing.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let read = |f: &str| std::fs::read_to_string(dir.join(f));
        Ok(Self::parse(
            &read("modules.dep")?,
            &read("modules.alias").unwrap_or_default(),
            &read("modules.softdep").unwrap_or_default(),
        ))
    }

    /// A module name, or an exact (glob-free) alias, to a module name. Both are compared
    /// with `-` as `_`, as kmod compares them (soft dependencies often name an alias such as
    /// `crypto-crc32c`).
    pub fn resolve(&self, name: &str) -> Option<String> {
        let n = normalise(name);
        if self.paths.contains_key(&n) {
            return Some(n);
        }
        self.aliases
            .iter()
            .find(|(pat, _)| normalise(pat) == n)
            .map(|(_, m)| m.clone())
    }

    /// The soft dependencies of module `name` (any spelling), if it has some.
    pub fn soft(&self, name: &str) -> Option<&SoftDeps> {
        self.softdeps.get(&normalise(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_everywhere() {
        assert_eq!(
            module_name("kernel/drivers/net/virtio-net.ko.xz"),
            "virtio_net"
        );
        assert_eq!(module_name("ahci.ko"), "ahci");
        assert_eq!(module_name("kernel/x/nvme-core.ko.zst"), "nvme_core");
        let idx = ModuleIndex::parse(
            "kernel/a/virtio-net.ko: kernel/a/net_failover.ko\nkernel/a/net_failover.ko:\nnot an entry\n",
            "alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio-net\nbogus line\n",
            "# comment\nsoftdep virtio-blk pre: crc32c-generic post: dm-mod\nsoftdep nvme-core crc-t10dif\nsoftdep lonely\n",
        );
        assert_eq!(idx.paths["virtio_net"], "kernel/a/virtio-net.ko");
        assert_eq!(
            idx.deps["kernel/a/virtio-net.ko"],
            ["kernel/a/net_failover.ko"]
        );
        assert!(idx.deps["kernel/a/net_failover.ko"].is_empty());
        assert_eq!(idx.aliases[0].1, "virtio_net");
        assert_eq!(idx.aliases.len(), 1);
        assert_eq!(
            idx.soft("virtio-blk"),
            Some(&SoftDeps {
                pre: vec!["crc32c_generic".into()],
                post: vec!["dm_mod".into()],
            })
        );
        // Names before any `pre:` are pre dependencies.
        assert_eq!(
            idx.soft("nvme_core").map(|s| s.pre.clone()),
            Some(vec!["crc_t10dif".into()])
        );
        assert_eq!(idx.soft("lonely"), Some(&SoftDeps::default()));
        assert_eq!(idx.soft("other"), None);
        // A soft dependency names an alias; either spelling resolves it.
        let idx = ModuleIndex::parse(
            "kernel/crypto/crc32c_generic.ko:\n",
            "alias crypto-crc32c crc32c_generic\n",
            "softdep ext4 pre: crypto-crc32c\n",
        );
        let dep = &idx.soft("ext4").expect("softdep").pre[0];
        assert_eq!(idx.resolve(dep).as_deref(), Some("crc32c_generic"));
        assert_eq!(
            idx.resolve("crypto-crc32c").as_deref(),
            Some("crc32c_generic")
        );
        assert_eq!(
            idx.resolve("crc32c-generic").as_deref(),
            Some("crc32c_generic")
        );
        assert_eq!(idx.resolve("nope"), None);
    }
}
