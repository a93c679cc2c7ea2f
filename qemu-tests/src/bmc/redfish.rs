//! sushy-tools' Redfish emulator per lab machine, in the lab namespace on the machine's BMC
//! address, HTTPS on port 443 with a throwaway CA, basic auth
//! [`USERNAME`](super::USERNAME)/[`PASSWORD`](super::PASSWORD).
//!
//! Libvirt is not used. sushy's fake systems driver keeps each system's power state and
//! boot device in its own store and, with `external_notifier` on, PUTs the whole system
//! record (`uuid`, `power_state`, `pending_power: {power_state, apply_time}`,
//! `boot_device`, `boot_mode`, ...) to `EXTERNAL_NOTIFICATION_URL` on every change, before
//! it answers the client. The test process serves that URL inside the lab and switches the
//! machine:
//!
//! | sushy record | machine |
//! |---|---|
//! | new `pending_power` `On` (ResetType On, ForceOn) | power on |
//! | new `pending_power` `Off` (ForceOff, GracefulShutdown: sushy records both as `Off`) | power off (QMP `quit`) |
//! | new `pending_power` `ForceRestart` / `GracefulRestart` | reset (QMP `system_reset`; on when off) |
//! | `boot_device` `Pxe` / `Hdd` | boot device pxe / disk (persistent: sushy stores every override as Continuous) |
//!
//! sushy itself reports the new power state only once a random 1-11 s "apply time" has
//! passed, so drivers wait for it as for real hardware. When QEMU exits without being asked
//! (the guest powered off), the harness posts `ForceOff` to the emulator, so the state it
//! reports follows the machine a few seconds later.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{PASSWORD, USERNAME, add_bmc_address, bound, enter};
use crate::netns::Lab;
use crate::power::{BootDevice, Machine, Request};
use crate::vm::{Firmware, VmSpec};

/// The HTTPS port every lab Redfish BMC listens on (each has its own address).
pub const PORT: u16 = 443;

/// A lab machine behind its own sushy-emulator; both stopped on drop.
pub struct RedfishBmc {
    sushy: Option<Child>,
    address: String,
    dir: PathBuf,
    notifier: Option<Notifier>,
    machine: Arc<Machine>,
}

impl std::fmt::Debug for RedfishBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedfishBmc")
            .field("address", &self.address)
            .field("machine", &self.machine)
            .finish()
    }
}

impl RedfishBmc {
    /// Creates the machine (powered off) in `<dir>/<name>` and starts its BMC; installs
    /// sushy-tools (`python/sushy.txt`, pinned) into `<target>/pyvenv/sushy` on first use.
    pub fn start(lab: &mut Lab, spec: VmSpec, dir: &Path) -> anyhow::Result<RedfishBmc> {
        let bin = sushy_venv()?;
        let machine = Arc::new(Machine::create(lab, spec, dir)?);
        let address = add_bmc_address(lab)?;
        let bmc_dir = machine.dir().join("redfish");
        std::fs::create_dir_all(&bmc_dir).context("creating the BMC dir")?;
        make_certs(&bmc_dir, &address)?;
        let hash = Command::new(bin.join("python"))
            .args([
                "-c",
                "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), \
                 bcrypt.gensalt(rounds=4)).decode())",
                PASSWORD,
            ])
            .output()
            .context("hashing the BMC password")?;
        if !hash.status.success() {
            bail!("bcrypt: {}", String::from_utf8_lossy(&hash.stderr));
        }
        std::fs::write(
            bmc_dir.join("htpasswd"),
            format!(
                "{USERNAME}:{}\n",
                String::from_utf8_lossy(&hash.stdout).trim()
            ),
        )?;

        let notifier = Notifier::start(&lab.name, machine.clone())?;
        let spec = machine.spec();
        let system = json!({
            "uuid": spec.smbios_uuid,
            "name": spec.name,
            "power_state": "Off",
            "boot_device": "Hdd",
            "boot_mode": if spec.firmware == Firmware::Bios { "Legacy" } else { "UEFI" },
            "external_notifier": true,
            "nics": [{"mac": spec.mac}],
        });
        let d = bmc_dir.display();
        let conf = bmc_dir.join("sushy.conf");
        // A Python file; the system record goes in as a JSON string literal.
        let system = serde_json::to_string(&system.to_string())?;
        std::fs::write(
            &conf,
            format!(
                "import json\n\
                 SUSHY_EMULATOR_LISTEN_IP = '{address}'\n\
                 SUSHY_EMULATOR_LISTEN_PORT = {PORT}\n\
                 SUSHY_EMULATOR_SSL_CERT = '{d}/srv.pem'\n\
                 SUSHY_EMULATOR_SSL_KEY = '{d}/srv.key'\n\
                 SUSHY_EMULATOR_AUTH_FILE = '{d}/htpasswd'\n\
                 SUSHY_EMULATOR_FAKE_DRIVER = True\n\
                 SUSHY_EMULATOR_STATE_DIR = '{d}/state'\n\
                 EXTERNAL_NOTIFICATION_URL = 'http://127.0.0.1:{port}/'\n\
                 SUSHY_EMULATOR_FAKE_SYSTEMS = [json.loads({system})]\n",
                port = notifier.port,
            ),
        )
        .context("writing sushy.conf")?;
        let log = std::fs::File::create(bmc_dir.join("sushy.log"))?;
        let child = lab
            .command(&bin.join("sushy-emulator").display().to_string())
            .arg("--config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting sushy-emulator")?;
        let pid = child.id();
        let mut bmc = RedfishBmc {
            sushy: Some(child),
            address,
            dir: bmc_dir,
            notifier: Some(notifier),
            machine,
        };
        let t0 = Instant::now();
        while !bound(pid, "tcp", &bmc.address, PORT) {
            if let Some(Ok(Some(status))) = bmc.sushy.as_mut().map(Child::try_wait) {
                bail!("sushy-emulator exited ({status}): {}", bmc.log());
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!(
                    "sushy-emulator did not listen on {}:{PORT}: {}",
                    bmc.address,
                    bmc.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bmc.sync_power_loss(&lab.name);
        Ok(bmc)
    }

    /// On a power loss nobody asked for, `ForceOff` through the emulator's own API, so
    /// the power state it reports follows the machine.
    fn sync_power_loss(&self, netns: &str) {
        let url = format!(
            "https://{}/redfish/v1/Systems/{}/Actions/ComputerSystem.Reset",
            self.address,
            self.machine.spec().smbios_uuid
        );
        let (netns, ca) = (netns.to_owned(), self.ca_path());
        let name = self.machine.spec().name.clone();
        self.machine.on_power_loss(move || {
            let out = Command::new("ip")
                .args(["netns", "exec", &netns, "curl", "-sS", "-f", "--cacert"])
                .arg(&ca)
                .args(["-u", &format!("{USERNAME}:{PASSWORD}")])
                .args(["-H", "Content-Type: application/json", "-X", "POST"])
                .args(["-d", r#"{"ResetType":"ForceOff"}"#, &url])
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => tracing::warn!(
                    machine = %name,
                    error = %String::from_utf8_lossy(&o.stderr),
                    "telling sushy about a power loss failed"
                ),
                Err(e) => tracing::warn!(machine = %name, error = %e, "running curl failed"),
            }
        });
    }

    /// The `driver_info` an operator gives `baremetal node create --driver redfish`.
    pub fn driver_info(&self) -> Value {
        json!({
            "redfish_address": format!("https://{}", self.address),
            "redfish_system_id": format!("/redfish/v1/Systems/{}", self.machine.spec().smbios_uuid),
            "redfish_username": USERNAME,
            "redfish_password": PASSWORD,
            "redfish_verify_ca": self.ca_path().display().to_string(),
        })
    }

    /// The CA certificate (PEM) the BMC's server certificate is signed by.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The BMC's address inside the lab namespace.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The machine behind the BMC: serial log, disk, power events.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The notifications sushy sent so far (the system records), oldest first.
    pub fn notifications(&self) -> Vec<Value> {
        self.notifier
            .as_ref()
            .map(|n| n.seen.lock().map(|s| s.clone()).unwrap_or_default())
            .unwrap_or_default()
    }

    /// sushy-emulator's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sushy.log")).unwrap_or_default()
    }
}

impl Drop for RedfishBmc {
    fn drop(&mut self) {
        if let Some(mut c) = self.sushy.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.notifier.take();
    }
}

/// The HTTP endpoint sushy's external notifier PUTs to, on 127.0.0.1 inside the lab.
struct Notifier {
    port: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Value>>>,
    thread: Option<JoinHandle<()>>,
}

impl Notifier {
    fn start(netns: &str, machine: Arc<Machine>) -> anyhow::Result<Notifier> {
        let path = format!("/run/netns/{netns}");
        let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::Builder::new()
                .name(format!("notifier-{}", machine.spec().name))
                .spawn(move || {
                    let listener = enter(&ns)
                        .and_then(|()| TcpListener::bind("127.0.0.1:0").context("binding"))
                        .and_then(|l| l.set_nonblocking(true).map(|()| l).context("nonblocking"));
                    let listener = match listener {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(listener.local_addr().map(|a| a.port()).context("port"));
                    let mut applied = Applied::default();
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                if let Err(e) = notification(stream, &machine, &seen, &mut applied)
                                {
                                    tracing::warn!(error = %format!("{e:#}"), "sushy notification");
                                }
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                })
                .context("starting the notifier thread")?
        };
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .context("the notifier thread did not start")??;
        Ok(Notifier {
            port,
            stop,
            seen,
            thread: Some(thread),
        })
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the notifier already acted on.
#[derive(Default)]
struct Applied {
    pending: Option<Value>,
    boot: Option<String>,
}

/// What a sushy system record asks of the machine, given what was already done.
fn actions(record: &Value, applied: &mut Applied) -> Vec<Request> {
    let mut out = Vec::new();
    if let Some(boot) = record.get("boot_device").and_then(Value::as_str)
        && applied.boot.as_deref() != Some(boot)
    {
        applied.boot = Some(boot.to_owned());
        match boot {
            "Pxe" => out.push(Request::BootDev {
                device: BootDevice::Pxe,
                once: false,
            }),
            "Hdd" => out.push(Request::BootDev {
                device: BootDevice::Disk,
                once: false,
            }),
            other => tracing::warn!(device = other, "boot device not supported by lab machines"),
        }
    }
    let pending = record.get("pending_power").filter(|p| !p.is_null());
    if let Some(p) = pending
        && applied.pending.as_ref() != Some(p)
    {
        applied.pending = Some(p.clone());
        match p.get("power_state").and_then(Value::as_str) {
            Some("On") => out.push(Request::On),
            Some("Off") => out.push(Request::Off),
            Some(s) if s.contains("Restart") => out.push(Request::Reset),
            other => tracing::warn!(state = ?other, "unknown pending power state"),
        }
    }
    out
}

/// Reads one HTTP request, acts on the system record in its body, answers 204.
fn notification(
    stream: TcpStream,
    machine: &Machine,
    seen: &Mutex<Vec<Value>>,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed in the headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().context("content-length")?;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let record: Value = serde_json::from_slice(&body).context("notification body")?;
    let mut result = Ok(());
    if record.get("uuid").and_then(Value::as_str) == Some(machine.spec().smbios_uuid.as_str()) {
        for req in actions(&record, applied) {
            if let Err(e) = machine.request(&req) {
                result = Err(e.context(format!("{req:?}")));
                break;
            }
        }
    }
    if let Ok(mut s) = seen.lock() {
        s.push(record);
    }
    let status = if result.is_ok() {
        "204 No Content"
    } else {
        "500 Internal Server Error"
    };
    let mut w = stream;
    write!(
        w,
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    result
}

/// The sushy-tools venv's bin directory, built on first use by `python/venv` (which
/// serialises test processes with its lock file).
pub fn sushy_venv() -> anyhow::Result<PathBuf> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        crate::build::python_venv("sushy")
            .map(|dir| dir.join("bin"))
            .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A throwaway CA (`ca.pem`) and a server certificate for `address` signed by it
/// (`srv.pem`, `srv.key`) in `dir`.
pub fn make_certs(dir: &Path, address: &str) -> anyhow::Result<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Ingot Lab BMC CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&args)?;
    let subj = format!("/CN={address}");
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", "srv.key", "-out", "srv.csr", "-subj", &subj]);
    openssl(&args)?;
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "subjectAltName=IP:{address}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sushy_records_become_machine_requests_once() {
        let mut applied = Applied::default();
        let rec = |power: &str, pending: Value, boot: &str| {
            json!({"uuid": "u", "power_state": power, "pending_power": pending,
                   "boot_device": boot})
        };
        // The initial boot device is taken over once.
        let r = actions(&rec("Off", Value::Null, "Hdd"), &mut applied);
        assert_eq!(
            r,
            [Request::BootDev {
                device: BootDevice::Disk,
                once: false
            }]
        );
        assert!(actions(&rec("Off", Value::Null, "Hdd"), &mut applied).is_empty());
        let on = json!({"power_state": "On", "apply_time": 100});
        let r = actions(&rec("Off", on.clone(), "Pxe"), &mut applied);
        assert_eq!(
            r,
            [
                Request::BootDev {
                    device: BootDevice::Pxe,
                    once: false
                },
                Request::On
            ]
        );
        // The same pending request again (another field changed): nothing new.
        assert!(actions(&rec("Off", on, "Pxe"), &mut applied).is_empty());
        // Applied: power_state changes, pending cleared: nothing to do.
        assert!(actions(&rec("On", Value::Null, "Pxe"), &mut applied).is_empty());
        let restart = json!({"power_state": "ForceRestart", "apply_time": 107});
        assert_eq!(
            actions(&rec("Off", restart, "Pxe"), &mut applied),
            [Request::Reset]
        );
        let off = json!({"power_state": "Off", "apply_time": 120});
        assert_eq!(
            actions(&rec("On", off, "Pxe"), &mut applied),
            [Request::Off]
        );
        assert!(actions(&rec("On", Value::Null, "Cd"), &mut applied).is_empty());
    }
}
