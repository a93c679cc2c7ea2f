//! [`Watched`]: a [`Store`] that tells the [`LiveEvents`] hub about every node write it
//! saved. Reads and every other write pass straight through. Every method is delegated,
//! the trait's provided ones too (`is_shared`, `pool_use`): a method added to [`Store`]
//! must be added here (the compiler says so unless it has a default body).

use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use super::{LiveEvent, LiveEvents, NodeSummary};
use chrono::{DateTime, Utc};

use crate::deploy_templates::DeployTemplate;
use crate::inspection_rules::InspectionRule;
use crate::model::{Allocation, ConductorRecord, DhcpLease, HistoryEvent, Node, Port};
use crate::store::{AllocationQuery, LeaseWrite, NodeQuery, PoolUse, PortQuery, Store, StoreError};

/// The real store, watched.
#[derive(Debug)]
pub struct Watched {
    inner: Arc<dyn Store>,
    live: Arc<LiveEvents>,
}

impl Watched {
    pub fn new(inner: Arc<dyn Store>, live: Arc<LiveEvents>) -> Self {
        Self { inner, live }
    }

    fn changed(&self, node: &Node) {
        if self.live.has_listeners() {
            self.live
                .publish(LiveEvent::Node(Box::new(NodeSummary::of(node))));
        }
    }
}

#[async_trait]
impl Store for Watched {
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    fn pool_use(&self) -> Vec<PoolUse> {
        self.inner.pool_use()
    }

    async fn count_nodes_by_state(&self) -> Result<Vec<crate::store::StateCount>, StoreError> {
        self.inner.count_nodes_by_state().await
    }

    async fn register_conductor(&self, conductor: &ConductorRecord) -> Result<(), StoreError> {
        self.inner.register_conductor(conductor).await
    }

    async fn touch_conductor(
        &self,
        hostname: &str,
        online: bool,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.touch_conductor(hostname, online, at).await
    }

    async fn list_conductors(&self) -> Result<Vec<ConductorRecord>, StoreError> {
        self.inner.list_conductors().await
    }

    async fn create_inspection_rule(&self, rule: &InspectionRule) -> Result<(), StoreError> {
        self.inner.create_inspection_rule(rule).await
    }

    async fn get_inspection_rule(&self, uuid: Uuid) -> Result<Option<InspectionRule>, StoreError> {
        self.inner.get_inspection_rule(uuid).await
    }

    async fn list_inspection_rules(&self) -> Result<Vec<InspectionRule>, StoreError> {
        self.inner.list_inspection_rules().await
    }

    async fn update_inspection_rule(&self, rule: &InspectionRule) -> Result<(), StoreError> {
        self.inner.update_inspection_rule(rule).await
    }

    async fn delete_inspection_rule(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.inner.delete_inspection_rule(uuid).await
    }

    async fn create_deploy_template(&self, t: &DeployTemplate) -> Result<(), StoreError> {
        self.inner.create_deploy_template(t).await
    }

    async fn get_deploy_template(&self, uuid: Uuid) -> Result<Option<DeployTemplate>, StoreError> {
        self.inner.get_deploy_template(uuid).await
    }

    async fn get_deploy_template_by_name(
        &self,
        name: &str,
    ) -> Result<Option<DeployTemplate>, StoreError> {
        self.inner.get_deploy_template_by_name(name).await
    }

    async fn list_deploy_templates(&self) -> Result<Vec<DeployTemplate>, StoreError> {
        self.inner.list_deploy_templates().await
    }

    async fn update_deploy_template(&self, t: &DeployTemplate) -> Result<(), StoreError> {
        self.inner.update_deploy_template(t).await
    }

    async fn delete_deploy_template(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.inner.delete_deploy_template(uuid).await
    }

    async fn create_node(&self, node: &Node) -> Result<(), StoreError> {
        self.inner.create_node(node).await?;
        self.changed(node);
        Ok(())
    }

    async fn create_discovered(
        &self,
        node: &Node,
        inventory: &Value,
        ports: &[Port],
    ) -> Result<(), StoreError> {
        self.inner.create_discovered(node, inventory, ports).await?;
        self.changed(node);
        Ok(())
    }

    async fn get_node(&self, ident: &str) -> Result<Option<Node>, StoreError> {
        self.inner.get_node(ident).await
    }

    async fn get_node_by_uuid(&self, uuid: Uuid) -> Result<Option<Node>, StoreError> {
        self.inner.get_node_by_uuid(uuid).await
    }

    async fn list_nodes(&self, query: &NodeQuery) -> Result<Vec<Node>, StoreError> {
        self.inner.list_nodes(query).await
    }

    async fn update_node(&self, node: &Node) -> Result<i64, StoreError> {
        let revision = self.inner.update_node(node).await?;
        self.changed(node);
        Ok(revision)
    }

    async fn commit_transition(
        &self,
        node: &Node,
        history: Option<&HistoryEvent>,
        release: Option<&str>,
    ) -> Result<i64, StoreError> {
        let revision = self.inner.commit_transition(node, history, release).await?;
        self.changed(node);
        Ok(revision)
    }

    async fn reserve_and_commit(
        &self,
        node: &Node,
        history: Option<&HistoryEvent>,
        holder: &str,
        release: bool,
    ) -> Result<i64, StoreError> {
        let revision = self
            .inner
            .reserve_and_commit(node, history, holder, release)
            .await?;
        self.changed(node);
        Ok(revision)
    }

    async fn delete_node(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.inner.delete_node(uuid).await?;
        if self.live.has_listeners() {
            self.live.publish(LiveEvent::Deleted(uuid));
        }
        Ok(())
    }

    async fn reserve_node(&self, uuid: Uuid, holder: &str) -> Result<Node, StoreError> {
        self.inner.reserve_node(uuid, holder).await
    }

    async fn release_node(&self, uuid: Uuid, holder: &str) -> Result<(), StoreError> {
        self.inner.release_node(uuid, holder).await
    }

    async fn release_all(&self, holder: &str) -> Result<Vec<Uuid>, StoreError> {
        self.inner.release_all(holder).await
    }

    async fn claim_node(&self, node: Uuid, allocation: Uuid) -> Result<bool, StoreError> {
        self.inner.claim_node(node, allocation).await
    }

    async fn create_port(&self, port: &Port) -> Result<(), StoreError> {
        self.inner.create_port(port).await
    }

    async fn get_port(&self, uuid: Uuid) -> Result<Option<Port>, StoreError> {
        self.inner.get_port(uuid).await
    }

    async fn list_ports(&self, query: &PortQuery) -> Result<Vec<Port>, StoreError> {
        self.inner.list_ports(query).await
    }

    async fn node_state_by_mac(&self, mac: &str) -> Result<Option<(Uuid, String)>, StoreError> {
        self.inner.node_state_by_mac(mac).await
    }

    async fn node_states_by_macs(
        &self,
        macs: &[String],
    ) -> Result<Vec<(String, Uuid, String)>, StoreError> {
        self.inner.node_states_by_macs(macs).await
    }

    async fn update_port(&self, port: &Port) -> Result<(), StoreError> {
        self.inner.update_port(port).await
    }

    async fn delete_port(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.inner.delete_port(uuid).await
    }

    async fn create_allocation(&self, allocation: &Allocation) -> Result<(), StoreError> {
        self.inner.create_allocation(allocation).await
    }

    async fn get_allocation(&self, ident: &str) -> Result<Option<Allocation>, StoreError> {
        self.inner.get_allocation(ident).await
    }

    async fn list_allocations(
        &self,
        query: &AllocationQuery,
    ) -> Result<Vec<Allocation>, StoreError> {
        self.inner.list_allocations(query).await
    }

    async fn update_allocation(&self, allocation: &Allocation) -> Result<(), StoreError> {
        self.inner.update_allocation(allocation).await
    }

    async fn delete_allocation(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.inner.delete_allocation(uuid).await
    }

    async fn add_history(&self, event: &HistoryEvent) -> Result<(), StoreError> {
        self.inner.add_history(event).await
    }

    async fn list_history(&self, node: Uuid) -> Result<Vec<HistoryEvent>, StoreError> {
        self.inner.list_history(node).await
    }

    async fn put_inventory(&self, node: Uuid, inventory: &Value) -> Result<(), StoreError> {
        self.inner.put_inventory(node, inventory).await
    }

    async fn get_inventory(&self, node: Uuid) -> Result<Option<Value>, StoreError> {
        self.inner.get_inventory(node).await
    }

    async fn dhcp_lease_by_mac(&self, mac: &str) -> Result<Option<DhcpLease>, StoreError> {
        self.inner.dhcp_lease_by_mac(mac).await
    }

    async fn dhcp_lease_by_ip(&self, ip: Ipv4Addr) -> Result<Option<DhcpLease>, StoreError> {
        self.inner.dhcp_lease_by_ip(ip).await
    }

    async fn dhcp_leases_in(
        &self,
        start: Ipv4Addr,
        end: Ipv4Addr,
    ) -> Result<Vec<DhcpLease>, StoreError> {
        self.inner.dhcp_leases_in(start, end).await
    }

    async fn write_dhcp_lease(&self, write: &LeaseWrite) -> Result<u64, StoreError> {
        self.inner.write_dhcp_lease(write).await
    }

    async fn dhcp_leases_of(
        &self,
        macs: &[String],
        ips: &[Ipv4Addr],
    ) -> Result<Vec<DhcpLease>, StoreError> {
        self.inner.dhcp_leases_of(macs, ips).await
    }

    async fn write_dhcp_leases(&self, writes: &[LeaseWrite]) -> Result<Vec<u64>, StoreError> {
        self.inner.write_dhcp_leases(writes).await
    }
}
