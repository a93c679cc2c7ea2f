//! Throughput figures of DESIGN.md section 7 through the router (no socket): enroll node +
//! port, and `GET /v1/nodes/detail` with 500 nodes. The assertions are loose (debug builds
//! on a shared 2-core machine); the printed figures are what the report quotes. For release-
//! like numbers: `CARGO_PROFILE_DEV_PACKAGE_CONTROLLER_OPT_LEVEL=3 cargo test -p controller
//! --test it api::perf -- --nocapture`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tower::ServiceExt;

use super::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_and_detail_list_500_nodes() {
    let api = Api::new().await;
    let started = Instant::now();
    for i in 0..500u32 {
        let body = json!({"driver": "fake-hardware", "name": format!("perf-{i}"), "resource_class": "baremetal",
                          "properties": {"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"},
                          "driver_info": {"ipmi_address": "10.0.0.1", "ipmi_password": "pw"}});
        let node = api
            .post("/v1/nodes", body)
            .await
            .expect(StatusCode::CREATED)
            .body;
        let mac = format!("52:54:00:00:{:02x}:{:02x}", i / 256, i % 256);
        api.post(
            "/v1/ports",
            json!({"address": mac, "node_uuid": node["uuid"]}),
        )
        .await
        .expect(StatusCode::CREATED);
    }
    let enroll = started.elapsed();
    let per_second = 500.0 / enroll.as_secs_f64();

    let r = api.get("/v1/nodes/detail").await.expect(StatusCode::OK);
    assert_eq!(r.body["nodes"].as_array().unwrap().len(), 500);
    let best = best_of(&api, "/v1/nodes/detail").await;
    let mut best_store = Duration::MAX;
    for _ in 0..20 {
        let t = Instant::now();
        let nodes = controller::store::Store::list_nodes(
            &*api.store,
            &controller::store::NodeQuery {
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        best_store = best_store.min(t.elapsed());
        assert_eq!(nodes.len(), 500);
    }
    let best_list = best_of(&api, "/v1/nodes").await;
    let nodes =
        controller::store::Store::list_nodes(&*api.store, &controller::store::NodeQuery::default())
            .await
            .unwrap();
    let mut best_render = Duration::MAX;
    for _ in 0..20 {
        let t = Instant::now();
        let views: Vec<controller::api::render::NodeView<'_>> = nodes
            .iter()
            .map(|node| controller::api::render::NodeView {
                node,
                base: super::BASE,
                fields: None,
                conductor: Some("ingot".to_owned()),
                defaults: None,
            })
            .collect();
        let body = serde_json::to_vec(&views).unwrap();
        best_render = best_render.min(t.elapsed());
        assert!(body.len() > 500 * 1000);
    }
    println!(
        "perf: enroll node+port {per_second:.0} nodes/s ({enroll:?} for 500); GET /v1/nodes/detail (500) best {best:?}; GET /v1/nodes (500) best {best_list:?}; store list_nodes alone {best_store:?}; rendering 500 full nodes alone {best_render:?}"
    );
    assert!(per_second > 50.0, "enroll far too slow: {per_second:.0}/s");
    assert!(
        best < Duration::from_millis(500),
        "detail list far too slow: {best:?}"
    );
}

/// Best of 20 requests, measured up to the last body byte (the test's JSON parsing excluded).
async fn best_of(api: &Api, path: &str) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..20 {
        let req = Request::builder()
            .uri(path)
            .header("host", super::HOST)
            .header("x-openstack-ironic-api-version", "1.115")
            .body(Body::empty())
            .unwrap();
        let t = Instant::now();
        let resp = api.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        best = best.min(t.elapsed());
        assert!(bytes.len() > 100);
    }
    best
}
