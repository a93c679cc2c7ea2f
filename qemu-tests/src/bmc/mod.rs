//! Lab servers behind real BMC simulators, for enrolling them into `ingot` like hardware.
//!
//! - [`IpmiBmc`]: OpenIPMI's `ipmi_sim` (IPMI 2.0 lanplus, cipher suite 3; ipmi_sim has no
//!   suite 17) whose chassis control program is `lab-chassis`, which asks the machine's
//!   power socket ([`crate::power`]).
//! - [`RedfishBmc`]: sushy-tools' emulator (pinned in `python/sushy.txt`, installed
//!   into a venv under the target directory) with its fake systems driver; its external
//!   notifier tells a small HTTP endpoint in the test process about every power and boot
//!   change, which switches the machine. HTTPS with a throwaway CA.
//!
//! Each BMC listens inside the lab namespace on its own address on the namespace's
//! loopback (`172.31.249.N`, standard ports 623/udp and 443/tcp), so a controller running
//! in the lab (as `ingot serve` must, for DHCP) reaches it like a BMC on a management
//! network. Clients outside the namespace cannot: run them inside (`ip netns exec`, or
//! [`in_lab`] for code in the test process).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use qemu_tests::bmc::{IpmiBmc, RedfishBmc};
//! use qemu_tests::netns::Lab;
//! use qemu_tests::vm::{Firmware, VmSpec};
//! let dir = tempfile::tempdir()?;
//! let mut lab = Lab::new()?;
//! let ipmi = IpmiBmc::start(&mut lab, VmSpec::numbered(1, Firmware::Bios), dir.path())?;
//! let redfish = RedfishBmc::start(&mut lab, VmSpec::numbered(2, Firmware::Uefi), dir.path())?;
//! // `baremetal node create --driver ipmi --driver-info '<this>'`
//! let info = ipmi.driver_info();
//! let mark = ipmi.machine().serial_mark();
//! // ... the controller powers it on ...
//! ipmi.machine().wait_serial(mark, "iPXE", std::time::Duration::from_secs(60))?;
//! # let _ = (info, redfish); Ok(()) }
//! ```
//!
//! Machines start powered off. Dropping a BMC stops its simulator and the machine's QEMU
//! (by PID); drop BMCs before their [`Lab`] (declare the lab first).

pub mod ipmi;
pub mod redfish;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Context, bail};

pub use ipmi::IpmiBmc;
pub use redfish::RedfishBmc;

use crate::netns::Lab;

/// The user name every lab BMC accepts (with [`PASSWORD`]), at administrator privilege.
pub const USERNAME: &str = "admin";
/// The lab BMCs' password.
pub const PASSWORD: &str = "Lab-bmc-pa55";

static NEXT_ADDRESS: AtomicU8 = AtomicU8::new(1);

/// Gives the next BMC its own address on the lab namespace's loopback.
fn add_bmc_address(lab: &Lab) -> anyhow::Result<String> {
    let n = NEXT_ADDRESS.fetch_add(1, Ordering::SeqCst);
    if n == 0 || n == 255 {
        bail!("out of lab BMC addresses");
    }
    let addr = format!("172.31.249.{n}");
    lab.exec_ok(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "lo"])?;
    Ok(addr)
}

/// The `lab-chassis` binary next to the running test (cargo builds a package's binaries
/// for its integration tests); `INGOT_LAB_CHASSIS` overrides.
pub fn chassis_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("INGOT_LAB_CHASSIS") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("finding the test executable")?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("lab-chassis");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "lab-chassis not found next to {} (build it: cargo build -p qemu-tests --bin lab-chassis)",
        exe.display()
    )
}

/// Runs `f` on a new thread that has joined the lab's network namespace, so every socket
/// it opens (TCP, UDP) is inside the lab: how test code talks to the lab's BMCs. Build an
/// async runtime inside `f` (a current-thread one keeps all IO on that thread).
pub fn in_lab<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let path = format!("/run/netns/{netns}");
    let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::scope(|s| {
        s.spawn(move || -> anyhow::Result<T> {
            enter(&ns)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the lab thread panicked"))?
    })
}

/// Moves the calling thread into the network namespace `ns` refers to.
pub(crate) fn enter(ns: &File) -> anyhow::Result<()> {
    // SAFETY: `ns` is an open namespace file for the duration of the call; setns changes
    // only the calling thread's network namespace and touches no memory of ours.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setns into the lab");
    }
    Ok(())
}

/// Whether process `pid` sees a socket bound to `addr:port` in `/proc/PID/net/{udp,tcp}`
/// (its namespace's table).
fn bound(pid: u32, table: &str, addr: &str, port: u16) -> bool {
    let Ok(ip) = addr.parse::<std::net::Ipv4Addr>() else {
        return false;
    };
    let needle = format!("{:08X}:{port:04X} ", u32::from_le_bytes(ip.octets()));
    std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
        .map(|t| t.lines().any(|l| l.contains(&needle)))
        .unwrap_or(false)
}
