//! The web console's endpoints: `/ui` public with its CSP, `/v1/ingot/whoami`, the node
//! event stream (`/v1/ingot/events`: behind authentication, node changes from any writer,
//! a project user's only, capped), and `ingot_search` on node lists.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use controller::api::auth::{AuthStrategy, HtpasswdUsers};
use controller::api::policy::{Policies, Role, UserPolicy};
use controller::api::{ApiSettings, ApiState, router};
use controller::conductor::{Conductor, ConductorConfig};
use controller::drivers::DriverRegistry;
use controller::live::{LiveEvents, store::Watched};
use controller::store::{SqlStore, Store};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{Api, HOST};

const PASSWORD: &str = "console-pass";

/// A router over a watched store with http_basic users `admin`, `ro` (reader), `member`
/// (member of every project) and `p1` (member of project p1); at most `streams` event
/// streams.
pub(super) async fn console_api(
    streams: usize,
) -> (axum::Router, Arc<dyn Store>, tempfile::TempDir) {
    let (app, store, dir, _) = console_api_live(streams).await;
    (app, store, dir)
}

async fn console_api_live(
    streams: usize,
) -> (
    axum::Router,
    Arc<dyn Store>,
    tempfile::TempDir,
    Arc<LiveEvents>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    let file = dir.path().join("htpasswd");
    std::fs::write(
        &file,
        format!("admin:{hash}\nro:{hash}\nmember:{hash}\np1:{hash}\n"),
    )
    .expect("htpasswd");
    let users = HtpasswdUsers::load(&file).expect("users");
    let mut policies = Policies::new();
    policies.insert(
        "ro".into(),
        UserPolicy {
            role: Role::Reader,
            project: None,
        },
    );
    policies.insert(
        "member".into(),
        UserPolicy {
            role: Role::Member,
            project: None,
        },
    );
    policies.insert(
        "p1".into(),
        UserPolicy {
            role: Role::Member,
            project: Some("p1".into()),
        },
    );
    let live = Arc::new(LiveEvents::new(64, streams));
    let url = format!("sqlite://{}/ingot.db", dir.path().display());
    let sql: Arc<dyn Store> = Arc::new(SqlStore::connect(&url).await.expect("store"));
    let store: Arc<dyn Store> = Arc::new(Watched::new(sql, live.clone()));
    let conductor = Conductor::new(
        store.clone(),
        DriverRegistry::builtin(),
        ConductorConfig {
            name: "ingot".into(),
            power_sync_interval: Duration::ZERO,
            ..ConductorConfig::default()
        },
    );
    let settings = ApiSettings {
        auth: AuthStrategy::HttpBasic(Arc::new(users)),
        policies,
        live: live.clone(),
        ..ApiSettings::default()
    };
    (
        router(ApiState::new(store.clone(), conductor, settings)),
        store,
        dir,
        live,
    )
}

pub(super) fn request(
    method: Method,
    path: &str,
    user: Option<&str>,
    body: Option<Value>,
) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
        .header("x-openstack-ironic-api-version", "1.115")
        .header("content-type", "application/json");
    if let Some(u) = user {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{PASSWORD}"));
        req = req.header("authorization", format!("Basic {token}"));
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    req.body(body).expect("request")
}

pub(super) async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An open event stream: its events as (name, data).
struct Stream(axum::body::BodyDataStream, String);

impl Stream {
    async fn open(app: &axum::Router, user: &str) -> Stream {
        let resp = app
            .clone()
            .oneshot(request(Method::GET, "/v1/ingot/events", Some(user), None))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()["content-type"].to_str().expect("ascii"),
            "text/event-stream"
        );
        let mut s = Stream(resp.into_body().into_data_stream(), String::new());
        assert_eq!(s.next().await.map(|e| e.0), Some("hello".to_owned()));
        s
    }

    /// The next event within 2 s, or None.
    async fn next(&mut self) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(cut) = self.1.find("\n\n") {
                let block: String = self.1.drain(..cut + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event:") {
                        name = n.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if name.is_empty() {
                    continue; // keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).expect("json data")));
            }
            let chunk = tokio::time::timeout_at(deadline, self.0.next())
                .await
                .ok()??;
            self.1
                .push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        }
    }
}

#[tokio::test]
async fn static_files_are_public_with_a_strict_csp() {
    let (app, _store, _dir) = console_api(4).await;
    for path in ["/ui", "/ui/", "/ui/app.js", "/ui/app.css"] {
        let resp = app
            .clone()
            .oneshot(request(Method::GET, path, None, None))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .expect("ascii");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    }
    // Nothing else under /ui, and the data is not public.
    let (status, _) = call(&app, request(Method::GET, "/ui/secrets.js", None, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for path in ["/v1/ingot/events", "/v1/ingot/whoami", "/v1/nodes"] {
        let (status, _) = call(&app, request(Method::GET, path, None, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn whoami_names_the_role() {
    let (app, _store, _dir) = console_api(4).await;
    let (s, me) = call(
        &app,
        request(Method::GET, "/v1/ingot/whoami", Some("ro"), None),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        me,
        json!({"user": "ro", "role": "reader", "project": null, "auth_strategy": "http_basic"})
    );
    let (_, me) = call(
        &app,
        request(Method::GET, "/v1/ingot/whoami", Some("admin"), None),
    )
    .await;
    assert_eq!(me["role"], "admin");
}

#[tokio::test]
async fn the_stream_carries_node_changes_a_project_user_only_its_own() {
    let (app, store, _dir) = console_api(4).await;
    let mut admin = Stream::open(&app, "admin").await;
    let mut p1 = Stream::open(&app, "p1").await;
    let create = |name: &str, owner: &str| {
        request(
            Method::POST,
            "/v1/nodes",
            Some("admin"),
            Some(json!({"driver": "fake-hardware", "name": name, "owner": owner})),
        )
    };
    let (s, other) = call(&app, create("other", "p2")).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, mine) = call(&app, create("mine", "p1")).await;
    assert_eq!(s, StatusCode::CREATED);
    let (name, data) = admin.next().await.expect("admin sees the first node");
    assert_eq!((name.as_str(), &data["name"]), ("node", &json!("other")));
    assert!(data.get("owner").is_none(), "owner is not sent");
    let (_, data) = admin.next().await.expect("and the second");
    assert_eq!(data["name"], "mine");
    let (_, data) = p1.next().await.expect("p1 sees its node");
    assert_eq!(data["uuid"], mine["uuid"], "and not p2's first");

    // A change made below the API (as the conductor or the agent API do) is an event too,
    // with the agent's progress.
    let uuid = mine["uuid"].as_str().expect("uuid");
    let mut node = store.get_node(uuid).await.expect("get").expect("node");
    node.driver_internal_info.insert(
        "agent_progress".into(),
        json!({"phase": "stream", "bytes_fetched": 5, "bytes_total": 10}),
    );
    store.update_node(&node).await.expect("update");
    let (_, data) = p1.next().await.expect("progress event");
    assert_eq!(data["progress"]["bytes_fetched"], 5);

    let (s, _) = call(
        &app,
        request(
            Method::DELETE,
            &format!("/v1/nodes/{}", other["uuid"].as_str().expect("uuid")),
            Some("admin"),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, _) = admin.next().await.expect("progress event for admin");
    let (name, data) = admin.next().await.expect("deleted");
    assert_eq!((name.as_str(), &data["uuid"]), ("deleted", &other["uuid"]));
}

#[tokio::test]
async fn streams_are_capped() {
    let (app, _store, _dir) = console_api(1).await;
    let first = Stream::open(&app, "admin").await;
    let (s, _) = call(
        &app,
        request(Method::GET, "/v1/ingot/events", Some("admin"), None),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    drop(first);
    let _again = Stream::open(&app, "admin").await;
}

#[tokio::test]
async fn closing_ends_open_streams() {
    let (app, _store, _dir, live) = console_api_live(4).await;
    let mut stream = Stream::open(&app, "admin").await;
    live.close();
    assert_eq!(stream.next().await, None, "the stream ended");
    let (s, _) = call(
        &app,
        request(Method::GET, "/v1/ingot/events", Some("admin"), None),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn ingot_search_finds_by_name_uuid_mac_and_serial() {
    let api = Api::new().await;
    let a = api.node("rack-a-01").await;
    let b = api.node("rack-b-02").await;
    api.post(
        "/v1/ports",
        json!({"address": "52:54:00:ab:cd:ef", "node_uuid": b["uuid"]}),
    )
    .await
    .expect(StatusCode::CREATED);
    let b_uuid: uuid::Uuid = b["uuid"].as_str().expect("uuid").parse().expect("uuid");
    api.store
        .put_inventory(
            b_uuid,
            &json!({"inventory": {"disks": [{"name": "/dev/sda", "serial": "WD-XYZ123"}],
                    "system_vendor": {"serial_number": "CHASSIS-77"}}, "plugin_data": {}}),
        )
        .await
        .expect("inventory");
    let names = |r: super::Resp| -> Vec<String> {
        r.body["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["name"].as_str().expect("name").to_owned())
            .collect()
    };
    for (q, want) in [
        ("RACK-A", vec!["rack-a-01"]),
        ("rack", vec!["rack-a-01", "rack-b-02"]),
        (&a["uuid"].as_str().expect("uuid")[..8], vec!["rack-a-01"]),
        ("ab:cd", vec!["rack-b-02"]),
        ("wd-xyz", vec!["rack-b-02"]),
        ("CHASSIS-7", vec!["rack-b-02"]),
        ("XYZ123", vec![]),
        ("50%", vec![]),
    ] {
        let r = api
            .get(&format!("/v1/nodes?ingot_search={}", q.replace('%', "%25")))
            .await
            .expect(StatusCode::OK);
        assert_eq!(names(r), want, "search {q:?}");
    }
    // Paging keeps the search in the next link.
    let r = api
        .get("/v1/nodes?ingot_search=rack&limit=1")
        .await
        .expect(StatusCode::OK);
    let next = r.body["next"].as_str().expect("next");
    assert!(next.contains("ingot_search=rack"), "{next}");
}
