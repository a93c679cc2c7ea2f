//! The power side of a lab server: what a BMC switches.
//!
//! A [`Machine`] is one lab VM that is off until something powers it on. The test process
//! owns its QEMU (started as a child in the lab namespace, never `-daemonize`, so it is
//! reaped with `wait()`: lab pitfall 16) and serves the operations a BMC needs on a unix
//! socket (`<dir>/power.sock`; a socket path crosses network namespaces):
//!
//! | request | effect |
//! |---|---|
//! | `on` / `off` | start QEMU / QMP `quit`, then reap it (SIGKILL after 10 s) |
//! | `soft` | QMP `system_powerdown` (ACPI button; the guest decides) |
//! | `reset` | QMP `system_reset` (same process; applies the boot device), or `on` when off |
//! | `status` | `on` or `off` |
//! | `bootdev pxe\|disk [once]` | persistent, or for the next boot only |
//! | `get power boot`, `set power 1`, `set reset 1`, `set boot pxe`, `set shutdown 1` | ipmi_sim's `chassis_control` protocol |
//!
//! The boot device is QEMU's `bootindex` of `/machine/peripheral/{nic0,disk0}`: given on
//! the command line at power-on and changed with QMP `qom-set` while running, which the
//! firmware sees at the next reset. A one-time device is put back to the persistent one
//! right after the boot it was for (after QEMU's `RESET` event, or once a new QEMU
//! answers QMP), so a later guest reboot uses the persistent device again.
//!
//! `lab-chassis SOCKET ARGS...` (`src/bin/lab-chassis.rs`) sends one request and prints
//! the answer; ipmi_sim runs it as its chassis control program.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::netns::Lab;
use crate::serial::{SerialLog, tail};
use crate::vm::{BootOrder, Firmware, VmSpec};

mod protocol;
mod qmp;

pub use protocol::{BootDevice, Request, client_request, first_boot_attempt, parse_request};
use qmp::{Qmp, set_bootindex};

/// What happens on the machine's power, in order (for assertions and failure messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerEvent {
    /// QEMU started, booting this device first.
    On(BootDevice),
    /// QMP `quit` on request.
    Off,
    /// QMP `system_powerdown` on request.
    SoftOff,
    /// QMP `system_reset` on request, booting this device first.
    Reset(BootDevice),
    /// QEMU exited without an `off` request (guest power-off, crash).
    Exited(String),
    /// The boot device was set.
    Boot { device: BootDevice, once: bool },
}

type Hook = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct State {
    child: Option<Child>,
    persistent: Option<BootDevice>,
    once: Option<BootDevice>,
    /// An `off` is in progress: the exit is expected.
    stopping: bool,
    /// QEMU exited without an `off` request and the hook has not been called yet.
    power_lost: bool,
    events: Vec<PowerEvent>,
    /// (serial offset, time) where each boot started by a power request began.
    boot_marks: Vec<(usize, Instant)>,
}

struct Inner {
    spec: VmSpec,
    dir: PathBuf,
    netns: String,
    socket: PathBuf,
    state: Mutex<State>,
    stop: AtomicBool,
    /// Called (outside the lock) when QEMU exits without an `off` request.
    power_loss_hook: Mutex<Option<Hook>>,
}

/// A lab VM that is switched by power requests (see the module docs); stopped on drop.
pub struct Machine {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("name", &self.inner.spec.name)
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl Machine {
    /// Creates the machine's directory `<dir>/<name>` (`machine.json` with its spec and
    /// QEMU arguments, disk, OVMF variables, serial log, sockets) and its tap, and serves its power socket. The machine is off, persistent
    /// boot device disk (an empty disk falls through to the network).
    pub fn create(lab: &mut Lab, spec: VmSpec, dir: &Path) -> anyhow::Result<Machine> {
        if spec.direct_kernel.is_some() {
            bail!("a BMC-powered machine boots its firmware, not a direct kernel");
        }
        let dir = dir.join(&spec.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::vm::create_disk(&spec, &dir.join("disk.img")).context("creating the disk")?;
        if spec.firmware != Firmware::Bios {
            std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", dir.join("OVMF_VARS.fd"))
                .context("copying the OVMF variables")?;
        }
        std::fs::File::create(dir.join("serial.log")).context("creating the serial log")?;
        let about = json!({
            "name": spec.name, "firmware": format!("{:?}", spec.firmware), "mac": spec.mac,
            "smbios_uuid": spec.smbios_uuid, "smbios_serial": spec.smbios_serial,
            "disk_serial": spec.disk_serial, "disk_bytes": spec.disk_bytes,
            "mem_mib": spec.mem_mib, "cpus": spec.cpus, "netns": lab.name,
            "qemu_args": spec.qemu_args(&dir, BootOrder::NetworkFirst),
        });
        std::fs::write(dir.join("machine.json"), format!("{about:#}\n"))
            .context("writing machine.json")?;
        lab.add_tap(&spec.tap())?;
        let socket = dir.join("power.sock");
        let _ = std::fs::remove_file(&socket);
        let listener =
            UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
        let inner = Arc::new(Inner {
            spec,
            dir,
            netns: lab.name.clone(),
            socket,
            state: Mutex::new(State {
                persistent: Some(BootDevice::Disk),
                ..State::default()
            }),
            stop: AtomicBool::new(false),
            power_loss_hook: Mutex::new(None),
        });
        let server = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("power-{}", inner.spec.name))
                .spawn(move || serve(&inner, &listener))
                .context("starting the power socket thread")?
        };
        let reaper = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("reaper-{}", inner.spec.name))
                .spawn(move || reap_loop(&inner))
                .context("starting the reaper thread")?
        };
        Ok(Machine {
            inner,
            threads: vec![server, reaper],
        })
    }

    pub fn spec(&self) -> &VmSpec {
        &self.inner.spec
    }

    /// The node's `boot_mode` capability for this machine's firmware (`bios` or `uefi`):
    /// drivers set the boot mode along with the boot device, and the BMCs report the
    /// firmware's.
    pub fn boot_mode(&self) -> &'static str {
        match self.inner.spec.firmware {
            Firmware::Bios => "bios",
            Firmware::Uefi | Firmware::UefiNativePxe => "uefi",
        }
    }

    /// The machine's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The raw disk image (the guest's only disk).
    pub fn disk_path(&self) -> PathBuf {
        self.inner.dir.join("disk.img")
    }

    /// The serial console log; it is appended to across power cycles.
    pub fn serial_log(&self) -> SerialLog {
        SerialLog::new(&self.inner.spec.name, self.inner.dir.join("serial.log"))
    }

    /// The QMP socket (exists while powered on).
    pub fn qmp_path(&self) -> PathBuf {
        self.inner.dir.join("qmp.sock")
    }

    /// The power socket `lab-chassis` talks to.
    pub fn socket_path(&self) -> &Path {
        &self.inner.socket
    }

    /// Runs one request, as the socket would.
    pub fn request(&self, req: &Request) -> anyhow::Result<String> {
        self.inner.handle(req)
    }

    pub fn power_on(&self) -> anyhow::Result<()> {
        self.inner.handle(&Request::On).map(drop)
    }

    pub fn power_off(&self) -> anyhow::Result<()> {
        self.inner.handle(&Request::Off).map(drop)
    }

    /// Whether QEMU runs (an exited QEMU is reaped here).
    pub fn is_on(&self) -> bool {
        self.inner.lock().running()
    }

    /// QEMU's PID while powered on.
    pub fn pid(&self) -> Option<u32> {
        let mut st = self.inner.lock();
        if st.running() {
            st.child.as_ref().map(Child::id)
        } else {
            None
        }
    }

    pub fn set_boot_device(&self, device: BootDevice, once: bool) -> anyhow::Result<()> {
        self.inner
            .handle(&Request::BootDev { device, once })
            .map(drop)
    }

    /// The persistent boot device and the pending one-time device, if any.
    pub fn boot_device(&self) -> (BootDevice, Option<BootDevice>) {
        let st = self.inner.lock();
        (st.persistent.unwrap_or(BootDevice::Disk), st.once)
    }

    /// Everything that happened to the machine's power so far.
    pub fn events(&self) -> Vec<PowerEvent> {
        self.inner.lock().events.clone()
    }

    /// QEMU's current `bootindex` of (`nic0`, `disk0`), read over QMP.
    pub fn bootindex(&self) -> anyhow::Result<(i64, i64)> {
        let mut q = Qmp::connect(&self.qmp_path())?;
        let get = |q: &mut Qmp, dev: &str| -> anyhow::Result<i64> {
            q.execute(
                "qom-get",
                Some(
                    json!({"path": format!("/machine/peripheral/{dev}"), "property": "bootindex"}),
                ),
            )?
            .as_i64()
            .context("bootindex is not a number")
        };
        Ok((get(&mut q, "nic0")?, get(&mut q, "disk0")?))
    }

    /// Sends one QMP command to the running QEMU and returns its `return` value.
    pub fn qmp(&self, command: &str, arguments: Option<Value>) -> anyhow::Result<Value> {
        Qmp::connect(&self.qmp_path())?.execute(command, arguments)
    }

    /// Calls `hook` (from a background thread) whenever QEMU exits without an `off`
    /// request, e.g. when the guest powers itself off.
    pub fn on_power_loss(&self, hook: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut h) = self.inner.power_loss_hook.lock() {
            *h = Some(Box::new(hook));
        }
    }

    /// The serial console so far (all power cycles).
    pub fn serial(&self) -> String {
        self.serial_log().text()
    }

    /// The serial console from byte offset `mark` on.
    pub fn serial_since(&self, mark: usize) -> String {
        self.serial_log().since(mark)
    }

    /// The serial log's length now: a mark for [`Machine::wait_serial`].
    pub fn serial_mark(&self) -> usize {
        self.serial_log().mark()
    }

    /// Waits until the serial output after `mark` contains `needle`; returns how long it
    /// took. Fails early when the machine is off and `needle` did not appear.
    pub fn wait_serial(
        &self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        self.serial_log()
            .wait_for(mark, needle, timeout, || {
                Ok((!self.is_on()).then(|| "never appeared and the machine is off".to_owned()))
            })
            .with_context(|| format!("power events {:?}", self.events()))
    }
}

impl Machine {
    /// Waits for the first boot that a power request (on, reset, reboot) started after
    /// `mark` (a [`Machine::serial_mark`] taken before the request) and returns the
    /// device its firmware tried first (see [`first_boot_attempt`]), with the time since
    /// that boot began (QEMU start or reset). Output of an earlier boot that lands after
    /// `mark` is skipped.
    pub fn wait_first_boot(
        &self,
        mark: usize,
        timeout: Duration,
    ) -> anyhow::Result<(BootDevice, Duration)> {
        let t0 = Instant::now();
        loop {
            let start = self
                .inner
                .lock()
                .boot_marks
                .iter()
                .copied()
                .find(|(b, _)| *b >= mark);
            if let Some((offset, began)) = start
                && let Some(d) =
                    first_boot_attempt(self.inner.spec.firmware, &self.serial_since(offset))
            {
                return Ok((d, began.elapsed()));
            }
            if !self.is_on() || t0.elapsed() >= timeout {
                bail!(
                    "{}: no boot attempt on the serial console (on: {}, {timeout:?}); power \
                     events {:?}\n--- serial ---\n{}",
                    self.inner.spec.name,
                    self.is_on(),
                    self.events(),
                    tail(&self.serial_since(mark), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        // Wake the accept() of the socket thread.
        let _ = UnixStream::connect(&self.inner.socket);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut st = self.inner.lock();
        if let Some(mut c) = st.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.inner.socket);
    }
}

impl State {
    /// Whether QEMU runs; reaps it when it has exited.
    fn running(&mut self) -> bool {
        self.reap().is_none() && self.child.is_some()
    }

    /// Reaps an exited QEMU; returns its exit status when it just exited (and records an
    /// exit nobody asked for).
    fn reap(&mut self) -> Option<String> {
        let exited = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => status.to_string(),
            Some(Err(e)) => format!("wait failed: {e}"),
            Some(Ok(None)) | None => return None,
        };
        self.child = None;
        if !self.stopping {
            // Whoever noticed the exit, the reaper thread reports it.
            self.events.push(PowerEvent::Exited(exited.clone()));
            self.power_lost = true;
        }
        Some(exited)
    }

    fn boot_now(&self) -> BootDevice {
        self.once.or(self.persistent).unwrap_or(BootDevice::Disk)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&self, req: &Request) -> anyhow::Result<String> {
        match req {
            Request::On => self.on().map(|()| String::new()),
            Request::Off => self.off().map(|()| String::new()),
            Request::Soft => {
                let mut st = self.lock();
                if st.running() {
                    self.qmp()?.execute("system_powerdown", None)?;
                    st.events.push(PowerEvent::SoftOff);
                }
                Ok(String::new())
            }
            Request::Reset => self.reset().map(|()| String::new()),
            Request::Status => Ok(if self.lock().running() { "on" } else { "off" }.to_owned()),
            Request::BootDev { device, once } => {
                self.set_boot(*device, *once).map(|()| String::new())
            }
            Request::Get(names) => {
                let mut st = self.lock();
                let mut out = String::new();
                for n in names {
                    match n.as_str() {
                        "power" => out.push_str(&format!("power:{}\n", u8::from(st.running()))),
                        "boot" => out.push_str(match st.boot_now() {
                            BootDevice::Pxe => "boot:pxe\n",
                            BootDevice::Disk => "boot:default\n",
                        }),
                        other => bail!("unknown value {other:?}"),
                    }
                }
                Ok(out)
            }
            Request::Check => Ok(String::new()),
        }
    }

    fn qmp(&self) -> anyhow::Result<Qmp> {
        Qmp::connect(&self.dir.join("qmp.sock"))
    }

    fn serial_len(&self) -> usize {
        std::fs::metadata(self.dir.join("serial.log"))
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    fn on(&self) -> anyhow::Result<()> {
        let mut st = self.lock();
        if st.running() {
            return Ok(());
        }
        let qmp_path = self.dir.join("qmp.sock");
        let _ = std::fs::remove_file(&qmp_path);
        let device = st.boot_now();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("qemu.stderr"))
            .context("opening qemu.stderr")?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "qemu-system-x86_64"])
            .args(self.spec.qemu_args(&self.dir, device.order()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting qemu-system-x86_64")?;
        st.child = Some(child);
        st.stopping = false;
        st.boot_marks.push((self.serial_len(), Instant::now()));
        st.events.push(PowerEvent::On(device));
        // Return once QEMU is up (as `-daemonize` would), so a status right after says on.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut q = loop {
            if let Some(status) = st.reap() {
                let err = std::fs::read_to_string(self.dir.join("qemu.stderr")).unwrap_or_default();
                bail!("QEMU exited at once ({status}): {}", tail(&err, 10));
            }
            match Qmp::connect(&qmp_path) {
                Ok(q) => break q,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context("QEMU did not answer on QMP"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        // A one-time device served this boot; the next reset boots the persistent one.
        if st.once.take().is_some() {
            set_bootindex(&mut q, st.persistent.unwrap_or(BootDevice::Disk))?;
        }
        Ok(())
    }

    fn off(&self) -> anyhow::Result<()> {
        let mut st = self.lock();
        if !st.running() {
            return Ok(());
        }
        st.stopping = true;
        st.events.push(PowerEvent::Off);
        if let Ok(mut q) = self.qmp() {
            // QEMU may close the socket before it answers.
            let _ = q.execute("quit", None);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while st.running() {
            if Instant::now() >= deadline {
                if let Some(c) = st.child.as_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                st.child = None;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        st.stopping = false;
        Ok(())
    }

    fn reset(&self) -> anyhow::Result<()> {
        let mut st = self.lock();
        if !st.running() {
            drop(st);
            return self.on();
        }
        let device = st.boot_now();
        let mut q = self.qmp()?;
        q.execute("system_reset", None)?;
        st.events.push(PowerEvent::Reset(device));
        // The reset is only requested; it happens (and fw_cfg's boot order is rebuilt)
        // before QEMU sends the RESET event. Output from then on is the new boot's.
        q.wait_event("RESET", Duration::from_secs(10))?;
        st.boot_marks.push((self.serial_len(), Instant::now()));
        if st.once.take().is_some() {
            set_bootindex(&mut q, st.persistent.unwrap_or(BootDevice::Disk))?;
        }
        Ok(())
    }

    fn set_boot(&self, device: BootDevice, once: bool) -> anyhow::Result<()> {
        let mut st = self.lock();
        if once {
            st.once = Some(device);
        } else {
            st.persistent = Some(device);
            st.once = None;
        }
        st.events.push(PowerEvent::Boot { device, once });
        std::fs::write(
            self.dir.join("bootdev"),
            format!("{}{}\n", device.as_str(), if once { " once" } else { "" }),
        )
        .context("writing bootdev")?;
        if st.running() {
            set_bootindex(&mut self.qmp()?, device)?;
        }
        Ok(())
    }
}

fn serve(inner: &Inner, listener: &UnixListener) {
    for stream in listener.incoming() {
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if let Err(e) = answer(inner, stream) {
            tracing::debug!(error = %e, "power socket client failed");
        }
    }
}

/// Reads one request line and writes `ok\n<output>` or `error <message>\n`.
fn answer(inner: &Inner, stream: UnixStream) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    let reply = match parse_request(line.trim()).and_then(|r| inner.handle(&r)) {
        Ok(out) => format!("ok\n{out}"),
        Err(e) => format!("error {}\n", format!("{e:#}").replace('\n', " ")),
    };
    let mut w = stream;
    w.write_all(reply.as_bytes())?;
    Ok(())
}

fn reap_loop(inner: &Inner) {
    while !inner.stop.load(Ordering::SeqCst) {
        let lost = {
            let mut st = inner.lock();
            st.reap();
            std::mem::take(&mut st.power_lost)
        };
        if lost
            && let Ok(hook) = inner.power_loss_hook.lock()
            && let Some(h) = hook.as_ref()
        {
            h();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
