//! `/metrics` in the Prometheus text format (`prometheus-client`).
//!
//! Three sources: the conductor's node events ([`Metrics`] is a [`NodeEvents`] sink:
//! transitions, failures and phase durations), the API middleware (requests by route,
//! method and status, and their latency), and what is read when Prometheus scrapes (nodes by
//! provision and power state from the store, DHCP counters, webhook deliveries). Route
//! labels come from [`route_of`], which folds every node, port or allocation name into a
//! placeholder, so no request can create a label of its own.

mod ops;
mod route;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use uuid::Uuid;

use crate::conductor::Conductor;
use crate::drivers::DriverError;
use crate::drivers::measured::CallObserver;
use crate::events::{NodeEvent, NodeEvents};
use crate::hub::AgentHub;
use crate::machine::ProvisionState;
use crate::netboot::dhcp::server::{DhcpCounters, DhcpServer};
use crate::netboot::tftp::TftpCounters;
use crate::store::Store;
use crate::webhooks::HookStats;
pub use ops::failure_class;
use ops::{Ops, Scraped};
pub use route::route_of;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    phase: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    webhook: String,
    outcome: String,
}

/// Buckets of phase durations (seconds): 1 s to about 4.5 h.
fn phase_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 15)
}

/// Buckets of API latencies (seconds): 0.5 ms to about 8 s.
fn api_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 15)
}

/// Values copied from a counter that lives elsewhere at scrape time: the last value seen,
/// so the Prometheus counter grows by the difference.
#[derive(Debug, Default)]
struct Deltas(Mutex<HashMap<String, u64>>);

impl Deltas {
    fn advance(&self, key: &str, now: u64, counter: &Counter) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let last = seen.insert(key.to_owned(), now).unwrap_or(0);
        counter.inc_by(now.saturating_sub(last));
    }
}

/// Every metric family and the sources read at scrape time.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    transitions: Family<TransitionLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    phase_seconds: Family<PhaseLabels, Histogram>,
    api_requests: Family<ApiLabels, Counter>,
    api_seconds: Family<RouteLabels, Histogram>,
    nodes: Family<StateLabels, Gauge>,
    nodes_power: Family<StateLabels, Gauge>,
    dhcp: Family<KindLabels, Counter>,
    webhooks: Family<HookLabels, Counter>,
    ops: Ops,
    /// When each node entered the phase it is in.
    phase_started: Mutex<HashMap<Uuid, (String, DateTime<Utc>)>>,
    sources: Mutex<Sources>,
    deltas: Deltas,
}

#[derive(Debug, Default)]
struct Sources {
    dhcp: Option<Arc<DhcpCounters>>,
    dhcp_server: Option<Arc<DhcpServer>>,
    tftp: Option<Arc<TftpCounters>>,
    webhooks: Vec<(String, Arc<HookStats>)>,
    hub: Option<Arc<AgentHub>>,
    /// Weak: the conductor holds the metrics (as its event sink).
    conductor: Option<Weak<Conductor>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ingot");
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "node_transitions",
            "Provision-state changes by previous and new state",
            transitions.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "node_failures",
            "Nodes that entered a failure state (* failed, error), by phase and error class",
            failures.clone(),
        );
        let phase_seconds = Family::<PhaseLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(phase_buckets())
        });
        registry.register(
            "phase_duration_seconds",
            "Time a node spent in a phase (inspect, clean, deploy, ...) until it left it",
            phase_seconds.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Operator API requests by method, route and status",
            api_requests.clone(),
        );
        let api_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(
                || Histogram::new(api_buckets()),
            );
        registry.register(
            "api_request_duration_seconds",
            "Operator API latency by route",
            api_seconds.clone(),
        );
        let nodes = Family::<StateLabels, Gauge>::default();
        registry.register("nodes", "Nodes by provision state", nodes.clone());
        let nodes_power = Family::<StateLabels, Gauge>::default();
        registry.register(
            "nodes_by_power_state",
            "Nodes by power state (none: unknown)",
            nodes_power.clone(),
        );
        let dhcp = Family::<KindLabels, Counter>::default();
        registry.register(
            "dhcp_packets",
            "DHCP packets: received, replied (of which offer, ack, nak), handled, send_error, dropped_<reason>",
            dhcp.clone(),
        );
        let webhooks = Family::<HookLabels, Counter>::default();
        registry.register(
            "webhook_events",
            "Webhook events by receiver and outcome (delivered, failed, dropped, retry)",
            webhooks.clone(),
        );
        let ops = Ops::register(&mut registry);
        Self {
            registry,
            transitions,
            failures,
            phase_seconds,
            api_requests,
            api_seconds,
            nodes,
            nodes_power,
            dhcp,
            webhooks,
            ops,
            phase_started: Mutex::default(),
            sources: Mutex::default(),
            deltas: Deltas::default(),
        }
    }

    /// The DHCP server's counters, once it runs (it starts after the API).
    pub fn attach_dhcp(&self, counters: Arc<DhcpCounters>) {
        self.lock_sources().dhcp = Some(counters);
    }

    /// The DHCP server itself (its pool's free addresses).
    pub fn attach_dhcp_server(&self, server: Arc<DhcpServer>) {
        self.lock_sources().dhcp_server = Some(server);
    }

    /// The TFTP server's counters.
    pub fn attach_tftp(&self, counters: Arc<TftpCounters>) {
        self.lock_sources().tftp = Some(counters);
    }

    /// The agent hub (live sessions).
    pub fn attach_hub(&self, hub: Arc<AgentHub>) {
        self.lock_sources().hub = Some(hub);
    }

    /// The conductor (deploy and clean queues).
    pub fn attach_conductor(&self, conductor: &Arc<Conductor>) {
        self.lock_sources().conductor = Some(Arc::downgrade(conductor));
    }

    /// An agent's progress report for `command` (bytes so far in its current job).
    pub fn agent_progress(&self, command: Uuid, phase: &str, bytes_written: u64, rate_bps: u64) {
        self.ops
            .agent_progress(command, phase, bytes_written, rate_bps);
    }

    /// An agent command's result was stored (`final_bytes`: what it says it wrote).
    pub fn agent_done(&self, command: Uuid, phase: &str, final_bytes: Option<u64>) {
        self.ops.agent_done(command, phase, final_bytes);
    }

    /// The webhooks' counters.
    pub fn attach_webhooks(&self, stats: Vec<(String, Arc<HookStats>)>) {
        self.lock_sources().webhooks = stats;
    }

    fn lock_sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One operator API request (`path` is folded by [`route_of`]).
    pub fn api_request(&self, method: &str, path: &str, status: u16, took: Duration) {
        let route = route_of(path);
        self.api_requests
            .get_or_create(&ApiLabels {
                method: method.to_owned(),
                route: route.clone(),
                status,
            })
            .inc();
        self.api_seconds
            .get_or_create(&RouteLabels { route })
            .observe(took.as_secs_f64());
    }

    /// Reads the scrape-time sources and encodes every family.
    pub async fn render(&self, store: &dyn Store) -> anyhow::Result<String> {
        let mut by_state: HashMap<String, i64> = HashMap::new();
        let mut by_power: HashMap<String, i64> = HashMap::new();
        for c in store.count_nodes_by_state().await? {
            *by_state.entry(c.provision_state).or_default() += c.nodes;
            let power = c.power_state.unwrap_or_else(|| "none".to_owned());
            *by_power.entry(power).or_default() += c.nodes;
        }
        self.nodes.clear();
        for (state, n) in by_state {
            self.nodes.get_or_create(&StateLabels { state }).set(n);
        }
        self.nodes_power.clear();
        for (state, n) in by_power {
            self.nodes_power
                .get_or_create(&StateLabels { state })
                .set(n);
        }
        let (dhcp, hooks, dhcp_server, tftp, hub, conductor) = {
            let s = self.lock_sources();
            (
                s.dhcp.clone(),
                s.webhooks.clone(),
                s.dhcp_server.clone(),
                s.tftp.clone(),
                s.hub.clone(),
                s.conductor.as_ref().and_then(Weak::upgrade),
            )
        };
        let agent_sessions = match hub {
            Some(h) => match h.live_sessions().await {
                Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: counting agent sessions failed");
                    None
                }
            },
            None => None,
        };
        let mut scraped = Scraped {
            agent_sessions,
            queue: conductor.map(|c| c.queue_depth()),
            dhcp_pool: None,
            db_pools: store.pool_use(),
        };
        if let Some(server) = dhcp_server {
            match server.pool_addresses(SystemTime::now()).await {
                Ok(pool) => scraped.dhcp_pool = pool,
                Err(e) => tracing::warn!(error = %e, "metrics: reading the DHCP pool failed"),
            }
        }
        self.ops.refresh(&scraped);
        if let Some(t) = tftp {
            use std::sync::atomic::Ordering::Relaxed;
            for (outcome, n) in [
                ("served", t.transfers.load(Relaxed)),
                ("refused", t.refused.load(Relaxed)),
                ("unreadable", t.unreadable.load(Relaxed)),
            ] {
                let c = self.ops.tftp.get_or_create(&ops::OutcomeLabels {
                    outcome: outcome.to_owned(),
                });
                self.deltas.advance(&format!("tftp/{outcome}"), n, &c);
            }
            self.deltas
                .advance("tftp/bytes", t.bytes.load(Relaxed), &self.ops.tftp_bytes);
        }
        if let Some(d) = dhcp {
            let snap = d.snapshot();
            let mut kinds = vec![
                ("received".to_owned(), snap.received),
                ("replied".to_owned(), snap.replied),
                ("handled".to_owned(), snap.handled),
                ("send_error".to_owned(), snap.send_errors),
                ("offer".to_owned(), snap.offers),
                ("ack".to_owned(), snap.acks),
                ("nak".to_owned(), snap.naks),
            ];
            for (reason, n) in &snap.dropped {
                kinds.push((format!("dropped_{}", reason.as_str()), *n));
            }
            for (kind, n) in kinds {
                let c = self.dhcp.get_or_create(&KindLabels { kind: kind.clone() });
                self.deltas.advance(&format!("dhcp/{kind}"), n, &c);
            }
        }
        for (url, stats) in hooks {
            use std::sync::atomic::Ordering::Relaxed;
            for (outcome, n) in [
                ("delivered", stats.delivered.load(Relaxed)),
                ("failed", stats.failed.load(Relaxed)),
                ("dropped", stats.dropped.load(Relaxed)),
                ("retry", stats.retries.load(Relaxed)),
            ] {
                let c = self.webhooks.get_or_create(&HookLabels {
                    webhook: url.clone(),
                    outcome: outcome.to_owned(),
                });
                self.deltas.advance(&format!("hook/{url}/{outcome}"), n, &c);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| anyhow::anyhow!("encoding metrics: {e}"))?;
        Ok(out)
    }
}

impl CallObserver for Metrics {
    fn driver_call(
        &self,
        interface: &'static str,
        call: &'static str,
        took: Duration,
        error: Option<&DriverError>,
    ) {
        self.ops.driver_call(interface, call, took, error);
    }
}

impl NodeEvents for Metrics {
    fn publish(&self, event: NodeEvent) {
        self.transitions
            .get_or_create(&TransitionLabels {
                from: event.previous_provision_state.clone(),
                to: event.provision_state.clone(),
            })
            .inc();
        let phase_of = |s: &str| {
            s.parse::<ProvisionState>()
                .ok()
                .and_then(ProvisionState::phase)
                .map(|p| p.event_type().to_owned())
        };
        let new_phase = phase_of(&event.provision_state);
        if event.event == crate::events::NODE_FAILED {
            self.failures
                .get_or_create(&FailureLabels {
                    phase: new_phase.clone().unwrap_or_else(|| "none".to_owned()),
                    class: failure_class(event.last_error.as_deref()).to_owned(),
                })
                .inc();
        }
        let mut started = self.phase_started.lock().unwrap_or_else(|e| e.into_inner());
        let current = started.get(&event.node_uuid).map(|(p, _)| p.clone());
        if current == new_phase {
            return;
        }
        // A failure state belongs to its phase; the phase ends when the node leaves it.
        if let Some((phase, since)) = started.remove(&event.node_uuid) {
            let secs = (event.at - since).num_milliseconds().max(0) as f64 / 1000.0;
            self.phase_seconds
                .get_or_create(&PhaseLabels { phase })
                .observe(secs);
        }
        if let Some(phase) = new_phase {
            started.insert(event.node_uuid, (phase, event.at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(node: Uuid, from: &str, to: &str, at_secs: i64) -> NodeEvent {
        let failed = to
            .parse::<ProvisionState>()
            .is_ok_and(ProvisionState::is_failure);
        NodeEvent {
            event: if failed {
                crate::events::NODE_FAILED
            } else {
                crate::events::PROVISION_STATE_CHANGED
            },
            id: Uuid::new_v4(),
            node_uuid: node,
            node_name: None,
            previous_provision_state: from.into(),
            provision_state: to.into(),
            target_provision_state: None,
            last_error: None,
            conductor: "c".into(),
            at: DateTime::from_timestamp(at_secs, 0).unwrap_or_default(),
        }
    }

    #[tokio::test]
    async fn events_count_transitions_failures_and_phase_times() {
        let m = Metrics::new();
        let n = Uuid::new_v4();
        for (from, to, at) in [
            ("available", "deploying", 100),
            ("deploying", "wait call-back", 101),
            ("wait call-back", "deploying", 160),
            ("deploying", "active", 164),
            ("active", "deleting", 200),
            ("deleting", "cleaning", 201),
            ("cleaning", "clean wait", 202),
            ("clean wait", "clean failed", 230),
            ("clean failed", "manageable", 300),
        ] {
            m.publish(event(n, from, to, at));
        }
        let store = crate::store::sql::SqlStore::connect("sqlite::memory:")
            .await
            .expect("store");
        let text = m.render(&store).await.expect("render");
        for want in [
            "ingot_node_transitions_total{from=\"deploying\",to=\"active\"} 1",
            "ingot_node_failures_total{phase=\"clean\",class=\"none\"} 1",
            // deploy: 100 -> 164; teardown 200 -> 201; clean 201 -> 300 (failed included).
            "ingot_phase_duration_seconds_sum{phase=\"deploy\"} 64.0",
            "ingot_phase_duration_seconds_sum{phase=\"clean\"} 99.0",
            "ingot_phase_duration_seconds_count{phase=\"undeploy\"} 1",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
    }

    #[test]
    fn copied_counters_grow_by_their_difference() {
        let d = Deltas::default();
        let c = Counter::<u64>::default();
        d.advance("k", 5, &c);
        d.advance("k", 7, &c);
        d.advance("k", 7, &c);
        assert_eq!(c.get(), 7);
    }
}
