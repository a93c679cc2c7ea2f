//! The hub's queues and sessions, without HTTP.

use super::*;

fn wipe() -> Command {
    Command::Wipe {
        mode: proto::WipeMode::Metadata,
        devices: vec![],
    }
}

/// A node whose agent holds the session of token `name` (issued in a boot window).
fn booted(hub: &AgentHub, node: Uuid, name: &str) -> TokenHash {
    hub.boot_requested(node);
    let h = hash_token(name);
    assert_eq!(hub.lookup(node, None, h), Decision::Issue);
    h
}

#[tokio::test]
async fn heartbeat_waits_for_a_command_and_times_out() {
    let hub = AgentHub::new();
    let node = Uuid::new_v4();
    let s = booted(&hub, node, "a");
    assert!(
        hub.next(node, &s, Duration::from_millis(20))
            .await
            .is_none()
    );
    let h2 = hub.clone();
    let waiter = tokio::spawn(async move { h2.next(node, &s, Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let id = hub.enqueue(node, Command::Inspect);
    let (got, cmd) = waiter.await.expect("join").expect("command");
    assert_eq!((got, cmd), (id, Command::Inspect));
    assert_eq!(hub.claim_result(Uuid::new_v4(), &s, id), Claim::Unknown);
    assert_eq!(
        hub.claim_result(node, &s, id),
        Claim::Apply(Command::Inspect)
    );
    assert_eq!(hub.claim_result(node, &s, id), Claim::InProgress);
    hub.result_stored(id);
    assert_eq!(hub.claim_result(node, &s, id), Claim::Duplicate);
}

#[tokio::test]
async fn a_result_not_stored_can_be_sent_again() {
    let hub = AgentHub::new();
    let node = Uuid::new_v4();
    let s = booted(&hub, node, "a");
    let id = hub.enqueue(node, wipe());
    assert!(
        hub.next(node, &s, Duration::from_millis(10))
            .await
            .is_some()
    );
    assert_eq!(hub.claim_result(node, &s, id), Claim::Apply(wipe()));
    // While its result is being stored, an idle heartbeat does not hand it out again.
    assert_eq!(hub.requeue_sent(node, &s), 0);
    hub.result_not_stored(id);
    assert_eq!(hub.claim_result(node, &s, id), Claim::Apply(wipe()));
    hub.result_stored(id);
    assert_eq!(hub.claim_result(node, &s, id), Claim::Duplicate);
    assert_eq!(hub.requeue_sent(node, &s), 0);
}

#[tokio::test]
async fn a_token_is_issued_once_per_boot() {
    let hub = AgentHub::new();
    let node = Uuid::new_v4();
    // Nothing booted: no token, whoever asks.
    assert_eq!(hub.lookup(node, None, hash_token("x")), Decision::NoBoot);
    let a = booted(&hub, node, "a");
    // A second lookup while the session is live: refused, unless it is the agent itself.
    assert_eq!(hub.lookup(node, None, hash_token("b")), Decision::Conflict);
    let wrong = hash_token("wrong");
    assert_eq!(
        hub.lookup(node, Some(&wrong), hash_token("b")),
        Decision::Conflict
    );
    assert_eq!(
        hub.lookup(node, Some(&a), hash_token("b")),
        Decision::Continue
    );
    assert!(hub.is_live(node, &a));
    // The conductor reboots into the agent: the old token dies, one new one is handed out,
    // not to the agent of the boot before.
    hub.boot_requested(node);
    assert!(!hub.is_live(node, &a));
    assert_eq!(
        hub.lookup(node, Some(&a), hash_token("c")),
        Decision::Conflict
    );
    let c = hash_token("c");
    assert_eq!(hub.lookup(node, None, c), Decision::Issue);
    assert_eq!(hub.lookup(node, None, hash_token("d")), Decision::Conflict);
    // Powered off: no session and no window.
    hub.session_ended(node);
    assert!(!hub.is_live(node, &c));
    assert_eq!(hub.lookup(node, None, hash_token("e")), Decision::NoBoot);
    // A token that could not be stored is taken back and the window reopens.
    hub.boot_requested(node);
    let f = hash_token("f");
    assert_eq!(hub.lookup(node, None, f), Decision::Issue);
    hub.undo_issue(node, &f);
    assert!(!hub.is_live(node, &f));
    assert_eq!(hub.lookup(node, None, hash_token("g")), Decision::Issue);
}

#[tokio::test]
async fn a_restart_restores_the_stored_session() {
    let hub = AgentHub::new();
    let node = Uuid::new_v4();
    let stored = hash_token("t");
    assert!(!hub.knows(node));
    assert_eq!(hub.session_hash(node), None);
    hub.restore(node, Some(stored));
    assert!(hub.is_live(node, &stored));
    assert_eq!(hub.session_hash(node), Some(Some(stored)));
    // What this run knows wins over a later read of the store.
    hub.session_ended(node);
    hub.restore(node, Some(stored));
    assert!(!hub.is_live(node, &stored));
    assert_eq!(hub.session_hash(node), Some(None));
}

#[tokio::test]
async fn a_new_session_ends_the_long_poll_of_the_previous_one() {
    let hub = AgentHub::new();
    let node = Uuid::new_v4();
    let first = booted(&hub, node, "first");
    let h2 = hub.clone();
    let old_poll = tokio::spawn(async move { h2.next(node, &first, Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    // The conductor rebooted the machine and its new agent looked up: the old poll ends.
    let second = booted(&hub, node, "second");
    let ended = tokio::time::timeout(Duration::from_secs(1), old_poll)
        .await
        .expect("the old poll ends at once")
        .expect("join");
    assert_eq!(ended, None);
    // A command queued now goes to the new session only.
    let id = hub.enqueue(node, Command::Inspect);
    assert_eq!(
        hub.next(node, &first, Duration::from_millis(20)).await,
        None
    );
    assert_eq!(
        hub.next(node, &second, Duration::from_millis(50)).await,
        Some((id, Command::Inspect))
    );
}

#[tokio::test]
async fn commands_lost_with_a_dead_connection_go_back_to_the_same_session_only() {
    let hub = AgentHub::new();
    let node = Uuid::new_v4();
    let other = Uuid::new_v4();
    let s = booted(&hub, node, "s");
    let o = booted(&hub, other, "o");
    let a = hub.enqueue(node, Command::Inspect);
    let b = hub.enqueue(node, wipe());
    let c = hub.enqueue(other, Command::Inspect);
    let queued = hub.enqueue(node, Command::Inspect);
    // Handed to polls whose answers never arrived.
    for _ in 0..2 {
        assert!(
            hub.next(node, &s, Duration::from_millis(10))
                .await
                .is_some()
        );
    }
    assert!(
        hub.next(other, &o, Duration::from_millis(10))
            .await
            .is_some()
    );
    // Another token (even a live one of another node) gets nothing back.
    assert_eq!(hub.requeue_sent(node, &o), 0);
    assert_eq!(hub.requeue_sent(node, &s), 2);
    assert_eq!(hub.requeue_sent(node, &s), 0);
    let mut order = Vec::new();
    while let Some((id, _)) = hub.next(node, &s, Duration::from_millis(10)).await {
        order.push(id);
    }
    assert_eq!(order, vec![a, b, queued]);
    assert_eq!(hub.sent(node, &s, b), Some(wipe()));
    assert_eq!(hub.sent(node, &o, b), None);
    assert_eq!(
        hub.claim_result(other, &o, c),
        Claim::Apply(Command::Inspect)
    );
    assert_eq!(hub.claim_result(node, &o, a), Claim::Unknown);
    assert_eq!(
        hub.claim_result(node, &s, a),
        Claim::Apply(Command::Inspect)
    );
    hub.result_stored(a);
    assert_eq!(hub.requeue_sent(node, &s), 2);
    assert_eq!(hub.pending(node).len(), 2);
}

#[tokio::test]
async fn a_reboot_drops_what_the_old_session_held() {
    let hub = AgentHub::new();
    let node = Uuid::new_v4();
    let s = booted(&hub, node, "s");
    let id = hub.enqueue(node, wipe());
    assert!(
        hub.next(node, &s, Duration::from_millis(10))
            .await
            .is_some()
    );
    hub.enqueue(node, Command::Inspect);
    let t = booted(&hub, node, "t");
    assert_eq!(hub.claim_result(node, &s, id), Claim::Unknown);
    assert_eq!(hub.requeue_sent(node, &t), 0);
    assert!(hub.pending(node).is_empty());
}

#[test]
fn fast_track_needs_a_live_session_heard_recently() {
    let node = Uuid::new_v4();
    let off = AgentHub::new();
    booted(&off, node, "a");
    assert!(!off.fast_track_ready(node));
    let on = AgentHub::with_fast_track(Some(Duration::from_secs(300)));
    assert!(!on.fast_track_ready(node), "no session");
    on.boot_requested(node);
    assert!(!on.fast_track_ready(node), "booting, nobody looked up");
    booted(&on, node, "a");
    assert!(on.fast_track_ready(node));
    on.session_ended(node);
    assert!(!on.fast_track_ready(node));
    let short = AgentHub::with_fast_track(Some(Duration::ZERO));
    booted(&short, node, "a");
    std::thread::sleep(Duration::from_millis(5));
    assert!(!short.fast_track_ready(node), "heard too long ago");
    short.touch(node);
    let discovered = AgentHub::with_fast_track(Some(Duration::from_secs(300)));
    discovered.discovered(node, hash_token("d"));
    assert!(discovered.fast_track_ready(node));
}

#[test]
fn token_hashes_compare() {
    let a = hash_token("abc");
    assert!(hashes_equal(&a, &hash_token("abc")));
    assert!(!hashes_equal(&a, &hash_token("abd")));
}

#[test]
fn hex_round_trip() {
    let h = hash_token("x");
    assert_eq!(from_hex(&to_hex(&h)), Some(h));
    assert_eq!(from_hex("zz"), None);
}

#[test]
fn the_hubs_view_is_what_a_save_stores() {
    use crate::model::Node;
    let hub = AgentHub::new();
    let mut node = Node::new(Uuid::new_v4(), "manual", chrono::Utc::now());
    let old = hash_token("old");
    node.driver_internal_info.insert(
        TOKEN_HASH_KEY.into(),
        serde_json::Value::String(to_hex(&old)),
    );
    // Unknown to this run (a restart): the stored hash stays.
    sync_token_hash(&hub, &mut node);
    assert_eq!(stored_token_hash(&node), Some(old));
    // The conductor rebooted the machine: the dead token is not saved back.
    hub.boot_requested(node.uuid);
    sync_token_hash(&hub, &mut node);
    assert_eq!(stored_token_hash(&node), None);
    // A lookup took a new token meanwhile: the save keeps it.
    let new = hash_token("new");
    hub.lookup(node.uuid, None, new);
    sync_token_hash(&hub, &mut node);
    assert_eq!(stored_token_hash(&node), Some(new));
}
