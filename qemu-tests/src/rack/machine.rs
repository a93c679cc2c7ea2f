//! A lab machine of the rack: its VM, its power (driven through QMP or a BMC) and its serial
//! console.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::serial::SerialLog;
use crate::vm::VmSpec;

/// A lab machine whose power the controller drives (through QMP or a BMC); it starts off.
#[derive(Debug, Clone)]
pub struct Machine {
    pub spec: VmSpec,
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub serial_log: SerialLog,
    pub qmp_socket: PathBuf,
    /// JSON argv (`{"argv": [...]}`) that starts the machine: `qemu.json` in the machine's
    /// directory, under the rack's `[qemu] allowed_dir` (`machines/`).
    pub command_file: PathBuf,
    pub pid_file: PathBuf,
}

impl Machine {
    /// The serial console so far (every power cycle appends to the same log).
    pub fn serial(&self) -> String {
        self.serial_log.text()
    }

    /// Bytes of serial output so far: a mark for [`Machine::wait_serial_after`].
    pub fn serial_mark(&self) -> usize {
        self.serial_log.mark()
    }

    /// Waits until `needle` appears on the serial console after byte `mark`.
    pub fn wait_serial_after(
        &self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.serial_log
            .wait_for(mark, needle, timeout, || Ok(None))
            .map(drop)
    }

    /// `driver_info` of the `qemu` hardware type for this machine, as `--driver-info` args:
    /// the socket names the machine's directory, where the controller finds `qemu.json`
    /// (the argv, with its `-pidfile`) and keeps `bootdev`.
    pub fn qemu_driver_info(&self) -> Vec<String> {
        vec![
            format!("qemu_qmp_socket={}", self.qmp_socket.display()),
            "qemu_timeout=30".to_owned(),
        ]
    }

    /// The pid of this machine's QEMU, if one runs (checked against its command line).
    pub fn qemu_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let needle = self.qmp_socket.as_os_str().as_encoded_bytes();
        cmdline
            .windows(needle.len())
            .any(|w| w == needle)
            .then_some(pid)
    }

    /// Kills this machine's QEMU (if it runs) and waits for it to go.
    pub fn kill(&self) {
        let Some(pid) = self.qemu_pid() else { return };
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        for _ in 0..50 {
            if !process_alive(pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// True while `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}
