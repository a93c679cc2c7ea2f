//! Persistence of the inventory behind one trait.
//!
//! `sql::SqlStore` implements it for SQLite (embedded default) and PostgreSQL with the same
//! code path; both pass the same test suite.

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};

use crate::deploy_templates::DeployTemplate;
use crate::inspection_rules::InspectionRule;
use crate::model::{
    Allocation, ConductorRecord, DhcpLease, DhcpLeaseState, HistoryEvent, Node, Port,
};

pub mod sessions;
pub mod sql;

pub use sql::{NODE_SORT_KEYS, SqlStore, node_sort_column};

/// How many times [`update_node_with`] retries a write that lost a race.
pub const STALE_RETRIES: usize = 8;

/// The one read-change-write loop for node writers that are not the conductor's task (the
/// API's edits, made under the node's reservation, and the agent API's progress and session
/// fields, made without it): applies `change` to `first` (or a fresh read), writes it, and
/// after a lost optimistic-concurrency race (`Stale`) reads the node again and re-applies
/// `change`, at most [`STALE_RETRIES`] times. `change` may refuse with its own error. The
/// conductor's task writes go through `Conductor::save_with` instead, which merges its own
/// fields into the fresh copy. Returns the node as written; `Stale` after the last retry.
pub async fn update_node_with<E>(
    store: &dyn Store,
    uuid: Uuid,
    first: Option<Node>,
    mut change: impl FnMut(&mut Node) -> Result<(), E>,
) -> Result<Node, E>
where
    E: From<StoreError>,
{
    let mut current = first;
    for _ in 0..STALE_RETRIES {
        let mut node = match current.take() {
            Some(n) => n,
            None => store
                .get_node_by_uuid(uuid)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    kind: "node",
                    ident: uuid.to_string(),
                })?,
        };
        change(&mut node)?;
        node.updated_at = Some(chrono::Utc::now());
        match store.update_node(&node).await {
            Ok(revision) => {
                node.revision = revision;
                return Ok(node);
            }
            Err(StoreError::Stale { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Stale { uuid }.into())
}

/// Errors a caller may branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {ident} could not be found")]
    NotFound { kind: &'static str, ident: String },
    /// A unique constraint (node uuid or name, port MAC or uuid, allocation uuid or name).
    #[error("{kind} with {field} {value} already exists")]
    Duplicate {
        kind: &'static str,
        field: &'static str,
        value: String,
    },
    /// `update_node` lost a race: the stored revision is newer than the caller's copy.
    #[error("node {uuid} was changed concurrently")]
    Stale { uuid: Uuid },
    /// `reserve_node` found the node held by another task.
    #[error("node {uuid} is locked by {holder}")]
    Locked { uuid: Uuid, holder: String },
    #[error("database error")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Sort direction for lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortDir {
    #[default]
    Asc,
    Desc,
}

/// Node list filters and paging, as `GET /v1/nodes` accepts them (already validated).
/// `None` means "no filter".
#[derive(Debug, Clone, Default)]
pub struct NodeQuery {
    pub provision_state: Option<String>,
    pub resource_class: Option<String>,
    pub maintenance: Option<bool>,
    /// `Some(true)`: only nodes with `instance_uuid`; `Some(false)`: only without.
    pub associated: Option<bool>,
    pub driver: Option<String>,
    pub owner: Option<String>,
    pub lessee: Option<String>,
    /// Only nodes this project owns or leases (`owner = P OR lessee = P`).
    pub project: Option<String>,
    pub fault: Option<String>,
    pub retired: Option<bool>,
    pub conductor_group: Option<String>,
    pub shard: Option<String>,
    pub chassis_uuid: Option<Uuid>,
    pub parent_node: Option<String>,
    pub description_contains: Option<String>,
    /// Ingot's console search (`ingot_search`, any case): a name or UUID containing it, a
    /// port whose MAC contains it, or a system or disk serial number starting with it.
    pub search: Option<String>,
    pub instance_name: Option<String>,
    pub instance_uuid: Option<Uuid>,
    /// SMBIOS system UUID (`properties.system_uuid`, else `extra.system_uuid`; any case),
    /// through an index.
    pub system_uuid: Option<String>,
    /// The host of the node's BMC, canonical as `bmc_host::bmc_host` gives it,
    /// through an index.
    pub bmc_host: Option<String>,
    /// Sort key: `id` (creation order, default) or a node field name such as `name`,
    /// `uuid`, `provision_state`, `created_at`, `updated_at`.
    pub sort_key: Option<String>,
    pub sort_dir: SortDir,
    /// Return only nodes after this one in the sort order.
    pub marker: Option<Uuid>,
    pub limit: Option<u32>,
}

/// Port list filters and paging.
#[derive(Debug, Clone, Default)]
pub struct PortQuery {
    pub node_uuid: Option<Uuid>,
    pub address: Option<String>,
    pub sort_dir: SortDir,
    pub marker: Option<Uuid>,
    pub limit: Option<u32>,
}

/// Allocation list filters and paging.
#[derive(Debug, Clone, Default)]
pub struct AllocationQuery {
    pub node_uuid: Option<Uuid>,
    pub state: Option<String>,
    pub resource_class: Option<String>,
    pub owner: Option<String>,
    pub marker: Option<Uuid>,
    pub limit: Option<u32>,
}

/// A change to the DHCP lease table (full DHCP mode). Reservation rows (from ports'
/// `extra.dhcp_address`) are never changed by these: they follow their port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseWrite {
    /// Hold `ip` for `mac` as `state` (`Offered` or `Bound`) until `expires_at`, dropping the
    /// MAC's other offered/bound leases. Refused with `Duplicate` when the address is
    /// reserved, or held by another MAC and not expired at `now` (another replica gave it
    /// away meanwhile): nothing is changed then.
    Hold {
        ip: Ipv4Addr,
        mac: String,
        state: DhcpLeaseState,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// Keep `ip` out of the pool until `until` (a client found it in use).
    Decline {
        ip: Ipv4Addr,
        mac: String,
        until: DateTime<Utc>,
    },
    /// The client gave `ip` back (only its own offered/bound lease goes).
    Release { ip: Ipv4Addr, mac: String },
    /// The client took another server's offer: drop what was only offered to it.
    ForgetOffer { mac: String },
    /// Delete every offered, bound or declined lease that expired before `before`.
    PurgeExpired { before: DateTime<Utc> },
}

/// How one database connection pool is used right now (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// `read`, `write` (SQLite's two pools) or `main` (PostgreSQL).
    pub pool: &'static str,
    /// Connections open, of which `idle` wait for work.
    pub open: u32,
    pub idle: u32,
    /// The pool's cap.
    pub max: u32,
}

/// Nodes in one provision state and power state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    pub provision_state: String,
    pub power_state: Option<String>,
    pub nodes: i64,
}

/// The inventory store. Implementations must be safe to share between tasks.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Whether other processes may use this store at once (PostgreSQL replicas); a SQLite
    /// database belongs to one `ingot serve` (its instance lock).
    fn is_shared(&self) -> bool {
        false
    }

    /// The connection pools' use (none for a store without a pool).
    fn pool_use(&self) -> Vec<PoolUse> {
        Vec::new()
    }

    // Nodes.
    async fn create_node(&self, node: &Node) -> Result<(), StoreError>;
    /// Creates a discovered machine's node with its inventory (Ironic's shape) and its
    /// ports, in one transaction; a port whose MAC another node has is skipped. Ports must
    /// be the node's and ask for no DHCP reservation (a `Database` error otherwise: a bug).
    async fn create_discovered(
        &self,
        node: &Node,
        inventory: &Value,
        ports: &[Port],
    ) -> Result<(), StoreError>;
    /// Finds a node by UUID (when `ident` parses as one) or else by name.
    async fn get_node(&self, ident: &str) -> Result<Option<Node>, StoreError>;
    async fn get_node_by_uuid(&self, uuid: Uuid) -> Result<Option<Node>, StoreError>;
    async fn list_nodes(&self, query: &NodeQuery) -> Result<Vec<Node>, StoreError>;
    /// How many nodes are in each (provision state, power state), without reading them (for
    /// `/metrics`, which must not decode 10,000 documents per scrape).
    async fn count_nodes_by_state(&self) -> Result<Vec<StateCount>, StoreError> {
        let mut counts: std::collections::BTreeMap<(String, Option<String>), i64> =
            std::collections::BTreeMap::new();
        for n in self.list_nodes(&NodeQuery::default()).await? {
            *counts
                .entry((n.provision_state, n.power_state))
                .or_default() += 1;
        }
        Ok(counts
            .into_iter()
            .map(|((provision_state, power_state), nodes)| StateCount {
                provision_state,
                power_state,
                nodes,
            })
            .collect())
    }
    /// Replaces the node if `node.revision` matches the stored one (else `Stale`), and
    /// returns the new revision. A name taken by another node gives `Duplicate`.
    ///
    /// `reservation` is left as stored: only `reserve_node`/`release_node`/`release_all`
    /// change it, so a copy read before a lock was taken cannot drop the lock.
    async fn update_node(&self, node: &Node) -> Result<i64, StoreError>;
    /// One lifecycle transition in one transaction: `update_node(node)` (same revision
    /// check, `Stale`/`NotFound`/`Duplicate` as there), plus the history event, plus
    /// clearing the reservation when `release` holds it. On any error nothing is written.
    /// Returns the new revision.
    async fn commit_transition(
        &self,
        node: &Node,
        history: Option<&HistoryEvent>,
        release: Option<&str>,
    ) -> Result<i64, StoreError>;
    /// A task's first transition and taking the node's lock in one transaction:
    /// `commit_transition(node, history, None)` that also sets `reservation = holder`, only
    /// if nobody holds it (`Locked` otherwise, nothing written); with `release` (the
    /// transition ends the task) the reservation is required empty and left so.
    async fn reserve_and_commit(
        &self,
        node: &Node,
        history: Option<&HistoryEvent>,
        holder: &str,
        release: bool,
    ) -> Result<i64, StoreError>;
    /// Deletes the node with its ports, inventory and history (allocations are kept).
    async fn delete_node(&self, uuid: Uuid) -> Result<(), StoreError>;
    /// Atomically sets `reservation = holder` when it is empty and returns the updated node;
    /// `Locked` when someone else holds it (also when `holder` itself does). Does not bump
    /// `revision`, so a copy read just before reserving can still be updated.
    async fn reserve_node(&self, uuid: Uuid, holder: &str) -> Result<Node, StoreError>;
    /// Clears the reservation if `holder` holds it (a no-op otherwise).
    async fn release_node(&self, uuid: Uuid, holder: &str) -> Result<(), StoreError>;
    /// Clears every reservation held by `holder` (used at start-up after a crash); returns
    /// the UUIDs of the nodes released.
    async fn release_all(&self, holder: &str) -> Result<Vec<Uuid>, StoreError>;
    /// Atomically gives the node to an allocation: sets `allocation_uuid` and
    /// `instance_uuid` to `allocation` only if both are empty. Returns false if the node was
    /// taken meanwhile. Bumps `revision` (copies read before the claim become stale).
    async fn claim_node(&self, node: Uuid, allocation: Uuid) -> Result<bool, StoreError>;

    // Ports.
    async fn create_port(&self, port: &Port) -> Result<(), StoreError>;
    async fn get_port(&self, uuid: Uuid) -> Result<Option<Port>, StoreError>;
    async fn list_ports(&self, query: &PortQuery) -> Result<Vec<Port>, StoreError>;
    /// The node that port MAC `mac` belongs to and its provision state, without reading the
    /// node (DHCP and the iPXE script ask it of every booting machine).
    async fn node_state_by_mac(&self, mac: &str) -> Result<Option<(Uuid, String)>, StoreError>;
    /// [`Self::node_state_by_mac`] for many MACs in one read: (port MAC in lower case, node,
    /// provision state) for those that belong to a node.
    async fn node_states_by_macs(
        &self,
        macs: &[String],
    ) -> Result<Vec<(String, Uuid, String)>, StoreError>;
    async fn update_port(&self, port: &Port) -> Result<(), StoreError>;
    async fn delete_port(&self, uuid: Uuid) -> Result<(), StoreError>;

    // Allocations.
    async fn create_allocation(&self, allocation: &Allocation) -> Result<(), StoreError>;
    /// By UUID or name.
    async fn get_allocation(&self, ident: &str) -> Result<Option<Allocation>, StoreError>;
    async fn list_allocations(
        &self,
        query: &AllocationQuery,
    ) -> Result<Vec<Allocation>, StoreError>;
    async fn update_allocation(&self, allocation: &Allocation) -> Result<(), StoreError>;
    async fn delete_allocation(&self, uuid: Uuid) -> Result<(), StoreError>;

    // Conductors (`ingot serve` replicas).
    /// Inserts or replaces the conductor's row (keeping its `created_at`).
    async fn register_conductor(&self, conductor: &ConductorRecord) -> Result<(), StoreError>;
    /// Records a heartbeat at `at` (or, `online` false, a clean stop); false when the
    /// conductor has no row.
    async fn touch_conductor(
        &self,
        hostname: &str,
        online: bool,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Every registered conductor, by hostname.
    async fn list_conductors(&self) -> Result<Vec<ConductorRecord>, StoreError>;

    // Inspection rules (`/v1/inspection_rules`).
    async fn create_inspection_rule(&self, rule: &InspectionRule) -> Result<(), StoreError>;
    async fn get_inspection_rule(&self, uuid: Uuid) -> Result<Option<InspectionRule>, StoreError>;
    /// Every rule, highest priority first, then by UUID.
    async fn list_inspection_rules(&self) -> Result<Vec<InspectionRule>, StoreError>;
    /// Replaces a rule's fields (`NotFound` when it is gone).
    async fn update_inspection_rule(&self, rule: &InspectionRule) -> Result<(), StoreError>;
    async fn delete_inspection_rule(&self, uuid: Uuid) -> Result<(), StoreError>;

    // Deploy templates (`/v1/deploy_templates`).
    /// `Duplicate` on a name (or UUID) another template has.
    async fn create_deploy_template(&self, t: &DeployTemplate) -> Result<(), StoreError>;
    async fn get_deploy_template(&self, uuid: Uuid) -> Result<Option<DeployTemplate>, StoreError>;
    async fn get_deploy_template_by_name(
        &self,
        name: &str,
    ) -> Result<Option<DeployTemplate>, StoreError>;
    /// Every template, in creation order.
    async fn list_deploy_templates(&self) -> Result<Vec<DeployTemplate>, StoreError>;
    /// Replaces a template's name, steps and extra (`NotFound` when it is gone,
    /// `Duplicate` on another template's name).
    async fn update_deploy_template(&self, t: &DeployTemplate) -> Result<(), StoreError>;
    async fn delete_deploy_template(&self, uuid: Uuid) -> Result<(), StoreError>;

    // History and inventory.
    async fn add_history(&self, event: &HistoryEvent) -> Result<(), StoreError>;
    /// Oldest first.
    async fn list_history(&self, node: Uuid) -> Result<Vec<HistoryEvent>, StoreError>;
    /// Stores (replaces) the hardware inventory an agent reported, in Ironic's shape.
    async fn put_inventory(&self, node: Uuid, inventory: &Value) -> Result<(), StoreError>;
    async fn get_inventory(&self, node: Uuid) -> Result<Option<Value>, StoreError>;

    // DHCP leases (full mode). Creating or updating a port whose `extra.dhcp_address` holds
    // an IPv4 address also keeps its reservation row (`Duplicate` when another port
    // reserves that address); deleting the port (or its node) drops it.
    /// The lease of `mac` (lower case): its reservation if it has one, else its latest
    /// offered or bound lease. Declines are not returned.
    async fn dhcp_lease_by_mac(&self, mac: &str) -> Result<Option<DhcpLease>, StoreError>;
    async fn dhcp_lease_by_ip(&self, ip: Ipv4Addr) -> Result<Option<DhcpLease>, StoreError>;
    /// Every row (any state, expired too) with an address in `start..=end`, by address.
    async fn dhcp_leases_in(
        &self,
        start: Ipv4Addr,
        end: Ipv4Addr,
    ) -> Result<Vec<DhcpLease>, StoreError>;
    /// Every row (any state) of any of `macs` (lower case) or on any of `ips`: what the
    /// DHCP server reads once for a batch of packets.
    async fn dhcp_leases_of(
        &self,
        macs: &[String],
        ips: &[Ipv4Addr],
    ) -> Result<Vec<DhcpLease>, StoreError>;
    /// Applies one change atomically; returns the rows changed.
    async fn write_dhcp_lease(&self, write: &LeaseWrite) -> Result<u64, StoreError>;
    /// Applies `writes` in order in one transaction; returns each one's rows changed. A
    /// `Hold` that `write_dhcp_lease` refuses with `Duplicate` counts 0 here and changes
    /// nothing; the others still apply.
    async fn write_dhcp_leases(&self, writes: &[LeaseWrite]) -> Result<Vec<u64>, StoreError>;
}
