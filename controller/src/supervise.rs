//! How `ingot serve` treats its long-running tasks.
//!
//! - **Fatal** ([`FatalTasks`]): the operator API, the provisioning HTTP listener, DHCP and
//!   TFTP. A controller that lost one cannot do its job, and a restart of the process (its
//!   supervisor's job, with the restart recovery the conductor already has) is the honest
//!   answer: the failure cancels every other task, `ingot serve` shuts down cleanly and
//!   exits non-zero with the cause on stderr. A fatal task that ends without an error
//!   before shutdown was asked for is a failure too.
//! - **Restarted** ([`restart_with_backoff`]): router advertisements. Without them iPXE
//!   still boots (about 15 s slower), so a failure is logged and the task started again
//!   after a backoff (1 s doubling to 60 s, back to 1 s after a minute of good running).

use std::future::Future;
use std::time::Duration;

use anyhow::anyhow;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Tasks whose failure ends the process.
#[derive(Debug)]
pub struct FatalTasks {
    set: JoinSet<anyhow::Result<()>>,
    cancel: CancellationToken,
}

impl FatalTasks {
    /// Tasks stopped by (and stopping, when one fails) `cancel`.
    pub fn new(cancel: CancellationToken) -> Self {
        Self {
            set: JoinSet::new(),
            cancel,
        }
    }

    /// Runs `task`; an error, a panic or an early end cancels the token.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let cancel = self.cancel.clone();
        self.set.spawn(async move {
            let result = match task.await {
                Ok(()) if !cancel.is_cancelled() => Err(anyhow!("stopped unexpectedly")),
                other => other,
            }
            .map_err(|e| e.context(name));
            if let Err(e) = &result {
                tracing::error!(task = name, error = %format!("{e:#}"), "fatal task failed, shutting down");
                cancel.cancel();
            }
            result
        });
    }

    /// Cancels every task, waits for them and returns the first failure.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        let mut first = Ok(());
        while let Some(joined) = self.set.join_next().await {
            let r = joined
                .map_err(|e| anyhow!("task panicked: {e}"))
                .and_then(|r| r);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// Backoff between restarts: `initial` doubling to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A run this long resets the backoff to `initial`.
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
        }
    }
}

/// Runs `make()` until `cancel`; every failure (or early end) is logged and followed by a
/// restart after the backoff. Returns how many times it restarted.
pub async fn restart_with_backoff<F, Fut>(
    name: &str,
    backoff: Backoff,
    cancel: CancellationToken,
    mut make: F,
) -> u32
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut delay = backoff.initial;
    let mut restarts = 0u32;
    loop {
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            r = make() => r,
            () = cancel.cancelled() => return restarts,
        };
        if cancel.is_cancelled() {
            return restarts;
        }
        if started.elapsed() >= backoff.healthy_after {
            delay = backoff.initial;
        }
        let error = match result {
            Ok(()) => "stopped".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        tracing::warn!(task = name, %error, retry_in_ms = delay.as_millis() as u64, "task failed, restarting");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return restarts,
        }
        restarts += 1;
        delay = (delay * 2).min(backoff.max);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_failing_fatal_task_stops_the_others_and_is_the_result() {
        let cancel = CancellationToken::new();
        let mut tasks = FatalTasks::new(cancel.clone());
        let c = cancel.clone();
        tasks.spawn("listener", async move {
            c.cancelled().await;
            Ok(())
        });
        tasks.spawn("dhcp", async { Err(anyhow!("socket gone")) });
        tokio::time::timeout(Duration::from_secs(5), cancel.cancelled())
            .await
            .expect("the failure cancels the rest");
        let err = tasks.finish().await.expect_err("fatal");
        assert_eq!(format!("{err:#}"), "dhcp: socket gone");
    }

    #[tokio::test]
    async fn an_early_end_is_a_failure_and_a_clean_shutdown_is_not() {
        let cancel = CancellationToken::new();
        let mut tasks = FatalTasks::new(cancel.clone());
        tasks.spawn("tftp", async { Ok(()) });
        tokio::time::timeout(Duration::from_secs(5), cancel.cancelled())
            .await
            .expect("an early end cancels the rest");
        let err = tasks.finish().await.expect_err("early end");
        assert_eq!(format!("{err:#}"), "tftp: stopped unexpectedly");

        let cancel = CancellationToken::new();
        let mut tasks = FatalTasks::new(cancel.clone());
        let c = cancel.clone();
        tasks.spawn("listener", async move {
            c.cancelled().await;
            Ok(())
        });
        tasks.finish().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn restarted_tasks_come_back_with_growing_backoff_until_cancelled() {
        let cancel = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let c = cancel.clone();
        let backoff = Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            healthy_after: Duration::from_secs(60),
        };
        let started = std::time::Instant::now();
        let restarts = restart_with_backoff("ra", backoff, cancel.clone(), move || {
            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
            let c = c.clone();
            async move {
                if n < 4 {
                    return Err(anyhow!("send failed"));
                }
                c.cancel();
                Ok(())
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(restarts, 3);
        // 5 + 10 + 20 ms of backoff at least.
        assert!(started.elapsed() >= Duration::from_millis(35));
    }
}
