//! The inventory records the controller keeps: nodes, ports, allocations and node history.
//!
//! These are plain data.
//! The store persists them, the lifecycle machine reads and changes `Node::provision_state`
//! and friends, and the API renders them in Ironic's shape (adding links, masking secrets).
//! Field names follow the Ironic v1 API (`../shared/ironic-api-contract.md`) so the API can
//! serialize most of a node directly.

use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The `properties` (or `extra`) key holding a node's SMBIOS system UUID, which an agent
/// lookup finds the node by (kept in an indexed column by the store).
pub const SYSTEM_UUID_KEY: &str = "system_uuid";

/// Whether `name` is a trait name: `CUSTOM_*` or a standard os-traits-looking name (upper
/// case, digits, underscores, at least two segments), at most 255 characters. The one rule
/// for node traits, allocation traits and flavors.
pub fn is_valid_trait(name: &str) -> bool {
    let custom = name.strip_prefix("CUSTOM_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    });
    let standard = name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.contains('_')
        && !name.ends_with('_')
        && !name.contains("__")
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    name.len() <= 255 && (custom || standard)
}

/// A JSON object (`properties`, `driver_info`, `extra`, ...).
pub type JsonMap = Map<String, Value>;

/// One machine in the inventory.
///
/// Stable states and transient states are the strings Ironic uses (`enroll`, `verifying`,
/// `manageable`, `cleaning`, `clean wait`, `clean failed`, `available`, `deploying`,
/// `wait call-back`, `deploy failed`, `active`, `deleting`, `inspecting`, `inspect wait`,
/// `inspect failed`, `error`, ...); `crate::machine` owns their meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub description: Option<String>,
    pub driver: String,
    #[serde(default)]
    pub driver_info: JsonMap,
    #[serde(default)]
    pub driver_internal_info: JsonMap,
    #[serde(default)]
    pub properties: JsonMap,
    #[serde(default)]
    pub extra: JsonMap,
    #[serde(default)]
    pub instance_info: JsonMap,
    pub instance_uuid: Option<Uuid>,
    pub instance_name: Option<String>,
    pub allocation_uuid: Option<Uuid>,
    pub resource_class: Option<String>,
    #[serde(default)]
    pub traits: Vec<String>,
    pub provision_state: String,
    pub target_provision_state: Option<String>,
    pub provision_updated_at: Option<DateTime<Utc>>,
    pub power_state: Option<String>,
    pub target_power_state: Option<String>,
    pub boot_device: Option<String>,
    #[serde(default)]
    pub boot_device_persistent: bool,
    pub boot_mode: Option<String>,
    pub secure_boot: Option<bool>,
    pub last_error: Option<String>,
    #[serde(default)]
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    pub fault: Option<String>,
    /// Conductor that holds the node's lock while a task runs; `None` when unlocked.
    pub reservation: Option<String>,
    pub clean_step: Option<JsonMap>,
    pub deploy_step: Option<JsonMap>,
    /// The service step running (`service`), shown as Ironic's `service_step`.
    #[serde(default)]
    pub service_step: Option<JsonMap>,
    pub automated_clean: Option<bool>,
    #[serde(default)]
    pub protected: bool,
    pub protected_reason: Option<String>,
    #[serde(default)]
    pub retired: bool,
    pub retired_reason: Option<String>,
    pub owner: Option<String>,
    pub lessee: Option<String>,
    pub conductor_group: String,
    pub shard: Option<String>,
    pub parent_node: Option<String>,
    pub chassis_uuid: Option<Uuid>,
    #[serde(default)]
    pub network_data: JsonMap,
    #[serde(default)]
    pub disable_power_off: bool,
    /// Ironic's `target_raid_config`: the RAID the node's RAID interface is to build (`{}`:
    /// none). Set only through `PUT /v1/nodes/{node}/states/raid`, checked by
    /// `drivers::raid`.
    #[serde(default)]
    pub target_raid_config: JsonMap,
    /// Ironic's `raid_config`: the RAID last built (`{}`: none known), written from the
    /// agent's report.
    #[serde(default)]
    pub raid_config: JsonMap,
    /// Per-interface overrides (`power_interface`, `deploy_interface`, ...); `None` = driver default.
    #[serde(default)]
    pub interfaces: std::collections::BTreeMap<String, String>,
    /// True when the node enrolled itself through zero-touch discovery.
    #[serde(default)]
    pub discovered: bool,
    pub inspection_started_at: Option<DateTime<Utc>>,
    pub inspection_finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Optimistic-concurrency counter kept by the store: `update_node` succeeds only when the
    /// stored revision equals this one, then increments it. Never shown by the API.
    #[serde(default)]
    pub revision: i64,
}

impl Node {
    /// A freshly enrolled node, as `POST /v1/nodes` creates it.
    pub fn new(uuid: Uuid, driver: impl Into<String>, now: DateTime<Utc>) -> Self {
        Self {
            uuid,
            name: None,
            description: None,
            driver: driver.into(),
            driver_info: JsonMap::new(),
            driver_internal_info: JsonMap::new(),
            properties: JsonMap::new(),
            extra: JsonMap::new(),
            instance_info: JsonMap::new(),
            instance_uuid: None,
            instance_name: None,
            allocation_uuid: None,
            resource_class: None,
            traits: Vec::new(),
            provision_state: "enroll".to_owned(),
            target_provision_state: None,
            provision_updated_at: None,
            power_state: None,
            target_power_state: None,
            boot_device: None,
            boot_device_persistent: false,
            boot_mode: None,
            secure_boot: None,
            last_error: None,
            maintenance: false,
            maintenance_reason: None,
            fault: None,
            reservation: None,
            clean_step: None,
            deploy_step: None,
            service_step: None,
            automated_clean: None,
            protected: false,
            protected_reason: None,
            retired: false,
            retired_reason: None,
            owner: None,
            lessee: None,
            conductor_group: String::new(),
            shard: None,
            parent_node: None,
            chassis_uuid: None,
            network_data: JsonMap::new(),
            target_raid_config: JsonMap::new(),
            raid_config: JsonMap::new(),
            disable_power_off: false,
            interfaces: Default::default(),
            discovered: false,
            inspection_started_at: None,
            inspection_finished_at: None,
            created_at: now,
            updated_at: None,
            revision: 0,
        }
    }
}

/// A NIC of a node, keyed by its MAC address (unique across the inventory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub uuid: Uuid,
    pub node_uuid: Uuid,
    /// Lower-case colon-separated MAC address.
    pub address: String,
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub extra: JsonMap,
    #[serde(default)]
    pub internal_info: JsonMap,
    #[serde(default)]
    pub local_link_connection: JsonMap,
    pub physical_network: Option<String>,
    pub pxe_enabled: bool,
    #[serde(default)]
    pub is_smartnic: bool,
    pub vendor: Option<String>,
    pub category: Option<String>,
    pub portgroup_uuid: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Port {
    /// A port of `node_uuid` with MAC `address` (lower-case, colon-separated), PXE-enabled,
    /// everything else empty, created at `now`.
    pub fn new(uuid: Uuid, node_uuid: Uuid, address: String, now: DateTime<Utc>) -> Self {
        Port {
            uuid,
            node_uuid,
            address,
            name: None,
            description: None,
            extra: JsonMap::new(),
            internal_info: JsonMap::new(),
            local_link_connection: JsonMap::new(),
            physical_network: None,
            pxe_enabled: true,
            is_smartnic: false,
            vendor: None,
            category: None,
            portgroup_uuid: None,
            created_at: now,
            updated_at: None,
        }
    }
}

/// One `ingot serve` as it registered itself, and its last heartbeat (`/v1/conductors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConductorRecord {
    /// `conductor_name` (Ironic's `host`): unique among the replicas of one database.
    pub hostname: String,
    pub conductor_group: String,
    /// The hardware types it runs.
    pub drivers: Vec<String>,
    /// Its listen addresses (operator API, provisioning side).
    pub listen: Vec<String>,
    /// Ingot's version.
    pub version: String,
    /// False once it stopped cleanly.
    pub online: bool,
    pub started_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The last heartbeat.
    pub updated_at: DateTime<Utc>,
}

impl ConductorRecord {
    /// Online with a heartbeat within `timeout` of `now`.
    pub fn alive(&self, now: DateTime<Utc>, timeout: std::time::Duration) -> bool {
        let age = now.signed_duration_since(self.updated_at);
        self.online && age.to_std().map_or(true, |age| age < timeout)
    }
}

/// An allocation request and, once processed, the node it picked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub resource_class: Option<String>,
    #[serde(default)]
    pub traits: Vec<String>,
    #[serde(default)]
    pub candidate_nodes: Vec<String>,
    #[serde(default)]
    pub extra: JsonMap,
    pub owner: Option<String>,
    /// `allocating`, `active` or `error`.
    pub state: String,
    pub node_uuid: Option<Uuid>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Ingot extension: minimum node `properties` a picked node must meet. Only the Ingot
    /// routes (`/v1/ingot/servers`, from a flavor) set it; the Ironic API neither takes nor
    /// shows it.
    #[serde(default, skip_serializing_if = "PropertyMinimums::is_empty")]
    pub min_properties: PropertyMinimums,
    /// Ingot extension: the server this allocation is the record of (`/v1/ingot/servers`);
    /// `None` for a plain Ironic allocation. Never shown by the Ironic API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSpec>,
}

/// Minimum node properties (`properties.cpus`, `memory_mb`, `local_gb`, which inspection
/// fills) and the exact `cpu_arch` an allocation asks for; `None` asks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyMinimums {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_gb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_arch: Option<String>,
}

impl PropertyMinimums {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What a user asked for when requesting a machine (`POST /v1/ingot/servers`), kept on its
/// allocation until the conductor has handed the deploy to the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSpec {
    /// The flavor's name, as requested.
    pub flavor: String,
    /// The stored image's name (`ingot://IMAGE`).
    pub image: String,
    /// OpenSSH public keys for the config drive's `meta_data.public_keys`.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// cloud-init user data for the config drive (a secret: masked in `Debug`); dropped
    /// once the deploy has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<Secret>,
    /// Set once the conductor handed the deploy (image and config drive) to the node.
    #[serde(default)]
    pub deploy_started: bool,
    /// Why the deploy could not be started, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A string that is never printed (`Debug` shows `******`); serialized as itself, so it
/// must only ever reach the store, never an answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"******\"")
    }
}

/// One recorded event in a node's history (every provision transition and every error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub uuid: Uuid,
    pub node_uuid: Uuid,
    pub created_at: DateTime<Utc>,
    /// `INFO` or `ERROR`, as Ironic's node history.
    pub severity: String,
    /// What happened, e.g. `provisioning`, `power`, `cleaning`.
    pub event_type: String,
    pub event: String,
    pub conductor: Option<String>,
    pub user: Option<String>,
}

/// `extra` key of a port that reserves a fixed DHCP address for its MAC (full DHCP mode).
pub const PORT_DHCP_ADDRESS_KEY: &str = "dhcp_address";

/// State of a DHCP lease row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DhcpLeaseState {
    /// Offered, held for the client's REQUEST until `expires_at`.
    Offered,
    /// Acknowledged until `expires_at`.
    Bound,
    /// Reported in use by a client (DECLINE): out of the pool until `expires_at`.
    Declined,
    /// Fixed for the MAC of a port (`extra.dhcp_address`); never expires.
    Reserved,
}

impl DhcpLeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offered => "offered",
            Self::Bound => "bound",
            Self::Declined => "declined",
            Self::Reserved => "reserved",
        }
    }

    /// The state named `text` (as stored).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "offered" => Self::Offered,
            "bound" => Self::Bound,
            "declined" => Self::Declined,
            "reserved" => Self::Reserved,
            _ => return None,
        })
    }
}

/// One row of the DHCP lease table: an IPv4 address and the MAC that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpLease {
    pub ip: std::net::Ipv4Addr,
    /// Lower-case colon-separated MAC address.
    pub mac: String,
    pub state: DhcpLeaseState,
    /// When the address comes back to the pool (reservations: far in the future).
    pub expires_at: DateTime<Utc>,
    /// The port a reservation belongs to.
    pub port_uuid: Option<Uuid>,
}

/// The IPv4 address a port reserves (`extra.dhcp_address`), if it names a valid one.
pub fn port_dhcp_address(port: &Port) -> Option<std::net::Ipv4Addr> {
    port.extra
        .get(PORT_DHCP_ADDRESS_KEY)
        .and_then(Value::as_str)
        .and_then(|text| text.trim().parse().ok())
}

/// Whether a key names a secret: a substring match like oslo's `mask_dict_password`
/// (`password`, `secret`, `token`, `configdrive`, ...), plus every key ending in `_key`
/// (`ipmi_hex_kg_key`, `ssh_private_key`), as Ironic's list has `*_key` and `*kg_key*`.
pub fn is_secret_key(key: &str) -> bool {
    const SECRET: [&str; 15] = [
        "password",
        "passwd",
        "pswd",
        "secret",
        "token",
        "passphrase",
        "configdrive",
        "private_key",
        "encryption_key",
        "cert_key",
        "auth_key",
        "kg_key",
        "adminpass",
        "admin_pass",
        "new_pass",
    ];
    let lower = key.to_ascii_lowercase();
    lower.ends_with("_key") || SECRET.iter().any(|s| lower.contains(s))
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A malformed CIDR.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid CIDR {0:?} (expected ADDR/PREFIX)")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_owned());
        let (a, p) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = a.parse().map_err(|_| err())?;
        let prefix: u8 = p.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(err());
        }
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    /// True when `ip` is inside the network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}
