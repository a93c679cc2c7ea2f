//! The operational families of `/metrics`: BMC calls, agent writes and sessions, the
//! conductor's deploy and clean queues, the DHCP pool, TFTP and the database pools. Events
//! (a BMC call, an agent's progress report) are counted as they happen; the rest is read
//! from its owner when Prometheus scrapes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use uuid::Uuid;

use crate::conductor::QueueDepth;
use crate::drivers::DriverError;
use crate::drivers::measured::error_class;
use crate::store::PoolUse;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    driver: String,
    call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallErrorLabels {
    driver: String,
    call: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkLabels {
    work: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    pub(super) outcome: String,
}

/// A running agent command's last progress report.
#[derive(Debug)]
struct Write {
    bytes: u64,
    rate_bps: u64,
    seen: Instant,
}

/// Reports older than this no longer count towards the current write rate.
const RATE_FRESH: Duration = Duration::from_secs(30);
/// Commands not heard of for this long are forgotten (their result was lost).
const WRITE_FORGET: Duration = Duration::from_secs(600);
/// At most this many running commands are tracked (one per node at a time).
const WRITES_KEPT: usize = 100_000;

/// The operational families.
#[derive(Debug)]
pub(super) struct Ops {
    bmc_seconds: Family<CallLabels, Histogram>,
    bmc_errors: Family<CallErrorLabels, Counter>,
    agent_bytes: Family<PhaseLabels, Counter>,
    agent_rate: Gauge,
    agent_sessions: Gauge,
    work: Family<WorkLabels, Gauge>,
    dhcp_pool: Family<StateLabels, Gauge>,
    pub(super) tftp: Family<OutcomeLabels, Counter>,
    pub(super) tftp_bytes: Counter,
    db_pool: Family<PoolLabels, Gauge>,
    writes: Mutex<HashMap<Uuid, Write>>,
}

/// Buckets of BMC calls (seconds): 1 ms to about 33 s.
fn call_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

impl Ops {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let ops = Self {
            bmc_seconds: Family::new_with_constructor(|| Histogram::new(call_buckets())),
            bmc_errors: Family::default(),
            agent_bytes: Family::default(),
            agent_rate: Gauge::default(),
            agent_sessions: Gauge::default(),
            work: Family::default(),
            dhcp_pool: Family::default(),
            tftp: Family::default(),
            tftp_bytes: Counter::default(),
            db_pool: Family::default(),
            writes: Mutex::default(),
        };
        registry.register(
            "bmc_call_duration_seconds",
            "Power and management calls to machines by driver interface and call",
            ops.bmc_seconds.clone(),
        );
        registry.register(
            "bmc_call_errors",
            "Failed power and management calls by driver interface, call and error class",
            ops.bmc_errors.clone(),
        );
        registry.register(
            "agent_bytes_written",
            "Bytes the agents wrote to disks (images, wipes), by phase",
            ops.agent_bytes.clone(),
        );
        registry.register(
            "agent_write_rate_bytes_per_second",
            "Sum of the write rates the running agent commands last reported (30 s)",
            ops.agent_rate.clone(),
        );
        registry.register(
            "agent_sessions",
            "Nodes with a live agent session (a token handed out and not ended)",
            ops.agent_sessions.clone(),
        );
        registry.register(
            "conductor_work",
            "Deploys and cleanings running or waiting for a slot",
            ops.work.clone(),
        );
        registry.register(
            "dhcp_pool_addresses",
            "Addresses of the DHCP pool: total (reservations excluded) and free",
            ops.dhcp_pool.clone(),
        );
        registry.register(
            "tftp_transfers",
            "TFTP requests by outcome: served, refused, unreadable",
            ops.tftp.clone(),
        );
        registry.register(
            "tftp_bytes",
            "Bytes of the files TFTP transfers started to send",
            ops.tftp_bytes.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database connections by pool: open, idle, max",
            ops.db_pool.clone(),
        );
        ops
    }

    /// One power or management call.
    pub(super) fn driver_call(
        &self,
        driver: &str,
        call: &str,
        took: Duration,
        error: Option<&DriverError>,
    ) {
        self.bmc_seconds
            .get_or_create(&CallLabels {
                driver: driver.to_owned(),
                call: call.to_owned(),
            })
            .observe(took.as_secs_f64());
        if let Some(e) = error {
            self.bmc_errors
                .get_or_create(&CallErrorLabels {
                    driver: driver.to_owned(),
                    call: call.to_owned(),
                    class: error_class(e).to_owned(),
                })
                .inc();
        }
    }

    fn lock_writes(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Write>> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An agent's progress report of `command`: `bytes_written` so far in this job.
    pub(super) fn agent_progress(
        &self,
        command: Uuid,
        phase: &str,
        bytes_written: u64,
        rate_bps: u64,
    ) {
        let mut writes = self.lock_writes();
        if writes.len() >= WRITES_KEPT && !writes.contains_key(&command) {
            return;
        }
        let w = writes.entry(command).or_insert(Write {
            bytes: 0,
            rate_bps: 0,
            seen: Instant::now(),
        });
        // A job that starts over (the next disk of a wipe) counts from zero again.
        let added = bytes_written.checked_sub(w.bytes).unwrap_or(bytes_written);
        w.bytes = bytes_written;
        w.rate_bps = rate_bps;
        w.seen = Instant::now();
        drop(writes);
        if added > 0 {
            self.agent_bytes
                .get_or_create(&PhaseLabels {
                    phase: phase.to_owned(),
                })
                .inc_by(added);
        }
    }

    /// `command` finished; `final_bytes`: what its result says it wrote, when it says.
    pub(super) fn agent_done(&self, command: Uuid, phase: &str, final_bytes: Option<u64>) {
        let seen = self.lock_writes().remove(&command).map_or(0, |w| w.bytes);
        if let Some(total) = final_bytes
            && total > seen
        {
            self.agent_bytes
                .get_or_create(&PhaseLabels {
                    phase: phase.to_owned(),
                })
                .inc_by(total - seen);
        }
    }

    /// Scrape time: everything read from its owner.
    pub(super) fn refresh(&self, now: &Scraped) {
        {
            let mut writes = self.lock_writes();
            writes.retain(|_, w| w.seen.elapsed() < WRITE_FORGET);
            let rate: u64 = writes
                .values()
                .filter(|w| w.seen.elapsed() < RATE_FRESH)
                .map(|w| w.rate_bps)
                .sum();
            self.agent_rate.set(i64::try_from(rate).unwrap_or(i64::MAX));
        }
        if let Some(n) = now.agent_sessions {
            self.agent_sessions
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(q) = now.queue {
            for (work, state, n) in [
                ("deploy", "running", q.deploy_running),
                ("deploy", "waiting", q.deploy_waiting),
                ("clean", "running", q.clean_running),
                ("clean", "waiting", q.clean_waiting),
            ] {
                self.work
                    .get_or_create(&WorkLabels {
                        work: work.to_owned(),
                        state: state.to_owned(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        if let Some((free, total)) = now.dhcp_pool {
            for (state, n) in [("free", free), ("total", total)] {
                self.dhcp_pool
                    .get_or_create(&StateLabels {
                        state: state.to_owned(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        for p in &now.db_pools {
            for (state, n) in [("open", p.open), ("idle", p.idle), ("max", p.max)] {
                self.db_pool
                    .get_or_create(&PoolLabels {
                        pool: p.pool.to_owned(),
                        state: state.to_owned(),
                    })
                    .set(i64::from(n));
            }
        }
    }
}

/// What the scrape read from the components.
#[derive(Debug, Default)]
pub(super) struct Scraped {
    pub agent_sessions: Option<usize>,
    pub queue: Option<QueueDepth>,
    pub dhcp_pool: Option<(u64, u64)>,
    pub db_pools: Vec<PoolUse>,
}

/// A failure's class (a metric label) from its `last_error`: what failed, in a word.
pub fn failure_class(last_error: Option<&str>) -> &'static str {
    let Some(e) = last_error.map(str::to_ascii_lowercase) else {
        return "none";
    };
    // First match wins: a timeout of the agent is a timeout, a BMC error an error of power.
    const CLASSES: [(&str, &[&str]); 6] = [
        (
            "restart",
            &["restart", "conductor went down", "was interrupted"],
        ),
        ("timeout", &["timed out", "timeout"]),
        (
            "image",
            &["image", "checksum", "sha256", "qcow2", "decompress"],
        ),
        ("wipe", &["wipe", "erase", "clean step"]),
        ("power", &["power", "bmc", "ipmi", "redfish", "boot device"]),
        ("agent", &["agent"]),
    ];
    CLASSES
        .iter()
        .find(|(_, needles)| needles.iter().any(|n| e.contains(n)))
        .map_or("other", |(class, _)| class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_fall_into_a_few_classes() {
        let rows = [
            (None, "none"),
            (
                Some("Timeout reached while waiting for callback for node x"),
                "timeout",
            ),
            (
                Some("Deploy failed: image checksum mismatch: sha256 expected a got b"),
                "image",
            ),
            (
                Some("Failed to set power state: IPMI error: RAKP 2 refused"),
                "power",
            ),
            (Some("Cleaning failed: wipe of /dev/vda failed"), "wipe"),
            (
                Some("The conductor restarted while the node was deploying"),
                "restart",
            ),
            (Some("agent reported: no disk"), "agent"),
            (Some("something else"), "other"),
        ];
        for (error, want) in rows {
            assert_eq!(failure_class(error), want, "{error:?}");
        }
    }

    #[test]
    fn agent_bytes_count_each_byte_once() {
        let mut registry = Registry::default();
        let ops = Ops::register(&mut registry);
        let cmd = Uuid::new_v4();
        ops.agent_progress(cmd, "stream", 100, 10);
        ops.agent_progress(cmd, "stream", 250, 20);
        // The result says 300: the 50 no report carried are added, nothing twice.
        ops.agent_done(cmd, "stream", Some(300));
        let wipe = Uuid::new_v4();
        ops.agent_progress(wipe, "wipe", 40, 5);
        // The next disk starts over from zero.
        ops.agent_progress(wipe, "wipe", 10, 5);
        let stream = PhaseLabels {
            phase: "stream".to_owned(),
        };
        let wiped = PhaseLabels {
            phase: "wipe".to_owned(),
        };
        assert_eq!(ops.agent_bytes.get_or_create(&stream).get(), 300);
        assert_eq!(ops.agent_bytes.get_or_create(&wiped).get(), 50);
        ops.refresh(&Scraped::default());
        // Only the wipe still runs.
        assert_eq!(ops.agent_rate.get(), 5);
    }
}
