//! The callback timeout over the wire: busy heartbeats about the command the controller
//! handed out keep a wait alive past the timeout; heartbeats about a command it does not
//! know (an agent still busy with work from before a restart) do not.

use std::time::{Duration, Instant};

use controller::config::ConductorSection;
use proto::protocol::AgentState;
use reqwest::Method;
use serde_json::json;

use super::flows::{manage_rules, wiped};
use super::*;

const TIMEOUT_SECS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_heartbeats_about_the_handed_command_keep_the_wait_alive() {
    let env = start_with(
        manage_rules(),
        ConductorSection {
            callback_timeout_secs: Some(TIMEOUT_SECS),
            ..ConductorSection::default()
        },
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
    let started = Instant::now();
    while started.elapsed() < timeout * 3 {
        let r = env.heartbeat_state(live, Some(&token), busy(cmd_id)).await;
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
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
    let started = Instant::now();
    let failed = loop {
        let r = env.heartbeat_state(stale, Some(&token), busy(lost)).await;
        assert_eq!(r.status(), 200);
        let (_, n) = env
            .api(Method::GET, &format!("/v1/nodes/{stale}"), None)
            .await;
        if n["provision_state"] == "clean failed" {
            break n;
        }
        assert!(
            started.elapsed() < timeout * 4,
            "the wait outlived its timeout: {n}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Timeout")),
        "{failed}"
    );
}
