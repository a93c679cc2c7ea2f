//! A virtual rack: one lab namespace with `ingot serve` in it (full DHCP, TFTP, RA, the boot
//! and agent listener on the bridge, our agent kernel and initramfs), a static HTTP server
//! for deploy images, lab machines whose power the controller drives, and the real
//! `baremetal` CLI (python-ironicclient in a cached venv) run inside the namespace, where the
//! API listens on the loopback: over HTTPS with http_basic, as on a real network
//! ([`access`]: every client gets the password and the CA).
//!
//! ```text
//! let mut rack = Rack::start(RackOptions::default())?;
//! let m = rack.add_machine(VmSpec::numbered(1, Firmware::Bios))?;    // powered off
//! let node = rack.baremetal_json(&["node", "create", "--driver", "qemu", ...])?;
//! rack.wait_provision_state(&uuid, "manageable", Duration::from_secs(120))?;
//! ```
//!
//! Dropping the rack kills the QEMU processes the controller started (by the pid in each
//! machine's pid file, after checking its command line), then `ingot serve` and the HTTP
//! server, deletes the namespace and removes the working directory (unless kept).
//! [`Timeline`] records and prints how long each phase of a scenario took.
//!
//! Submodules: [`access`] (credentials, CA and the files that hand them to clients),
//! [`bmc`] (machines behind ipmi_sim / sushy-tools, `ingot image import` into the rack),
//! [`steps`] (the operator's lifecycle steps through the CLI), [`timeline`] and `replica`
//! (more controllers on the rack's PostgreSQL, [`Rack::start_replica`]).

pub mod access;
pub mod bmc;
mod machine;
mod replica;
pub mod steps;
pub mod timeline;
mod venv;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

pub use access::{API, ApiAccess, USER};
pub use machine::Machine;
pub use timeline::Timeline;
pub use venv::clients_venv;

use replica::{Replica, Role};

use crate::netns::{BRIDGE_ADDR, Lab};
use crate::vm::{BootOrder, Firmware, VmSpec, tail};

/// Port of the image HTTP server on the bridge.
pub const IMAGE_PORT: u16 = 8081;
/// Provision states a wait never recovers from on its own.
const FAILED_STATES: &[&str] = &[
    "deploy failed",
    "clean failed",
    "inspect failed",
    "rescue failed",
    "error",
];

/// What kind of rack to start.
#[derive(Debug, Clone)]
pub struct RackOptions {
    /// Enroll unknown machines that boot the agent (`[discovery] enabled`).
    pub discovery: bool,
    /// `[discovery] enroll_bmc`: a discovered machine's agent sets up a BMC user in-band
    /// and the node gets it (machines of [`Rack::add_ipmi_machine_in_band`]).
    pub enroll_bmc: bool,
    /// `[conductor] callback_timeout_secs`: how long a wait state may last.
    pub callback_timeout: Duration,
    /// `[deploy] fast_track` (default on, as the lab: an agent already running takes the
    /// next step without a reboot; off, every step boots the agent through the BMC).
    pub fast_track: bool,
    /// Extra TOML appended to the generated `ingot.toml` (top-level keys must not repeat).
    pub extra_config: String,
    /// Keep the working directory (logs, disks) after the rack is dropped (default: when
    /// `QEMU_TESTS_KEEP` is set).
    pub keep_dir: bool,
    /// `INGOT_LOG` of `ingot serve`, its log filter (its log is `ingot.log` in the rack
    /// directory).
    pub log_filter: String,
    /// `database` (default: SQLite in the rack directory). A PostgreSQL URL lets
    /// [`Rack::start_replica`] add controllers that share it.
    pub database: Option<String>,
    /// `conductor_name` of the rack's first controller (default: the host's name).
    pub conductor_name: Option<String>,
    /// More lines of the `[conductor]` table (`heartbeat_timeout_secs = 6`, ...).
    pub conductor_extra: String,
}

impl Default for RackOptions {
    fn default() -> Self {
        Self {
            discovery: false,
            enroll_bmc: false,
            callback_timeout: Duration::from_secs(600),
            fast_track: true,
            extra_config: String::new(),
            keep_dir: std::env::var_os("QEMU_TESTS_KEEP").is_some(),
            log_filter: "info".to_owned(),
            database: None,
            conductor_name: None,
            conductor_extra: String::new(),
        }
    }
}

/// The running rack.
#[derive(Debug)]
pub struct Rack {
    ingot: Option<Child>,
    machines: Vec<Machine>,
    lab: Lab,
    images: PathBuf,
    ingot_log: PathBuf,
    venv: PathBuf,
    home: PathBuf,
    started: Instant,
    /// `INGOT_LOG` of `ingot serve`, also after a restart.
    log_filter: String,
    /// The API's password and CA, for every client.
    access: ApiAccess,
    /// How the first controller was configured, for its replicas.
    opts: RackOptions,
    agent_files: (PathBuf, PathBuf),
    replicas: Vec<Replica>,
    // Declared last: removed after the lab is gone.
    dir: DirGuard,
}

/// The rack's working directory, removed on drop unless kept.
#[derive(Debug)]
struct DirGuard {
    path: PathBuf,
    keep: bool,
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if self.keep {
            println!("rack directory kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl Rack {
    /// Builds what it needs (initramfs, `ingot`, the client venv), creates the lab, starts
    /// `ingot serve` and the image server in it and waits for the API.
    pub fn start(opts: RackOptions) -> anyhow::Result<Rack> {
        crate::require_lab()?;
        let started = Instant::now();
        let (kernel, initrd) = crate::build::agent_initramfs()?;
        let ingot = crate::build::ingot_binary()?;
        let venv = clients_venv()?;
        let dir = tempfile::Builder::new()
            .prefix("ingot-rack-")
            .tempdir()
            .context("creating the rack directory")?
            .keep();
        let lab = Lab::new()?;
        let images = dir.join("images");
        let home = dir.join("home");
        for d in [&images, &home] {
            std::fs::create_dir_all(d)?;
        }
        // HTTPS (the agent API and images too, with the CA the agent pins) and http_basic,
        // as on a real network.
        let access = ApiAccess::create(&ingot, &dir)?;
        let mut rack = Rack {
            ingot: None,
            log_filter: opts.log_filter.clone(),
            access,
            opts: opts.clone(),
            agent_files: (kernel.clone(), initrd.clone()),
            replicas: Vec::new(),
            machines: Vec::new(),
            lab,
            ingot_log: dir.join("ingot.log"),
            dir: DirGuard {
                path: dir,
                keep: opts.keep_dir,
            },
            images,
            venv,
            home,
            started,
        };
        // The qemu type's `allowed_dir` must exist when `ingot serve` starts.
        std::fs::create_dir_all(rack.machines_dir())?;
        let config = rack.dir.path.join("ingot.toml");
        let first = Role {
            name: opts.conductor_name.as_deref(),
            api_listen: "127.0.0.1:6385".to_owned(),
            state_dir: &rack.dir.path,
            replica_ports: None,
        };
        std::fs::write(&config, rack.config_toml(&first))?;
        std::fs::File::create(&rack.ingot_log)?;
        rack.ingot = Some(rack.spawn_serve(&config, &rack.ingot_log)?);
        let http_log = std::fs::File::create(rack.dir.path.join("images.log"))?;
        let http = rack
            .lab
            .command("python3")
            .args(["-m", "http.server", "--bind", BRIDGE_ADDR])
            .arg(IMAGE_PORT.to_string())
            .arg("--directory")
            .arg(&rack.images)
            .stdin(Stdio::null())
            .stdout(http_log.try_clone()?)
            .stderr(http_log)
            .spawn()
            .context("starting the image HTTP server")?;
        rack.lab.adopt(http);
        crate::wait::until(
            Duration::from_secs(30),
            Duration::from_millis(100),
            "the API and the image server",
            || {
                let api = rack.api_get("/v1")?.is_some();
                let images = rack
                    .lab
                    .command("curl")
                    .args(["-s", "-f", "-o", "/dev/null"])
                    .arg(format!("http://{BRIDGE_ADDR}:{IMAGE_PORT}/"))
                    .stdin(Stdio::null())
                    .status()
                    .context("running curl in the lab")?
                    .success();
                Ok((api && images).then_some(()))
            },
        )
        .with_context(|| format!("ingot log:\n{}", tail(&rack.ingot_log(), 30)))?;
        println!(
            "rack {} up in {:.1} s (TLS on, fast track {}, dir {})",
            rack.lab.name,
            started.elapsed().as_secs_f64(),
            if opts.fast_track { "on" } else { "off" },
            rack.dir.path.display()
        );
        Ok(rack)
    }

    fn config_toml(&self, role: &Role<'_>) -> String {
        let opts = &self.opts;
        let (kernel, initrd) = &self.agent_files;
        let (auth, tls) = self.access.config();
        let name = role
            .name
            .map(|n| format!("conductor_name = \"{n}\"\n"))
            .unwrap_or_default();
        let database = opts
            .database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.dir.path.join("ingot.db").display()));
        let netboot = match role.replica_ports {
            None => format!(
                "mode = \"full\"\n\
                 interfaces = [\"br0\"]\n\
                 server_ip = \"{BRIDGE_ADDR}\"\n\
                 http_listen = \"{BRIDGE_ADDR}:8080\"\n"
            ),
            Some((http, https)) => format!(
                "mode = \"off\"\n\
                 server_ip = \"{BRIDGE_ADDR}\"\n\
                 http_listen = \"{BRIDGE_ADDR}:{http}\"\n\
                 https_listen = \"{BRIDGE_ADDR}:{https}\"\n"
            ),
        };
        format!(
            "api_listen = \"{api}\"\n\
             {name}\
             {auth}\
             database = \"{database}\"\n\
             state_dir = \"{state}\"\n\
             enabled_hardware_types = [\"qemu\", \"ipmi\", \"redfish\", \"manual\", \"fake-hardware\"]\n\
             [qemu]\n\
             allowed_dir = \"{machines}\"\n\
             [conductor]\n\
             callback_timeout_secs = {callback}\n\
             {conductor_extra}\n\
             [netboot]\n\
             {netboot}\
             pool_start = \"172.31.250.100\"\n\
             pool_end = \"172.31.250.199\"\n\
             netmask = \"255.255.255.0\"\n\
             agent_kernel = \"{kernel}\"\n\
             agent_initramfs = \"{initrd}\"\n\
             [discovery]\n\
             enabled = {discovery}\n\
             enroll_bmc = {enroll_bmc}\n\
             allowed_subnets = [\"172.31.250.0/24\"]\n\
             [deploy]\n\
             fast_track = {fast_track}\n\
             {extra}\n\
             {tls}",
            api = role.api_listen,
            conductor_extra = opts.conductor_extra,
            state = role.state_dir.display(),
            machines = self.machines_dir().display(),
            callback = opts.callback_timeout.as_secs().max(1),
            kernel = kernel.display(),
            initrd = initrd.display(),
            discovery = opts.discovery,
            enroll_bmc = opts.enroll_bmc,
            fast_track = opts.fast_track,
            extra = opts.extra_config,
        )
    }

    /// Where machines live (`[qemu] allowed_dir` of the rack's controller).
    pub fn machines_dir(&self) -> PathBuf {
        self.dir.path.join("machines")
    }

    /// The lab namespace (to start more processes in it).
    pub fn lab(&mut self) -> &mut Lab {
        &mut self.lab
    }

    /// The lab namespace's name (`ip netns exec NAME ...`).
    pub fn lab_name(&self) -> &str {
        &self.lab.name
    }

    /// A command that runs inside the lab namespace.
    pub fn lab_command(&self, program: &str) -> Command {
        self.lab.command(program)
    }

    /// How clients reach the rack's API (the password stays inside).
    pub fn access(&self) -> &ApiAccess {
        &self.access
    }

    /// Points every client of the rack (the CLIs, curl) at another controller's API, e.g.
    /// a replica's once the first controller is dead.
    pub fn use_api(&mut self, url: &str) {
        self.access.set_api(url);
    }

    /// The rack's working directory (logs, database, machines, images).
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// Time since [`Rack::start`] was called.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The end of a run over several machines: prints the phase table and the rack's total
    /// time, then fails with every machine's failure and the tail of the controller's log
    /// (and when the API's password shows in that log).
    pub fn conclude(&self, timelines: &[Timeline], failures: &[String]) -> anyhow::Result<()> {
        println!("\n{}", Timeline::table(timelines));
        println!("rack total: {:.1} s", self.elapsed().as_secs_f64());
        if self.access.leaks_password(&self.ingot_log()) {
            bail!("the API password is in the controller's log");
        }
        if !failures.is_empty() {
            bail!(
                "{}\n--- ingot log ---\n{}",
                failures.join("\n\n"),
                tail(&self.ingot_log(), 60)
            );
        }
        Ok(())
    }

    /// The controller's log so far.
    pub fn ingot_log(&self) -> String {
        std::fs::read_to_string(&self.ingot_log).unwrap_or_default()
    }

    /// Prepares a machine (directory, empty disk, tap, the argv file with a `-pidfile`) and
    /// leaves it powered off: the controller starts it.
    pub fn add_machine(&mut self, spec: VmSpec) -> anyhow::Result<Machine> {
        let dir = self.machines_dir().join(&spec.name);
        std::fs::create_dir_all(&dir)?;
        crate::vm::create_disk(&spec, &dir.join("disk.img"))?;
        self.lab.add_tap(&spec.tap())?;
        if spec.firmware != Firmware::Bios {
            std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", dir.join("OVMF_VARS.fd"))
                .context("copying OVMF vars")?;
        }
        let pid_file = dir.join("qemu.pid");
        let mut argv = vec!["qemu-system-x86_64".to_owned()];
        argv.extend(spec.qemu_args(&dir, BootOrder::NetworkFirst));
        argv.extend(["-pidfile".to_owned(), pid_file.display().to_string()]);
        let command_file = dir.join("qemu.json");
        std::fs::write(
            &command_file,
            serde_json::to_vec_pretty(&serde_json::json!({ "argv": argv }))?,
        )?;
        let m = Machine {
            disk: dir.join("disk.img"),
            serial_log: crate::serial::SerialLog::new(&spec.name, dir.join("serial.log")),
            qmp_socket: dir.join("qmp.sock"),
            command_file,
            pid_file,
            dir,
            spec,
        };
        self.machines.push(m.clone());
        Ok(m)
    }

    /// Copies `file` into the image server's directory as `name`; returns its URL as the
    /// machines reach it.
    pub fn publish(&self, file: &Path, name: &str) -> anyhow::Result<String> {
        let dest = self.images.join(name);
        if std::fs::hard_link(file, &dest).is_err() {
            std::fs::copy(file, &dest).with_context(|| format!("copying {}", file.display()))?;
        }
        Ok(format!("http://{BRIDGE_ADDR}:{IMAGE_PORT}/{name}"))
    }

    /// Runs the `baremetal` CLI inside the namespace (over HTTPS, logged in); returns its
    /// stdout, or fails with its stderr.
    pub fn baremetal(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = self.lab.command(
            self.venv
                .join("bin/baremetal")
                .to_str()
                .context("venv path")?,
        );
        self.access.baremetal_env(&mut cmd);
        let out = cmd
            .args(args)
            .env("HOME", &self.home)
            .stdin(Stdio::null())
            .output()
            .context("running baremetal in the lab")?;
        finished("baremetal", args, &out)
    }

    /// Runs `ingot ARGS` (`node list`, `node watch N`, ...) inside the namespace against the
    /// rack's API (over HTTPS, logged in); returns its stdout, or fails with its stderr.
    pub fn ingot_cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let ingot = crate::build::ingot_binary()?;
        let mut cmd = self
            .lab
            .command(ingot.to_str().context("ingot path is not UTF-8")?);
        self.access.ingot_env(&mut cmd);
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running ingot in the lab")?;
        finished("ingot", args, &out)
    }

    /// Runs the `baremetal` CLI with `-f json` and parses what it prints.
    pub fn baremetal_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-f", "json"]);
        let text = self.baremetal(&all)?;
        serde_json::from_str(&text)
            .with_context(|| format!("baremetal {} printed no JSON: {text}", args.join(" ")))
    }

    /// GETs an API path from inside the namespace; `None` on an HTTP error.
    pub fn api_get(&self, path: &str) -> anyhow::Result<Option<Value>> {
        self.api_get_bytes(path)?
            .map(|b| serde_json::from_slice(&b).context("API answer is not JSON"))
            .transpose()
    }

    /// GETs an API path (as the operator, with the rack's credentials) as text, e.g.
    /// `/metrics`; `None` on an HTTP error.
    pub fn api_get_text(&self, path: &str) -> anyhow::Result<Option<String>> {
        self.api_get_bytes(path)?
            .map(|b| String::from_utf8(b).context("API answer is not UTF-8"))
            .transpose()
    }

    fn api_get_bytes(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let out = self
            .lab
            .command("curl")
            .args(self.access.curl_args())
            .args(["-s", "-f", "-H", "X-OpenStack-Ironic-API-Version: 1.115"])
            .arg(format!("{}{path}", self.access.api()))
            .stdin(Stdio::null())
            .output()
            .context("running curl in the lab")?;
        Ok(out.status.success().then_some(out.stdout))
    }

    /// The node as `GET /v1/nodes/{ident}` shows it.
    pub fn node(&self, ident: &str) -> anyhow::Result<Value> {
        self.api_get(&format!("/v1/nodes/{ident}"))?
            .with_context(|| format!("GET /v1/nodes/{ident} failed"))
    }

    /// Waits until the node rests in `want` (no target state); fails at once when it lands
    /// in a failed state it was not asked to reach, with its `last_error`. Returns the node.
    pub fn wait_provision_state(
        &self,
        ident: &str,
        want: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let mut last_seen = String::new();
        crate::wait::until(
            timeout,
            Duration::from_millis(250),
            &format!("node {ident} to reach {want:?}"),
            || {
                let node = self.node(ident)?;
                let state = node["provision_state"].as_str().unwrap_or_default();
                let target = &node["target_provision_state"];
                if state != last_seen {
                    println!(
                        "  [{:6.1} s] {ident}: {state}",
                        self.started.elapsed().as_secs_f64()
                    );
                    last_seen = state.to_owned();
                }
                if state == want && target.is_null() {
                    return Ok(Some(node));
                }
                if FAILED_STATES.contains(&state) && state != want {
                    bail!(
                        "node {ident} is in {state:?} instead of {want:?}: {}",
                        node["last_error"]
                    );
                }
                Ok(None)
            },
        )
        .with_context(|| format!("ingot log:\n{}", tail(&self.ingot_log(), 25)))
    }

    /// Waits until the node's `power_state` is `want` (`power on` / `power off`).
    pub fn wait_power_state(
        &self,
        ident: &str,
        want: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        crate::wait::until(
            timeout,
            Duration::from_millis(250),
            &format!("node {ident} power {want:?}"),
            || {
                let node = self.node(ident)?;
                Ok(
                    (node["power_state"] == want && node["target_power_state"].is_null())
                        .then_some(()),
                )
            },
        )
    }
}

/// The stdout of a client that succeeded, else its stderr and stdout as the error.
fn finished(program: &str, args: &[&str], out: &std::process::Output) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A static file server that sends every file at a fixed rate (`SimpleHTTPRequestHandler`
/// with a paced `copyfile`): argv is address, port, bytes per second, directory.
const SLOW_SERVER_PY: &str = r#"
import functools, http.server, sys, time
rate = int(sys.argv[3])
class Slow(http.server.SimpleHTTPRequestHandler):
    def copyfile(self, src, dst):
        start, sent = time.monotonic(), 0
        while True:
            chunk = src.read(64 * 1024)
            if not chunk:
                return
            dst.write(chunk)
            sent += len(chunk)
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
handler = functools.partial(Slow, directory=sys.argv[4])
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), handler).serve_forever()
"#;

impl Rack {
    /// Serves the image directory a second time on `port`, every download paced at
    /// `bytes_per_sec`, so that a test can act while the agent writes; returns the base URL
    /// (`http://BRIDGE:port`).
    pub fn start_slow_image_server(
        &mut self,
        port: u16,
        bytes_per_sec: u64,
    ) -> anyhow::Result<String> {
        let log = std::fs::File::create(self.dir.path.join(format!("images-slow-{port}.log")))?;
        let child = self
            .lab
            .command("python3")
            .args(["-c", SLOW_SERVER_PY, BRIDGE_ADDR])
            .arg(port.to_string())
            .arg(bytes_per_sec.to_string())
            .arg(&self.images)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the slow image server")?;
        self.lab.adopt(child);
        let base = format!("http://{BRIDGE_ADDR}:{port}");
        crate::wait::until(
            Duration::from_secs(15),
            Duration::from_millis(100),
            "the slow image server",
            || {
                Ok(self
                    .lab
                    .command("curl")
                    .args(["-s", "-f", "-o", "/dev/null"])
                    .arg(format!("{base}/"))
                    .stdin(Stdio::null())
                    .status()
                    .context("running curl in the lab")?
                    .success()
                    .then_some(()))
            },
        )?;
        Ok(base)
    }

    /// The pid of the running `ingot serve`, if any.
    pub fn controller_pid(&self) -> Option<u32> {
        self.ingot.as_ref().map(Child::id)
    }

    /// Kills `ingot serve` with SIGKILL (no shutdown of any kind: locks, timers and
    /// long-polls die with it) and reaps it; returns its pid. The machines keep running.
    pub fn kill_controller(&mut self) -> anyhow::Result<u32> {
        let mut child = self.ingot.take().context("ingot serve is not running")?;
        let pid = child.id();
        // `Child::kill` is SIGKILL; `ip netns exec` execs, so the pid is ingot's own.
        child.kill().context("killing ingot serve")?;
        child.wait().context("reaping ingot serve")?;
        Ok(pid)
    }

    /// Starts `ingot serve` again with the same configuration and database (its log is
    /// appended to) and waits for the API.
    pub fn restart_controller(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.ingot.is_none(), "ingot serve still runs");
        let server = self
            .spawn_serve(&self.dir.path.join("ingot.toml"), &self.ingot_log)
            .context("restarting ingot serve")?;
        self.ingot = Some(server);
        crate::wait::until(
            Duration::from_secs(30),
            Duration::from_millis(100),
            "the API after a restart",
            // Its own API: the clients may be on a replica's meanwhile.
            || Ok(self.answers(&format!("{API}/v1"))?.then_some(())),
        )
        .with_context(|| format!("ingot log:\n{}", tail(&self.ingot_log(), 30)))
    }
}

impl Rack {
    /// Whether `url` answers a GET with success (curl in the lab, with the API's
    /// credentials and CA).
    fn answers(&self, url: &str) -> anyhow::Result<bool> {
        Ok(self
            .lab
            .command("curl")
            .args(self.access.curl_args())
            .args(["-s", "-f", "-o", "/dev/null"])
            .arg(url)
            .stdin(Stdio::null())
            .status()
            .context("running curl in the lab")?
            .success())
    }

    /// `ingot serve --config CONFIG` in the lab, its output appended to `log`.
    fn spawn_serve(&self, config: &Path, log: &Path) -> anyhow::Result<Child> {
        let ingot = crate::build::ingot_binary()?;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        self.lab
            .command(ingot.to_str().context("ingot path is not UTF-8")?)
            .args(["serve", "--config"])
            .arg(config)
            .env("INGOT_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting ingot serve in the lab")
    }
}

impl Drop for Rack {
    fn drop(&mut self) {
        // The controllers first, so that none starts a machine while they are killed.
        for mut ingot in self
            .replicas
            .iter_mut()
            .filter_map(|r| r.child.take())
            .chain(self.ingot.take())
        {
            let _ = ingot.kill();
            let _ = ingot.wait();
        }
        for m in &self.machines {
            m.kill();
        }
        // Then the lab (the image server, the namespace) and the directory drop.
    }
}
