//! Servers (`/v1/ingot/servers`): once a server's allocation has claimed a node, deploy the
//! requested image with a config drive carrying the user's SSH keys and user data; delete a
//! server by undeploying its node; and, at start-up, deploy servers whose node was claimed
//! by a previous run that stopped before the deploy began.
//!
//! The server is its allocation (`Allocation::server`); the config drive is built here from
//! it and goes only into the node's `instance_info` (the deploy path Ironic's API uses), after
//! which the allocation keeps no user data.

use std::sync::Arc;

use chrono::Utc;
use tracing::Instrument as _;
use uuid::Uuid;

use super::task::TaskFlags;
use super::{Conductor, ConductorError, ProvisionRequest};
use crate::machine::{self, Event, NodeView, Verb};
use crate::model::{Allocation, Node};
use crate::store::{AllocationQuery, StoreError};

/// How long a server's deploy waits for its node's lock before the server fails.
const SERVER_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Conductor {
    /// Starts the deploy of a server whose allocation holds `node`. Does nothing when the
    /// allocation is gone, is no server, or its deploy started already; a deploy that
    /// cannot start is recorded on the server (its `error`), never retried silently.
    pub(super) async fn deploy_server(
        self: &Arc<Self>,
        allocation: Uuid,
        node: Uuid,
    ) -> Result<(), StoreError> {
        // Shutting down: the next start deploys it (`recover_servers`).
        if self.check_running().is_err() {
            return Ok(());
        }
        let locked = match self.reserve_patiently(node).await {
            Ok(n) => n,
            Err(err) => {
                let why = format!("Could not lock node {node} to deploy it: {err}");
                return self.server_failed(allocation, why).await;
            }
        };
        // Under the node's lock: a delete of the server takes the same lock first.
        let current = self.store.get_allocation(&allocation.to_string()).await?;
        let pending = current.filter(|a| {
            a.state == "active"
                && a.node_uuid == Some(node)
                && a.server
                    .as_ref()
                    .is_some_and(|s| !s.deploy_started && s.error.is_none())
        });
        let Some(mut record) = pending else {
            self.release(node).await;
            return Ok(());
        };
        if locked.allocation_uuid != Some(allocation) || locked.provision_state != "available" {
            self.release(node).await;
            return Ok(());
        }
        let started = self.begin_server_deploy(locked, &record).await;
        let Some(spec) = record.server.as_mut() else {
            return Ok(());
        };
        match started {
            Ok(()) => {
                tracing::info!(server = %allocation, node = %node, image = %spec.image, "server deploy started");
                spec.deploy_started = true;
                spec.user_data = None;
            }
            Err(err) => {
                self.release(node).await;
                tracing::warn!(server = %allocation, node = %node, error = %err, "server deploy could not start");
                spec.error = Some(format!(
                    "Could not start deploying image {} on node {node}: {err}",
                    spec.image
                ));
            }
        }
        record.updated_at = Some(Utc::now());
        match self.store.update_allocation(&record).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The node's lock for a server's deploy: a short task holding it (a power sync, an
    /// operator's edit) is waited for, up to [`SERVER_LOCK_WAIT`].
    async fn reserve_patiently(&self, node: Uuid) -> Result<Node, ConductorError> {
        let deadline = tokio::time::Instant::now() + SERVER_LOCK_WAIT;
        loop {
            match self.reserve(node).await {
                Err(ConductorError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }

    /// Sets the image and starts the deploy verb on the locked node (which stays locked by
    /// the deploy task on success).
    async fn begin_server_deploy(
        self: &Arc<Self>,
        mut node: Node,
        record: &Allocation,
    ) -> Result<(), ConductorError> {
        let Some(spec) = &record.server else {
            return Err(ConductorError::BadRequest("not a server".to_owned()));
        };
        let hostname = record
            .name
            .clone()
            .or_else(|| node.name.clone())
            .unwrap_or_else(|| format!("server-{}", &record.uuid.simple().to_string()[..8]));
        node.instance_info.insert(
            "image_source".into(),
            format!("{}{}", crate::images::resolve::SCHEME, spec.image).into(),
        );
        node.instance_name = record.name.clone();
        let mut req = ProvisionRequest::new(Verb::Deploy);
        req.configdrive = Some(crate::servers::config_drive(record.uuid, &hostname, spec));
        let view = NodeView::from_node(&node).map_err(|e| ConductorError::BadRequest(e.0))?;
        machine::step(&view, &Event::Verb(req.verb), Utc::now())?;
        self.check_request(&node, &req)?;
        let uuid = node.uuid;
        let run = self.begin_verb(node, &req).await?;
        let this = self.clone();
        let span = tracing::info_span!("node_task", node = %uuid);
        self.spawn(async move { this.run_guarded(uuid, run).await }.instrument(span));
        Ok(())
    }

    /// Records why a server's deploy did not start.
    async fn server_failed(&self, allocation: Uuid, why: String) -> Result<(), StoreError> {
        let Some(mut record) = self.store.get_allocation(&allocation.to_string()).await? else {
            return Ok(());
        };
        if let Some(spec) = record.server.as_mut() {
            tracing::warn!(server = %allocation, reason = %why, "server deploy could not start");
            spec.error = Some(why);
            record.updated_at = Some(Utc::now());
            match self.store.update_allocation(&record).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes a server: its node is undeployed (`deleted`; the allocation goes when the
    /// teardown ends), a claimed node that was never deployed is given back, and a server
    /// without a node is simply removed.
    pub async fn delete_server(&self, record: &Allocation) -> Result<(), ConductorError> {
        self.check_running()?;
        if let Some(node_uuid) = record.node_uuid
            && let Some(node) = self.store.get_node_by_uuid(node_uuid).await?
            && node.allocation_uuid == Some(record.uuid)
        {
            match node.provision_state.as_str() {
                // Already on its way out.
                "deleting" | "cleaning" | "clean wait" => return Ok(()),
                "available" => return self.release_server_node(record, node_uuid).await,
                _ => {
                    tracing::info!(server = %record.uuid, node = %node_uuid, "server delete: undeploying");
                    return self
                        .provision(node_uuid, ProvisionRequest::new(Verb::Undeploy))
                        .await;
                }
            }
        }
        match self.store.delete_allocation(record.uuid).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives back a node a server claimed but never deployed, and deletes the server, under
    /// the node's lock (so a deploy about to start finds the server gone).
    async fn release_server_node(
        &self,
        record: &Allocation,
        node: Uuid,
    ) -> Result<(), ConductorError> {
        let mut locked = self.reserve(node).await?;
        let result = async {
            if locked.provision_state != "available" {
                return Err(ConductorError::Locked {
                    node,
                    holder: "a deploy that just started".to_owned(),
                });
            }
            if locked.allocation_uuid == Some(record.uuid) {
                locked.allocation_uuid = None;
                if locked.instance_uuid == Some(record.uuid) {
                    locked.instance_uuid = None;
                }
                locked.instance_info.clear();
                locked.instance_name = None;
                let flags = TaskFlags {
                    instance_changed: true,
                    ..TaskFlags::default()
                };
                self.save(&mut locked, &flags).await?;
            }
            match self.store.delete_allocation(record.uuid).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        .await;
        self.release(node).await;
        result
    }

    /// Start-up: servers whose allocation claimed a node before the restart but whose
    /// deploy never began (the previous run stopped in between) are deployed now. Servers
    /// whose deploy was interrupted show the node's failure (`recover_interrupted`).
    pub(super) async fn recover_servers(
        self: &Arc<Self>,
        started_at: chrono::DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let active = self
            .store
            .list_allocations(&AllocationQuery {
                state: Some("active".to_owned()),
                ..AllocationQuery::default()
            })
            .await?;
        for a in active {
            let waiting = a
                .server
                .as_ref()
                .is_some_and(|s| !s.deploy_started && s.error.is_none());
            let before = a.updated_at.unwrap_or(a.created_at) < started_at;
            if let (true, true, Some(node)) = (waiting, before, a.node_uuid) {
                tracing::info!(server = %a.uuid, node = %node, "deploying a server claimed before the restart");
                self.deploy_server(a.uuid, node).await?;
            }
        }
        Ok(())
    }
}
