//! One lab machine: QEMU under TCG with real firmware, a NIC on a lab tap, a disk of its own
//! size and serial, its own MAC and SMBIOS identity, a serial log and a QMP socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::netns::Lab;
use crate::serial::SerialLog;
pub use crate::serial::tail;

/// Which firmware the machine boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, `-machine pc`, e1000 with the iPXE option ROM, virtio-blk disk.
    Bios,
    /// OVMF, `-machine q35`, virtio-net with the iPXE EFI option ROM, NVMe disk.
    Uefi,
    /// OVMF with its own PXE (no NIC option ROM): TFTP chainload of `snponly.efi`, as on
    /// real servers.
    UefiNativePxe,
}

/// What a lab machine looks like.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Short name, also the tap suffix (`tap-<name>`, at most 10 characters).
    pub name: String,
    pub firmware: Firmware,
    pub mem_mib: u32,
    pub cpus: u32,
    pub disk_bytes: u64,
    pub disk_serial: String,
    pub mac: String,
    pub smbios_uuid: String,
    pub smbios_serial: String,
    /// Boot a kernel directly instead of the firmware's network boot.
    pub direct_kernel: Option<(PathBuf, PathBuf, String)>,
    /// Start the disk as a (sparse) copy of this raw image instead of empty; it is then
    /// grown to `disk_bytes` when smaller.
    pub disk_image: Option<PathBuf>,
    /// More QEMU arguments (extra drives, for example).
    pub extra_args: Vec<String>,
    /// Attach the disk read-only (`readonly=on`): the guest sees a write-protected disk.
    pub disk_readonly: bool,
}

impl VmSpec {
    /// Lab machine number `n` (1-based) with the lab's identity scheme.
    pub fn numbered(n: u8, firmware: Firmware) -> VmSpec {
        VmSpec {
            name: format!("vm{n}"),
            firmware,
            mem_mib: 512,
            cpus: 1,
            disk_bytes: 2 << 30,
            disk_serial: format!("INGOT-DISK-{n:02}"),
            mac: format!("52:54:00:fa:00:{n:02x}"),
            smbios_uuid: format!("1ab0c0de-0000-4000-8000-{n:012x}"),
            smbios_serial: format!("INGOT-LAB-{n:02}"),
            direct_kernel: None,
            disk_image: None,
            extra_args: Vec::new(),
            disk_readonly: false,
        }
    }
    /// The machine's tap on the lab bridge.
    pub fn tap(&self) -> String {
        format!("tap-{}", self.name)
    }

    /// QEMU's arguments for this machine, its files in `dir` (`disk.img`, `serial.log`
    /// (appended to), `qmp.sock`, `OVMF_VARS.fd` for OVMF), its NIC on [`VmSpec::tap`] and the
    /// firmware trying the devices in `order`. The caller creates the files and the tap.
    pub fn qemu_args(&self, dir: &Path, order: BootOrder) -> Vec<String> {
        let spec = self;
        let disk = dir.join("disk.img");
        let serial_log = dir.join("serial.log");
        let qmp_path = dir.join("qmp.sock");
        let tap = spec.tap();
        let (nic_index, disk_index) = match order {
            BootOrder::NetworkFirst => (1, 2),
            BootOrder::DiskFirst => (2, 1),
        };
        let mut argv: Vec<String> = vec![
            "-name".into(),
            spec.name.clone(),
            "-accel".into(),
            "tcg".into(),
            "-cpu".into(),
            "max".into(),
            "-m".into(),
            spec.mem_mib.to_string(),
            "-smp".into(),
            spec.cpus.to_string(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-chardev".into(),
            format!("file,id=con0,path={},append=on", serial_log.display()),
            "-serial".into(),
            "chardev:con0".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp_path.display()),
            "-smbios".into(),
            format!(
                "type=1,manufacturer=Ingot-Lab,product=QEMU-lab-VM,uuid={},serial={}",
                spec.smbios_uuid, spec.smbios_serial
            ),
            "-netdev".into(),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-drive".into(),
            format!(
                "file={},format=raw,if=none,id=d0{}",
                disk.display(),
                if spec.disk_readonly {
                    ",readonly=on"
                } else {
                    ""
                }
            ),
        ];
        match spec.firmware {
            Firmware::Bios => {
                argv.extend(["-machine".into(), "pc,graphics=off".into()]);
                argv.extend([
                    "-device".into(),
                    format!(
                        "virtio-blk-pci,drive=d0,id=disk0,bootindex={disk_index},serial={}",
                        spec.disk_serial
                    ),
                ]);
                argv.extend([
                    "-device".into(),
                    format!(
                        "e1000,netdev=n0,id=nic0,mac={},bootindex={nic_index}",
                        spec.mac
                    ),
                ]);
            }
            Firmware::Uefi | Firmware::UefiNativePxe => {
                let vars = dir.join("OVMF_VARS.fd");
                argv.extend(["-machine".into(), "q35,graphics=off".into()]);
                argv.extend([
                    "-drive".into(),
                    "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
                        .into(),
                ]);
                argv.extend([
                    "-drive".into(),
                    format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                ]);
                argv.extend([
                    "-device".into(),
                    format!(
                        "nvme,drive=d0,id=disk0,serial={},bootindex={disk_index}",
                        spec.disk_serial
                    ),
                ]);
                let rom = if spec.firmware == Firmware::UefiNativePxe {
                    ",romfile="
                } else {
                    ""
                };
                argv.extend([
                    "-device".into(),
                    format!(
                        "virtio-net-pci,netdev=n0,id=nic0,mac={},bootindex={nic_index}{rom}",
                        spec.mac
                    ),
                ]);
            }
        }
        if let Some((kernel, initrd, append)) = &spec.direct_kernel {
            argv.extend([
                "-kernel".into(),
                kernel.display().to_string(),
                "-initrd".into(),
                initrd.display().to_string(),
                "-append".into(),
                append.clone(),
            ]);
        }
        argv.extend(self.extra_args.iter().cloned());
        argv
    }
}

/// The arguments every direct-kernel boot of the agent ramdisk shares (no default devices,
/// no display, no reboot, the kernel, the initramfs, its command line, the serial console
/// into `serial_log`); the caller adds the accelerator, CPU, memory, NIC and disks.
pub fn direct_kernel_args(
    kernel: &Path,
    initrd: &Path,
    append: &str,
    serial_log: &Path,
) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
    ]
    .map(Into::into)
    .to_vec();
    v.push(kernel.into());
    v.push("-initrd".into());
    v.push(initrd.into());
    v.push("-append".into());
    v.push(append.into());
    v.push("-serial".into());
    v.push(format!("file:{}", serial_log.display()).into());
    v
}

/// Creates the machine's disk: empty, or a sparse copy of `spec.disk_image`, at least
/// `spec.disk_bytes` long.
pub fn create_disk(spec: &VmSpec, disk: &Path) -> anyhow::Result<()> {
    if let Some(image) = &spec.disk_image {
        let st = std::process::Command::new("cp")
            .arg("--sparse=always")
            .arg(image)
            .arg(disk)
            .status()
            .context("running cp")?;
        if !st.success() {
            anyhow::bail!("copying {} to {} failed", image.display(), disk.display());
        }
        let f = std::fs::OpenOptions::new().write(true).open(disk)?;
        if f.metadata()?.len() < spec.disk_bytes {
            f.set_len(spec.disk_bytes)?;
        }
    } else {
        let f = std::fs::File::create(disk).context("creating the disk image")?;
        f.set_len(spec.disk_bytes)?;
    }
    Ok(())
}

/// Which device the firmware tries first (QEMU `bootindex` of `nic0` and `disk0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootOrder {
    NetworkFirst,
    DiskFirst,
}

/// A running (or stopped) lab machine; killed on drop.
#[derive(Debug)]
pub struct Vm {
    pub spec: VmSpec,
    pub dir: PathBuf,
    pub serial_log: SerialLog,
    pub qmp_path: PathBuf,
    child: Option<Child>,
    pub started: Instant,
}

impl Vm {
    /// Creates the disk and the tap, and starts QEMU inside the lab.
    pub fn start(lab: &mut Lab, spec: VmSpec, dir: &Path) -> anyhow::Result<Vm> {
        let dir = dir.join(&spec.name);
        std::fs::create_dir_all(&dir)?;
        let disk = dir.join("disk.img");
        create_disk(&spec, &disk)?;
        lab.add_tap(&spec.tap())?;
        if spec.firmware != Firmware::Bios {
            std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", dir.join("OVMF_VARS.fd"))
                .context("copying OVMF vars")?;
        }
        let serial_log = SerialLog::new(&spec.name, dir.join("serial.log"));
        let qmp_path = dir.join("qmp.sock");
        let argv = spec.qemu_args(&dir, BootOrder::NetworkFirst);
        let child = lab
            .command("qemu-system-x86_64")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("qemu.stderr"))?)
            .spawn()
            .context("starting qemu-system-x86_64")?;
        Ok(Vm {
            spec,
            dir,
            serial_log,
            qmp_path,
            child: Some(child),
            started: Instant::now(),
        })
    }

    /// The serial console so far.
    pub fn serial(&self) -> String {
        self.serial_log.text()
    }

    /// Waits until the serial console contains `needle`; returns the time since start.
    /// Fails early when QEMU exits first.
    pub fn wait_serial(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let (child, dir) = (&mut self.child, &self.dir);
        self.serial_log.wait_for(0, needle, timeout, || {
            let Some(st) = child.as_mut().map(Child::try_wait).transpose()?.flatten() else {
                return Ok(None);
            };
            let err = std::fs::read_to_string(dir.join("qemu.stderr")).unwrap_or_default();
            Ok(Some(format!(
                "did not appear before QEMU exited ({st}): {err}"
            )))
        })?;
        Ok(self.started.elapsed())
    }

    /// Sends one QMP command and returns its `return` value.
    pub fn qmp(&self, command: &str, arguments: Option<Value>) -> anyhow::Result<Value> {
        let stream = UnixStream::connect(&self.qmp_path)
            .with_context(|| format!("connecting {}", self.qmp_path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut w = stream;
        let mut line = String::new();
        reader.read_line(&mut line)?; // greeting
        writeln!(w, "{}", json!({"execute": "qmp_capabilities"}))?;
        read_return(&mut reader)?;
        let mut msg = json!({"execute": command});
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        writeln!(w, "{msg}")?;
        read_return(&mut reader)
    }

    /// Whether QEMU still runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

fn read_return(r: &mut impl BufRead) -> anyhow::Result<Value> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("QMP socket closed");
        }
        let v: Value = serde_json::from_str(&line).context("parsing QMP")?;
        if v.get("event").is_some() {
            continue;
        }
        if let Some(e) = v.get("error") {
            bail!("QMP error: {e}");
        }
        return Ok(v.get("return").cloned().unwrap_or(Value::Null));
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
