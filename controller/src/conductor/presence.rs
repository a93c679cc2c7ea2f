//! The conductor's row in the `conductors` table: registered at start, a heartbeat every
//! `heartbeat_interval`, offline at a clean stop. `/v1/conductors` reads it; a replica
//! whose heartbeat is older than `heartbeat_timeout` is offline.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use chrono::Utc;

use super::Conductor;
use crate::model::ConductorRecord;

/// Heartbeats between two sweeps for unadopted nodes of offline replicas (30 s at the
/// default interval).
const TAKEOVER_SWEEP_EVERY: u64 = 10;

impl Conductor {
    /// This conductor as it registers itself now.
    fn record(&self) -> ConductorRecord {
        let now = Utc::now();
        ConductorRecord {
            hostname: self.config.name.clone(),
            conductor_group: self.config.conductor_group.clone(),
            drivers: self.drivers.list().map(|h| h.name.clone()).collect(),
            listen: self.config.listen.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            online: true,
            started_at: now,
            created_at: now,
            updated_at: now,
        }
    }

    /// Registers this conductor and starts its heartbeat.
    ///
    /// On a shared database (PostgreSQL) a live row of the same name is another replica
    /// configured with this `conductor_name`, or this one's previous run that was killed:
    /// the conductor watches the row for two heartbeat intervals and refuses to start when
    /// it still moves.
    pub(super) async fn register(self: &Arc<Self>) -> anyhow::Result<()> {
        let name = &self.config.name;
        let find = || async {
            let rows = self
                .store
                .list_conductors()
                .await
                .context("reading the conductors table")?;
            anyhow::Ok(rows.into_iter().find(|c| &c.hostname == name))
        };
        if self.store.is_shared()
            && let Some(seen) = find().await?
            && seen.alive(Utc::now(), self.config.heartbeat_timeout)
        {
            tracing::info!(conductor = %name, "a live conductor of this name is registered; watching its heartbeat");
            tokio::time::sleep(self.config.heartbeat_interval * 2).await;
            if let Some(now) = find().await?
                && now.online
                && now.updated_at != seen.updated_at
            {
                bail!(
                    "another ingot serve runs as conductor {name:?} on this database (its \
                     heartbeat is current): give each replica its own conductor_name"
                );
            }
        }
        self.store
            .register_conductor(&self.record())
            .await
            .context("registering the conductor")?;
        tracing::info!(conductor = %name, group = %self.config.conductor_group, "conductor registered");
        self.refresh_live().await;
        self.every(self.config.heartbeat_interval, |this| async move {
            this.heartbeat().await;
        });
        Ok(())
    }

    /// Re-reads which conductors live (the ownership of nodes follows). Returns the
    /// replicas newly seen offline since the last read.
    async fn refresh_live(&self) -> Vec<String> {
        let now = Utc::now();
        match self.store.list_conductors().await {
            Ok(rows) => {
                let mut live: HashMap<String, Vec<String>> = HashMap::new();
                let mut dead = HashSet::new();
                for c in rows {
                    if c.alive(now, self.config.heartbeat_timeout) {
                        live.entry(c.conductor_group).or_default().push(c.hostname);
                    } else if c.hostname != self.config.name {
                        dead.insert(c.hostname);
                    }
                }
                let newly_dead: Vec<String> = {
                    let mut seen = self.dead_seen.lock().unwrap_or_else(|e| e.into_inner());
                    let newly = dead.difference(&seen).cloned().collect();
                    *seen = dead;
                    newly
                };
                let mut mine = self.live.lock().unwrap_or_else(|e| e.into_inner());
                if *mine != live {
                    tracing::info!(live = ?live, "live conductors changed");
                    *mine = live;
                }
                newly_dead
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the live conductors failed");
                Vec::new()
            }
        }
    }

    /// A replica's heartbeat stopped: its node locks are released and the nodes it was
    /// working on are failed with a reason that names it (`takeover`).
    async fn take_over(self: &Arc<Self>, dead: &[String]) {
        for name in dead {
            match self.store.release_all(name).await {
                Ok(released) => tracing::warn!(
                    conductor = %name,
                    released = released.len(),
                    "a conductor went offline; taking over its nodes"
                ),
                Err(e) => {
                    tracing::warn!(conductor = %name, error = %e, "releasing an offline conductor's locks failed")
                }
            }
        }
        if let Err(e) = self
            .recover_interrupted(super::takeover::Pass::Takeover)
            .await
        {
            tracing::warn!(error = %e, "taking over an offline conductor's nodes failed");
        }
    }

    async fn heartbeat(self: &Arc<Self>) {
        let newly_dead = self.refresh_live().await;
        if !newly_dead.is_empty() {
            self.take_over(&newly_dead).await;
        } else if self.sweep_due() {
            // A takeover pass can miss a node (its lock was held at that moment, or the
            // ring gave it to a survivor that died too): look again now and then, so no wait
            // of an offline replica stays without a timer.
            if let Err(e) = self
                .recover_interrupted(super::takeover::Pass::Takeover)
                .await
            {
                tracing::warn!(error = %e, "sweeping for nodes of offline conductors failed");
            }
        }
        let name = &self.config.name;
        match self.store.touch_conductor(name, true, Utc::now()).await {
            Ok(true) => {}
            // Deleted behind our back (an operator's cleanup): register again.
            Ok(false) => {
                if let Err(e) = self.store.register_conductor(&self.record()).await {
                    tracing::warn!(conductor = %name, error = %e, "re-registering the conductor failed");
                }
            }
            Err(e) => tracing::warn!(conductor = %name, error = %e, "conductor heartbeat failed"),
        }
    }

    /// Every [`TAKEOVER_SWEEP_EVERY`]th heartbeat while some replica is known offline.
    fn sweep_due(&self) -> bool {
        let beat = self
            .beats
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        beat.is_multiple_of(TAKEOVER_SWEEP_EVERY)
            && !self
                .dead_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// A clean stop: the row says offline at once (others need not wait for the timeout).
    pub(super) async fn unregister(&self) {
        if let Err(e) = self
            .store
            .touch_conductor(&self.config.name, false, Utc::now())
            .await
        {
            tracing::warn!(conductor = %self.config.name, error = %e, "marking the conductor offline failed");
        }
    }
}
