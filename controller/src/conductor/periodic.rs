//! Start-up (registration, see `presence`), recovery and the periodic power-state sync.

use std::sync::Arc;

use anyhow::Context as _;
use uuid::Uuid;

use super::Conductor;
use super::takeover::Recovery;
use super::task::TaskFlags;
use crate::drivers::PowerState;
use crate::machine::{Event, NodeView, ProvisionState, StateKind};
use crate::model::Node;
use crate::store::{AllocationQuery, NodeQuery, StoreError};

impl Conductor {
    /// Start-up: releases locks this conductor held before a restart, then (in the
    /// background, so the API answers at once) fails nodes left in transient or wait states
    /// and processes pending allocations, and starts the power sync.
    ///
    /// Deferring the recovery is safe: a verb on a node still in a transient state is
    /// refused by the machine, and an agent result that arrives first for a node in a wait
    /// state is simply processed (the recovery then finds the node locked or moved on).
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        self.register().await?;
        // Locks of replicas that are not alive (a killed run of another name): released, so
        // the recovery below can fail what they were doing.
        let dead: Vec<String> = self
            .dead_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for name in dead {
            let released = self
                .store
                .release_all(&name)
                .await
                .context("releasing node locks of offline conductors")?;
            if !released.is_empty() {
                tracing::warn!(conductor = %name, count = released.len(), "released node locks of an offline conductor");
            }
        }
        let released = self
            .store
            .release_all(&self.config.name)
            .await
            .context("releasing node locks held before a restart")?;
        if !released.is_empty() {
            tracing::info!(
                count = released.len(),
                "released node locks left by a previous run"
            );
        }
        let started_at = chrono::Utc::now();
        let this = self.clone();
        self.spawn(async move {
            if let Err(err) = this.recover(started_at).await {
                tracing::error!(error = %format!("{err:#}"), "start-up recovery failed");
            }
        });
        let interval = self.config.power_sync_interval;
        if !interval.is_zero() {
            self.every(interval, |this| async move {
                if let Err(err) = this.sync_power_states().await {
                    tracing::warn!(error = %err, "power state sync failed");
                }
            });
        }
        Ok(())
    }

    /// The deferred part of [`Conductor::start`].
    async fn recover(
        self: &Arc<Self>,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        self.recover_interrupted(super::takeover::Pass::Start { started_at })
            .await
            .context("recovering interrupted node tasks")?;
        let pending = self
            .store
            .list_allocations(&AllocationQuery {
                state: Some("allocating".to_owned()),
                ..AllocationQuery::default()
            })
            .await
            .context("listing pending allocations")?;
        // An allocation created after the start was handed to `process_allocation` by the
        // API already; processing it twice would let the loser overwrite the winner's claim.
        for allocation in pending.into_iter().filter(|a| a.created_at < started_at) {
            self.process_allocation(allocation.uuid);
        }
        self.recover_servers(started_at)
            .await
            .context("deploying servers claimed before the restart")?;
        Ok(())
    }

    /// Recovers the nodes whose operation was interrupted (`takeover::recovery`): at start
    /// this conductor's own and those of replicas that are not alive; in a takeover pass a
    /// dead replica's (waits only where this conductor owns the node on the ring, so the
    /// survivors share them). Waits are adopted, transient states failed. A node that
    /// entered its state after `started_at` was put there by this run (the API answers
    /// while recovery runs) and is left alone.
    pub(super) async fn recover_interrupted(
        self: &Arc<Self>,
        pass: super::takeover::Pass,
    ) -> Result<(), StoreError> {
        let now = chrono::Utc::now();
        let live: std::collections::HashSet<String> = self
            .store
            .list_conductors()
            .await?
            .into_iter()
            .filter(|c| c.alive(now, self.config.heartbeat_timeout))
            .map(|c| c.hostname)
            .collect();
        let states = ProvisionState::ALL
            .into_iter()
            .filter(|s| matches!(s.kind(), StateKind::Transient | StateKind::Wait));
        for state in states {
            let query = NodeQuery {
                provision_state: Some(state.as_str().to_owned()),
                ..NodeQuery::default()
            };
            for node in self.store.list_nodes(&query).await? {
                match super::takeover::recovery(&node, &self.config.name, &live, pass) {
                    None => {}
                    Some(Recovery::Adopt { from }) => {
                        let own_share = from == self.config.name || self.owns(&node);
                        if own_share {
                            self.adopt_node(node.uuid, state, node.provision_updated_at, &from)
                                .await;
                        }
                    }
                    Some(Recovery::Fail(reason)) => {
                        self.recover_node(node.uuid, state, node.provision_updated_at, reason)
                            .await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Keeps a wait of an interrupted run going under this conductor: stamps it (one
    /// transition commit with a history line) and arms its timer, a full timeout from now.
    /// The agent's session and commands are in the database, so its next heartbeat and
    /// result reach this replica (or any other) as if nothing happened.
    async fn adopt_node(
        self: &Arc<Self>,
        uuid: Uuid,
        state: ProvisionState,
        listed_at: Option<chrono::DateTime<chrono::Utc>>,
        from: &str,
    ) {
        let mut node = match self.store.reserve_node(uuid, &self.config.name).await {
            Ok(node) => node,
            Err(err) => {
                tracing::warn!(node = %uuid, error = %err, "cannot lock a wait to adopt");
                return;
            }
        };
        let moved_on = node.provision_state != state.as_str()
            || node.provision_updated_at != listed_at
            || super::takeover::affinity(&node).is_some_and(|a| a != from);
        let Some(phase) = state.phase().filter(|_| !moved_on) else {
            self.release(uuid).await;
            return;
        };
        let text = if from == self.config.name {
            format!(
                "Conductor {from} restarted; the node keeps waiting in \"{state}\" for its agent"
            )
        } else {
            format!(
                "Conductor {from} went offline; {} took over the node, which keeps waiting in \"{state}\" for its agent",
                self.config.name
            )
        };
        let event = self.history_event(uuid, chrono::Utc::now(), "info", "takeover", text);
        let flags = TaskFlags::default();
        match self.save_with(&mut node, &flags, Some(&event), true).await {
            Ok(()) => {
                tracing::warn!(node = %uuid, from = %from, state = %state, "adopted a wait of an interrupted conductor");
                self.arm_wait_timer(uuid, phase, node.provision_updated_at);
            }
            Err(err) => {
                tracing::error!(node = %uuid, error = %err, "adopting a wait failed");
                self.release(uuid).await;
            }
        }
    }

    async fn recover_node(
        self: &Arc<Self>,
        uuid: Uuid,
        state: ProvisionState,
        listed_at: Option<chrono::DateTime<chrono::Utc>>,
        reason: String,
    ) {
        let node = match self.store.reserve_node(uuid, &self.config.name).await {
            Ok(node) => node,
            Err(err) => {
                tracing::warn!(node = %uuid, error = %err, "cannot lock interrupted node");
                return;
            }
        };
        // Recovery runs beside the API (and another replica's takeover): a node moved on
        // since it was listed (an agent result came first) is live, not interrupted.
        if node.provision_state != state.as_str() || node.provision_updated_at != listed_at {
            self.release(uuid).await;
            return;
        }
        tracing::warn!(node = %uuid, reason = %reason, "failing an interrupted operation");
        match self.begin_event(node, Event::Failed(reason)).await {
            Ok(run) => self.clone().run_guarded(uuid, run).await,
            Err(err) => {
                tracing::error!(node = %uuid, error = %err, "failing interrupted node failed");
                self.release(uuid).await;
            }
        }
    }

    /// One round of the power-state sync: reads the power state of every resting, unlocked
    /// node this conductor owns and records what changed; it never touches `last_error`.
    /// The reads are spread over three quarters of the sync interval ([`power_sync_gap`])
    /// with at most [`POWER_SYNC_WORKERS`] at once, so 10,000 nodes make a steady trickle of
    /// BMC calls rather than a burst (and a slow BMC holds up only its own worker).
    pub async fn sync_power_states(self: &Arc<Self>) -> Result<(), StoreError> {
        let nodes: Vec<Node> = self
            .store
            .list_nodes(&NodeQuery::default())
            .await?
            .into_iter()
            .filter(|n| n.reservation.is_none() && n.target_power_state.is_none())
            // Each node is read by its owner only (one BMC call per node per interval).
            .filter(|n| self.owns(n))
            .filter(|n| {
                NodeView::from_node(n).is_ok_and(|v| {
                    !matches!(
                        v.provision_state.kind(),
                        StateKind::Transient | StateKind::Wait
                    )
                })
            })
            .collect();
        let gap = power_sync_gap(nodes.len(), self.config.power_sync_interval);
        let workers = Arc::new(tokio::sync::Semaphore::new(POWER_SYNC_WORKERS));
        let mut running = tokio::task::JoinSet::new();
        let start = tokio::time::Instant::now();
        for (i, node) in nodes.into_iter().enumerate() {
            tokio::time::sleep_until(start + gap * u32::try_from(i).unwrap_or(u32::MAX)).await;
            let Ok(permit) = workers.clone().acquire_owned().await else {
                break;
            };
            let this = self.clone();
            running.spawn(async move {
                let _permit = permit;
                this.sync_one(node).await
            });
        }
        let mut first_err = None;
        while let Some(done) = running.join_next().await {
            if let Ok(Err(e)) = done {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Reads one node's power state and records it when it changed.
    async fn sync_one(&self, node: Node) -> Result<(), StoreError> {
        let Ok(drivers) = self.drivers.resolve(&node) else {
            return Ok(());
        };
        let state = match drivers.power.get_power_state(&node).await {
            Ok(Some(state)) => state,
            Ok(None) => return Ok(()),
            Err(err) => {
                tracing::warn!(node = %node.uuid, error = %err, "reading power state failed");
                return Ok(());
            }
        };
        if node.power_state.as_deref() == Some(state.as_str()) {
            return Ok(());
        }
        self.record_power_state(node.uuid, state).await
    }

    async fn record_power_state(&self, uuid: Uuid, state: PowerState) -> Result<(), StoreError> {
        let mut node = match self.store.reserve_node(uuid, &self.config.name).await {
            Ok(node) => node,
            Err(StoreError::Locked { .. } | StoreError::NotFound { .. }) => return Ok(()),
            Err(err) => return Err(err),
        };
        let result = async {
            if node.target_power_state.is_none() && node.power_state.as_deref() != Some(state.as_str()) {
                tracing::info!(node = %uuid, from = ?node.power_state, to = state.as_str(), "power state sync");
                node.power_state = Some(state.as_str().to_owned());
                self.save(&mut node, &TaskFlags::default()).await?;
            }
            Ok(())
        }
        .await;
        self.release(uuid).await;
        result
    }
}

/// BMC power reads a sync round runs at once (Ironic's `sync_power_state_workers`).
pub const POWER_SYNC_WORKERS: usize = 8;

/// PURE: the pause between the starts of `n` power reads so that they spread over three
/// quarters of `interval` (the rest is slack for slow BMCs before the next round).
pub fn power_sync_gap(n: usize, interval: std::time::Duration) -> std::time::Duration {
    match u32::try_from(n) {
        Ok(0 | 1) => std::time::Duration::ZERO,
        Ok(n) => interval * 3 / 4 / n,
        Err(_) => std::time::Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn power_reads_spread_over_three_quarters_of_the_interval() {
        let minute = Duration::from_secs(60);
        let rows = [
            (0, minute, Duration::ZERO),
            (1, minute, Duration::ZERO),
            (2, minute, Duration::from_millis(22_500)),
            (45, minute, Duration::from_secs(1)),
            (10_000, minute, Duration::from_micros(4_500)),
            (10_000, Duration::ZERO, Duration::ZERO),
        ];
        for (n, interval, gap) in rows {
            assert_eq!(power_sync_gap(n, interval), gap, "{n} nodes, {interval:?}");
            // The last read starts inside the first three quarters.
            assert!(gap * u32::try_from(n.max(1) - 1).expect("n") <= interval * 3 / 4);
        }
    }
}
