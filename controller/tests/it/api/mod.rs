//! Router-level tests of the Ironic-compatible API on a real SQLite store, driven with
//! `tower::ServiceExt::oneshot` (no socket). Run: `cargo test -p controller --test it api::`.

mod allocations;
mod conductors;
mod console;
mod deploy_templates;
mod drivers;
mod inspection_rules;
mod nodes;
mod nodes_list;
mod nodes_patch;
mod perf;
mod ports;
mod raid;
mod servers;
mod states;
mod subresources;
mod versions;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use controller::api::{ApiSettings, ApiState, router};
use controller::conductor::{Conductor, ConductorConfig};
use controller::drivers::DriverRegistry;
use controller::store::{SqlStore, Store};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const HOST: &str = "127.0.0.1:6390";
pub const BASE: &str = "http://127.0.0.1:6390";

/// A router over a fresh SQLite database in a temporary directory.
pub struct Api {
    pub router: Router,
    pub store: Arc<SqlStore>,
    _dir: tempfile::TempDir,
}

/// A response with its body parsed as JSON (`Value::Null` when empty).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Resp {
    /// The faultstring of an Ironic error body (or the 406 description).
    pub fn fault(&self) -> String {
        let inner = self.body["error_message"]
            .as_str()
            .expect("error_message string");
        let inner: Value = serde_json::from_str(inner).expect("inner json");
        inner
            .get("faultstring")
            .or_else(|| inner.get("description"))
            .and_then(Value::as_str)
            .expect("faultstring")
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Self {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.raw)
        );
        self
    }

    #[track_caller]
    pub fn expect_fault(&self, status: StatusCode, faultstring: &str) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.raw)
        );
        assert_eq!(self.fault(), faultstring);
    }
}

impl Api {
    pub async fn new() -> Api {
        Self::with_settings(ApiSettings::default()).await
    }

    pub async fn with_settings(settings: ApiSettings) -> Api {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/ingot.db", dir.path().display());
        let store = Arc::new(SqlStore::connect(&url).await.expect("open store"));
        let dyn_store: Arc<dyn Store> = store.clone();
        let config = ConductorConfig {
            name: "ingot".to_owned(),
            power_sync_interval: Duration::ZERO,
            ..ConductorConfig::default()
        };
        let conductor = Conductor::new(dyn_store.clone(), DriverRegistry::builtin(), config);
        let state = ApiState::new(dyn_store, conductor, settings);
        Api {
            router: router(state),
            store,
            _dir: dir,
        }
    }

    /// Sends a request with the CLI's version header (1.115) unless `version` says otherwise.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        version: Option<&str>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", HOST)
            .header("content-type", "application/json");
        if let Some(v) = version {
            req = req.header("x-openstack-ironic-api-version", v);
        }
        let body = match body {
            Some(v) => Body::from(serde_json::to_vec(&v).unwrap()),
            None => Body::empty(),
        };
        self.request(req.body(body).unwrap()).await
    }

    pub async fn request(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let raw = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        };
        Resp {
            status,
            headers,
            body,
            raw,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, Some("1.115")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(body), Some("1.115"))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.send(Method::PATCH, path, Some(body), Some("1.115"))
            .await
    }

    pub async fn put(&self, path: &str, body: Option<Value>) -> Resp {
        self.send(Method::PUT, path, body, Some("1.115")).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        let req = Request::builder()
            .method(Method::DELETE)
            .uri(path)
            .header("host", HOST)
            .header("content-type", "application/octet-stream")
            .header("x-openstack-ironic-api-version", "1.115")
            .body(Body::empty())
            .unwrap();
        self.request(req).await
    }

    /// Enrolls a node the way `baremetal node create` does and returns its JSON.
    pub async fn node(&self, name: &str) -> Value {
        self.post(
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": name, "resource_class": "baremetal",
                   "properties": {"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"},
                   "driver_info": {"ipmi_address": "10.0.0.1", "ipmi_password": "secret", "ipmi_port": 623}}),
        )
        .await
        .expect(StatusCode::CREATED)
        .body
    }

    pub async fn stored_node(&self, ident: &str) -> controller::model::Node {
        self.store
            .get_node(ident)
            .await
            .unwrap()
            .expect("node stored")
    }

    /// Forces a node's provision state in the store (as the conductor would).
    pub async fn set_state(&self, ident: &str, state: &str) {
        let mut node = self.stored_node(ident).await;
        node.provision_state = state.to_owned();
        self.store.update_node(&node).await.unwrap();
    }
}

impl Api {
    pub async fn store_update(&self, node: &controller::model::Node) {
        self.store.update_node(node).await.unwrap();
    }
}

impl Api {
    /// Polls `GET /v1/nodes/{ident}` until `done` holds (20 s at most) and returns the node.
    pub async fn wait_node(&self, ident: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..2000 {
            let n = self
                .get(&format!("/v1/nodes/{ident}"))
                .await
                .expect(StatusCode::OK)
                .body;
            if done(&n) {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("node {ident} did not reach the expected state");
    }

    /// Drives a node through a provision verb and waits for the stable `expected` state.
    pub async fn provision(&self, ident: &str, body: Value, expected: &str) -> Value {
        self.put(&format!("/v1/nodes/{ident}/states/provision"), Some(body))
            .await
            .expect(StatusCode::ACCEPTED);
        self.wait_node(ident, |n| {
            n["provision_state"] == expected && n["target_provision_state"].is_null()
        })
        .await
    }
}
