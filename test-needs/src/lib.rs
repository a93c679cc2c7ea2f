//! The one rule for tests that need something a plain `cargo test` machine may lack (root,
//! QEMU, a program, a file): when it is missing, the test prints `skipping <test>: <why>`
//! and passes, so `cargo test` works anywhere; under CI (`CI` set to anything but empty,
//! `0` or `false`) it fails instead, because CI installs everything (`.ci/setup`) and a
//! skipped proof there would be a hole nobody sees.
//!
//! ```ignore
//! #[test]
//! fn boots_a_vm() -> anyhow::Result<()> {
//!     test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("qemu-system-x86_64"));
//!     // ...
//!     Ok(())
//! }
//! ```

use std::path::Path;

/// Something a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Effective user 0 (network namespaces, taps, loop devices, mounts).
    Root,
    /// A program found on `PATH` (or an absolute path that exists).
    Program(&'static str),
    /// A file that exists (firmware, a ROM).
    File(&'static str),
}

impl Need {
    /// Why it is not met, or `None` when it is.
    pub fn missing(self) -> Option<String> {
        match self {
            Need::Root => (!is_root()).then(|| "needs root".to_owned()),
            Need::Program(p) => (!on_path(p)).then(|| format!("needs the program `{p}`")),
            Need::File(f) => (!Path::new(f).exists()).then(|| format!("needs the file {f}")),
        }
    }
}

/// Root, QEMU and the firmware the lab boots: what every QEMU lab test needs.
pub const LAB: &[Need] = &[
    Need::Root,
    Need::Program("ip"),
    Need::Program("qemu-system-x86_64"),
    Need::File("/usr/share/OVMF/OVMF_CODE_4M.fd"),
    Need::File("/usr/share/OVMF/OVMF_VARS_4M.fd"),
    Need::File("/usr/lib/ipxe/snponly.efi"),
];

/// Root and iproute2: network namespace tests without VMs.
pub const NETNS: &[Need] = &[Need::Root, Need::Program("ip")];

/// Whether CI is running us (`CI` set, and not empty, `0` or `false`).
pub fn under_ci() -> bool {
    ci_value(std::env::var("CI").ok().as_deref())
}

fn ci_value(v: Option<&str>) -> bool {
    !matches!(
        v.map(str::trim),
        None | Some("" | "0" | "false" | "False" | "FALSE")
    )
}

/// What is missing of `needs`, joined, or `None` when everything is there.
pub fn missing(needs: &[Need]) -> Option<String> {
    let why: Vec<String> = needs.iter().filter_map(|n| n.missing()).collect();
    (!why.is_empty()).then(|| why.join(", "))
}

/// True when `test` can run. Otherwise prints `skipping <test>: <why>` and returns false,
/// or panics with the same words under CI.
pub fn met(test: &str, needs: &[Need]) -> bool {
    let Some(why) = missing(needs) else {
        return true;
    };
    if under_ci() {
        panic!("{test} cannot run under CI: {why} (.ci/setup installs what tests need)");
    }
    eprintln!("skipping {test}: {why}");
    false
}

/// The value a skipped test returns: `()` or `Ok(())`.
pub trait Skipped {
    /// The passing result.
    fn skipped() -> Self;
}

impl Skipped for () {
    fn skipped() -> Self {}
}

impl<E> Skipped for Result<(), E> {
    fn skipped() -> Self {
        Ok(())
    }
}

/// Returns from the calling test (passing) when a need is not met; see [`met`]. Takes
/// single [`Need`]s and slices such as [`LAB`] (`need!(LAB)`, `need!(Need::Root)`).
#[macro_export]
macro_rules! need {
    ($($n:expr),+ $(,)?) => {{
        let needs: ::std::vec::Vec<$crate::Need> =
            [$($crate::IntoNeeds::into_needs($n)),+].concat();
        if !$crate::met(::std::module_path!(), &needs) {
            return $crate::Skipped::skipped();
        }
    }};
}

/// One need or a list of them, for [`need!`].
pub trait IntoNeeds {
    /// The needs as a list.
    fn into_needs(self) -> Vec<Need>;
}

impl IntoNeeds for Need {
    fn into_needs(self) -> Vec<Need> {
        vec![self]
    }
}

impl IntoNeeds for &[Need] {
    fn into_needs(self) -> Vec<Need> {
        self.to_vec()
    }
}

fn is_root() -> bool {
    // The effective uid from /proc, so this crate needs no libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let p = dir.join(program);
            p.metadata().is_ok_and(|m| m.is_file())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_values() {
        for (v, ci) in [
            (None, false),
            (Some(""), false),
            (Some("0"), false),
            (Some("false"), false),
            (Some("1"), true),
            (Some("true"), true),
        ] {
            assert_eq!(ci_value(v), ci, "{v:?}");
        }
    }

    #[test]
    fn programs_and_files() {
        assert_eq!(Need::Program("sh").missing(), None);
        assert_eq!(Need::File("/").missing(), None);
        assert!(
            Need::Program("no-such-program-ingot")
                .missing()
                .is_some_and(|w| w.contains("no-such-program-ingot"))
        );
        assert!(Need::File("/no/such/file").missing().is_some());
        assert_eq!(missing(&[Need::Program("sh")]), None);
        let why = missing(&[Need::File("/no/a"), Need::File("/no/b")]).unwrap_or_default();
        assert_eq!(why, "needs the file /no/a, needs the file /no/b");
    }

    fn skips() -> Result<(), String> {
        if !met("t", &[]) {
            return Skipped::skipped();
        }
        Err("ran".to_owned())
    }

    #[test]
    fn nothing_needed_runs() {
        assert_eq!(skips(), Err("ran".to_owned()));
    }

    fn unit_test_body(needs: &[Need]) -> bool {
        let mut ran = false;
        let mut body = || {
            if missing(needs).is_some() {
                return;
            }
            ran = true;
        };
        body();
        ran
    }

    #[test]
    fn a_missing_need_stops_the_body() {
        assert!(!unit_test_body(&[Need::File("/no/such/file")]));
        assert!(unit_test_body(&[Need::File("/")]));
    }
}
