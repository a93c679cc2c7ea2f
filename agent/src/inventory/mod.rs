//! Hardware inventory, built by pure parsers over a root directory so that
//! captured sysfs/procfs/SMBIOS trees in `tests/fixtures/` exercise them.

pub mod block;
