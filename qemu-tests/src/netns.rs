//! A private boot network: a network namespace holding a bridge and the VMs' taps.
//!
//! There is no veth to the root namespace and no default route, so nothing started inside
//! can reach any other network. IPv6 is off except on the bridge (for router
//! advertisements, which iPXE waits for). The bridge is also the machines' "switch": an
//! `lldpd` on it sends LLDP every second (system name [`SWITCH_NAME`], chassis ID the
//! bridge's MAC [`BRIDGE_MAC`], port ID `br0`), so every inspection in a lab hears a
//! neighbour, as on a real rack.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The bridge address of every lab (each lab is its own namespace, so they never clash).
pub const BRIDGE_ADDR: &str = "172.31.250.1";
/// Prefix length of the lab subnet.
pub const PREFIX: u8 = 24;
/// The bridge's MAC, which LLDP sends as the switch's chassis ID.
pub const BRIDGE_MAC: &str = "02:1a:b0:00:00:01";
/// The system name the lab's LLDP daemon announces.
pub const SWITCH_NAME: &str = "ingot-lab-switch";

/// Runs `ip` with the arguments and fails with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A network namespace with `br0` at [`BRIDGE_ADDR`]; deleted on drop.
#[derive(Debug)]
pub struct Lab {
    pub name: String,
    taps: Vec<String>,
    children: Vec<Child>,
    /// `lldpd` on br0, stopped with SIGTERM (its privilege-separated child follows).
    lldpd: Option<Child>,
    /// lldpd's control socket and the commands it starts with.
    lldp_files: [std::path::PathBuf; 2],
}

impl Lab {
    /// Creates a uniquely named namespace `ingot-<pid>-<n>` with its bridge.
    pub fn new() -> anyhow::Result<Lab> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("ingot-{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let tmp = std::env::temp_dir();
        let mut lab = Lab {
            lldp_files: [
                tmp.join(format!("{name}-lldpd.sock")),
                tmp.join(format!("{name}-lldpd.conf")),
            ],
            name,
            taps: Vec::new(),
            children: Vec::new(),
            lldpd: None,
        };
        lab.exec_ok(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])?;
        let ns = lab.name.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            ns,
            "link",
            "add",
            "br0",
            "address",
            BRIDGE_MAC,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        lab.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.br0.disable_ipv6=0"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{BRIDGE_ADDR}/{PREFIX}"),
            "dev",
            "br0",
        ])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            "fd00:1ab::1/64",
            "dev",
            "br0",
            "nodad",
        ])?;
        ip(&["-n", ns, "link", "set", "br0", "up"])?;
        lab.start_lldpd()?;
        Ok(lab)
    }

    /// Starts `lldpd` on br0 only, sending every second, with its own control socket.
    fn start_lldpd(&mut self) -> anyhow::Result<()> {
        let [sock, conf] = &self.lldp_files;
        std::fs::write(
            conf,
            format!(
                "configure lldp tx-interval 1\nconfigure lldp portidsubtype ifname\n\
                 configure system hostname {SWITCH_NAME}\n"
            ),
        )
        .context("writing the lldpd commands")?;
        let child = self
            .command("lldpd")
            .args(["-d", "-I", "br0", "-u"])
            .arg(sock)
            .arg("-O")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting lldpd (Debian package lldpd, in .ci/packages.txt)")?;
        self.lldpd = Some(child);
        Ok(())
    }

    /// Adds a persistent tap enslaved to br0 (before QEMU opens it, so the firmware's first
    /// DHCP packet already reaches the bridge).
    pub fn add_tap(&mut self, tap: &str) -> anyhow::Result<()> {
        let ns = self.name.clone();
        ip(&["-n", &ns, "tuntap", "add", "dev", tap, "mode", "tap"])?;
        ip(&["-n", &ns, "link", "set", tap, "master", "br0", "up"])?;
        self.taps.push(tap.to_owned());
        Ok(())
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside the namespace and fails with its stderr.
    pub fn exec_ok(&self, argv: &[&str]) -> anyhow::Result<String> {
        let (prog, rest) = argv.split_first().context("empty command")?;
        let out = self
            .command(prog)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {prog} in {}", self.name))?;
        if !out.status.success() {
            bail!(
                "{} failed in {}: {}",
                argv.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Keeps a process started inside the lab so that it is stopped when the lab drops.
    pub fn adopt(&mut self, child: Child) {
        self.children.push(child);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.lldpd.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: kill(2) on the pid of a child this lab started and has not reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while matches!(c.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for f in &self.lldp_files {
            let _ = std::fs::remove_file(f);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
