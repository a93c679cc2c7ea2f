//! Polling with deadlines.

use std::time::{Duration, Instant};

/// Calls `f` every `every` until it returns `Some`, or fails after `timeout` with `what`.
pub fn until<T>(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}
