//! `/v1/inspection_rules` (1.96): create, list, show, patch and delete in Ironic's shape,
//! the microversion floor, validation errors, sensitive rules, the policy and paging.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::console::{call, console_api, request};
use super::{Api, BASE};

fn body() -> Value {
    json!({
        "description": "Dell iDRAC",
        "priority": 50,
        "conditions": [{"op": "contains", "args": {"value": "{inventory[system_vendor][manufacturer]}", "regex": "(?i)dell"}}],
        "actions": [{"op": "set-attribute", "args": {"path": "/driver_info/ipmi_address", "value": "{inventory[bmc_address]}"}}]
    })
}

#[tokio::test]
async fn crud_in_ironics_shape() {
    let api = Api::new().await;
    // Before 1.96 the resource does not exist: 404 to read, 405 to write.
    let old = Some("1.95");
    assert_eq!(
        api.send(Method::GET, "/v1/inspection_rules", None, old)
            .await
            .status,
        404
    );
    assert_eq!(
        api.send(Method::POST, "/v1/inspection_rules", Some(body()), old)
            .await
            .status,
        405
    );

    let r = api
        .post("/v1/inspection_rules", body())
        .await
        .expect(StatusCode::CREATED);
    let uuid = r.body["uuid"].as_str().expect("uuid").to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("{BASE}/v1/inspection_rules/{uuid}").as_str())
    );
    assert_eq!(r.body["phase"], "main");
    assert_eq!(r.body["sensitive"], false);
    assert_eq!(r.body["priority"], 50);
    assert_eq!(r.body["actions"], body()["actions"]);
    assert_eq!(r.body["updated_at"], Value::Null);
    assert_eq!(
        r.body["links"][0]["href"],
        format!("{BASE}/v1/inspection_rules/{uuid}")
    );

    let list = api.get("/v1/inspection_rules").await.expect(StatusCode::OK);
    let rows = list.body["inspection_rules"].as_array().expect("list");
    assert_eq!(rows.len(), 1);
    let keys: Vec<&str> = rows[0]
        .as_object()
        .expect("row")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["description", "links", "phase", "priority", "uuid"]);
    let detail = api
        .get("/v1/inspection_rules?detail=True")
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        detail.body["inspection_rules"][0]["conditions"],
        body()["conditions"]
    );
    let some = api
        .get(&format!("/v1/inspection_rules/{uuid}?fields=uuid,priority"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(some.body, json!({"uuid": uuid, "priority": 50}));

    let patched = api
        .patch(
            &format!("/v1/inspection_rules/{uuid}"),
            json!([{"op": "replace", "path": "/priority", "value": 70},
                   {"op": "add", "path": "/actions/-", "value": {"op": "add-trait", "args": {"name": "CUSTOM_DELL"}}}]),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(patched.body["priority"], 70);
    assert_eq!(patched.body["actions"].as_array().map(Vec::len), Some(2));
    assert_ne!(patched.body["updated_at"], Value::Null);
    api.patch(
        &format!("/v1/inspection_rules/{uuid}"),
        json!([{"op": "replace", "path": "/uuid", "value": "x"}]),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    api.patch(
        &format!("/v1/inspection_rules/{uuid}"),
        json!([{"op": "remove", "path": "/actions"}]),
    )
    .await
    .expect_fault(StatusCode::BAD_REQUEST, "'actions' is a required property");

    api.delete(&format!("/v1/inspection_rules/{uuid}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&format!("/v1/inspection_rules/{uuid}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    api.delete(&format!("/v1/inspection_rules/{uuid}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    api.get("/v1/inspection_rules/not-a-uuid")
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn invalid_rules_are_refused_with_the_reason() {
    let api = Api::new().await;
    let cases = [
        (
            json!({"conditions": []}),
            "'actions' is a required property",
        ),
        (
            json!({"actions": [{"op": "api-call", "args": {"url": "http://192.0.2.1/"}}]}),
            "Unsupported action operator: api-call (Ingot makes no calls to addresses a rule names)",
        ),
        (
            json!({"actions": [{"op": "log", "args": {"msg": "x"}}], "priority": 10000}),
            "Priority must be between 0 and 9999 for user-defined rules.",
        ),
        (
            json!({"actions": [{"op": "log", "args": {"msg": "x"}}], "phase": "early"}),
            "Invalid phase: early. Valid phases are: main",
        ),
    ];
    for (b, fault) in cases {
        api.post("/v1/inspection_rules", b)
            .await
            .expect_fault(StatusCode::BAD_REQUEST, fault);
    }
    // The same UUID twice.
    let mut b = body();
    b["uuid"] = json!("6b1b0c44-7e1e-4d3c-9a53-2b9f4f0e3d11");
    api.post("/v1/inspection_rules", b.clone())
        .await
        .expect(StatusCode::CREATED);
    api.post("/v1/inspection_rules", b)
        .await
        .expect(StatusCode::CONFLICT);
}

#[tokio::test]
async fn sensitive_rules_hide_their_logic_and_stay_sensitive() {
    let api = Api::new().await;
    let mut b = body();
    b["sensitive"] = json!(true);
    let r = api
        .post("/v1/inspection_rules", b)
        .await
        .expect(StatusCode::CREATED);
    let uuid = r.body["uuid"].as_str().expect("uuid").to_owned();
    assert_eq!(
        (&r.body["conditions"], &r.body["actions"]),
        (&Value::Null, &Value::Null)
    );
    let shown = api
        .get(&format!("/v1/inspection_rules/{uuid}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(shown.body["actions"], Value::Null);
    let listed = api
        .get("/v1/inspection_rules?detail=True")
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        listed.body["inspection_rules"][0]["conditions"],
        Value::Null
    );
    assert!(
        !listed.raw.windows(4).any(|w| w == b"dell"),
        "the regex leaked"
    );
    api.patch(
        &format!("/v1/inspection_rules/{uuid}"),
        json!([{"op": "replace", "path": "/sensitive", "value": false}]),
    )
    .await
    .expect_fault(
        StatusCode::BAD_REQUEST,
        "Inspection rules cannot have the sensitive flag unset.",
    );
}

#[tokio::test]
async fn paging_sorting_and_phase_filter() {
    let api = Api::new().await;
    for p in [5, 1, 9] {
        let mut b = body();
        b["priority"] = json!(p);
        api.post("/v1/inspection_rules", b)
            .await
            .expect(StatusCode::CREATED);
    }
    let page = api
        .get("/v1/inspection_rules?sort_key=priority&sort_dir=desc&limit=2")
        .await
        .expect(StatusCode::OK);
    let prios: Vec<i64> = page.body["inspection_rules"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["priority"].as_i64())
        .collect();
    assert_eq!(prios, [9, 5]);
    let next = page.body["next"].as_str().expect("next").replace(BASE, "");
    let rest = api.get(&next).await.expect(StatusCode::OK);
    assert_eq!(rest.body["inspection_rules"][0]["priority"], 1);
    assert_eq!(rest.body.get("next"), None);
    let none = api
        .get("/v1/inspection_rules?phase=other")
        .await
        .expect(StatusCode::OK);
    assert_eq!(none.body["inspection_rules"], json!([]));
    api.get("/v1/inspection_rules?sort_key=actions")
        .await
        .expect(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn only_administrators_of_every_project_change_rules() {
    let (app, _store, _dir) = console_api(4).await;
    let post = |user| {
        request(
            Method::POST,
            "/v1/inspection_rules",
            Some(user),
            Some(body()),
        )
    };
    assert_eq!(call(&app, post("ro")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&app, post("p1")).await.0, StatusCode::FORBIDDEN);
    let (s, created) = call(&app, post("admin")).await;
    assert_eq!(s, StatusCode::CREATED);
    let uuid = created["uuid"].as_str().expect("uuid");
    let get = |user| {
        request(
            Method::GET,
            &format!("/v1/inspection_rules/{uuid}"),
            Some(user),
            None,
        )
    };
    assert_eq!(call(&app, get("ro")).await.0, StatusCode::OK);
    assert_eq!(call(&app, get("p1")).await.0, StatusCode::FORBIDDEN);
    let del = |user| {
        request(
            Method::DELETE,
            &format!("/v1/inspection_rules/{uuid}"),
            Some(user),
            None,
        )
    };
    assert_eq!(call(&app, del("ro")).await.0, StatusCode::FORBIDDEN);
    // Without credentials: 401.
    let anon = request(Method::GET, "/v1/inspection_rules", None, None);
    assert_eq!(call(&app, anon).await.0, StatusCode::UNAUTHORIZED);
}
