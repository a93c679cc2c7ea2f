//! Wait-state timers: how long each wait may last, arming, re-arming (on every sign of life
//! from the agent, so the timeout counts from its last report) and cancelling the per-node
//! timer, and failing a node whose wait ran out (split from `task.rs`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conductor;
use crate::machine::{Event, NodeView, Phase, StateKind};
use crate::store::StoreError;

/// How much later than the last sign heard here another replica's record must be to
/// count (this replica's own signs are recorded a moment after it hears them).
const HEARD_ELSEWHERE_MARGIN_SECS: i64 = 10;

impl Conductor {
    pub(super) fn wait_timeout(&self, phase: Phase) -> Duration {
        match phase {
            Phase::Inspect => self
                .config
                .inspect_wait_timeout
                .unwrap_or(self.config.callback_timeout),
            _ => self.config.callback_timeout,
        }
    }

    /// Arms the timer that fails a wait state left unanswered. `marker` is the node's
    /// `provision_updated_at` when it entered the wait: a timer whose marker no longer
    /// matches does nothing.
    pub(super) fn arm_wait_timer(&self, node: Uuid, phase: Phase, marker: Option<DateTime<Utc>>) {
        if self
            .shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
        {
            // The next start fails the node; a timer now would only delay shutdown.
            return;
        }
        let deadline = self.config.clock.now() + self.wait_timeout(phase);
        let heard_here = Utc::now();
        let this = self.arc();
        let handle = self.spawn(async move {
            if this.sleep_until_timed_out(node, marker, deadline).await {
                if this.heard_elsewhere(node, heard_here).await {
                    this.arm_wait_timer(node, phase, marker);
                    return;
                }
                this.wait_timed_out(node, marker).await;
            }
        });
        let old = self.lock_timers().insert(
            node,
            super::WaitTimer {
                marker,
                phase,
                deadline,
                heard_here,
                handle,
            },
        );
        if let Some(old) = old {
            old.handle.abort();
        }
    }

    /// Sleeps until the wait's deadline, following it while heartbeats move it on. True
    /// when it ran out (the entry is then gone from the map, so nothing aborts the
    /// time-out that follows); false when the timer was replaced or cancelled.
    async fn sleep_until_timed_out(
        &self,
        node: Uuid,
        marker: Option<DateTime<Utc>>,
        mut deadline: tokio::time::Instant,
    ) -> bool {
        loop {
            self.config.clock.sleep_until(deadline).await;
            let mut timers = self.lock_timers();
            match timers.get(&node) {
                Some(t) if t.marker == marker => {
                    if t.deadline > self.config.clock.now() {
                        deadline = t.deadline;
                        continue;
                    }
                    timers.remove(&node);
                    return true;
                }
                _ => return false,
            }
        }
    }

    /// The agent of `node` showed a sign of life (lookup, heartbeat, event): a wait the
    /// node is in starts its timeout again, so the timeout counts from the agent's last
    /// report, as Ironic's heartbeats reset its callback timer. Returns whether a wait
    /// timer was moved on.
    pub fn agent_alive(&self, node: Uuid) -> bool {
        let timeout_of = |phase| self.wait_timeout(phase);
        let mut timers = self.lock_timers();
        let Some(timer) = timers.get_mut(&node) else {
            return false;
        };
        timer.deadline = self.config.clock.now() + timeout_of(timer.phase);
        timer.heard_here = Utc::now();
        true
    }

    /// With replicas, the agent may talk to another one: its signs of life there are
    /// recorded with the session (every few seconds). True when one is recorded clearly
    /// after the last heard here (`heard_here`), so the wait goes on. One process alone
    /// hears every sign itself and never asks (its tests' manual clocks stay exact).
    async fn heard_elsewhere(&self, node: Uuid, heard_here: DateTime<Utc>) -> bool {
        if !self.store.is_shared() {
            return false;
        }
        let Some(hub) = self.drivers.agent_hub() else {
            return false;
        };
        match hub.last_seen(node).await {
            Ok(Some(seen)) => {
                seen > heard_here + chrono::Duration::seconds(HEARD_ELSEWHERE_MARGIN_SECS)
            }
            Ok(None) => false,
            Err(e) => {
                // Failing a live deploy on a database hiccup is worse than waiting longer.
                tracing::warn!(node = %node, error = %e, "reading the agent's last sign of life failed");
                true
            }
        }
    }

    pub(super) fn lock_timers(&self) -> std::sync::MutexGuard<'_, super::WaitTimers> {
        self.wait_timers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cancels a node's wait timer (only the one with `marker`, when given).
    pub(super) fn cancel_wait_timer(&self, node: Uuid, marker: Option<Option<DateTime<Utc>>>) {
        let mut timers = self.lock_timers();
        let matches = timers
            .get(&node)
            .is_some_and(|t| marker.is_none_or(|want| t.marker == want));
        if matches && let Some(timer) = timers.remove(&node) {
            timer.handle.abort();
        }
    }

    /// Fails the node whose wait ran out, if it still waits in the same wait.
    pub(super) async fn wait_timed_out(self: Arc<Self>, uuid: Uuid, marker: Option<DateTime<Utc>>) {
        for _ in 0..600 {
            match self.store.reserve_node(uuid, &self.config.name).await {
                Ok(node) => {
                    let still_waiting = NodeView::from_node(&node)
                        .is_ok_and(|v| v.provision_state.kind() == StateKind::Wait)
                        && node.provision_updated_at == marker;
                    if !still_waiting {
                        self.release(uuid).await;
                        return;
                    }
                    match self.begin_event(node, Event::Timeout).await {
                        Ok(run) => self.clone().run_guarded(uuid, run).await,
                        Err(err) => {
                            tracing::error!(node = %uuid, error = %err, "timing out a wait failed");
                            self.release(uuid).await;
                        }
                    }
                    return;
                }
                Err(StoreError::Locked { .. }) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(StoreError::NotFound { .. }) => return,
                Err(err) => {
                    tracing::error!(node = %uuid, error = %err, "timing out a wait failed");
                    return;
                }
            }
        }
    }
}
