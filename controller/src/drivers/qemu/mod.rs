//! The `qemu` hardware type: a lab VM without a BMC, driven over its QMP unix socket.
//!
//! Never enabled by default (`enabled_hardware_types`). When it is, every file it touches
//! lies in one VM directory under the operator's `[qemu] allowed_dir` ([`QemuSettings`]):
//! the directory of `qemu_qmp_socket`, canonicalised (no `..`, no symlink out of it). In
//! that directory:
//! - [`COMMAND_FILE`] (`qemu.json`): the VM's argv (an array, or `{"argv": [...]}`), written
//!   by the operator, run to power a stopped VM on. The driver appends `-S`, sets the boot
//!   order over QMP, then continues the VM. It is never named by `driver_info`: whoever can
//!   edit a node must not choose what runs as the controller's user;
//! - [`BOOT_FILE`] (`bootdev`): where the boot device is kept (the lab's `qemu_power.py`
//!   convention), the only file the driver writes (never through a symlink);
//! - QEMU's pid file is the argv's `-pidfile`, to kill a VM that ignores `quit`.
//!
//! `driver_info`:
//! - `qemu_qmp_socket` (required): the VM's QMP socket (`-qmp unix:PATH,server=on,wait=off`);
//! - `qemu_nic_id` / `qemu_disk_id`: the `id=` of the NIC and disk devices (`nic0`,
//!   `disk0`), whose `bootindex` QOM property selects the boot device;
//! - `qemu_timeout`: seconds for QMP answers and for QEMU to come up or go away (10).
//!
//! `qemu_command_file`, `qemu_boot_file` and `qemu_pid_file` (paths an API user chose) are
//! refused.
//!
//! Power: on = start the argv, off = `quit`, reboot = `system_reset` (the new boot order
//! applies), soft off = `system_powerdown` (ACPI). A boot device is always persistent
//! here: QEMU keeps `bootindex` until it is changed.

mod files;
pub mod qmp;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

pub use self::files::{BOOT_FILE, COMMAND_FILE, QemuSettings};
use self::qmp::{Qmp, QmpError};
use super::ipmi::info::{get_str, get_u64};
use super::{
    BootDevice, DriverError, HardwareType, ManagementInterface, PowerInterface, PowerState,
    PowerTarget,
};
use crate::hub::AgentHub;
use crate::model::Node;

/// `driver_info` keys of the `qemu` type, with descriptions.
pub const PROPERTIES: &[(&str, &str)] = &[
    (
        "qemu_qmp_socket",
        "Path of the VM's QMP unix socket, in the VM's directory under [qemu] allowed_dir \
         (which holds the operator's qemu.json argv). Required.",
    ),
    ("qemu_nic_id", "Device id of the boot NIC. Default nic0."),
    ("qemu_disk_id", "Device id of the boot disk. Default disk0."),
    (
        "qemu_timeout",
        "Seconds to wait for QMP and for QEMU to start or stop. Default 10.",
    ),
];

/// `driver_info` keys that once named files and are refused now.
const REFUSED_KEYS: [&str; 3] = ["qemu_command_file", "qemu_boot_file", "qemu_pid_file"];

/// Parsed `driver_info`, with every path inside the VM directory.
#[derive(Debug, Clone)]
pub struct QemuInfo {
    /// The socket in the canonical VM directory.
    pub socket: PathBuf,
    /// The socket as `driver_info` names it (as the operator's argv likely does too).
    pub socket_given: PathBuf,
    /// The operator's argv file ([`COMMAND_FILE`] in the VM directory).
    pub command_file: PathBuf,
    pub boot_file: PathBuf,
    pub nic_id: String,
    pub disk_id: String,
    pub timeout: Duration,
}

impl QemuInfo {
    pub fn parse(node: &Node, settings: &QemuSettings) -> Result<Self, DriverError> {
        let info = &node.driver_info;
        for key in REFUSED_KEYS {
            if info.contains_key(key) {
                return Err(DriverError::InvalidParameter(format!(
                    "driver_info {key} is not accepted: the qemu hardware type only uses the \
                     VM directory of qemu_qmp_socket under [qemu] allowed_dir, where the \
                     operator writes {COMMAND_FILE}"
                )));
            }
        }
        let socket = match get_str(info, "qemu_qmp_socket")?.filter(|s| !s.trim().is_empty()) {
            None => {
                return Err(DriverError::InvalidParameter(
                    "Missing the following QEMU properties in node's driver_info: \
                     ['qemu_qmp_socket']"
                        .to_owned(),
                ));
            }
            Some(p) if Path::new(p.trim()).is_absolute() => PathBuf::from(p.trim()),
            Some(p) => {
                return Err(DriverError::InvalidParameter(format!(
                    "qemu_qmp_socket must be an absolute path, not \"{p}\""
                )));
            }
        };
        let socket_given = socket;
        let (dir, socket) = files::resolve_socket(settings, &socket_given)?;
        let id = |key: &str, default: &str| -> Result<String, DriverError> {
            let v = get_str(info, key)?.unwrap_or_else(|| default.to_owned());
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(DriverError::InvalidParameter(format!(
                    "{key} \"{v}\" is not a valid QEMU device id"
                )));
            }
            Ok(v)
        };
        Ok(Self {
            socket,
            socket_given,
            command_file: dir.join(COMMAND_FILE),
            boot_file: dir.join(BOOT_FILE),
            nic_id: id("qemu_nic_id", "nic0")?,
            disk_id: id("qemu_disk_id", "disk0")?,
            timeout: Duration::from_secs(get_u64(info, "qemu_timeout")?.unwrap_or(10).max(1)),
        })
    }

    /// The argv from the VM directory's [`COMMAND_FILE`].
    fn argv(&self) -> Result<Vec<String>, DriverError> {
        let file = &self.command_file;
        let text = match files::read_regular(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DriverError::Unsupported(format!(
                    "the VM behind {} is off and its directory has no {COMMAND_FILE} to start it",
                    self.socket.display()
                )));
            }
            Err(e) => {
                return Err(DriverError::Failed(format!(
                    "cannot read {}: {e}",
                    file.display()
                )));
            }
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            DriverError::InvalidParameter(format!("{} is not JSON: {e}", file.display()))
        })?;
        let list = value.get("argv").unwrap_or(&value);
        let argv: Option<Vec<String>> = list
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or(None);
        match argv {
            Some(a) if !a.is_empty() => Ok(a),
            _ => Err(DriverError::InvalidParameter(format!(
                "{} must hold a non-empty JSON array of strings (or {{\"argv\": [...]}})",
                file.display()
            ))),
        }
    }

    /// QEMU's pid file: the argv's `-pidfile` (the operator's argv).
    fn pid_file_from(argv: &[String]) -> Option<PathBuf> {
        argv.iter()
            .position(|a| a == "-pidfile")
            .and_then(|i| argv.get(i + 1))
            .map(PathBuf::from)
    }

    /// The stored boot device (`pxe` or `disk`).
    fn stored_boot(&self) -> Option<BootDevice> {
        match files::read_regular(&self.boot_file).ok()?.trim() {
            "pxe" => Some(BootDevice::Pxe),
            "disk" => Some(BootDevice::Disk),
            _ => None,
        }
    }
}

fn qmp_error(e: QmpError) -> DriverError {
    DriverError::Failed(e.to_string())
}

/// A VM's state as QMP shows it: `None` when no QEMU answers.
async fn vm_status(info: &QemuInfo) -> Result<Option<String>, DriverError> {
    match Qmp::connect(&info.socket, info.timeout).await {
        Err(QmpError::NotRunning(_)) => Ok(None),
        Err(e) => Err(qmp_error(e)),
        Ok(mut q) => {
            let status = q.execute("query-status", None).await.map_err(qmp_error)?;
            Ok(Some(
                status["status"].as_str().unwrap_or("unknown").to_owned(),
            ))
        }
    }
}

fn power_from_status(status: Option<&str>) -> PowerState {
    match status {
        None | Some("shutdown") => PowerState::Off,
        Some(_) => PowerState::On,
    }
}

/// Sets `bootindex` so `device` comes first. Both devices are parked at 98/99 first: no
/// two devices may hold the same index, not even a device and its own new value.
async fn apply_boot(q: &mut Qmp, info: &QemuInfo, device: BootDevice) -> Result<(), DriverError> {
    let (first, second) = match device {
        BootDevice::Pxe => (&info.nic_id, &info.disk_id),
        _ => (&info.disk_id, &info.nic_id),
    };
    for (dev, index) in [(first, 98), (second, 99), (first, 1), (second, 2)] {
        q.execute(
            "qom-set",
            Some(json!({"path": format!("/machine/peripheral/{dev}"),
                        "property": "bootindex", "value": index})),
        )
        .await
        .map_err(qmp_error)?;
    }
    Ok(())
}

/// The `qemu` power and management interfaces.
#[derive(Debug)]
pub struct QemuHardware {
    settings: QemuSettings,
    poll_interval: Option<Duration>,
}

impl QemuHardware {
    pub fn new(settings: QemuSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            poll_interval: None,
        })
    }

    pub fn with_poll_interval(settings: QemuSettings, interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            settings,
            poll_interval: Some(interval),
        })
    }

    fn info(&self, node: &Node) -> Result<QemuInfo, DriverError> {
        QemuInfo::parse(node, &self.settings)
    }

    fn poll(&self) -> Duration {
        self.poll_interval.unwrap_or(Duration::from_millis(200))
    }

    /// Starts QEMU paused, applies the stored boot device, then lets it run.
    async fn start(&self, info: &QemuInfo) -> Result<(), DriverError> {
        let mut argv = info.argv()?;
        if !argv.iter().any(|a| a == "-S") {
            argv.push("-S".to_owned());
        }
        tracing::info!(socket = %info.socket.display(), "starting QEMU");
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| DriverError::Failed(format!("cannot run {}: {e}", argv[0])))?;
        let mut stderr = child.stderr.take();
        let deadline = Instant::now() + info.timeout;
        let mut q = loop {
            match Qmp::connect(&info.socket, info.timeout).await {
                Ok(q) => break q,
                Err(QmpError::NotRunning(_)) => {}
                Err(e) => return Err(qmp_error(e)),
            }
            // A QEMU that exited without -daemonize failed; with -daemonize the parent
            // exits once the VM is set up, with status 0.
            if let Ok(Some(status)) = child.try_wait()
                && !status.success()
            {
                let mut text = String::new();
                if let Some(mut e) = stderr.take() {
                    let _ = e.read_to_string(&mut text).await;
                }
                return Err(DriverError::Failed(format!(
                    "QEMU exited with {status} while starting: {}",
                    text.trim()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(DriverError::Timeout {
                    operation: format!("QEMU start (QMP {})", info.socket.display()),
                    timeout: info.timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Reap the child (and log what it prints) whenever it ends.
        tokio::spawn(async move {
            let mut text = String::new();
            if let Some(mut e) = stderr {
                let _ = e.read_to_string(&mut text).await;
            }
            let status = child.wait().await;
            tracing::debug!(?status, stderr = %text.trim(), "QEMU process ended");
        });
        if let Some(device) = info.stored_boot() {
            apply_boot(&mut q, info, device).await?;
            // QEMU rebuilds the firmware's boot order at a reset, not at `cont`.
            q.execute("system_reset", None).await.map_err(qmp_error)?;
        }
        q.execute("cont", None).await.map_err(qmp_error)?;
        Ok(())
    }

    /// `quit`, then waits for the VM to go; kills it by pid if it does not.
    async fn stop(&self, info: &QemuInfo) -> Result<(), DriverError> {
        match Qmp::connect(&info.socket, info.timeout).await {
            Err(QmpError::NotRunning(_)) => return Ok(()),
            Err(e) => return Err(qmp_error(e)),
            Ok(q) => q.quit().await.map_err(qmp_error)?,
        }
        if self
            .wait_power(info, PowerState::Off, Instant::now() + info.timeout)
            .await
            .is_ok()
        {
            return Ok(());
        }
        let argv = info.argv().unwrap_or_default();
        let Some(pid_file) = QemuInfo::pid_file_from(&argv) else {
            return Err(DriverError::Timeout {
                operation: format!("QEMU quit ({})", info.socket.display()),
                timeout: info.timeout,
            });
        };
        kill_by_pid_file(&pid_file, &[&info.socket, &info.socket_given])?;
        self.wait_power(info, PowerState::Off, Instant::now() + info.timeout)
            .await
    }

    async fn wait_power(
        &self,
        info: &QemuInfo,
        want: PowerState,
        deadline: Instant,
    ) -> Result<(), DriverError> {
        loop {
            // A QEMU on its way out may accept and drop a connection: poll on.
            match vm_status(info).await {
                Ok(status) if power_from_status(status.as_deref()) == want => return Ok(()),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "QMP poll failed"),
            }
            if Instant::now() > deadline {
                return Err(DriverError::Timeout {
                    operation: format!(
                        "QEMU power change of {} (waiting for {})",
                        info.socket.display(),
                        want.as_str()
                    ),
                    timeout: info.timeout,
                });
            }
            tokio::time::sleep(self.poll()).await;
        }
    }
}

/// SIGKILLs the pid in `pid_file`, if that process is the QEMU of one of `sockets` (the
/// same socket, canonical and as given).
fn kill_by_pid_file(pid_file: &Path, sockets: &[&Path]) -> Result<(), DriverError> {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    else {
        // QEMU removes its pid file when it exits.
        return Ok(());
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = sockets.iter().any(|socket| {
        let needle = socket.as_os_str().as_encoded_bytes();
        cmdline.windows(needle.len()).any(|w| w == needle)
    });
    if !ours {
        // Not (or no longer) our QEMU: never signal a stranger.
        return Ok(());
    }
    tracing::warn!(pid, "QEMU ignored quit, killing it");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| DriverError::Failed(format!("cannot kill QEMU pid {pid}: {e}")))
}

/// The `qemu` hardware type: QMP power and boot device, agent deploy and inspect.
pub fn hardware_type(qemu: Arc<QemuHardware>, hub: Arc<AgentHub>) -> HardwareType {
    super::agent::bmc_hardware_type("qemu", qemu, hub, PROPERTIES)
}

#[async_trait]
impl PowerInterface for QemuHardware {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn validate(&self, node: &Node) -> Result<(), DriverError> {
        self.info(node).map(|_| ())
    }

    async fn get_power_state(&self, node: &Node) -> Result<Option<PowerState>, DriverError> {
        let info = self.info(node)?;
        Ok(Some(power_from_status(vm_status(&info).await?.as_deref())))
    }

    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerTarget,
        timeout: Option<Duration>,
    ) -> Result<(), DriverError> {
        let info = self.info(node)?;
        let deadline = Instant::now() + timeout.unwrap_or(Duration::from_secs(60));
        let status = vm_status(&info).await?;
        let on = power_from_status(status.as_deref()) == PowerState::On;
        match target {
            PowerTarget::On if on => Ok(()),
            PowerTarget::Off if status.is_none() => Ok(()),
            PowerTarget::SoftOff if !on => Ok(()),
            // `-no-shutdown` leaves a stopped QEMU behind ("shutdown"): quit it before start.
            PowerTarget::On => {
                self.stop(&info).await?;
                self.start(&info).await
            }
            PowerTarget::Off => self.stop(&info).await,
            PowerTarget::SoftOff => {
                let mut q = Qmp::connect(&info.socket, info.timeout)
                    .await
                    .map_err(qmp_error)?;
                q.execute("system_powerdown", None)
                    .await
                    .map_err(qmp_error)?;
                // QEMU serves one QMP client at a time: close before polling.
                drop(q);
                self.wait_power(&info, PowerState::Off, deadline).await
            }
            PowerTarget::Reboot if on => {
                let mut q = Qmp::connect(&info.socket, info.timeout)
                    .await
                    .map_err(qmp_error)?;
                if let Some(device) = info.stored_boot() {
                    apply_boot(&mut q, &info, device).await?;
                }
                q.execute("system_reset", None).await.map_err(qmp_error)?;
                Ok(())
            }
            PowerTarget::SoftReboot if on => {
                let mut q = Qmp::connect(&info.socket, info.timeout)
                    .await
                    .map_err(qmp_error)?;
                q.execute("system_powerdown", None)
                    .await
                    .map_err(qmp_error)?;
                drop(q);
                self.wait_power(&info, PowerState::Off, deadline).await?;
                self.stop(&info).await?;
                self.start(&info).await
            }
            PowerTarget::Reboot | PowerTarget::SoftReboot => {
                self.stop(&info).await?;
                self.start(&info).await
            }
        }
    }
}

#[async_trait]
impl ManagementInterface for QemuHardware {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn validate(&self, node: &Node) -> Result<(), DriverError> {
        self.info(node).map(|_| ())
    }

    fn supported_boot_devices(&self, _node: &Node) -> Vec<BootDevice> {
        vec![BootDevice::Pxe, BootDevice::Disk]
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        _persistent: bool,
    ) -> Result<(), DriverError> {
        let info = self.info(node)?;
        if !matches!(device, BootDevice::Pxe | BootDevice::Disk) {
            return Err(DriverError::InvalidParameter(format!(
                "Invalid boot device {device} specified."
            )));
        }
        files::write_regular(&info.boot_file, &format!("{device}\n")).map_err(|e| {
            DriverError::Failed(format!(
                "cannot write the boot device to {}: {e}",
                info.boot_file.display()
            ))
        })?;
        // A running VM gets the new order now; it applies at its next reset.
        match Qmp::connect(&info.socket, info.timeout).await {
            Err(QmpError::NotRunning(_)) => Ok(()),
            Err(e) => Err(qmp_error(e)),
            Ok(mut q) => apply_boot(&mut q, &info, device).await,
        }
    }

    async fn get_boot_device(
        &self,
        node: &Node,
    ) -> Result<(Option<BootDevice>, bool), DriverError> {
        let info = self.info(node)?;
        if let Some(d) = info.stored_boot() {
            return Ok((Some(d), true));
        }
        // Nothing stored: ask a running VM which device comes first.
        let mut q = match Qmp::connect(&info.socket, info.timeout).await {
            Err(QmpError::NotRunning(_)) => return Ok((None, true)),
            Err(e) => return Err(qmp_error(e)),
            Ok(q) => q,
        };
        let index = |v: Value| v.as_i64().filter(|i| *i >= 0).unwrap_or(i64::MAX);
        let get = |dev: &str| json!({"path": format!("/machine/peripheral/{dev}"), "property": "bootindex"});
        let nic = q
            .execute("qom-get", Some(get(&info.nic_id)))
            .await
            .map(index)
            .unwrap_or(i64::MAX);
        let disk = q
            .execute("qom-get", Some(get(&info.disk_id)))
            .await
            .map(index)
            .unwrap_or(i64::MAX);
        let device = match (nic, disk) {
            (i64::MAX, i64::MAX) => None,
            (n, d) if n < d => Some(BootDevice::Pxe),
            _ => Some(BootDevice::Disk),
        };
        Ok((device, true))
    }
}
