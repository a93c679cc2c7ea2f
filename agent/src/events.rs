//! Where progress and result events go: a trait with a JSON-lines writer (the
//! command's stdout plus a human line on stderr) and a collector for tests.

use std::io::Write;
use std::sync::Mutex;

use proto::AgentEvent;

/// Receives agent events. Implementations must be cheap and never fail the job.
pub trait EventSink: Send + Sync {
    /// Handle one event.
    fn emit(&self, event: &AgentEvent);
}

/// JSON lines on stdout (machine readable) and a short line on stderr (human).
#[derive(Debug, Default)]
pub struct ConsoleSink {
    /// Also print JSON lines on stdout.
    pub json: bool,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

impl EventSink for ConsoleSink {
    fn emit(&self, event: &AgentEvent) {
        let human = match event {
            AgentEvent::Progress(p) => format!(
                "{:?}: fetched {:.1} MiB{}, written {:.1} MiB, {:.1} MB/s, {} ms",
                p.phase,
                mib(p.bytes_fetched),
                p.bytes_total
                    .map(|t| format!(" of {:.1} MiB", mib(t)))
                    .unwrap_or_default(),
                mib(p.bytes_written),
                p.rate_bps as f64 / 1e6,
                p.elapsed_ms
            ),
            AgentEvent::PhaseDone(t) => format!("{:?} done in {} ms", t.phase, t.ms),
            AgentEvent::WriteImageDone(r) => format!(
                "wrote {} ({}, {:.1} MiB) to {} in {} ms, {:.1} MB/s, {} retries",
                r.checksum,
                r.format,
                mib(r.bytes_written),
                r.device,
                r.elapsed_ms,
                r.rate_bps as f64 / 1e6,
                r.retries
            ),
            AgentEvent::WipeDone(w) => {
                format!("wipe {}", if w.ok { "succeeded" } else { "FAILED" })
            }
            AgentEvent::Failed(e) => format!("FAILED: {}", e.message),
        };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "ingot-agent: {human}");
        if let (true, Ok(line)) = (self.json, serde_json::to_string(event)) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
    }
}

/// Keeps every event, for tests and for a caller that forwards them later.
#[derive(Debug, Default)]
pub struct CollectSink {
    /// Events so far.
    pub events: Mutex<Vec<AgentEvent>>,
}

impl EventSink for CollectSink {
    fn emit(&self, event: &AgentEvent) {
        if let Ok(mut v) = self.events.lock() {
            v.push(event.clone());
        }
    }
}
