//! The `[netboot]` configuration section and the entry point that starts DHCP, TFTP and
//! router advertisements together.
//!
//! `NetbootSection` is the serde shape of the file (every key optional, unknown keys
//! rejected); `TryFrom` turns it into the validated [`NetbootConfig`]. To wire it into the
//! controller, add `#[serde(default)] pub netboot: NetbootSection` to the file config and call
//! [`start`] from `serve` with the store-backed [`BootPolicy`] and [`LeaseStore`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::MacAddr;
use super::dhcp::leases::LeaseStore;
use super::dhcp::ra::{self, RaConfig};
use super::dhcp::server::{self, DhcpCounters, DhcpServer};
use super::dhcp::{BootFiles, BootPolicy, DhcpConfig, DhcpMode, Pool};
use super::tftp::{self, TftpFiles};
use crate::supervise::{Backoff, restart_with_backoff};

/// `[netboot]` as written in the configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetbootSection {
    /// `full`, `proxy` or `off` (default `off`).
    pub mode: Option<String>,
    /// Provisioning interfaces (SO_BINDTODEVICE).
    pub interfaces: Option<Vec<String>>,
    /// Our IPv4 address on the provisioning network.
    pub server_ip: Option<Ipv4Addr>,
    /// HTTP base the boot URLs point to; default `http://<server_ip>:8080`.
    pub http_base: Option<String>,
    pub script_path: Option<String>,
    pub http_boot_path: Option<String>,
    /// Directory of the iPXE binaries (default Debian's `/usr/lib/ipxe`).
    pub ipxe_dir: Option<PathBuf>,
    /// Architecture code (as a string key) -> boot file name, replacing the defaults.
    pub boot_files: Option<BTreeMap<String, String>>,
    /// Serve TFTP on `server_ip:69` (default true unless mode is off).
    pub tftp: Option<bool>,
    pub pool_start: Option<Ipv4Addr>,
    pub pool_end: Option<Ipv4Addr>,
    pub netmask: Option<Ipv4Addr>,
    pub routers: Option<Vec<Ipv4Addr>>,
    pub dns: Option<Vec<Ipv4Addr>>,
    pub lease_secs: Option<u64>,
    /// MAC -> fixed address.
    pub reservations: Option<BTreeMap<String, Ipv4Addr>>,
    /// Send IPv6 router advertisements on the interfaces (default true; needs IPv6 there).
    pub router_advertisements: Option<bool>,
    /// Optional prefix to advertise, `fd00:1ab::/64`.
    pub ra_prefix: Option<String>,
    /// Listen address of the provisioning-side HTTP server (boot script, agent kernel and
    /// initramfs, agent API); default `<server_ip>:8080` when DHCP runs. Read by `serve`.
    pub http_listen: Option<SocketAddr>,
    /// Listen address of the HTTPS side (agent API, images) when `[tls]` is set; default
    /// `<server_ip>:8443`. Read by `serve`.
    pub https_listen: Option<SocketAddr>,
    /// Agent kernel file (default `target/initramfs/qemu/vmlinuz`). Read by `serve`.
    pub agent_kernel: Option<PathBuf>,
    /// Agent initramfs file (default `target/initramfs/qemu/initramfs.cpio.zst`).
    pub agent_initramfs: Option<PathBuf>,
    /// More kernel arguments for the agent (`ingot.lldp_timeout=10`, `ingot.log=debug`,
    /// `panic=30`), as Ironic's `kernel_append_params`; nothing that looks secret is taken.
    pub agent_kernel_args: Option<Vec<String>>,
}

/// Validated netboot configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetbootConfig {
    pub interfaces: Vec<String>,
    pub dhcp: DhcpConfig,
    /// TFTP listen address and files, when TFTP is on.
    pub tftp: Option<(SocketAddr, TftpFiles)>,
    /// One per interface, when router advertisements are on.
    pub ra: Vec<RaConfig>,
}

fn parse_prefix(s: &str) -> anyhow::Result<(Ipv6Addr, u8)> {
    let (addr, len) = s.split_once('/').context("ra_prefix must be ADDR/LEN")?;
    let addr: Ipv6Addr = addr.parse().context("ra_prefix address")?;
    let len: u8 = len.parse().context("ra_prefix length")?;
    if len > 128 {
        bail!("ra_prefix length {len} is over 128");
    }
    Ok((addr, len))
}

impl TryFrom<NetbootSection> for NetbootConfig {
    type Error = anyhow::Error;

    fn try_from(w: NetbootSection) -> anyhow::Result<Self> {
        let mode = match w.mode.as_deref().unwrap_or("off") {
            "full" => DhcpMode::Full,
            "proxy" => DhcpMode::Proxy,
            "off" => DhcpMode::Off,
            other => bail!("netboot mode must be full, proxy or off, not {other:?}"),
        };
        let interfaces = w.interfaces.unwrap_or_default();
        if mode != DhcpMode::Off && interfaces.is_empty() {
            bail!("netboot mode {mode:?} needs at least one interface");
        }
        let server_ip = match (mode, w.server_ip) {
            (_, Some(ip)) => ip,
            (DhcpMode::Off, None) => Ipv4Addr::UNSPECIFIED,
            (_, None) => bail!("netboot needs server_ip"),
        };
        let mut boot_files = BootFiles::default();
        if let Some(map) = w.boot_files {
            boot_files.by_arch = map
                .into_iter()
                .map(|(k, v)| {
                    Ok((
                        k.parse::<u16>().with_context(|| {
                            format!("boot_files key {k:?} is not an arch number")
                        })?,
                        v,
                    ))
                })
                .collect::<anyhow::Result<_>>()?;
        }
        let pool = match mode {
            DhcpMode::Full => Some(Pool {
                start: w.pool_start.context("full mode needs pool_start")?,
                end: w.pool_end.context("full mode needs pool_end")?,
                netmask: w.netmask.unwrap_or(Ipv4Addr::new(255, 255, 255, 0)),
                routers: w.routers.unwrap_or_default(),
                dns: w.dns.unwrap_or_default(),
                lease_time: Duration::from_secs(w.lease_secs.unwrap_or(600)),
                offer_hold: Duration::from_secs(30),
                decline_hold: Duration::from_secs(600),
            }),
            _ => None,
        };
        let mut reservations = BTreeMap::new();
        for (mac, ip) in w.reservations.unwrap_or_default() {
            let mac: MacAddr = mac.parse()?;
            reservations.insert(mac, ip);
        }
        let dhcp = DhcpConfig {
            mode,
            server_ip,
            http_base: w
                .http_base
                .unwrap_or_else(|| format!("http://{server_ip}:8080")),
            script_path: w.script_path.unwrap_or_else(|| "/boot/ipxe".to_owned()),
            http_boot_path: w
                .http_boot_path
                .unwrap_or_else(|| "/boot/ipxe.efi".to_owned()),
            boot_files,
            pool,
            reservations,
        };
        dhcp.validate()?;
        let tftp_on = w.tftp.unwrap_or(mode != DhcpMode::Off);
        let tftp = tftp_on.then(|| {
            let dir = w
                .ipxe_dir
                .unwrap_or_else(|| PathBuf::from(tftp::DEBIAN_IPXE_DIR));
            (
                SocketAddr::new(IpAddr::V4(server_ip), 69),
                TftpFiles::ipxe_binaries(&dir),
            )
        });
        let prefix = w.ra_prefix.as_deref().map(parse_prefix).transpose()?;
        let ra = if w.router_advertisements.unwrap_or(true) {
            interfaces
                .iter()
                .map(|i| RaConfig {
                    interface: i.clone(),
                    interval: Duration::from_secs(10),
                    prefix,
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(NetbootConfig {
            interfaces,
            dhcp,
            tftp,
            ra,
        })
    }
}

/// Running boot services.
#[derive(Debug)]
pub struct Netboot {
    /// DHCP counters (for metrics), when DHCP runs.
    pub dhcp_counters: Option<Arc<DhcpCounters>>,
    /// The DHCP server (its pool, for metrics), when DHCP runs.
    pub dhcp: Option<Arc<DhcpServer>>,
    /// TFTP counters (for metrics), when TFTP runs.
    pub tftp_counters: Option<Arc<tftp::TftpCounters>>,
    tasks: JoinSet<anyhow::Result<()>>,
    cancel: CancellationToken,
}

impl Netboot {
    /// Wait until every service stops (after `cancel`), or one fails, which stops the rest.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined.context("netboot task panicked").and_then(|r| r) {
                self.cancel.cancel();
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }
}

/// Bind every socket (so configuration errors surface here), then serve in the background
/// until `cancel` fires. Must run in the network namespace of the provisioning interfaces.
pub fn start(
    cfg: NetbootConfig,
    policy: Arc<dyn BootPolicy>,
    leases: Arc<dyn LeaseStore>,
    cancel: CancellationToken,
) -> anyhow::Result<Netboot> {
    let mut tasks = JoinSet::new();
    let mut dhcp_counters = None;
    let mut dhcp = None;
    let mut tftp_counters = None;
    let sockets = server::bind_sockets(cfg.dhcp.mode, &cfg.interfaces)?;
    if !sockets.is_empty() {
        let server = Arc::new(DhcpServer::new(cfg.dhcp.clone(), policy, leases)?);
        dhcp_counters = Some(server.counters());
        dhcp = Some(server.clone());
        tasks.spawn(server.run(sockets, cancel.clone()));
    }
    if let Some((addr, files)) = cfg.tftp {
        let device = match cfg.interfaces.as_slice() {
            [one] => Some(one.as_str()),
            _ => None,
        };
        let sock = tftp::bind_socket(addr, device)?;
        let counters = Arc::new(tftp::TftpCounters::default());
        tftp_counters = Some(counters.clone());
        tasks.spawn(tftp::serve(sock, files, counters, cancel.clone()));
    }
    // Not fatal: without RAs iPXE boots, only about 15 s slower. A socket that cannot be
    // bound or a send loop that fails is logged and tried again with backoff.
    for ra_cfg in cfg.ra {
        let mut first = Some(ra::bind_socket(&ra_cfg.interface));
        let c = cancel.clone();
        tasks.spawn(async move {
            let name = format!("router advertisements on {}", ra_cfg.interface);
            restart_with_backoff(&name, Backoff::default(), c.clone(), move || {
                let socket = first
                    .take()
                    .unwrap_or_else(|| ra::bind_socket(&ra_cfg.interface));
                let (cfg, c) = (ra_cfg.clone(), c.clone());
                async move { ra::run(socket?, cfg, c).await.map(|_| ()) }
            })
            .await;
            Ok(())
        });
    }
    Ok(Netboot {
        dhcp_counters,
        dhcp,
        tftp_counters,
        tasks,
        cancel,
    })
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;

    fn parse(toml: &str) -> anyhow::Result<NetbootConfig> {
        let section: NetbootSection = Figment::from(Toml::string(toml)).extract()?;
        NetbootConfig::try_from(section)
    }

    #[test]
    fn full_mode_section() {
        let cfg = parse(
            r#"
            mode = "full"
            interfaces = ["br0"]
            server_ip = "172.31.250.1"
            pool_start = "172.31.250.100"
            pool_end = "172.31.250.199"
            ra_prefix = "fd00:1ab::/64"
            [reservations]
            "52:54:00:00:00:01" = "172.31.250.50"
            "#,
        )
        .expect("valid");
        assert_eq!(cfg.dhcp.mode, DhcpMode::Full);
        assert_eq!(cfg.dhcp.http_base, "http://172.31.250.1:8080");
        assert_eq!(cfg.dhcp.reservations.len(), 1);
        assert_eq!(
            cfg.tftp.as_ref().map(|t| t.0),
            Some("172.31.250.1:69".parse().expect("addr"))
        );
        assert_eq!(cfg.ra.len(), 1);
        assert!(cfg.ra[0].prefix.is_some());
    }

    #[test]
    fn defaults_to_off_and_rejects_bad_sections() {
        let off = parse("").expect("empty is off");
        assert_eq!(off.dhcp.mode, DhcpMode::Off);
        assert!(off.tftp.is_none());
        for bad in [
            r#"mode = "on""#,
            r#"mode = "full""#,
            r#"mode = "proxy"
               interfaces = ["br0"]"#,
            r#"mode = "full"
               interfaces = ["br0"]
               server_ip = "10.0.0.1""#,
            r#"mode = "full"
               interfaces = ["br0"]
               server_ip = "10.0.0.1"
               pool_start = "10.0.0.100"
               pool_end = "10.0.1.100""#,
            r#"bogus = 1"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
