//! Harness for end-to-end tests that boot real firmware (SeaBIOS, OVMF), iPXE and the Debian
//! kernel in QEMU (`-accel tcg`) on a private network.
//!
//! - [`netns::Lab`]: a network namespace with a bridge and persistent taps and no route out;
//!   everything a test starts on the boot network lives inside it, and dropping the lab stops
//!   what it started (by PID) and deletes the namespace.
//! - [`vm::VmSpec`] / [`vm::Vm`]: one QEMU machine with its own firmware, NIC, disk, MAC and
//!   SMBIOS identity, a serial log and a QMP socket.
//! - [`serial::SerialLog`]: a VM's serial console log, the one wait on it that every VM
//!   handle uses.
//! - [`wait`]: polling helpers with deadlines.
//! - [`fake_controller::FakeController`]: the agent protocol on 127.0.0.1, for boot tests.
//! - [`rack::Rack`]: `ingot serve` in a lab with machines it powers, an image server and
//!   the real `baremetal` CLI; [`marker_disk`] builds a deploy image that boots on both
//!   firmwares and prints a marker.
//! - [`disk_check`]: a disk image's partitions, `blkid`/`wipefs` probes and config drive,
//!   read from the host; [`ssh`]: a test key pair and logins inside the lab.
//! - [`browser`]: the pinned Playwright and Debian's chromium, for console tests.
//! - [`tls`]: `ingot certs init` and the `[tls]` table for an `ingot serve` in a lab (on
//!   unless `QEMU_TESTS_TLS=off`, for measurements).
//! - [`pg::PgServer`]: a throw-away PostgreSQL server on 127.0.0.1 (store and replica
//!   tests, the rack bench's replicas).
//! - [`site_dhcp::SiteDhcp`]: a site DHCP server (dnsmasq, addresses only) in a second
//!   namespace on the lab bridge, for proxy-DHCP tests.
//!
//! Tests need root (namespaces, taps) and the lab packages (`qemu-system-x86`, `ovmf`,
//! `ipxe`); [`require_lab`] fails with a clear message when they are missing.

pub mod bmc;
pub mod browser;
pub mod build;
pub mod disk_check;
pub mod fake_controller;
pub mod forward;
pub mod marker_disk;
pub mod metrics_check;
pub mod netns;
pub mod pg;
pub mod power;
pub mod rack;
pub mod serial;
pub mod site_dhcp;
pub mod ssh;
pub mod tls;
pub mod vm;
pub mod wait;

/// Fails with a clear message when the machine cannot run the lab (root, QEMU, the
/// firmware: `test_needs::LAB`). Tests skip instead (`test_needs::need!`); the rack and the
/// README's main job, which must not pass quietly, call this.
pub fn require_lab() -> anyhow::Result<()> {
    match test_needs::missing(test_needs::LAB) {
        None => Ok(()),
        Some(why) => {
            anyhow::bail!("the lab {why}: run as root and install the lab packages (.ci/setup)")
        }
    }
}
