//! A "site" DHCP server beside a lab, for proxy-DHCP tests: dnsmasq (from `dnsmasq-base`)
//! hands out addresses only, from a second network namespace joined to the lab bridge by a
//! veth.
//!
//! Two DHCP servers cannot both own UDP 67 in one network stack, so the site server gets its
//! own namespace (`<lab>-site`, `eth0` at [`SITE_ADDR`]) while the controller under test
//! listens on the lab's `br0`. dnsmasq runs in the foreground as our child with
//! `--conf-file=` (never the system configuration) and its own pid, lease and log files;
//! dropping [`SiteDhcp`] stops it by PID and deletes the namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::netns::{Lab, PREFIX};

/// Address of the site server on the lab subnet.
pub const SITE_ADDR: &str = "172.31.250.2";
/// The range the site server hands out (outside the controller's usual full-mode pool).
pub const SITE_RANGE: (&str, &str) = ("172.31.250.50", "172.31.250.99");

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdin(Stdio::null()).output().context("running ip")?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args))
}

/// The dnsmasq configuration of an address-only site server.
pub fn dnsmasq_conf(dir: &Path) -> String {
    let (start, end) = SITE_RANGE;
    format!(
        "# site DHCP for an ingot proxy-DHCP test: addresses only, no DNS, no boot options\n\
         port=0\n\
         interface=eth0\n\
         bind-interfaces\n\
         no-resolv\n\
         no-hosts\n\
         user=root\n\
         group=root\n\
         dhcp-range={start},{end},255.255.255.0,10m\n\
         dhcp-option=3\n\
         dhcp-option=6\n\
         no-ping\n\
         log-dhcp\n\
         log-facility={log}\n\
         dhcp-leasefile={leases}\n\
         pid-file={pid}\n",
        log = dir.join("site-dnsmasq.log").display(),
        leases = dir.join("site-dnsmasq.leases").display(),
        pid = dir.join("site-dnsmasq.pid").display(),
    )
}

/// The site namespace and its dnsmasq; both go away on drop.
#[derive(Debug)]
pub struct SiteDhcp {
    /// Name of the site namespace.
    pub netns: String,
    /// dnsmasq's log (`log-dhcp`: every DISCOVER/OFFER/REQUEST/ACK).
    pub log: PathBuf,
    /// dnsmasq's lease file.
    pub leases: PathBuf,
    child: Option<Child>,
}

impl SiteDhcp {
    /// Creates `<lab>-site` with a veth to the lab's br0 and starts dnsmasq there; returns
    /// once dnsmasq wrote its pid file.
    pub fn start(lab: &Lab, dir: &Path) -> anyhow::Result<SiteDhcp> {
        if !Path::new("/usr/sbin/dnsmasq").exists() {
            bail!("/usr/sbin/dnsmasq is missing: install dnsmasq-base (.ci/setup)");
        }
        let netns = format!("{}-site", lab.name);
        ip(&["netns", "add", &netns])?;
        let mut site = SiteDhcp {
            netns: netns.clone(),
            log: dir.join("site-dnsmasq.log"),
            leases: dir.join("site-dnsmasq.leases"),
            child: None,
        };
        run(Command::new("ip").args([
            "netns",
            "exec",
            &netns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]))?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &lab.name, "link", "add", "vsite", "type", "veth", "peer", "name", "eth0",
            "netns", &netns,
        ])?;
        ip(&[
            "-n", &lab.name, "link", "set", "vsite", "master", "br0", "up",
        ])?;
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{SITE_ADDR}/{PREFIX}"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;

        let conf = dir.join("site-dnsmasq.conf");
        std::fs::write(&conf, dnsmasq_conf(dir)).context("writing the dnsmasq config")?;
        std::fs::write(&site.leases, "").context("creating the lease file")?;
        let pid_file = dir.join("site-dnsmasq.pid");
        let child = Command::new("ip")
            .args(["netns", "exec", &netns, "dnsmasq", "--keep-in-foreground"])
            .arg(format!("--conf-file={}", conf.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("site-dnsmasq.stderr"))?)
            .spawn()
            .context("starting dnsmasq")?;
        site.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pid_file.exists() {
            if let Some(c) = site.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                let err =
                    std::fs::read_to_string(dir.join("site-dnsmasq.stderr")).unwrap_or_default();
                bail!("dnsmasq exited ({st}): {}", err.trim());
            }
            if Instant::now() > deadline {
                bail!("dnsmasq wrote no pid file in 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(site)
    }

    /// The lease file's content: one `expiry mac ip hostname client-id` line per lease.
    pub fn leases(&self) -> String {
        std::fs::read_to_string(&self.leases).unwrap_or_default()
    }

    /// The address leased to `mac`, if any.
    pub fn lease_of(&self, mac: &str) -> Option<String> {
        self.leases().lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let _expiry = f.next()?;
            let m = f.next()?;
            let ip = f.next()?;
            m.eq_ignore_ascii_case(mac).then(|| ip.to_owned())
        })
    }
}

impl Drop for SiteDhcp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}
