//! A private boot network: a network namespace holding a bridge and the VMs' taps.
//!
//! There is no veth to the root namespace and no default route, so nothing started inside
//! can reach any other network. IPv6 is off except on the bridge (for router
//! advertisements, which iPXE waits for).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The bridge address of every lab (each lab is its own namespace, so they never clash).
pub const BRIDGE_ADDR: &str = "172.31.250.1";
/// Prefix length of the lab subnet.
pub const PREFIX: u8 = 24;

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
}

impl Lab {
    /// Creates a uniquely named namespace `ingot-<pid>-<n>` with its bridge.
    pub fn new() -> anyhow::Result<Lab> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("ingot-{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let lab = Lab {
            name,
            taps: Vec::new(),
            children: Vec::new(),
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
            "02:1a:b0:00:00:01",
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
        Ok(lab)
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
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
