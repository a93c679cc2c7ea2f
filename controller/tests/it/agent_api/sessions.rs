//! Agent sessions nobody can steal (issue 11), played as an attacker would: with nothing
//! but the victim's MAC, over the real listeners on 127.0.0.1. Each test fails against the
//! controller before sessions were bound to one token per boot.

use std::time::{Duration, Instant};

use controller::config::{ConductorSection, DiscoverySection};
use controller::store::PortQuery;
use proto::WipeMode;
use proto::protocol::{Command, ConfigDrive, HeartbeatResponse, LookupResponse};
use reqwest::Method;
use serde_json::json;

use super::flows::{manage_rules, ok, wiped};
use super::*;

async fn provision(env: &Env, id: Uuid, body: Value) {
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/states/provision"),
            Some(body),
        )
        .await;
    assert_eq!(s, 202, "{b}");
}

/// Sets a node's provision state straight in the store.
async fn force_state(env: &Env, id: Uuid, state: &str) {
    let store = &env.services.store;
    let mut n = store
        .get_node_by_uuid(id)
        .await
        .expect("read")
        .expect("node");
    n.provision_state = state.to_owned();
    store.update_node(&n).await.expect("write");
}

/// What the `manual` hardware told the operator to do for `id`.
fn instructions(env: &Env, id: Uuid) -> Vec<String> {
    env.services
        .conductor
        .registry()
        .manual_hardware()
        .expect("manual")
        .instructions()
        .into_iter()
        .filter(|i| i.node == id)
        .map(|i| i.text)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_is_answered_only_where_an_agent_is_expected() {
    let env = start(manage_rules()).await;
    let req = lookup_req(&["52:54:00:51:00:01"], "S1", "us1");
    let (id, token) = env.session(&req).await;
    env.wait_state(id, "manageable").await;
    // (state, status of a lookup by the live agent) with fast track on.
    for (state, want) in [
        ("active", 404),
        ("clean failed", 404),
        ("deploy failed", 404),
        ("error", 404),
        ("manageable", 200),
        ("available", 200),
        ("clean wait", 200),
    ] {
        force_state(&env, id, state).await;
        let r = env.lookup_as(&req, Some(&token)).await;
        assert_eq!(r.status().as_u16(), want, "{state}");
        if want == 404 {
            let body = r.text().await.expect("body");
            assert!(!body.contains(&id.to_string()), "{state}: {body}");
        }
    }
    // Without fast track, an agent is expected only where the conductor waits for one.
    let env = start_full(manage_rules(), ConductorSection::default(), false).await;
    let req = lookup_req(&["52:54:00:51:00:02"], "S2", "us2");
    let (id, token) = env.session(&req).await;
    env.wait_state(id, "manageable").await;
    for (state, want) in [("manageable", 404), ("available", 404), ("clean wait", 200)] {
        force_state(&env, id, state).await;
        let r = env.lookup_as(&req, Some(&token)).await;
        assert_eq!(r.status().as_u16(), want, "{state}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_lookup_during_clean_wait_gets_no_token() {
    let env = start_full(manage_rules(), ConductorSection::default(), false).await;
    let req = lookup_req(&["52:54:00:52:00:01"], "S3", "us3");
    let (id, discovery_token) = env.session(&req).await;
    env.wait_state(id, "manageable").await;
    provision(&env, id, json!({"target": "provide"})).await;
    env.wait_state(id, "clean wait").await;
    // The conductor booted the agent (fast track is off): the discovery session is over.
    assert_eq!(
        env.heartbeat_raw(id, Some(&discovery_token)).await.status(),
        401
    );
    let texts = instructions(&env, id);
    assert!(
        texts.iter().any(|t| t.contains("pxe")) && texts.iter().any(|t| t.contains("power")),
        "{texts:?}"
    );
    // The first lookup after that boot gets the token; the old token does not.
    assert_eq!(
        env.lookup_as(&req, Some(&discovery_token)).await.status(),
        409
    );
    let (_, token) = env.session(&req).await;
    // Every later lookup: none, whoever asks.
    let r = env.lookup_raw(&req).await;
    assert_eq!(r.status(), 409);
    assert!(!r.text().await.expect("body").contains("token\":\""));
    let r = env.lookup_as(&req, Some(&token)).await;
    assert_eq!(r.status(), 200);
    let again: LookupResponse = r.json().await.expect("json");
    assert_eq!(again.token, None);
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert!(matches!(cmd, Command::Wipe { .. }), "{cmd:?}");
    assert_eq!(env.report(id, &token, cmd_id, wiped()).await, 204);
    env.wait_state(id, "available").await;
    // Cleaning ended with a power-off: the token is dead.
    assert_eq!(env.heartbeat_raw(id, Some(&token)).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attacker_with_the_victims_mac_cannot_take_the_wipe_or_the_deploy() {
    let env = start(manage_rules()).await;
    let mac = "52:54:00:53:00:01";
    let req = lookup_req(&[mac], "S4", "us4");
    let (id, token) = env.session(&req).await;
    env.wait_state(id, "manageable").await;
    provision(&env, id, json!({"target": "provide"})).await;
    let (wipe_id, wipe) = env.next_command(id, &token).await;
    assert!(matches!(wipe, Command::Wipe { .. }), "{wipe:?}");
    env.wait_state(id, "clean wait").await;

    // The attacker: a lookup with the victim's MAC (and its SMBIOS identity) gets no token.
    let attacker = lookup_req(&[mac], "S4", "us4");
    for _ in 0..3 {
        let r = env.lookup_raw(&attacker).await;
        assert_eq!(r.status(), 409);
        assert!(!r.text().await.expect("body").contains("token\":\""));
    }
    // Without a token it can neither poll for the wipe nor complete or fake it.
    for guess in [None, Some("0".repeat(64).as_str()), Some("")] {
        assert_eq!(env.heartbeat_raw(id, guess).await.status(), 401);
        assert_eq!(
            env.report(id, guess.unwrap_or(""), wipe_id, wiped()).await,
            401
        );
    }
    env.wait_state(id, "clean wait").await;
    // The real agent's session is untouched: its idle heartbeat (the first answer went to a
    // dead connection) gets the same wipe back, and its report completes the cleaning.
    let (again, cmd) = env.next_command(id, &token).await;
    assert_eq!((again, &cmd), (wipe_id, &wipe));
    assert_eq!(env.report(id, &token, wipe_id, wiped()).await, 204);
    env.wait_state(id, "available").await;

    // The deploy with the tenant's config drive goes to the real agent only.
    let (s, b) = env
        .api(
            Method::PATCH,
            &format!("/v1/nodes/{id}"),
            Some(json!([
                {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:9/os.raw"},
                {"op": "add", "path": "/instance_info/image_checksum", "value": "ab".repeat(32)}
            ])),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let secret = "tenant-password-7f3a";
    provision(
        &env,
        id,
        json!({"target": "active", "configdrive": {"meta_data": {"hostname": "v"}, "user_data": format!("#cloud-config\npassword: {secret}\n")}}),
    )
    .await;
    env.wait_state(id, "wait call-back").await;
    let r = env.lookup_raw(&attacker).await;
    assert_eq!(r.status(), 409);
    assert!(!r.text().await.expect("body").contains(secret));
    let r = env.heartbeat_raw(id, Some(&"f".repeat(64))).await;
    assert_eq!(r.status(), 401);
    assert!(!r.text().await.expect("body").contains(secret));
    let (deploy_id, cmd) = env.next_command(id, &token).await;
    let Command::Deploy(d) = cmd else {
        panic!("not a deploy: {cmd:?}")
    };
    assert!(
        matches!(&d.configdrive, Some(ConfigDrive::Parts { user_data: Some(u), .. }) if u.contains(secret))
    );
    // The attacker cannot report it done either.
    assert_eq!(env.report(id, "", deploy_id, ok()).await, 401);
    env.wait_state(id, "wait call-back").await;
    assert_eq!(env.report(id, &token, deploy_id, ok()).await, 204);
    env.wait_state(id, "active").await;
    // Rebooted into the instance: the agent's token is dead, and lookup is 404.
    assert_eq!(env.heartbeat_raw(id, Some(&token)).await.status(), 401);
    assert_eq!(env.lookup_as(&req, Some(&token)).await.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_fast_track_a_bare_lookup_gets_no_work() {
    let env = start_full(manage_rules(), ConductorSection::default(), false).await;
    let req = lookup_req(&["52:54:00:54:00:01"], "S5", "us5");
    let (id, discovery_token) = env.session(&req).await;
    env.wait_state(id, "manageable").await;
    assert_eq!(env.lookup_raw(&req).await.status(), 404);
    assert_eq!(
        env.lookup_as(&req, Some(&discovery_token)).await.status(),
        404
    );
    // Nothing is handed to the agent that looked up: inspection boots the machine.
    let before = instructions(&env, id).len();
    provision(&env, id, json!({"target": "inspect"})).await;
    env.wait_state(id, "inspect wait").await;
    let r = env.heartbeat_raw(id, Some(&discovery_token)).await;
    assert_eq!(r.status(), 401);
    let texts = instructions(&env, id)[before..].to_vec();
    assert!(texts.iter().any(|t| t.contains("power")), "{texts:?}");
    // The agent of that boot gets the inspection.
    let (_, token) = env.session(&req).await;
    let (_, cmd) = env.next_command(id, &token).await;
    assert_eq!(cmd, Command::Inspect);
    env.wait_state(id, "inspect wait").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_40000_mac_lookup_is_refused_at_once() {
    let env = start(DiscoverySection {
        enabled: Some(true),
        ..DiscoverySection::default()
    })
    .await;
    let macs: Vec<String> = (0..40_000u32)
        .map(|i| {
            format!(
                "52:54:{:02x}:{:02x}:{:02x}:01",
                i >> 16,
                (i >> 8) & 0xff,
                i & 0xff
            )
        })
        .collect();
    let refs: Vec<&str> = macs.iter().map(String::as_str).collect();
    let mut req = lookup_req(&refs[..1], "S6", "us6");
    req.macs = macs.clone();
    let body = serde_json::to_vec(&req).expect("json");
    let started = Instant::now();
    let r = env
        .http
        .post(format!("{}{PATH_LOOKUP}", env.boot))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("lookup");
    let took = started.elapsed();
    assert_eq!(r.status(), 400);
    assert!(took < Duration::from_millis(100), "took {took:?}");
    eprintln!(
        "40,000-MAC lookup ({} bytes) refused in {took:?}",
        body.len()
    );
    let ports = env
        .services
        .store
        .list_ports(&PortQuery::default())
        .await
        .expect("ports");
    assert!(ports.is_empty(), "{} ports", ports.len());
    // A body past the agent API's cap is refused before it is parsed.
    let mut huge = req.clone();
    huge.macs = vec!["52:54:00:00:00:01".to_owned(); 80_000];
    let r = env
        .http
        .post(format!("{}{PATH_LOOKUP}", env.boot))
        .json(&huge)
        .send()
        .await
        .expect("lookup");
    assert_eq!(r.status(), 413);
    assert!(
        env.services
            .store
            .list_nodes(&Default::default())
            .await
            .expect("nodes")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_301st_lookup_from_one_source_gets_429() {
    let env = start(manage_rules()).await;
    let known = lookup_req(&["52:54:00:56:00:01"], "S7", "us7");
    let (id, token) = env.session(&known).await;
    env.wait_state(id, "manageable").await;
    // 299 more from 127.0.0.1: known and unknown machines alike count.
    for i in 0..299u32 {
        let r = if i % 2 == 0 {
            env.lookup_as(&known, Some(&token)).await
        } else {
            let mut unknown = lookup_req(&["52:54:00:56:00:02"], "S8", "us8");
            unknown.protocol_version = 99;
            env.lookup_raw(&unknown).await
        };
        assert_ne!(r.status(), 429, "lookup {}", i + 2);
    }
    let r = env.lookup_as(&known, Some(&token)).await;
    assert_eq!(r.status(), 429);
    let after: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&after), "{after}");
    // The session itself goes on.
    assert_eq!(env.heartbeat_raw(id, Some(&token)).await.status(), 200);
}

/// Makes every write of a node fail (a store that cannot take a result), or heals it.
async fn break_node_writes(env: &Env, broken: bool) {
    use sqlx::Connection;
    let url = format!("sqlite://{}", env.dir.path().join("ingot.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let sql = if broken {
        "CREATE TRIGGER fail_node_writes BEFORE UPDATE ON nodes \
         BEGIN SELECT RAISE(ABORT, 'injected store failure'); END"
    } else {
        "DROP TRIGGER fail_node_writes"
    };
    sqlx::query(sql).execute(&mut conn).await.expect("trigger");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_the_store_cannot_take_is_503_and_its_retry_applies_once() {
    let env = start(manage_rules()).await;
    let (id, token) = env
        .session(&lookup_req(&["52:54:00:57:00:01"], "S9", "us9"))
        .await;
    env.wait_state(id, "manageable").await;
    provision(
        &env,
        id,
        json!({"target": "clean", "clean_steps": [
            {"interface": "deploy", "step": "erase_devices_metadata"},
            {"interface": "deploy", "step": "erase_devices"}]}),
    )
    .await;
    let (first, cmd) = env.next_command(id, &token).await;
    assert!(
        matches!(
            cmd,
            Command::Wipe {
                mode: WipeMode::Metadata,
                ..
            }
        ),
        "{cmd:?}"
    );
    env.wait_state(id, "clean wait").await;

    break_node_writes(&env, true).await;
    let r = env
        .http
        .post(format!("{}{PATH_EVENTS}", env.boot))
        .header(TOKEN_HEADER, &token)
        .json(&EventReport {
            node_uuid: id,
            command_id: first,
            report: wiped(),
        })
        .send()
        .await
        .expect("events");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    break_node_writes(&env, false).await;
    env.wait_state(id, "clean wait").await;
    // The agent sends the same report again: now it is stored.
    assert_eq!(env.report(id, &token, first, wiped()).await, 204);
    let (second, cmd) = env.next_command(id, &token).await;
    assert!(
        matches!(
            cmd,
            Command::Wipe {
                mode: WipeMode::Secure,
                ..
            }
        ),
        "{cmd:?}"
    );
    env.wait_state(id, "clean wait").await;
    // The first report once more (its answer was lost): 2xx, and it does not complete the
    // second step's wait.
    assert_eq!(env.report(id, &token, first, wiped()).await, 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = env.wait_state(id, "clean wait").await;
    assert_eq!(n["clean_step"]["step"], "erase_devices", "{n}");
    assert_eq!(env.report(id, &token, second, wiped()).await, 204);
    env.wait_state(id, "manageable").await;
    let r = env.heartbeat_raw(id, Some(&token)).await;
    let hb: HeartbeatResponse = r.json().await.expect("hb");
    assert!(
        matches!(hb.command, Command::Wait { .. }),
        "{:?}",
        hb.command
    );
}
