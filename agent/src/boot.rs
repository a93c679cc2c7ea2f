//! Boot stage timings of the ramdisk agent, as times since boot ([`uptime`], the kernel's
//! `CLOCK_MONOTONIC`, which `/proc/uptime` also shows). Its own module so that `init` (PID 1,
//! which records the stages) and `run` (whose first lookup ends the timeline) both use it
//! while `run` never reaches into `init`.
//!
//! PID 1 records each stage (mounts, coldplug, link, DHCP, inventory, lookup) as it ends and
//! logs it; the first answered lookup prints the whole timeline on one console line, which
//! tests and operators read. Stages overlap (coldplug runs beside the network bring-up).
//! [`render`] is pure.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Time since boot (`CLOCK_MONOTONIC`).
pub fn uptime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the kernel to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One finished stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: &'static str,
    /// Start and end, since boot.
    pub start: Duration,
    pub end: Duration,
    /// Extra words for the log (`loaded=11`, `nic=eth0`).
    pub detail: String,
}

/// The process-wide boot timeline.
#[derive(Debug, Default)]
pub struct Timeline {
    /// When PID 1 started, since boot.
    pub init: Mutex<Option<Duration>>,
    stages: Mutex<Vec<Stage>>,
}

static BOOT: OnceLock<Timeline> = OnceLock::new();

/// The timeline of this boot, if the agent runs as PID 1 (see [`start`]).
pub fn boot() -> Option<&'static Timeline> {
    BOOT.get()
}

/// Starts the boot timeline at `init` (when `/init` began).
pub fn start(init: Duration) -> &'static Timeline {
    let t = BOOT.get_or_init(Timeline::default);
    if let Ok(mut i) = t.init.lock() {
        *i = Some(init);
    }
    t
}

impl Timeline {
    /// Records a finished stage and logs it.
    pub fn stage(&self, name: &'static str, start: Duration, end: Duration, detail: String) {
        tracing::info!(
            stage = name,
            start_s = format!("{:.3}", start.as_secs_f64()),
            end_s = format!("{:.3}", end.as_secs_f64()),
            took_ms = end.saturating_sub(start).as_millis() as u64,
            "{detail}"
        );
        if let Ok(mut s) = self.stages.lock() {
            s.push(Stage {
                name,
                start,
                end,
                detail,
            });
        }
    }

    /// The stages so far.
    pub fn stages(&self) -> Vec<Stage> {
        self.stages.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The one-line summary (see [`render`]).
    pub fn summary(&self) -> String {
        let init = self.init.lock().ok().and_then(|i| *i).unwrap_or_default();
        render(init, &self.stages())
    }
}

/// `boot stages (s since boot): init 2.327; mounts 2.327-2.331 (0.004); ...; /init ->
/// lookup 0.964 s`: every stage with start, end and length, in start order, and the time
/// from `init` to the end of the last `lookup` stage.
pub fn render(init: Duration, stages: &[Stage]) -> String {
    let mut v: Vec<&Stage> = stages.iter().collect();
    v.sort_by_key(|s| s.start);
    let mut out = format!("boot stages (s since boot): init {:.3}", init.as_secs_f64());
    for s in &v {
        out.push_str(&format!(
            "; {} {:.3}-{:.3} ({:.3})",
            s.name,
            s.start.as_secs_f64(),
            s.end.as_secs_f64(),
            s.end.saturating_sub(s.start).as_secs_f64()
        ));
    }
    if let Some(l) = v.iter().rev().find(|s| s.name == "lookup") {
        out.push_str(&format!(
            "; /init -> registered {:.3} s",
            l.end.saturating_sub(init).as_secs_f64()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn render_sorts_by_start_and_measures_from_init() {
        let st = |name, a, b| Stage {
            name,
            start: ms(a),
            end: ms(b),
            detail: String::new(),
        };
        let s = render(
            ms(2000),
            &[
                st("dhcp", 2600, 2700),
                st("mounts", 2000, 2004),
                st("coldplug", 2004, 2900),
                st("lookup", 2950, 3010),
            ],
        );
        assert_eq!(
            s,
            "boot stages (s since boot): init 2.000; mounts 2.000-2.004 (0.004); \
             coldplug 2.004-2.900 (0.896); dhcp 2.600-2.700 (0.100); \
             lookup 2.950-3.010 (0.060); /init -> registered 1.010 s"
        );
        assert_eq!(
            render(ms(1500), &[]),
            "boot stages (s since boot): init 1.500"
        );
    }
}
