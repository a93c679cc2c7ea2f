//! Slots of work that is capped (`max_concurrent_deploys`, `max_concurrent_cleanings`):
//! a semaphore that also counts who waits for it, so the queue depth can be watched.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most `capacity` holders at once; the others wait in line.
#[derive(Debug)]
pub struct WorkSlots {
    sem: Arc<Semaphore>,
    capacity: usize,
    waiting: AtomicUsize,
}

/// Decrements the waiting count when the wait ends, also when the waiting task is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl WorkSlots {
    /// `capacity` slots (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            sem: Arc::new(Semaphore::new(capacity)),
            capacity,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a slot; held until the permit is dropped. `None` only if the semaphore
    /// was closed, which this type never does.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        self.sem.clone().acquire_owned().await.ok()
    }

    /// Slots held now.
    pub fn running(&self) -> usize {
        self.capacity.saturating_sub(self.sem.available_permits())
    }

    /// Tasks waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// How much capped work runs and waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub deploy_running: usize,
    pub deploy_waiting: usize,
    pub clean_running: usize,
    pub clean_waiting: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_holders_and_waiters() {
        let slots = Arc::new(WorkSlots::new(1));
        let first = slots.acquire().await.expect("slot");
        assert_eq!((slots.running(), slots.waiting()), (1, 0));
        let s = slots.clone();
        let second = tokio::spawn(async move { s.acquire().await.map(|_| ()) });
        for _ in 0..100 {
            if slots.waiting() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!((slots.running(), slots.waiting()), (1, 1));
        // A waiter that gives up is no longer counted.
        second.abort();
        let _ = second.await;
        assert_eq!(slots.waiting(), 0);
        drop(first);
        assert_eq!(slots.running(), 0);
    }
}
