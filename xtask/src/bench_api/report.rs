//! Figures and the side-by-side table of `cargo xtask bench api`.
//!
//! Pure formatting: no IO besides building strings.

use std::time::Duration;

use serde_json::{Value, json};

use super::workload::{
    KIND_DETAIL, KIND_FILTERED, KIND_NODE_CREATE, KIND_PAGE, KIND_POLL, KIND_PORT_CREATE,
    KIND_PROVISION, Outcome,
};

/// What one server did in one run.
#[derive(Debug)]
pub struct ServerReport {
    /// Column heading, e.g. "ingot (release)".
    pub label: String,
    pub cold_start: Duration,
    pub idle_rss_kib: u64,
    pub idle_pss_kib: u64,
    pub after_rss_kib: u64,
    pub after_pss_kib: u64,
    pub processes: usize,
    pub nodes: usize,
    pub outcome: Outcome,
    /// How the server exited after SIGTERM.
    pub exit: String,
}

/// Whether bigger or smaller is better for a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// One table row: label, value per server, optional target.
struct Row {
    label: String,
    values: Vec<Option<f64>>,
    unit: &'static str,
    better: Better,
    target: Option<f64>,
}

/// The `p`-th percentile (0..=100) of `samples`, nearest-rank; `None` when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> Option<f64> {
    Some(kib as f64 / 1024.0)
}

impl ServerReport {
    fn lat(&self, kind: &str, p: f64) -> Option<f64> {
        ms(self
            .outcome
            .latencies
            .get(kind)
            .and_then(|v| percentile(v, p)))
    }

    fn enroll_rate(&self) -> Option<f64> {
        let secs = self.outcome.enroll.wall.as_secs_f64();
        (secs > 0.0).then(|| self.nodes as f64 / secs)
    }

    fn cpu_per_node_ms(&self) -> Option<f64> {
        (self.nodes > 0).then(|| self.outcome.enroll.cpu_secs * 1000.0 / self.nodes as f64)
    }

    /// Machine-readable figures, written beside the table.
    pub fn to_json(&self) -> Value {
        let lat: serde_json::Map<String, Value> = self
            .outcome
            .latencies
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    json!({"count": v.len(), "p50_ms": ms(percentile(v, 50.0)), "p99_ms": ms(percentile(v, 99.0))}),
                )
            })
            .collect();
        json!({
            "label": self.label,
            "cold_start_ms": self.cold_start.as_secs_f64() * 1000.0,
            "idle_rss_kib": self.idle_rss_kib, "idle_pss_kib": self.idle_pss_kib,
            "after_rss_kib": self.after_rss_kib, "after_pss_kib": self.after_pss_kib,
            "processes": self.processes,
            "nodes": self.nodes,
            "enroll_wall_s": self.outcome.enroll.wall.as_secs_f64(),
            "enroll_nodes_per_s": self.enroll_rate(),
            "enroll_cpu_ms_per_node": self.cpu_per_node_ms(),
            "list_cpu_s": self.outcome.list.cpu_secs,
            "listed_nodes": self.outcome.listed_nodes,
            "lifecycle_wall_s": self.outcome.lifecycle.wall.as_secs_f64(),
            "lifecycle_cpu_s": self.outcome.lifecycle.cpu_secs,
            "lifecycle_done": self.outcome.lifecycle_done,
            "requests": self.outcome.requests,
            "conflicts_409_retried": self.outcome.conflicts,
            "errors": self.outcome.error_count,
            "latencies": lat,
            "exit": self.exit,
        })
    }
}

fn rows(servers: &[ServerReport], lifecycle_nodes: usize) -> Vec<Row> {
    let each = |f: &dyn Fn(&ServerReport) -> Option<f64>| servers.iter().map(f).collect::<Vec<_>>();
    let mut rows = vec![
        Row {
            label: "cold start (spawn to GET /v1 200)".into(),
            values: each(&|s| ms(Some(s.cold_start))),
            unit: "ms",
            better: Better::Lower,
            target: Some(50.0),
        },
        Row {
            label: "idle RSS after start".into(),
            values: each(&|s| mib(s.idle_rss_kib)),
            unit: "MiB",
            better: Better::Lower,
            target: Some(20.0),
        },
        Row {
            label: "idle PSS after start".into(),
            values: each(&|s| mib(s.idle_pss_kib)),
            unit: "MiB",
            better: Better::Lower,
            target: None,
        },
        Row {
            label: "enroll node + port".into(),
            values: each(&|s| s.enroll_rate()),
            unit: "nodes/s",
            better: Better::Higher,
            target: Some(2000.0),
        },
        Row {
            label: "server CPU per enrolled node".into(),
            values: each(&|s| s.cpu_per_node_ms()),
            unit: "ms",
            better: Better::Lower,
            target: None,
        },
    ];
    for kind in [KIND_NODE_CREATE, KIND_PORT_CREATE] {
        for p in [50.0, 99.0] {
            rows.push(Row {
                label: format!("{kind} p{p}"),
                values: each(&|s| s.lat(kind, p)),
                unit: "ms",
                better: Better::Lower,
                target: None,
            });
        }
    }
    let nodes = servers.first().map(|s| s.nodes).unwrap_or(0);
    for (p, target) in [(50.0, Some(5.0)), (99.0, None)] {
        rows.push(Row {
            label: format!("{KIND_DETAIL}, {nodes} nodes, p{p}"),
            values: each(&|s| s.lat(KIND_DETAIL, p)),
            unit: "ms",
            better: Better::Lower,
            target,
        });
    }
    // DESIGN.md §7: with 10,000 nodes, a page of 1,000 in <= 50 ms p99.
    for (kind, target) in [(KIND_PAGE, Some(50.0)), (KIND_FILTERED, None)] {
        for p in [50.0, 99.0] {
            rows.push(Row {
                label: format!("{kind}, {nodes} nodes, p{p}"),
                values: each(&|s| s.lat(kind, p)),
                unit: "ms",
                better: Better::Lower,
                target: if p == 99.0 { target } else { None },
            });
        }
    }
    rows.push(Row {
        label: format!("lifecycle of {lifecycle_nodes} nodes (wall)"),
        values: each(&|s| Some(s.outcome.lifecycle.wall.as_secs_f64())),
        unit: "s",
        better: Better::Lower,
        target: Some(0.25),
    });
    for kind in [KIND_PROVISION, KIND_POLL] {
        for p in [50.0, 99.0] {
            rows.push(Row {
                label: format!("{kind} p{p}"),
                values: each(&|s| s.lat(kind, p)),
                unit: "ms",
                better: Better::Lower,
                target: None,
            });
        }
    }
    rows.push(Row {
        label: "RSS after the workload".into(),
        values: each(&|s| mib(s.after_rss_kib)),
        unit: "MiB",
        better: Better::Lower,
        target: None,
    });
    rows.push(Row {
        label: "PSS after the workload".into(),
        values: each(&|s| mib(s.after_pss_kib)),
        unit: "MiB",
        better: Better::Lower,
        target: None,
    });
    rows
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// The side-by-side table. A ratio column per server after the first says how many times
/// better the first server is than that one (`ratio` with two servers, `1st/N` with more);
/// the targets are DESIGN.md §7's for Ingot, judged only when Ingot ran.
pub fn table(servers: &[ServerReport], lifecycle_nodes: usize) -> String {
    let rows = rows(servers, lifecycle_nodes);
    let judge = servers
        .first()
        .is_some_and(|s| s.label.starts_with("ingot"));
    let mut out = String::new();
    let width = 44;
    out.push_str(&format!("{:<width$} {:>8}", "measure", "unit"));
    for s in servers {
        out.push_str(&format!(" {:>18}", s.label));
    }
    for n in 2..=servers.len() {
        let head = if servers.len() == 2 {
            "ratio".to_owned()
        } else {
            format!("1st/{n}")
        };
        out.push_str(&format!(" {head:>10}"));
    }
    out.push_str(&format!(" {:>18}\n", "target (ingot)"));
    for row in &rows {
        out.push_str(&format!("{:<width$} {:>8}", row.label, row.unit));
        for v in &row.values {
            out.push_str(&format!(" {:>18}", fmt_value(*v)));
        }
        for other in row.values.iter().skip(1) {
            let ratio = match (row.values.first().copied().flatten(), *other) {
                (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some(match row.better {
                    Better::Higher => a / b,
                    Better::Lower => b / a,
                }),
                _ => None,
            };
            out.push_str(&format!(
                " {:>10}",
                ratio
                    .map(|r| format!("{r:.1}x"))
                    .unwrap_or_else(|| "-".into())
            ));
        }
        let target = match (row.target, row.values.first().copied().flatten()) {
            (Some(t), Some(v)) if judge => {
                let met = match row.better {
                    Better::Higher => v >= t,
                    Better::Lower => v <= t,
                };
                let op = if row.better == Better::Higher {
                    ">="
                } else {
                    "<="
                };
                format!(
                    "{op} {} {}",
                    fmt_value(Some(t)),
                    if met { "ok" } else { "MISS" }
                )
            }
            (Some(t), _) => {
                let op = if row.better == Better::Higher {
                    ">="
                } else {
                    "<="
                };
                format!("{op} {}", fmt_value(Some(t)))
            }
            _ => String::new(),
        };
        out.push_str(&format!(" {target:>18}\n"));
    }
    for s in servers {
        out.push_str(&format!(
            "{}: {} requests ({} provision 409s retried), {} errors, {} of {} nodes listed, {} lifecycles completed, {} process(es), exit: {}\n",
            s.label,
            s.outcome.requests,
            s.outcome.conflicts,
            s.outcome.error_count,
            s.outcome.listed_nodes,
            s.nodes,
            s.outcome.lifecycle_done,
            s.processes,
            s.exit
        ));
        for e in &s.outcome.errors {
            out.push_str(&format!("  error: {e}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(
            percentile(&[Duration::from_millis(7)], 99.0),
            Some(Duration::from_millis(7))
        );
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn table_shows_ratio_and_target() {
        let mk = |label: &str, secs: u64| ServerReport {
            label: label.into(),
            cold_start: Duration::from_millis(secs * 10),
            idle_rss_kib: 1024,
            idle_pss_kib: 1024,
            after_rss_kib: 2048,
            after_pss_kib: 2048,
            processes: 1,
            nodes: 10,
            outcome: Outcome {
                enroll: super::super::workload::Phase {
                    wall: Duration::from_secs(secs),
                    cpu_secs: 0.1,
                },
                ..Outcome::default()
            },
            exit: "exit status: 0".into(),
        };
        let t = table(&[mk("ingot", 1), mk("b", 4)], 5);
        let enroll = t
            .lines()
            .find(|l| l.starts_with("enroll node + port"))
            .expect("enroll row");
        assert!(enroll.contains("4.0x"), "{enroll}");
        assert!(enroll.contains(">= 2000 MISS"), "{enroll}");
        let cold = t
            .lines()
            .find(|l| l.starts_with("cold start"))
            .expect("cold row");
        assert!(cold.contains("<= 50.0 ok"), "{cold}");
        let three = table(&[mk("ingot", 1), mk("secure", 2), mk("ironic", 4)], 5);
        let enroll = three
            .lines()
            .find(|l| l.starts_with("enroll node + port"))
            .expect("enroll row");
        assert!(
            three
                .lines()
                .next()
                .is_some_and(|h| h.contains("1st/2") && h.contains("1st/3"))
        );
        assert!(
            enroll.contains("2.0x") && enroll.contains("4.0x"),
            "{enroll}"
        );
        let peer_only = table(&[mk("ironic", 1)], 5);
        let cold = peer_only
            .lines()
            .find(|l| l.starts_with("cold start"))
            .expect("cold row");
        assert!(cold.trim_end().ends_with("<= 50.0"), "{cold}");
    }
}
