//! Fuzz entry points: one `run(&[u8])` per target, each driving the real parsing and decision
//! code of one input that comes from the network or from a file Ingot did not write.
//!
//! The cargo-fuzz crate in `fuzz/` (nightly, libFuzzer) calls these functions from its
//! `fuzz_targets/`, and `tests/replay.rs` (stable, part of the workspace's tests) runs every
//! file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through the same function,
//! so a crash found once is a test forever. A target fails by panicking: on a bug of the code
//! under test, or on a broken invariant it asserts. It must not do anything else: no network
//! traffic but loopback, no file outside a temporary directory.

pub mod agent_api;
pub mod agent_command;
pub mod agent_dhcp;
pub mod api_body;
pub mod ctl;
pub mod dhcp_server;
pub mod htpasswd;
pub mod image_head;
pub mod image_range;
pub mod inspection_rule;
pub mod ipmi;
pub mod ipmi_inband;
pub mod json_patch;
pub mod lldp;
pub mod md_superblock;
pub mod qemu_img_info;
pub mod redfish;
pub mod rt;
pub mod tftp;

/// A target's entry function.
pub type Entry = fn(&[u8]);

/// Every target by name (the name of its `fuzz/fuzz_targets/<name>.rs` and corpus directory).
pub const TARGETS: &[(&str, Entry)] = &[
    ("agent_api", agent_api::run),
    ("agent_command", agent_command::run),
    ("agent_dhcp", agent_dhcp::run),
    ("api_body", api_body::run),
    ("dhcp_server", dhcp_server::run),
    ("htpasswd", htpasswd::run),
    ("image_head", image_head::run),
    ("image_range", image_range::run),
    ("inspection_rule", inspection_rule::run),
    ("ipmi", ipmi::run),
    ("ipmi_inband", ipmi_inband::run),
    ("json_patch", json_patch::run),
    ("lldp", lldp::run),
    ("md_superblock", md_superblock::run),
    ("qemu_img_info", qemu_img_info::run),
    ("redfish", redfish::run),
    ("tftp", tftp::run),
];

/// The entry function of target `name`.
pub fn entry(name: &str) -> Option<Entry> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
