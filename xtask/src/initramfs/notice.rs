//! The third-party notice that `cargo xtask initramfs` puts into the ramdisk as
//! `/usr/share/doc/ingot/NOTICE`: the repository's `THIRD-PARTY-NOTICES` followed by the exact
//! versions of what this ramdisk ships (kernel, static glibc, the agent's crates).
//!
//! The versions come from dpkg and `cargo tree`; on a machine without dpkg they are written
//! as unknown rather than failing the build.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

/// Where the notice lives inside the archive.
pub const PATH: &str = "usr/share/doc/ingot/NOTICE";

/// One installed Debian binary package and the source package it was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    /// Source package and version: `Built-Using`'s `linux` entry for a signed kernel image
    /// (its own source package only holds signatures), else the package's source.
    pub source: String,
    pub source_version: String,
}

/// What the ramdisk ships, for the notice.
#[derive(Debug, Clone, Default)]
pub struct Shipped {
    pub kver: String,
    pub kernel: Option<DebPackage>,
    pub libc: Option<DebPackage>,
    /// `name version licence` of every crate linked into the agent.
    pub crates: Vec<String>,
}

/// The notice text: the repository's template, then this ramdisk's versions.
pub fn render(template: &str, s: &Shipped) -> String {
    let deb = |p: &Option<DebPackage>, what: &str| match p {
        Some(p) => format!(
            "{what}: Debian package {} {}\n{what} source: apt-get source {}={}\n",
            p.name, p.version, p.source, p.source_version
        ),
        None => format!("{what}: not from a Debian package here (version unknown)\n"),
    };
    let mut out = template.trim_end().to_owned();
    out.push_str("\n\nThis ramdisk\n------------\n\n");
    out.push_str(&format!("kernel version: {}\n", s.kver));
    out.push_str(&deb(&s.kernel, "kernel"));
    out.push_str(&deb(&s.libc, "glibc"));
    out.push_str(&format!(
        "\nCrates linked into /init ({}):\n",
        s.crates.len()
    ));
    for c in &s.crates {
        out.push_str(&format!("  {c}\n"));
    }
    out
}

/// `dpkg-query -W` output (`Package\tVersion\tsource:Package\tsource:Version\tBuilt-Using`)
/// to a package. A `Built-Using: linux (= V)` names the real kernel source.
pub fn parse_dpkg_fields(line: &str) -> Option<DebPackage> {
    let f: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
    let [name, version, source, source_version, built_using] = f[..] else {
        return None;
    };
    if name.is_empty() || version.is_empty() {
        return None;
    }
    let linux = built_using.split(',').find_map(|e| {
        let (n, v) = e.trim().split_once(" (= ")?;
        (n == "linux").then(|| (n.to_owned(), v.trim_end_matches(')').to_owned()))
    });
    let (source, source_version) = linux.unwrap_or((source.to_owned(), source_version.to_owned()));
    Some(DebPackage {
        name: name.to_owned(),
        version: version.to_owned(),
        source,
        source_version,
    })
}

/// The Debian package that installed `file`, if dpkg knows it.
pub fn deb_package_of(file: &Path) -> Option<DebPackage> {
    let out = Command::new("dpkg-query")
        .arg("-S")
        .arg(file)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // "linux-image-6.1.0-57-amd64: /boot/vmlinuz-6.1.0-57-amd64"
    let text = String::from_utf8_lossy(&out.stdout);
    let pkg = text.lines().next()?.split_once(": ")?.0.to_owned();
    let out = Command::new("dpkg-query")
        .args([
            "-W",
            "-f=${Package}\t${Version}\t${source:Package}\t${source:Version}\t${Built-Using}\n",
            &pkg,
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_dpkg_fields(String::from_utf8_lossy(&out.stdout).lines().next()?)
}

/// `name version licence` of every crate the agent links (normal edges, no proc-macros), from
/// `cargo tree`.
pub fn agent_crates(root: &Path) -> anyhow::Result<Vec<String>> {
    let out = crate::paths::cargo()
        .current_dir(root)
        .args([
            "tree",
            "-p",
            "agent",
            "-e",
            "normal,no-proc-macro",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--prefix",
            "none",
            "--format",
            "{p}\t{l}",
        ])
        .output()
        .context("running cargo tree for the agent's crates")?;
    if !out.status.success() {
        bail!(
            "cargo tree -p agent failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_tree(&String::from_utf8_lossy(&out.stdout)))
}

/// `cargo tree --prefix none --format "{p}\t{l}"` lines to sorted, unique
/// `name version licence` entries; the workspace's own crates (with a path) are left out.
pub fn parse_tree(text: &str) -> Vec<String> {
    let mut crates: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let (pkg, licence) = l.split_once('\t')?;
            let pkg = pkg.trim_end_matches(" (*)");
            if pkg.contains(" (/") {
                return None;
            }
            let (name, version) = pkg.split_once(' ')?;
            Some(format!("{name} {version} {}", licence.trim()))
        })
        .collect();
    crates.sort();
    crates.dedup();
    crates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_source_comes_from_built_using() {
        let p = parse_dpkg_fields(
            "linux-image-6.1.0-57-amd64\t6.1.192-3\tlinux-signed-amd64\t6.1.192+3\tlinux (= 6.1.192-3)\n",
        )
        .expect("parses");
        assert_eq!(
            (p.source.as_str(), p.source_version.as_str()),
            ("linux", "6.1.192-3")
        );
        let libc = parse_dpkg_fields("libc6-dev\t2.36-9+deb12u14\tglibc\t2.36-9+deb12u14\t")
            .expect("parses");
        assert_eq!(
            (libc.source.as_str(), libc.source_version.as_str()),
            ("glibc", "2.36-9+deb12u14")
        );
        assert_eq!(parse_dpkg_fields("libc6-dev\t2.36"), None);
    }

    #[test]
    fn tree_lines_become_unique_crates_without_workspace_members() {
        let text = "agent v0.1.0 (/work/agent)\tApache-2.0\n\
                    proto v0.1.0 (/work/proto)\tApache-2.0\n\
                    zstd v0.13.3\tMIT\n\
                    libc v0.2.191\tMIT OR Apache-2.0\n\
                    libc v0.2.191 (*)\tMIT OR Apache-2.0\n";
        assert_eq!(
            parse_tree(text),
            vec!["libc v0.2.191 MIT OR Apache-2.0", "zstd v0.13.3 MIT"]
        );
    }

    #[test]
    fn notice_records_the_kernel_version_and_sources() {
        let s = Shipped {
            kver: "6.1.0-57-amd64".into(),
            kernel: parse_dpkg_fields(
                "linux-image-6.1.0-57-amd64\t6.1.192-3\tlinux-signed-amd64\t6.1.192+3\tlinux (= 6.1.192-3)",
            ),
            libc: None,
            crates: vec!["zstd v0.13.3 MIT".into()],
        };
        let n = render("Ingot: third-party notices\n", &s);
        assert!(n.starts_with("Ingot: third-party notices\n\nThis ramdisk"));
        assert!(n.contains("kernel version: 6.1.0-57-amd64\n"));
        assert!(n.contains("kernel source: apt-get source linux=6.1.192-3\n"));
        assert!(n.contains("glibc: not from a Debian package here"));
        assert!(n.contains("Crates linked into /init (1):\n  zstd v0.13.3 MIT\n"));
    }
}
