//! `ingot node watch NODE`: follow a node until it rests, with the agent's progress.
//!
//! The pure part reads a node's JSON ([`Progress::of_node`], [`verdict`]) and renders lines
//! ([`progress_text`], [`status_line`]); [`node_watch`] polls the API and draws: on a
//! terminal one line redrawn in place with a bar, otherwise a plain line each time the
//! text changes. The agent API stores the latest progress report in
//! `driver_internal_info.agent_progress`.

use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use super::client::ApiClient;
use crate::hub::{AgentProgress, PROGRESS_KEY};
use crate::machine::{ProvisionState, StateKind};

/// One agent progress report, as stored on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub phase: String,
    pub bytes_fetched: u64,
    pub bytes_written: u64,
    pub bytes_total: Option<u64>,
    pub rate_bps: u64,
    pub elapsed_ms: u64,
}

impl Progress {
    /// The progress stored on `node` (an API node body), if any (`hub::AgentProgress`).
    pub fn of_node(node: &Value) -> Option<Progress> {
        let p = AgentProgress::from_value(node.get("driver_internal_info")?.get(PROGRESS_KEY)?)?;
        Some(Progress {
            phase: p.phase,
            bytes_fetched: p.bytes_fetched,
            bytes_written: p.bytes_written,
            bytes_total: p.bytes_total,
            rate_bps: p.rate_bps,
            elapsed_ms: p.elapsed_ms,
        })
    }

    /// Percent of the image fetched, when its size is known.
    pub fn percent(&self) -> Option<u64> {
        let total = self.bytes_total.filter(|t| *t > 0)?;
        Some((u128::from(self.bytes_fetched) * 100 / u128::from(total)).min(100) as u64)
    }

    /// Time left at the average fetch rate so far, when it can be told.
    pub fn eta(&self) -> Option<Duration> {
        let total = self.bytes_total?;
        if self.bytes_fetched == 0 || self.elapsed_ms == 0 {
            return None;
        }
        let left = u128::from(total.saturating_sub(self.bytes_fetched));
        let ms = left * u128::from(self.elapsed_ms) / u128::from(self.bytes_fetched);
        Some(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
    }
}

/// `1.5 GiB`, `512.0 MiB`, `4.0 KiB`, `1000 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// PURE: `stream 50% 1.0 GiB/2.0 GiB 350.2 MB/s ETA 0:03` (parts that are unknown left out).
pub fn progress_text(p: &Progress) -> String {
    let mut parts = vec![p.phase.clone()];
    if let Some(pct) = p.percent() {
        parts.push(format!("{pct}%"));
    }
    parts.push(match p.bytes_total {
        Some(total) => format!("{}/{}", human_bytes(p.bytes_fetched), human_bytes(total)),
        None => format!("{} written", human_bytes(p.bytes_written)),
    });
    parts.push(format!("{:.1} MB/s", p.rate_bps as f64 / 1e6));
    if let Some(eta) = p.eta() {
        parts.push(format!("ETA {}", clock(eta)));
    }
    parts.join(" ")
}

/// PURE: a `[#####-----]` bar of `width` cells.
pub fn bar(percent: u64, width: usize) -> String {
    let full = (percent.min(100) as usize * width) / 100;
    format!("[{}{}]", "#".repeat(full), "-".repeat(width - full))
}

/// Where a watched node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Still moving (transient or wait state, or a target set).
    Running,
    /// Resting in a good state (active, available, manageable, ...).
    Succeeded,
    /// Resting in a failed state, `error`, held, or back in `enroll` with an error.
    Failed,
}

/// PURE: the verdict for a node's provision state, target and last error.
pub fn verdict(state: &str, target: Option<&str>, last_error: Option<&str>) -> Verdict {
    let Ok(parsed) = ProvisionState::from_str(state) else {
        // A state this CLI does not know: rest only when no target is set.
        return if target.is_some() {
            Verdict::Running
        } else {
            Verdict::Succeeded
        };
    };
    match parsed.kind() {
        StateKind::Transient | StateKind::Wait => Verdict::Running,
        StateKind::Failed | StateKind::Hold => Verdict::Failed,
        StateKind::Stable if target.is_some() => Verdict::Running,
        StateKind::Stable => match parsed {
            ProvisionState::Error => Verdict::Failed,
            ProvisionState::Enroll if last_error.is_some() => Verdict::Failed,
            _ => Verdict::Succeeded,
        },
    }
}

fn text<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node.get(key).and_then(Value::as_str)
}

/// PURE: the status text of a node: `deploying -> active`, plus the agent's progress while
/// it works. `tty` adds a bar.
pub fn status_line(node: &Value, tty: bool) -> String {
    let state = text(node, "provision_state").unwrap_or("?");
    let mut line = match text(node, "target_provision_state") {
        Some(target) => format!("{state} -> {target}"),
        None => state.to_owned(),
    };
    let running = verdict(state, text(node, "target_provision_state"), None) == Verdict::Running;
    if running && let Some(p) = Progress::of_node(node) {
        line.push_str(": ");
        if tty && let Some(pct) = p.percent() {
            line.push_str(&bar(pct, 20));
            line.push(' ');
        }
        line.push_str(&progress_text(&p));
    }
    line
}

/// How a watch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEnd {
    pub verdict: Verdict,
    pub state: String,
    pub last_error: Option<String>,
}

/// Polls `GET /v1/nodes/{ident}` every `interval` and draws on `out` until the node rests.
pub async fn node_watch(
    client: &ApiClient,
    ident: &str,
    interval: Duration,
    out: &mut dyn Write,
    tty: bool,
) -> anyhow::Result<WatchEnd> {
    let path = format!("/v1/nodes/{ident}");
    let mut last = String::new();
    loop {
        let node = client.get(&path).await?;
        let line = status_line(&node, tty);
        if line != last {
            if tty {
                // Back to column 0, clear the line, draw.
                write!(out, "\r\x1b[2K{line}")
            } else {
                writeln!(out, "{line}")
            }
            .context("writing progress")?;
            out.flush().context("writing progress")?;
            last = line;
        }
        let state = text(&node, "provision_state").unwrap_or_default();
        let last_error = text(&node, "last_error");
        let v = verdict(state, text(&node, "target_provision_state"), last_error);
        if v != Verdict::Running {
            if tty {
                writeln!(out).context("writing progress")?;
            }
            return Ok(WatchEnd {
                verdict: v,
                state: state.to_owned(),
                last_error: last_error.map(str::to_owned),
            });
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn progress(fetched: u64, total: Option<u64>, elapsed_ms: u64) -> Progress {
        Progress {
            phase: "stream".into(),
            bytes_fetched: fetched,
            bytes_written: fetched * 2,
            bytes_total: total,
            rate_bps: 350_200_000,
            elapsed_ms,
        }
    }

    #[test]
    fn progress_texts() {
        const GIB: u64 = 1 << 30;
        let cases = [
            (
                progress(GIB, Some(2 * GIB), 3000),
                "stream 50% 1.0 GiB/2.0 GiB 350.2 MB/s ETA 0:03",
            ),
            (
                progress(0, Some(2 * GIB), 0),
                "stream 0% 0 B/2.0 GiB 350.2 MB/s",
            ),
            (
                progress(3 * GIB, Some(2 * GIB), 10),
                "stream 100% 3.0 GiB/2.0 GiB 350.2 MB/s ETA 0:00",
            ),
            (
                progress(512 << 20, None, 1000),
                "stream 1.0 GiB written 350.2 MB/s",
            ),
            (
                progress(100 << 20, Some(100 << 30), 60_000),
                "stream 0% 100.0 MiB/100.0 GiB 350.2 MB/s ETA 17:03:00",
            ),
        ];
        for (p, want) in cases {
            assert_eq!(progress_text(&p), want);
        }
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(bar(50, 10), "[#####-----]");
        assert_eq!(bar(150, 4), "[####]");
        assert_eq!(bar(0, 3), "[---]");
    }

    #[test]
    fn verdicts() {
        use Verdict::*;
        let cases = [
            ("deploying", Some("active"), None, Running),
            ("wait call-back", Some("active"), None, Running),
            ("clean wait", Some("available"), None, Running),
            ("available", Some("active"), None, Running),
            ("active", None, None, Succeeded),
            ("available", None, None, Succeeded),
            ("manageable", None, Some("old error"), Succeeded),
            ("enroll", None, None, Succeeded),
            ("enroll", None, Some("Failed to get power state"), Failed),
            ("deploy failed", None, Some("boom"), Failed),
            ("clean failed", None, None, Failed),
            ("inspect failed", Some("manageable"), None, Failed),
            ("clean hold", Some("available"), None, Failed),
            ("error", None, None, Failed),
            ("some future state", Some("x"), None, Running),
            ("some future state", None, None, Succeeded),
        ];
        for (state, target, err, want) in cases {
            assert_eq!(verdict(state, target, err), want, "{state} {target:?}");
        }
    }

    #[test]
    fn status_lines() {
        let node = json!({
            "provision_state": "wait call-back", "target_provision_state": "active",
            "driver_internal_info": {"agent_progress": {"phase": "stream", "bytes_fetched": 1024,
                "bytes_written": 4096, "bytes_total": 4096, "rate_bps": 2_000_000, "elapsed_ms": 10}}
        });
        assert_eq!(
            status_line(&node, false),
            "wait call-back -> active: stream 25% 1.0 KiB/4.0 KiB 2.0 MB/s ETA 0:00"
        );
        assert_eq!(
            status_line(&node, true),
            "wait call-back -> active: [#####---------------] stream 25% 1.0 KiB/4.0 KiB 2.0 MB/s ETA 0:00"
        );
        // A resting node does not show a stale report.
        let mut done = node.clone();
        done["provision_state"] = json!("active");
        done["target_provision_state"] = Value::Null;
        assert_eq!(status_line(&done, true), "active");
        assert_eq!(
            status_line(
                &json!({"provision_state": "cleaning", "target_provision_state": "available"}),
                false
            ),
            "cleaning -> available"
        );
    }
}
