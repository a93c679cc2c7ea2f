//! The callback timeout over the wire: busy heartbeats about the command the controller
//! handed out keep a wait alive past the timeout; heartbeats about a command it does not
//! know (an agent still busy with work from before a restart) do not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::conductor::clock::ManualClock;
use controller::config::ConductorSection;
use proto::protocol::AgentState;
use reqwest::Method;
use serde_json::json;

use super::flows::{manage_rules, wiped};
use super::*;

const TIMEOUT_SECS: u64 = 1800;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_heartbeats_about_the_handed_command_keep_the_wait_alive() {
    let clock = Arc::new(ManualClock::default());
    let env = start_clocked(
        manage_rules(),
        ConductorSection {
            callback_timeout_secs: Some(TIMEOUT_SECS),
            ..ConductorSection::default()
        },
        true,
        clock.clone(),
    )
    .await;
    let timeout = Duration::from_secs(TIMEOUT_SECS);
    let busy = |command_id| AgentState::Busy { command_id };

    // A live agent: cleaning waits for it three timeouts long, then it reports.
    let lr = env
        .lookup(&lookup_req(&["52:54:00:cc:00:31"], "T1", "ut1"))
        .await;
    let (live, token) = (lr.node_uuid, lr.token.expect("token"));
    env.wait_state(live, "manageable").await;
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{live}/states/provision"),
            Some(json!({"target": "provide"})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, _) = env.next_command(live, &token).await;
    env.wait_state(live, "clean wait").await;
    wait_sleepers(&clock, 1).await;
    for _ in 0..9 {
        let r = env.heartbeat_state(live, Some(&token), busy(cmd_id)).await;
        assert_eq!(r.status(), 200);
        clock.advance(timeout / 3);
    }
    settle().await;
    env.wait_state(live, "clean wait").await;
    assert_eq!(env.report(live, &token, cmd_id, wiped()).await, 204);
    env.wait_state(live, "available").await;

    // An agent busy with a command this controller never handed out: the wait runs out.
    let lr = env
        .lookup(&lookup_req(&["52:54:00:cc:00:32"], "T2", "ut2"))
        .await;
    let (stale, token) = (lr.node_uuid, lr.token.expect("token"));
    env.wait_state(stale, "manageable").await;
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{stale}/states/provision"),
            Some(json!({"target": "provide"})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (_, _) = env.next_command(stale, &token).await;
    env.wait_state(stale, "clean wait").await;
    let lost = Uuid::new_v4();
    wait_sleepers(&clock, 1).await;
    // Heartbeats about a lost command leave the timeout where it was: just short of it the
    // node still waits, at it the cleaning fails.
    for _ in 0..2 {
        let r = env.heartbeat_state(stale, Some(&token), busy(lost)).await;
        assert_eq!(r.status(), 200);
        clock.advance((timeout - Duration::from_secs(1)) / 2);
    }
    settle().await;
    env.wait_state(stale, "clean wait").await;
    clock.advance(Duration::from_secs(1));
    let started = Instant::now();
    let failed = loop {
        let (_, n) = env
            .api(Method::GET, &format!("/v1/nodes/{stale}"), None)
            .await;
        if n["provision_state"] == "clean failed" {
            break n;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the wait outlived its timeout: {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Timeout")),
        "{failed}"
    );
}

/// Waits (in real time, briefly) until `n` wait timers sleep on `clock`.
async fn wait_sleepers(clock: &ManualClock, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while clock.sleepers() < n {
        assert!(
            Instant::now() < deadline,
            "{} timers sleep, not {n}",
            clock.sleepers()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Lets woken timer tasks run (and a wrongly fired time-out reach the store).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}
