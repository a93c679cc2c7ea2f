//! Zero-touch discovery: enrolling unknown machines that look up, refreshing known ones
//! from a new inventory, and the guards around it (allowed subnets, a rate limit).
//!
//! The pure parts ([`properties_from_inventory`], [`Cidr`], [`TokenBucket`], [`rules`]) do
//! no IO; [`Discovery`] applies them to the store.

pub mod bmc_enrol;
pub mod local_link;
pub mod rules;

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use chrono::Utc;
use proto::Inventory;
use proto::protocol::LookupRequest;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::model::{JsonMap, Node, Port};
use crate::store::{NodeQuery, PortQuery, Store, StoreError};

/// `properties` key where the SMBIOS system UUID of a discovered node is kept.
pub use crate::model::SYSTEM_UUID_KEY;

pub use crate::model::{Cidr, CidrError};

/// A token bucket: `capacity` tokens, refilled at `per_minute` per minute.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(per_minute: u32, capacity: u32) -> Self {
        let capacity = f64::from(capacity.max(1));
        Self {
            capacity,
            per_sec: f64::from(per_minute) / 60.0,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Takes a token at `now`; false when none is left.
    pub fn try_take_at(&self, now: Instant) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(st.1).as_secs_f64();
        st.0 = (st.0 + elapsed * self.per_sec).min(self.capacity);
        st.1 = now;
        if st.0 >= 1.0 {
            st.0 -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn try_take(&self) -> bool {
        self.try_take_at(Instant::now())
    }
}

/// Ironic's scheduling properties from an inventory: `cpus`, `memory_mb`, `local_gb`
/// (largest disk in GiB minus one, as Ironic leaves room for partitioning), `cpu_arch`.
pub fn properties_from_inventory(inv: &Inventory) -> JsonMap {
    let mut p = JsonMap::new();
    p.insert("cpus".into(), json!(inv.cpu.count));
    let memory_mb = inv
        .memory
        .physical_mb
        .unwrap_or(inv.memory.total / (1024 * 1024));
    p.insert("memory_mb".into(), json!(memory_mb));
    let largest = inv.disks.iter().map(|d| d.size).max().unwrap_or(0);
    let local_gb = (largest / (1024 * 1024 * 1024)).saturating_sub(1);
    p.insert("local_gb".into(), json!(local_gb));
    if !inv.cpu.architecture.is_empty() {
        p.insert("cpu_arch".into(), json!(inv.cpu.architecture));
    }
    p
}

/// The node's `boot_mode` and `secure_boot` (Ironic's read-only fields) as the agent
/// found them in the boot it runs in.
pub fn apply_boot(node: &mut crate::model::Node, inv: &Inventory) {
    node.boot_mode = Some(
        match inv.boot.current_boot_mode {
            proto::BootMode::Uefi => "uefi",
            proto::BootMode::Bios => "bios",
        }
        .to_owned(),
    );
    node.secure_boot = inv.boot.secure_boot;
}

/// Lower-case MACs of a lookup (the list plus the boot MAC), without duplicates.
pub fn lookup_macs(req: &LookupRequest) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in req
        .boot_mac
        .iter()
        .chain(&req.macs)
        .chain(req.inventory.interfaces.iter().map(|i| &i.mac_address))
    {
        let m = m.trim().to_ascii_lowercase();
        if !m.is_empty() && !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// Discovery settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    pub enabled: bool,
    /// Source networks allowed to enroll; empty allows any.
    pub allowed_subnets: Vec<Cidr>,
    /// New nodes per minute, and the burst allowed.
    pub rate_per_minute: u32,
    pub burst: u32,
    /// Driver of a discovered node unless a rule sets another.
    pub default_driver: String,
    /// `[discovery] enroll_bmc`: the BMC user a discovered machine's agent creates
    /// in-band (`None`: off).
    pub enroll_bmc: Option<String>,
    pub rules: Vec<rules::Rule>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            allowed_subnets: Vec::new(),
            rate_per_minute: 60,
            burst: 10,
            default_driver: "manual".to_owned(),
            enroll_bmc: None,
            rules: Vec::new(),
        }
    }
}

/// Discovery state: configuration plus the rate limiter.
#[derive(Debug)]
pub struct Discovery {
    pub config: DiscoveryConfig,
    bucket: TokenBucket,
}

/// Why an unknown machine was not enrolled.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("discovery is disabled and no node matches this machine")]
    Disabled,
    #[error("discovery is not allowed from {0}")]
    SubnetRefused(IpAddr),
    #[error("too many new machines, retry later")]
    RateLimited,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Discovery {
    pub fn new(config: DiscoveryConfig) -> Self {
        let bucket = TokenBucket::new(config.rate_per_minute, config.burst);
        Self { config, bucket }
    }

    /// Finds the node of a machine: by any of its MACs, else by SMBIOS system UUID. The
    /// caller bounds the MACs ([`crate::agent_api::limits::check_macs`]).
    pub async fn find(
        &self,
        store: &dyn Store,
        req: &LookupRequest,
    ) -> Result<Option<Node>, StoreError> {
        for mac in lookup_macs(req) {
            let ports = store
                .list_ports(&PortQuery {
                    address: Some(mac),
                    ..Default::default()
                })
                .await?;
            if let Some(port) = ports.first()
                && let Some(node) = store.get_node_by_uuid(port.node_uuid).await?
            {
                return Ok(Some(node));
            }
        }
        let Some(sys) = req
            .system_uuid
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        // Through the indexed `system_uuid` column: a lookup never scans the node table.
        let nodes = store
            .list_nodes(&NodeQuery {
                system_uuid: Some(sys.to_ascii_lowercase()),
                limit: Some(1),
                ..Default::default()
            })
            .await?;
        Ok(nodes.into_iter().next())
    }

    /// Enrolls an unknown machine; returns the node and whether a rule asked to manage it.
    pub async fn enroll(
        &self,
        store: &dyn Store,
        source: IpAddr,
        req: &LookupRequest,
    ) -> Result<(Node, bool), EnrollError> {
        if !self.config.enabled {
            return Err(EnrollError::Disabled);
        }
        if !self.config.allowed_subnets.is_empty()
            && !self
                .config
                .allowed_subnets
                .iter()
                .any(|c| c.contains(source))
        {
            return Err(EnrollError::SubnetRefused(source));
        }
        if !self.bucket.try_take() {
            return Err(EnrollError::RateLimited);
        }
        let macs = lookup_macs(req);
        let mut node = Node::new(
            Uuid::new_v4(),
            self.config.default_driver.clone(),
            Utc::now(),
        );
        node.discovered = true;
        node.name = Some(discovered_name(req, &macs, node.uuid));
        node.properties = properties_from_inventory(&req.inventory);
        apply_boot(&mut node, &req.inventory);
        if let Some(sys) = &req.system_uuid {
            node.properties
                .insert(SYSTEM_UUID_KEY.into(), json!(sys.to_ascii_lowercase()));
        }
        let inv_value = inventory_value(&req.inventory);
        let outcome = rules::apply(&self.config.rules, &inv_value, &mut node);
        // Node, inventory and ports in one transaction (one write for the whole machine,
        // and never a node its next lookup cannot find).
        let ports = new_ports(store, node.uuid, &macs, req.boot_mac.as_deref()).await?;
        let stored = stored_inventory(&inv_value);
        match store.create_discovered(&node, &stored, &ports).await {
            Ok(()) => {}
            Err(StoreError::Duplicate { field: "name", .. }) => {
                node.name = Some(format!("discovered-{}", node.uuid.simple()));
                store.create_discovered(&node, &stored, &ports).await?;
            }
            Err(e) => return Err(e.into()),
        }
        let mut manage = outcome.manage;
        if let Some(failed) = run_inspection_rules(store, node.uuid, &inv_value).await? {
            // A rule failed the machine: it stays in `enroll` with the reason.
            manage = false;
            crate::store::update_node_with(store, node.uuid, None, |n| {
                n.last_error = Some(failed.clone());
                Ok::<_, StoreError>(())
            })
            .await?;
        }
        let node = store.get_node_by_uuid(node.uuid).await?.unwrap_or(node);
        tracing::info!(node = %node.uuid, name = ?node.name, rules = ?outcome.matched, "discovered a new machine");
        Ok((node, manage))
    }

    /// After `inspect`: stores the inventory, refreshes properties, adds ports for new
    /// MACs (existing ones are kept) and runs the rules: the built-in ones, then the
    /// operator's. `Ok(Err(reason))` when a rule failed the inspection.
    pub async fn refresh(
        &self,
        store: &dyn Store,
        node: Uuid,
        inventory: &Inventory,
    ) -> Result<Result<(), String>, StoreError> {
        let inv_value = inventory_value(inventory);
        store
            .put_inventory(node, &stored_inventory(&inv_value))
            .await?;
        let macs: Vec<String> = inventory
            .interfaces
            .iter()
            .map(|i| i.mac_address.to_ascii_lowercase())
            .collect();
        add_ports(store, node, &macs, None).await?;
        link_ports(store, node, inventory).await?;
        crate::store::update_node_with(store, node, None, |n| {
            for (k, v) in properties_from_inventory(inventory) {
                n.properties.insert(k, v);
            }
            apply_boot(n, inventory);
            rules::apply(&self.config.rules, &inv_value, n);
            Ok::<_, StoreError>(())
        })
        .await?;
        Ok(match run_inspection_rules(store, node, &inv_value).await? {
            Some(failed) => Err(failed),
            None => Ok(()),
        })
    }
}

/// Runs the operator's inspection rules (`/v1/inspection_rules`, highest priority first)
/// on a node and its ports with `inventory`. `Ok(None)`: they ran and what they changed is
/// saved; `Ok(Some(reason))`: a rule failed the inspection (`fail`) or could not be
/// applied, and none of their changes is saved.
pub async fn run_inspection_rules(
    store: &dyn Store,
    node: Uuid,
    inventory: &Value,
) -> Result<Option<String>, StoreError> {
    let rules: Vec<_> = store
        .list_inspection_rules()
        .await?
        .into_iter()
        .filter(|r| r.phase == crate::inspection_rules::PHASE_MAIN)
        .collect();
    if rules.is_empty() {
        return Ok(None);
    }
    let ports = store
        .list_ports(&PortQuery {
            node_uuid: Some(node),
            ..PortQuery::default()
        })
        .await?;
    let mut failure = None;
    let mut changed_ports = Vec::new();
    crate::store::update_node_with(store, node, None, |n| {
        let (mut trial, mut trial_ports) = (n.clone(), ports.clone());
        match crate::inspection_rules::engine::apply(
            &rules,
            inventory,
            &mut trial,
            &mut trial_ports,
        ) {
            Ok(applied) => {
                *n = trial;
                changed_ports = applied
                    .ports_changed
                    .iter()
                    .filter_map(|i| trial_ports.get(*i).cloned())
                    .collect();
                failure = None;
                tracing::info!(node = %node, rules = ?applied.matched, "inspection rules applied");
            }
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "inspection rules failed the inspection");
                failure = Some(e.to_string());
            }
        }
        Ok::<_, StoreError>(())
    })
    .await?;
    if failure.is_none() {
        for mut p in changed_ports {
            p.updated_at = Some(Utc::now());
            store.update_port(&p).await?;
        }
    }
    Ok(failure)
}

fn discovered_name(req: &LookupRequest, macs: &[String], uuid: Uuid) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect()
    };
    let serial = req
        .system_serial
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("not specified"));
    match (serial, macs.first()) {
        (Some(s), _) => format!("node-{}", clean(s)),
        (None, Some(m)) => format!("node-{}", m.replace(':', "")),
        (None, None) => format!("node-{}", uuid.simple()),
    }
}

fn inventory_value(inv: &Inventory) -> Value {
    serde_json::to_value(inv).unwrap_or(Value::Null)
}

fn stored_inventory(inv: &Value) -> Value {
    json!({ "inventory": inv, "plugin_data": {} })
}

/// The agent inventory inside a stored inventory document (the shape `stored_inventory`
/// writes, Ironic's `{"inventory": ..., "plugin_data": ...}`), if it reads as one.
pub fn inventory_of(stored: &Value) -> Option<proto::Inventory> {
    serde_json::from_value(stored.get("inventory")?.clone()).ok()
}

/// Fills the `local_link_connection` of this node's ports from the LLDP neighbour their
/// NIC heard (`local_link::apply`); a MAC owned by another node is left alone.
async fn link_ports(
    store: &dyn Store,
    node: Uuid,
    inventory: &Inventory,
) -> Result<(), StoreError> {
    for nic in &inventory.interfaces {
        let Some(lldp) = &nic.lldp else { continue };
        let ports = store
            .list_ports(&PortQuery {
                address: Some(nic.mac_address.to_ascii_lowercase()),
                ..Default::default()
            })
            .await?;
        for mut port in ports.into_iter().filter(|p| p.node_uuid == node) {
            if local_link::apply(&mut port.local_link_connection, lldp) {
                port.updated_at = Some(Utc::now());
                store.update_port(&port).await?;
                tracing::info!(node = %node, port = %port.uuid, mac = %port.address, link = ?port.local_link_connection, "local link connection from LLDP");
            }
        }
    }
    Ok(())
}

/// Creates a port per MAC not yet known; MACs owned by another node are left alone.
async fn add_ports(
    store: &dyn Store,
    node: Uuid,
    macs: &[String],
    boot_mac: Option<&str>,
) -> Result<(), StoreError> {
    for port in new_ports(store, node, macs, boot_mac).await? {
        match store.create_port(&port).await {
            Ok(()) | Err(StoreError::Duplicate { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The ports to create for `macs` of `node`: one per MAC no port has yet (a MAC of another
/// node stays that node's, with a warning); PXE on the boot MAC only when it is known.
async fn new_ports(
    store: &dyn Store,
    node: Uuid,
    macs: &[String],
    boot_mac: Option<&str>,
) -> Result<Vec<Port>, StoreError> {
    let mut out = Vec::new();
    for mac in macs {
        let existing = store
            .list_ports(&PortQuery {
                address: Some(mac.clone()),
                ..Default::default()
            })
            .await?;
        if let Some(p) = existing.first() {
            if p.node_uuid != node {
                tracing::warn!(mac = %mac, owner = %p.node_uuid, node = %node, "MAC belongs to another node");
            }
            continue;
        }
        let mut port = Port::new(Uuid::new_v4(), node, mac.clone(), Utc::now());
        port.pxe_enabled = boot_mac.is_none_or(|b| b.eq_ignore_ascii_case(mac));
        out.push(port);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn cidr_table() {
        for (net, ip, want) in [
            ("192.0.2.0/24", "192.0.2.77", true),
            ("192.0.2.0/24", "192.0.3.1", false),
            ("127.0.0.1/32", "127.0.0.1", true),
            ("0.0.0.0/0", "198.51.100.1", true),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("192.0.2.0/24", "fd12::1", false),
        ] {
            let c: Cidr = net.parse().expect("cidr");
            assert_eq!(c.contains(ip.parse().expect("ip")), want, "{net} {ip}");
        }
        for bad in ["192.0.2.0", "192.0.2.0/33", "x/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bucket_refills() {
        let b = TokenBucket::new(60, 2);
        let t0 = Instant::now();
        assert!(b.try_take_at(t0));
        assert!(b.try_take_at(t0));
        assert!(!b.try_take_at(t0));
        assert!(!b.try_take_at(t0 + Duration::from_millis(500)));
        assert!(b.try_take_at(t0 + Duration::from_millis(1100)));
    }

    #[test]
    fn properties_like_ironic() {
        let mut inv = Inventory::default();
        inv.cpu.count = 4;
        inv.cpu.architecture = "x86_64".into();
        inv.memory.total = 2 * 1024 * 1024 * 1024;
        inv.disks = vec![
            proto::Disk {
                size: 10 * 1024 * 1024 * 1024,
                ..Default::default()
            },
            proto::Disk {
                size: 20 * 1024 * 1024 * 1024 + 5,
                ..Default::default()
            },
        ];
        let p = properties_from_inventory(&inv);
        assert_eq!(
            Value::Object(p),
            json!({"cpus": 4, "memory_mb": 2048, "local_gb": 19, "cpu_arch": "x86_64"})
        );
        inv.memory.physical_mb = Some(4096);
        inv.disks.clear();
        let p = properties_from_inventory(&inv);
        assert_eq!(p["memory_mb"], 4096);
        assert_eq!(p["local_gb"], 0);
    }

    #[test]
    fn boot_mode_and_secure_boot_come_from_the_agent() {
        let mut node = crate::model::Node::new(Uuid::new_v4(), "manual", Utc::now());
        let mut inv = Inventory::default();
        apply_boot(&mut node, &inv);
        assert_eq!(
            (node.boot_mode.as_deref(), node.secure_boot),
            (Some("bios"), None)
        );
        inv.boot.current_boot_mode = proto::BootMode::Uefi;
        inv.boot.secure_boot = Some(true);
        apply_boot(&mut node, &inv);
        assert_eq!(
            (node.boot_mode.as_deref(), node.secure_boot),
            (Some("uefi"), Some(true))
        );
    }
}
