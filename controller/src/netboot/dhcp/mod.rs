//! DHCPv4 for network boot: `full` (addresses + boot options), `proxy` (boot options only,
//! next to a site DHCP server) or `off`.
//!
//! * [`client`] parses and validates a packet into a [`client::ClientInfo`] (PURE).
//! * [`policy`] decides the reply (PURE): no sockets, no clock, no store.
//! * [`leases`] is the lease store trait and its in-memory implementation.
//! * [`server`] is the socket loop; [`ra`] sends IPv6 router advertisements.
//!
//! What the DHCP server needs from the rest of the controller is [`BootPolicy`]: whether and
//! how a machine (known by MAC and SMBIOS UUID) may network-boot.

pub mod batch;
pub mod client;
pub mod leases;
pub mod policy;
pub mod ra;
pub mod request;
pub mod server;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::MacAddr;

/// How the DHCP server takes part on the provisioning network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMode {
    /// We are the only DHCP server: addresses from a pool or reservations, plus boot options.
    Full,
    /// A site DHCP server hands out addresses; we only add boot options (port 67 and 4011).
    Proxy,
    /// No DHCP: an external server points machines at our TFTP/HTTP.
    Off,
}

/// What the boot policy says about a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootTarget {
    /// Network-boot it: hand out the boot file (and, in full mode, an address).
    Netboot,
    /// Give it an address (full mode) but no boot options: it falls through to its disk.
    AddressOnly,
    /// Do not answer at all (another system owns this machine).
    Ignore,
}

/// Decides, per machine, whether it may network-boot.
///
/// CANCEL-SAFETY: `lookup` must be cancel-safe (it is a read). It is called for every
/// packet (`lookup_many` once per batch of them), so implementations must be cheap (an
/// indexed query at most) and should not fail: on an internal error return
/// [`BootTarget::Netboot`], which leads to the discovery agent.
#[async_trait]
pub trait BootPolicy: Send + Sync {
    /// `client_uuid` is the SMBIOS UUID from option 97 when the firmware sent it.
    async fn lookup(&self, mac: MacAddr, client_uuid: Option<Uuid>) -> BootTarget;

    /// [`Self::lookup`] of each client, in order; a store-backed policy reads them at once.
    async fn lookup_many(&self, clients: &[(MacAddr, Option<Uuid>)]) -> Vec<BootTarget> {
        let mut out = Vec::with_capacity(clients.len());
        for (mac, uuid) in clients {
            out.push(self.lookup(*mac, *uuid).await);
        }
        out
    }
}

/// An in-memory [`BootPolicy`]: a default answer plus per-MAC overrides. Used until the store
/// backs the policy, by tests and by a simulated controller.
#[derive(Debug)]
pub struct FixedBootPolicy {
    default: BootTarget,
    per_mac: Mutex<HashMap<MacAddr, BootTarget>>,
    seen: Mutex<Vec<(MacAddr, Option<Uuid>)>>,
}

impl FixedBootPolicy {
    /// Answer `default` for every machine.
    pub fn new(default: BootTarget) -> Self {
        FixedBootPolicy {
            default,
            per_mac: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Answer `target` for `mac`.
    pub fn set(&self, mac: MacAddr, target: BootTarget) {
        self.per_mac
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mac, target);
    }

    /// Every lookup so far, in order (what discovery will record).
    pub fn seen(&self) -> Vec<(MacAddr, Option<Uuid>)> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl BootPolicy for FixedBootPolicy {
    async fn lookup(&self, mac: MacAddr, client_uuid: Option<Uuid>) -> BootTarget {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((mac, client_uuid));
        self.per_mac
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&mac)
            .copied()
            .unwrap_or(self.default)
    }
}

/// The boot file names handed to PXE firmware, by client architecture (option 93).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// Architecture code (RFC 4578 / IANA) -> TFTP file name.
    pub by_arch: BTreeMap<u16, String>,
    /// File served over HTTP to UEFI HTTP boot clients (option 60 `HTTPClient`).
    pub http_boot_file: String,
}

impl Default for BootFiles {
    fn default() -> Self {
        let mut by_arch = BTreeMap::new();
        by_arch.insert(0, "undionly.kpxe".to_owned());
        // snponly.efi runs on the firmware's own NIC driver (SNP): it starts in 0.1 s where
        // ipxe.efi, bringing its own drivers, takes 4.6 s (lab measurement).
        by_arch.insert(7, "snponly.efi".to_owned());
        by_arch.insert(9, "snponly.efi".to_owned());
        BootFiles {
            by_arch,
            http_boot_file: "ipxe.efi".to_owned(),
        }
    }
}

/// An address pool for full mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// First address handed out (inclusive).
    pub start: Ipv4Addr,
    /// Last address handed out (inclusive).
    pub end: Ipv4Addr,
    /// Subnet mask sent as option 1.
    pub netmask: Ipv4Addr,
    /// Routers (option 3): only sent when configured. The provisioning network has none.
    pub routers: Vec<Ipv4Addr>,
    /// DNS servers (option 6): only sent when configured.
    pub dns: Vec<Ipv4Addr>,
    /// Lease time of a bound address.
    pub lease_time: Duration,
    /// How long an offered address stays held for the client that was offered it.
    pub offer_hold: Duration,
    /// How long a declined address stays out of the pool.
    pub decline_hold: Duration,
}

impl Pool {
    /// Whether `ip` is inside the pool range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.start..=self.end).contains(&ip)
    }

    /// Whether `ip` is on the pool's subnet.
    pub fn on_subnet(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask);
        u32::from(ip) & mask == u32::from(self.start) & mask
    }
}

/// Validated DHCP configuration, shared by the policy and the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    pub mode: DhcpMode,
    /// Our address on the provisioning network: server identifier (option 54) and next-server.
    pub server_ip: Ipv4Addr,
    /// Base of the HTTP service, an IP literal: `http://172.31.250.1:8080`.
    pub http_base: String,
    /// Path of the iPXE script endpoint under `http_base`.
    pub script_path: String,
    /// Path under `http_base` where `boot_files.http_boot_file` is served.
    pub http_boot_path: String,
    pub boot_files: BootFiles,
    /// Full mode only.
    pub pool: Option<Pool>,
    /// Full mode only: fixed addresses by MAC. They may lie inside or outside the pool range
    /// (but on its subnet) and are never handed to another client.
    pub reservations: BTreeMap<MacAddr, Ipv4Addr>,
}

/// Error validating a [`DhcpConfig`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DhcpConfigError {
    #[error("full DHCP mode needs an address pool")]
    NoPool,
    #[error("pool start {start} is after its end {end}")]
    EmptyPool { start: Ipv4Addr, end: Ipv4Addr },
    #[error("pool {start}-{end} is not on one subnet with mask {netmask}")]
    PoolSubnet {
        start: Ipv4Addr,
        end: Ipv4Addr,
        netmask: Ipv4Addr,
    },
    #[error("reservation {ip} for {mac} is not on the pool's subnet")]
    ReservationSubnet { mac: MacAddr, ip: Ipv4Addr },
    #[error("address {ip} is reserved twice")]
    DuplicateReservation { ip: Ipv4Addr },
    #[error("http_base must be http://IP[:PORT] without a trailing slash, got {0:?}")]
    HttpBase(String),
}

impl DhcpConfig {
    /// Check the invariants the policy relies on.
    pub fn validate(&self) -> Result<(), DhcpConfigError> {
        let base_ok = self.http_base.starts_with("http://")
            && !self.http_base.ends_with('/')
            && !self.http_base.contains(char::is_whitespace);
        if !base_ok {
            return Err(DhcpConfigError::HttpBase(self.http_base.clone()));
        }
        if self.mode != DhcpMode::Full {
            return Ok(());
        }
        let pool = self.pool.as_ref().ok_or(DhcpConfigError::NoPool)?;
        if pool.start > pool.end {
            return Err(DhcpConfigError::EmptyPool {
                start: pool.start,
                end: pool.end,
            });
        }
        if !pool.on_subnet(pool.end) {
            return Err(DhcpConfigError::PoolSubnet {
                start: pool.start,
                end: pool.end,
                netmask: pool.netmask,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for (mac, ip) in &self.reservations {
            if !pool.on_subnet(*ip) {
                return Err(DhcpConfigError::ReservationSubnet { mac: *mac, ip: *ip });
            }
            if !seen.insert(*ip) {
                return Err(DhcpConfigError::DuplicateReservation { ip: *ip });
            }
        }
        Ok(())
    }

    /// The MAC an address is reserved for, if any.
    pub fn reserved_for(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.reservations
            .iter()
            .find(|(_, r)| **r == ip)
            .map(|(mac, _)| *mac)
    }
}
