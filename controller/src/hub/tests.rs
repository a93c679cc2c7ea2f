//! The hub's queues and sessions, without HTTP: each case runs on the in-memory rows and on
//! a real SQLite store; the replica cases put two hubs on one database file.

use super::*;
use crate::model::Node;
use crate::store::{SqlStore, Store};

fn wipe() -> Command {
    Command::Wipe {
        mode: proto::WipeMode::Metadata,
        devices: vec![],
    }
}

/// A hub and, for the SQL rig, the store its nodes must exist in.
struct Rig {
    hub: Arc<AgentHub>,
    sql: Option<Arc<SqlStore>>,
}

impl Rig {
    async fn node(&self) -> Uuid {
        let uuid = Uuid::new_v4();
        if let Some(sql) = &self.sql {
            sql.create_node(&Node::new(uuid, "manual", Utc::now()))
                .await
                .expect("create node");
        }
        uuid
    }
}

async fn sql_store() -> Arc<SqlStore> {
    Arc::new(SqlStore::connect("sqlite::memory:").await.expect("sqlite"))
}

/// The memory rig and the SQLite rig, each with `options`.
async fn rigs(options: HubOptions) -> Vec<Rig> {
    let sql = sql_store().await;
    vec![
        Rig {
            hub: AgentHub::with_options(Arc::new(MemorySessions::default()), options.clone()),
            sql: None,
        },
        Rig {
            hub: AgentHub::with_options(sql.clone(), options),
            sql: Some(sql),
        },
    ]
}

fn fast(window: Duration) -> HubOptions {
    HubOptions {
        fast_track: Some(window),
        ..HubOptions::default()
    }
}

/// A node whose agent holds the session of token `name` (issued in a boot window).
async fn booted(hub: &AgentHub, node: Uuid, name: &str) -> TokenHash {
    hub.boot_requested(node).await.expect("boot");
    let h = hash_token(name);
    assert_eq!(
        hub.lookup(node, None, h).await.expect("lookup"),
        Decision::Issue
    );
    h
}

async fn next(hub: &AgentHub, node: Uuid, s: &TokenHash, ms: u64) -> Option<(Uuid, Command)> {
    hub.next(node, s, Duration::from_millis(ms))
        .await
        .expect("next")
}

async fn claim(hub: &AgentHub, node: Uuid, s: &TokenHash, id: Uuid) -> Claim {
    hub.claim_result(node, s, id).await.expect("claim")
}

async fn lookup(hub: &AgentHub, node: Uuid, presented: Option<&TokenHash>, t: &str) -> Decision {
    hub.lookup(node, presented, hash_token(t))
        .await
        .expect("lookup")
}

#[tokio::test]
async fn heartbeat_waits_for_a_command_and_times_out() {
    for rig in rigs(HubOptions::default()).await {
        let hub = &rig.hub;
        let node = rig.node().await;
        let s = booted(hub, node, "a").await;
        assert!(next(hub, node, &s, 20).await.is_none());
        let h2 = hub.clone();
        let waiter = tokio::spawn(async move { next(&h2, node, &s, 5000).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let id = hub.enqueue(node, Command::Inspect).await.expect("enqueue");
        let (got, cmd) = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken at once")
            .expect("join")
            .expect("command");
        assert_eq!((got, cmd), (id, Command::Inspect));
        assert_eq!(claim(hub, Uuid::new_v4(), &s, id).await, Claim::Unknown);
        assert_eq!(
            claim(hub, node, &s, id).await,
            Claim::Apply(Command::Inspect)
        );
        assert_eq!(claim(hub, node, &s, id).await, Claim::InProgress);
        hub.result_stored(id).await.expect("stored");
        assert_eq!(claim(hub, node, &s, id).await, Claim::Duplicate);
    }
}

#[tokio::test]
async fn a_result_not_stored_can_be_sent_again() {
    for rig in rigs(HubOptions::default()).await {
        let hub = &rig.hub;
        let node = rig.node().await;
        let s = booted(hub, node, "a").await;
        let id = hub.enqueue(node, wipe()).await.expect("enqueue");
        assert!(next(hub, node, &s, 10).await.is_some());
        assert_eq!(claim(hub, node, &s, id).await, Claim::Apply(wipe()));
        // While its result is being stored, an idle heartbeat does not hand it out again.
        assert_eq!(hub.requeue_sent(node, &s).await.expect("requeue"), 0);
        hub.result_not_stored(id).await.expect("undo");
        assert_eq!(claim(hub, node, &s, id).await, Claim::Apply(wipe()));
        hub.result_stored(id).await.expect("stored");
        assert_eq!(claim(hub, node, &s, id).await, Claim::Duplicate);
        assert_eq!(hub.requeue_sent(node, &s).await.expect("requeue"), 0);
    }
}

#[tokio::test]
async fn a_token_is_issued_once_per_boot() {
    for rig in rigs(HubOptions::default()).await {
        let hub = &rig.hub;
        let node = rig.node().await;
        // Nothing booted: no token, whoever asks.
        assert_eq!(lookup(hub, node, None, "x").await, Decision::NoBoot);
        let a = booted(hub, node, "a").await;
        // A second lookup while the session is live: refused, unless it is the agent itself.
        assert_eq!(lookup(hub, node, None, "b").await, Decision::Conflict);
        let wrong = hash_token("wrong");
        assert_eq!(
            lookup(hub, node, Some(&wrong), "b").await,
            Decision::Conflict
        );
        assert_eq!(lookup(hub, node, Some(&a), "b").await, Decision::Continue);
        assert!(hub.is_live(node, &a).await.expect("live"));
        assert_eq!(hub.live_sessions().await.expect("count"), 1);
        // The conductor reboots into the agent: the old token dies, one new one is handed
        // out, not to the agent of the boot before.
        hub.boot_requested(node).await.expect("boot");
        assert!(!hub.is_live(node, &a).await.expect("live"));
        assert_eq!(hub.live_sessions().await.expect("count"), 0);
        assert_eq!(lookup(hub, node, Some(&a), "c").await, Decision::Conflict);
        let c = hash_token("c");
        assert_eq!(lookup(hub, node, None, "c").await, Decision::Issue);
        assert_eq!(lookup(hub, node, None, "d").await, Decision::Conflict);
        // Powered off: no session and no window.
        hub.session_ended(node).await.expect("end");
        assert!(!hub.is_live(node, &c).await.expect("live"));
        assert_eq!(lookup(hub, node, None, "e").await, Decision::NoBoot);
        // A token that could not be stored is taken back and the window reopens.
        hub.boot_requested(node).await.expect("boot");
        let f = hash_token("f");
        assert_eq!(lookup(hub, node, None, "f").await, Decision::Issue);
        hub.undo_issue(node, &f).await.expect("undo");
        assert!(!hub.is_live(node, &f).await.expect("live"));
        assert_eq!(lookup(hub, node, None, "g").await, Decision::Issue);
    }
}

#[tokio::test]
async fn a_new_session_ends_the_long_poll_of_the_previous_one() {
    for rig in rigs(HubOptions::default()).await {
        let hub = &rig.hub;
        let node = rig.node().await;
        let first = booted(hub, node, "first").await;
        let h2 = hub.clone();
        let old_poll = tokio::spawn(async move { next(&h2, node, &first, 5000).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The conductor rebooted the machine and its new agent looked up: the old poll ends.
        let second = booted(hub, node, "second").await;
        let ended = tokio::time::timeout(Duration::from_secs(1), old_poll)
            .await
            .expect("the old poll ends at once")
            .expect("join");
        assert_eq!(ended, None);
        // A command queued now goes to the new session only.
        let id = hub.enqueue(node, Command::Inspect).await.expect("enqueue");
        assert_eq!(next(hub, node, &first, 20).await, None);
        assert_eq!(
            next(hub, node, &second, 50).await,
            Some((id, Command::Inspect))
        );
    }
}

#[tokio::test]
async fn commands_lost_with_a_dead_connection_go_back_to_the_same_session_only() {
    for rig in rigs(HubOptions::default()).await {
        let hub = &rig.hub;
        let node = rig.node().await;
        let other = rig.node().await;
        let s = booted(hub, node, "s").await;
        let o = booted(hub, other, "o").await;
        let enqueue = |n, c| hub.enqueue(n, c);
        let a = enqueue(node, Command::Inspect).await.expect("a");
        let b = enqueue(node, wipe()).await.expect("b");
        let c = enqueue(other, Command::Inspect).await.expect("c");
        let queued = enqueue(node, Command::Inspect).await.expect("q");
        // Handed to polls whose answers never arrived.
        for _ in 0..2 {
            assert!(next(hub, node, &s, 10).await.is_some());
        }
        assert!(next(hub, other, &o, 10).await.is_some());
        // Another token (even a live one of another node) gets nothing back.
        assert_eq!(hub.requeue_sent(node, &o).await.expect("requeue"), 0);
        assert_eq!(hub.requeue_sent(node, &s).await.expect("requeue"), 2);
        assert_eq!(hub.requeue_sent(node, &s).await.expect("requeue"), 0);
        let mut order = Vec::new();
        while let Some((id, _)) = next(hub, node, &s, 10).await {
            order.push(id);
        }
        assert_eq!(order, vec![a, b, queued]);
        assert_eq!(hub.sent(node, &s, b).await.expect("sent"), Some(wipe()));
        assert_eq!(hub.sent(node, &o, b).await.expect("sent"), None);
        assert_eq!(
            claim(hub, other, &o, c).await,
            Claim::Apply(Command::Inspect)
        );
        assert_eq!(claim(hub, node, &o, a).await, Claim::Unknown);
        assert_eq!(
            claim(hub, node, &s, a).await,
            Claim::Apply(Command::Inspect)
        );
        hub.result_stored(a).await.expect("stored");
        assert_eq!(hub.requeue_sent(node, &s).await.expect("requeue"), 2);
        assert_eq!(hub.pending(node).await.expect("pending").len(), 2);
    }
}

#[tokio::test]
async fn a_reboot_drops_what_the_old_session_held() {
    for rig in rigs(HubOptions::default()).await {
        let hub = &rig.hub;
        let node = rig.node().await;
        let s = booted(hub, node, "s").await;
        let id = hub.enqueue(node, wipe()).await.expect("enqueue");
        assert!(next(hub, node, &s, 10).await.is_some());
        hub.enqueue(node, Command::Inspect).await.expect("enqueue");
        let t = booted(hub, node, "t").await;
        assert_eq!(claim(hub, node, &s, id).await, Claim::Unknown);
        assert_eq!(hub.requeue_sent(node, &t).await.expect("requeue"), 0);
        assert!(hub.pending(node).await.expect("pending").is_empty());
    }
}

#[tokio::test]
async fn fast_track_needs_a_live_session_heard_recently() {
    for rig in rigs(HubOptions::default()).await {
        let node = rig.node().await;
        booted(&rig.hub, node, "a").await;
        assert!(!rig.hub.fast_track_ready(node).await.expect("ft"), "off");
    }
    for rig in rigs(fast(Duration::from_secs(300))).await {
        let (on, node) = (&rig.hub, rig.node().await);
        assert!(!on.fast_track_ready(node).await.expect("ft"), "no session");
        on.boot_requested(node).await.expect("boot");
        assert!(
            !on.fast_track_ready(node).await.expect("ft"),
            "booting, nobody looked up"
        );
        booted(on, node, "a").await;
        assert!(on.fast_track_ready(node).await.expect("ft"));
        on.session_ended(node).await.expect("end");
        assert!(!on.fast_track_ready(node).await.expect("ft"));
        let discovered = rig.node().await;
        on.discovered(discovered, hash_token("d"))
            .await
            .expect("discovered");
        assert!(on.fast_track_ready(discovered).await.expect("ft"));
    }
    for rig in rigs(fast(Duration::ZERO)).await {
        let node = rig.node().await;
        booted(&rig.hub, node, "a").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            !rig.hub.fast_track_ready(node).await.expect("ft"),
            "heard too long ago"
        );
    }
}

/// Two replicas on one database: what one queues the other hands out, a result of a
/// command one handed out is taken by the other, a token issued by one is live on both,
/// and one command never goes out twice.
#[tokio::test]
async fn replicas_share_sessions_and_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/ingot.db", dir.path().display());
    let db = Arc::new(SqlStore::connect(&url).await.expect("sqlite"));
    let poll = HubOptions {
        poll_every: Some(Duration::from_millis(20)),
        ..HubOptions::default()
    };
    let a = AgentHub::with_options(db.clone(), poll.clone());
    let b = AgentHub::with_options(db.clone(), poll);
    let node = Uuid::new_v4();
    db.create_node(&Node::new(node, "manual", Utc::now()))
        .await
        .expect("node");
    // Replica A boots the agent; the agent's lookup reaches B.
    a.boot_requested(node).await.expect("boot");
    let s = hash_token("s");
    assert_eq!(
        b.lookup(node, None, s).await.expect("lookup"),
        Decision::Issue
    );
    assert!(a.is_live(node, &s).await.expect("live"));
    assert_eq!(
        a.lookup(node, None, hash_token("t")).await.expect("lookup"),
        Decision::Conflict
    );
    // B long-polls; A queues: B hands it out without A's wake-up (by its poll).
    let b2 = b.clone();
    let poll = tokio::spawn(async move { next(&b2, node, &s, 5000).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let id = a.enqueue(node, wipe()).await.expect("enqueue");
    let (got, _) = tokio::time::timeout(Duration::from_secs(2), poll)
        .await
        .expect("B's poll sees A's command")
        .expect("join")
        .expect("command");
    assert_eq!(got, id);
    assert_eq!(next(&a, node, &s, 10).await, None, "never handed out twice");
    // B dies; its agent reports to A.
    drop(b);
    assert_eq!(claim(&a, node, &s, id).await, Claim::Apply(wipe()));
    a.result_stored(id).await.expect("stored");
    assert_eq!(claim(&a, node, &s, id).await, Claim::Duplicate);
    // Racing replicas hand out each command once.
    let c = AgentHub::with_options(db.clone(), HubOptions::default());
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(a.enqueue(node, Command::Inspect).await.expect("enqueue"));
    }
    let take = |hub: Arc<AgentHub>| async move {
        let mut got = Vec::new();
        while let Some((id, _)) = next(&hub, node, &s, 30).await {
            got.push(id);
        }
        got
    };
    let (x, y) = tokio::join!(take(a.clone()), take(c.clone()));
    let mut all: Vec<Uuid> = x.into_iter().chain(y).collect();
    all.sort();
    ids.sort();
    assert_eq!(all, ids);
}

/// A report whose replica died while storing it is taken by the agent's retry later.
#[tokio::test]
async fn a_claim_of_a_dead_replica_goes_stale() {
    let rows = Arc::new(MemorySessions::default());
    let hub = AgentHub::with_options(rows.clone(), HubOptions::default());
    let node = Uuid::new_v4();
    let s = booted(&hub, node, "s").await;
    let id = hub.enqueue(node, wipe()).await.expect("enqueue");
    assert!(next(&hub, node, &s, 10).await.is_some());
    assert_eq!(claim(&hub, node, &s, id).await, Claim::Apply(wipe()));
    assert_eq!(claim(&hub, node, &s, id).await, Claim::InProgress);
    // Its claim is older than REPORT_STALE: as if the replica died in between.
    let old = Utc::now() - chrono::Duration::from_std(REPORT_STALE * 2).expect("dur");
    assert!(
        rows.move_agent_command(
            id,
            CommandState::Reporting,
            None,
            CommandState::Reporting,
            old
        )
        .await
        .expect("age")
    );
    assert_eq!(claim(&hub, node, &s, id).await, Claim::Apply(wipe()));
}

#[tokio::test]
async fn a_sign_of_life_is_recorded_for_other_replicas() {
    let rig = rigs(HubOptions::default()).await.pop().expect("sql rig");
    let node = rig.node().await;
    assert_eq!(rig.hub.last_seen(node).await.expect("seen"), None);
    booted(&rig.hub, node, "s").await;
    let seen = rig
        .hub
        .last_seen(node)
        .await
        .expect("seen")
        .expect("recorded");
    assert!(Utc::now() - seen < chrono::Duration::seconds(5));
    rig.hub.session_ended(node).await.expect("end");
    assert_eq!(rig.hub.last_seen(node).await.expect("seen"), None);
}

#[test]
fn token_hashes_compare() {
    let a = hash_token("abc");
    assert!(hashes_equal(&a, &hash_token("abc")));
    assert!(!hashes_equal(&a, &hash_token("abd")));
    assert!(stored_is(Some(&to_hex(&a)), &a));
    assert!(!stored_is(Some(&to_hex(&a)[..63]), &a));
    assert!(!stored_is(None, &a));
}
