//! `/v1/conductors` (1.49): the registered `ingot serve` replicas and whether they live.

use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use controller::model::ConductorRecord;
use controller::store::Store;
use serde_json::json;

use super::{Api, BASE};

fn record(name: &str, group: &str, age_secs: i64) -> ConductorRecord {
    let at = Utc::now() - Duration::seconds(age_secs);
    ConductorRecord {
        hostname: name.to_owned(),
        conductor_group: group.to_owned(),
        drivers: vec!["fake-hardware".to_owned()],
        listen: vec![],
        version: "0.1.0".to_owned(),
        online: true,
        started_at: at,
        created_at: at,
        updated_at: at,
    }
}

#[tokio::test]
async fn conductors_list_show_fields_and_paging() {
    let api = Api::new().await;
    api.store
        .register_conductor(&record("ingot", "", 0))
        .await
        .expect("register");
    // Its heartbeat is older than the default timeout (10 s): offline.
    api.store
        .register_conductor(&record("old-replica", "rack-b", 60))
        .await
        .expect("register");
    // Before 1.49 the resource does not exist.
    let r = api
        .send(Method::GET, "/v1/conductors", None, Some("1.48"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = api.get("/v1/conductors").await.expect(StatusCode::OK);
    assert_eq!(
        r.body["conductors"],
        json!([
            {"hostname": "ingot", "conductor_group": "", "alive": true, "links": [
                {"href": format!("{BASE}/v1/conductors/ingot"), "rel": "self"},
                {"href": format!("{BASE}/conductors/ingot"), "rel": "bookmark"}]},
            {"hostname": "old-replica", "conductor_group": "rack-b", "alive": false, "links": [
                {"href": format!("{BASE}/v1/conductors/old-replica"), "rel": "self"},
                {"href": format!("{BASE}/conductors/old-replica"), "rel": "bookmark"}]},
        ])
    );
    let r = api
        .get("/v1/conductors?detail=True")
        .await
        .expect(StatusCode::OK);
    let first = &r.body["conductors"][0];
    assert_eq!(first["drivers"], json!(["fake-hardware"]));
    assert!(first["created_at"].as_str().unwrap().ends_with("+00:00"));
    let r = api
        .get("/v1/conductors/old-replica")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["conductor_group"], "rack-b");
    assert_eq!(r.body["alive"], false);
    assert!(r.body.get("updated_at").is_some());
    let r = api
        .get("/v1/conductors/ingot?fields=hostname,alive")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body, json!({"hostname": "ingot", "alive": true}));
    api.get("/v1/conductors/nope")
        .await
        .expect_fault(StatusCode::NOT_FOUND, "Conductor nope could not be found.");
    api.get("/v1/conductors?fields=hostname&detail=True")
        .await
        .expect(StatusCode::BAD_REQUEST);
    // Paging by hostname, and sorting.
    let r = api
        .get("/v1/conductors?limit=1")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["conductors"].as_array().unwrap().len(), 1);
    assert_eq!(
        r.body["next"],
        format!("{BASE}/v1/conductors?limit=1&marker=ingot")
    );
    let r = api
        .get("/v1/conductors?limit=1&marker=ingot")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["conductors"][0]["hostname"], "old-replica");
    assert!(r.body.get("next").is_none());
    let r = api
        .get("/v1/conductors?sort_key=conductor_group&sort_dir=desc")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["conductors"][0]["hostname"], "old-replica");

    // Drivers name the live conductors that run them.
    api.store
        .register_conductor(&record("second", "", 0))
        .await
        .expect("register");
    let r = api
        .get("/v1/drivers/fake-hardware")
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        r.body["hosts"],
        json!(["ingot", "second"]),
        "old-replica is offline"
    );
}
