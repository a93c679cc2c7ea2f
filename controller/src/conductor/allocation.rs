//! Allocation processing: pick a suitable `available` node and claim it atomically.

use std::sync::Arc;

use chrono::Utc;
use rand::seq::SliceRandom;
use uuid::Uuid;

use super::Conductor;
use super::task::TaskFlags;
use crate::flavors::matching::candidates;
use crate::model::{Allocation, Node};
use crate::store::{NodeQuery, StoreError};

impl Conductor {
    /// Processes an `allocating` allocation in the background: it becomes `active` with a
    /// `node_uuid`, or `error` with `last_error`.
    pub fn process_allocation(self: &Arc<Self>, allocation: Uuid) {
        let this = self.clone();
        self.spawn(async move {
            if let Err(err) = this.allocate(allocation).await {
                tracing::error!(allocation = %allocation, error = %err, "processing allocation failed");
            }
        });
    }

    async fn allocate(self: &Arc<Self>, uuid: Uuid) -> Result<(), StoreError> {
        let Some(mut allocation) = self.store.get_allocation(&uuid.to_string()).await? else {
            return Ok(());
        };
        if allocation.state != "allocating" {
            return Ok(());
        }
        let picked = self.pick_and_claim(&allocation).await?;
        if picked.is_err()
            && self
                .store
                .get_allocation(&uuid.to_string())
                .await?
                .is_none_or(|a| a.state != "allocating")
        {
            // Processed (or deleted) meanwhile by someone else: their result stands.
            return Ok(());
        }
        match &picked {
            Ok(node) => {
                allocation.state = "active".to_owned();
                allocation.node_uuid = Some(*node);
                allocation.last_error = None;
                tracing::info!(allocation = %uuid, node = %node, "allocation active");
            }
            Err(reason) => {
                allocation.state = "error".to_owned();
                allocation.last_error =
                    Some(format!("Failed to process allocation {uuid}: {reason}."));
                tracing::info!(allocation = %uuid, reason = %reason, "allocation failed");
            }
        }
        allocation.updated_at = Some(Utc::now());
        match self.store.update_allocation(&allocation).await {
            Err(StoreError::NotFound { .. }) => {
                // Deleted while we worked: give the node back.
                if let Ok(node) = picked {
                    self.unclaim(node, uuid).await?;
                }
                Ok(())
            }
            Ok(()) => match picked {
                // A server's allocation: the node is claimed, deploy it.
                Ok(node) if allocation.server.is_some() => self.deploy_server(uuid, node).await,
                _ => Ok(()),
            },
            Err(e) => Err(e),
        }
    }

    /// Clears a claim made for an allocation that no longer exists.
    async fn unclaim(&self, node: Uuid, allocation: Uuid) -> Result<(), StoreError> {
        let Some(mut n) = self.store.get_node_by_uuid(node).await? else {
            return Ok(());
        };
        if n.allocation_uuid == Some(allocation) {
            n.allocation_uuid = None;
            if n.instance_uuid == Some(allocation) {
                n.instance_uuid = None;
            }
            self.save(
                &mut n,
                &TaskFlags {
                    instance_changed: true,
                    ..TaskFlags::default()
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Ironic's candidate rule (plus Ingot's minimum properties: `flavors::matching`);
    /// returns the claimed node or the reason none was found.
    async fn pick_and_claim(
        &self,
        allocation: &Allocation,
    ) -> Result<Result<Uuid, String>, StoreError> {
        let query = NodeQuery {
            provision_state: Some("available".to_owned()),
            resource_class: allocation.resource_class.clone(),
            maintenance: Some(false),
            associated: Some(false),
            ..NodeQuery::default()
        };
        let listed: Vec<Node> = self.store.list_nodes(&query).await?;
        let mut nodes = match candidates(allocation, listed) {
            Ok(nodes) => nodes,
            Err(reason) => return Ok(Err(reason)),
        };
        nodes.shuffle(&mut rand::rng());
        if let Some(name) = &allocation.name
            && let Some(pos) = nodes.iter().position(|n| n.name.as_ref() == Some(name))
        {
            let preferred = nodes.remove(pos);
            nodes.insert(0, preferred);
        }
        for node in nodes {
            if self.store.claim_node(node.uuid, allocation.uuid).await? {
                return Ok(Ok(node.uuid));
            }
        }
        Ok(Err(
            "all nodes were filtered out during reservation process. The next attempt may \
                succeed"
                .to_owned(),
        ))
    }
}
