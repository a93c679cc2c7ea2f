//! The conductor's clock for wait-state timeouts: [`SystemClock`] (tokio's time) in
//! production, [`ManualClock`] in tests, where time moves only when the test says so, so a
//! 30-minute callback timeout is proven without waiting for it (tokio's paused time cannot
//! be used: with a real SQLite store the runtime looks idle while a query runs on sqlx's
//! worker thread, and auto-advance would fire timers early).

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// A sleep that ends at its deadline.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the conductor's timers read the time and sleep.
pub trait Clock: Send + Sync + Debug {
    /// The current instant.
    fn now(&self) -> Instant;
    /// A future that completes once [`Clock::now`] has reached `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Sleep;
}

/// tokio's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(deadline))
    }
}

/// A clock that stands still until [`ManualClock::advance`]; sleepers whose deadline has
/// come wake then. Registration and advancing take one lock, so no wake-up is missed.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    inner: Mutex<Manual>,
}

#[derive(Debug, Default)]
struct Manual {
    elapsed: Duration,
    sleepers: Vec<(Instant, oneshot::Sender<()>)>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            base: Instant::now(),
            inner: Mutex::new(Manual::default()),
        }
    }
}

impl ManualClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, Manual> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves time on by `by` and wakes every sleeper whose deadline has come.
    pub fn advance(&self, by: Duration) {
        let mut m = self.lock();
        m.elapsed += by;
        let now = self.base + m.elapsed;
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut m.sleepers)
            .into_iter()
            .filter(|(_, tx)| !tx.is_closed())
            .partition(|(at, _)| *at <= now);
        m.sleepers = waiting;
        drop(m);
        for (_, tx) in due {
            let _ = tx.send(());
        }
    }

    /// Sleepers not yet woken (dropped ones excluded).
    pub fn sleepers(&self) -> usize {
        self.lock()
            .sleepers
            .iter()
            .filter(|(_, tx)| !tx.is_closed())
            .count()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.lock().elapsed
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let mut m = self.lock();
        if deadline <= self.base + m.elapsed {
            return Box::pin(std::future::ready(()));
        }
        let (tx, rx) = oneshot::channel();
        m.sleepers.push((deadline, tx));
        Box::pin(async move {
            // A dropped sender (the clock is gone) ends the sleep too.
            let _ = rx.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn sleepers_wake_only_when_time_is_advanced_past_their_deadline() {
        let clock = Arc::new(ManualClock::default());
        let woke = Arc::new(AtomicUsize::new(0));
        for secs in [10, 20, 20] {
            let (clock, woke) = (clock.clone(), woke.clone());
            let deadline = clock.now() + Duration::from_secs(secs);
            let sleep = clock.sleep_until(deadline);
            tokio::spawn(async move {
                sleep.await;
                woke.fetch_add(1, Ordering::SeqCst);
            });
        }
        settle().await;
        assert_eq!((woke.load(Ordering::SeqCst), clock.sleepers()), (0, 3));
        clock.advance(Duration::from_secs(9));
        settle().await;
        assert_eq!(woke.load(Ordering::SeqCst), 0);
        clock.advance(Duration::from_secs(1));
        settle().await;
        assert_eq!((woke.load(Ordering::SeqCst), clock.sleepers()), (1, 2));
        clock.advance(Duration::from_secs(3600));
        settle().await;
        assert_eq!((woke.load(Ordering::SeqCst), clock.sleepers()), (3, 0));
    }

    #[tokio::test]
    async fn a_deadline_already_passed_does_not_wait_and_dropped_sleeps_are_forgotten() {
        let clock = ManualClock::default();
        clock.advance(Duration::from_secs(5));
        clock.sleep_until(clock.now()).await;
        let start = clock.now();
        assert_eq!(start - clock.base, Duration::from_secs(5));
        drop(clock.sleep_until(start + Duration::from_secs(1)));
        assert_eq!(clock.sleepers(), 0);
    }

    #[tokio::test]
    async fn the_system_clock_sleeps_in_real_time() {
        let clock = SystemClock;
        let start = clock.now();
        clock.sleep_until(start + Duration::from_millis(20)).await;
        assert!(clock.now() - start >= Duration::from_millis(20));
    }
}
