//! The power-state sync at scale: bounded BMC concurrency and reads spread over the interval.

use std::time::{Duration, Instant};

use super::*;
use crate::conductor::periodic::POWER_SYNC_WORKERS;
use crate::drivers::fake::FakeOp;

async fn powered_nodes(env: &Env, n: usize) -> Vec<Uuid> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let uuid = enroll(&env.store, "fake-hardware", "available").await;
        out.push(uuid);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_the_workers_read_at_once_and_every_node_is_read() {
    let env = env().await;
    let nodes = powered_nodes(&env, 3 * POWER_SYNC_WORKERS).await;
    env.fake.pause(FakeOp::GetPower);
    let conductor = env.conductor.clone();
    let sync = tokio::spawn(async move { conductor.sync_power_states().await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.fake.concurrency(FakeOp::GetPower).0 < POWER_SYNC_WORKERS {
        assert!(Instant::now() < deadline, "the workers never all started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        env.fake.concurrency(FakeOp::GetPower),
        (POWER_SYNC_WORKERS, POWER_SYNC_WORKERS),
        "more BMC reads than workers at once"
    );
    env.fake.resume(FakeOp::GetPower);
    sync.await.expect("join").expect("sync");
    for uuid in nodes {
        assert_eq!(
            env.fake
                .calls_for(uuid)
                .iter()
                .filter(|c| c.op == FakeOp::GetPower)
                .count(),
            1,
            "{uuid} read once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spread_over_three_quarters_of_the_interval() {
    // The periodic round itself first runs one interval after the start, after this one.
    let interval = Duration::from_secs(4);
    let env = env_with(ConductorConfig {
        power_sync_interval: interval,
        ..config()
    })
    .await;
    powered_nodes(&env, 16).await;
    let started = Instant::now();
    env.conductor.sync_power_states().await.expect("sync");
    let took = started.elapsed();
    // 16 starts 3/16 s apart: the last one 2.8 s after the first.
    assert!(took >= Duration::from_millis(2_800), "{took:?}: not spread");
    assert!(took < interval, "{took:?}: longer than the interval");
}
