//! Node lists: default columns, `/detail`, filters, `fields`, paging and `next`.

use axum::http::StatusCode;
use controller::api::ApiSettings;
use serde_json::{Value, json};

use super::{Api, BASE};

fn names(body: &Value) -> Vec<String> {
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn default_columns_detail_and_slash_forms() {
    let api = Api::new().await;
    api.node("n1").await;
    api.node("n2").await;
    for path in ["/v1/nodes", "/v1/nodes/", "/v1/nodes/?sort_dir=asc"] {
        let r = api.get(path).await.expect(StatusCode::OK);
        assert_eq!(names(&r.body), ["n1", "n2"], "{path}");
        let first = r.body["nodes"][0].as_object().unwrap();
        let mut keys: Vec<&String> = first.keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "instance_uuid",
                "links",
                "maintenance",
                "name",
                "power_state",
                "provision_state",
                "uuid"
            ]
        );
        assert!(r.body.get("next").is_none());
    }
    for path in [
        "/v1/nodes/detail",
        "/v1/nodes/detail/",
        "/v1/nodes?detail=True",
    ] {
        let r = api.get(path).await.expect(StatusCode::OK);
        assert_eq!(r.body["nodes"].as_array().unwrap().len(), 2);
        assert_eq!(r.body["nodes"][0].as_object().unwrap().len(), 69, "{path}");
        assert_eq!(r.body["nodes"][0]["driver_info"]["ipmi_password"], "******");
    }
    let r = api
        .get("/v1/nodes?fields=uuid,driver")
        .await
        .expect(StatusCode::OK);
    let mut keys: Vec<&String> = r.body["nodes"][0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["driver", "links", "uuid"]);
    api.get("/v1/nodes?detail=True&fields=uuid")
        .await
        .expect_fault(
            StatusCode::BAD_REQUEST,
            "Can not specify ?detail=True and fields in the same request.",
        );
    api.get("/v1/nodes?fields=bogus")
        .await
        .expect_fault(StatusCode::BAD_REQUEST, "Field(s) \"bogus\" are not valid");
}

#[tokio::test]
async fn filters() {
    let api = Api::new().await;
    for name in ["a", "b", "c", "d"] {
        api.node(name).await;
    }
    api.set_state("b", "manageable").await;
    api.put("/v1/nodes/c/maintenance", Some(json!({"reason": "fan"})))
        .await
        .expect(StatusCode::ACCEPTED);
    let mut d = api.stored_node("d").await;
    d.instance_uuid = Some(uuid::Uuid::new_v4());
    d.resource_class = Some("gpu".into());
    d.owner = Some("alice".into());
    api.store_update(&d).await;

    for (query, expected) in [
        ("provision_state=manageable", vec!["b"]),
        ("provision_state=enroll", vec!["a", "c", "d"]),
        ("maintenance=True", vec!["c"]),
        ("maintenance=false", vec!["a", "b", "d"]),
        ("associated=True", vec!["d"]),
        ("associated=False", vec!["a", "b", "c"]),
        ("resource_class=gpu", vec!["d"]),
        ("resource_class=baremetal", vec!["a", "b", "c"]),
        ("driver=fake-hardware", vec!["a", "b", "c", "d"]),
        ("driver=ipmi", vec![]),
        ("owner=alice", vec!["d"]),
        ("conductor=ingot", vec!["a", "b", "c", "d"]),
        ("conductor=elsewhere", vec![]),
        ("sharded=False", vec!["a", "b", "c", "d"]),
        ("sharded=True", vec![]),
    ] {
        let r = api
            .get(&format!("/v1/nodes?{query}"))
            .await
            .expect(StatusCode::OK);
        assert_eq!(names(&r.body), expected, "{query}");
    }
    let r = api
        .get("/v1/nodes/detail?provision_state=enroll&maintenance=True")
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&r.body), ["c"]);
    assert_eq!(r.body["nodes"][0]["maintenance_reason"], "fan");
}

#[tokio::test]
async fn bad_list_parameters() {
    let api = Api::new().await;
    api.node("a").await;
    for (query, fault) in [
        ("limit=abc", "Expected an integer for limit: abc"),
        ("limit=0", "Limit must be positive"),
        ("limit=-1", "Limit must be positive"),
        ("marker=x", "Expected UUID for marker: x"),
        (
            "sort_key=bogus",
            "The sort_key value \"bogus\" is an invalid field for sorting",
        ),
        (
            "sort_key=properties",
            "The sort_key value \"properties\" is an invalid field for sorting",
        ),
        (
            "sort_dir=up",
            "Invalid sort direction: up. Acceptable values are 'asc' or 'desc'",
        ),
        (
            "provision_state=bogus",
            "Provision state \"bogus\" is not valid",
        ),
        (
            "maintenance=maybe",
            "Invalid maintenance: Unrecognized value 'maybe', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'",
        ),
        ("chassis_uuid=nope", "Expected UUID for chassis_uuid: nope"),
    ] {
        api.get(&format!("/v1/nodes?{query}"))
            .await
            .expect_fault(StatusCode::BAD_REQUEST, fault);
    }
    let m = uuid::Uuid::new_v4();
    api.get(&format!("/v1/nodes?marker={m}"))
        .await
        .expect_fault(
            StatusCode::BAD_REQUEST,
            &format!("Marker {m} could not be found."),
        );
}

#[tokio::test]
async fn paging_with_next_links() {
    let api = Api::new().await;
    let mut uuids = Vec::new();
    for i in 0..5 {
        uuids.push(
            api.node(&format!("n{i}")).await["uuid"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let r = api.get("/v1/nodes?limit=2").await.expect(StatusCode::OK);
    assert_eq!(names(&r.body), ["n0", "n1"]);
    assert_eq!(
        r.body["next"],
        format!(
            "{BASE}/v1/nodes?sort_key=id&sort_dir=asc&fields=instance_uuid,maintenance,power_state,provision_state,uuid,name&limit=2&marker={}",
            uuids[1]
        )
    );
    // Follow `next` as the CLI does (scheme and host stripped).
    let mut seen = names(&r.body);
    let mut next = r.body["next"].as_str().map(str::to_owned);
    let mut pages = 1;
    while let Some(url) = next {
        let path = url.strip_prefix(BASE).unwrap();
        let r = api.get(path).await.expect(StatusCode::OK);
        seen.extend(names(&r.body));
        next = r.body["next"].as_str().map(str::to_owned);
        pages += 1;
    }
    assert_eq!(seen, ["n0", "n1", "n2", "n3", "n4"]);
    assert_eq!(pages, 3);

    // A full last page still gets `next`; the page after it is empty without `next`.
    let r = api
        .get(&format!("/v1/nodes?limit=2&marker={}", uuids[2]))
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&r.body), ["n3", "n4"]);
    let next = r.body["next"]
        .as_str()
        .unwrap()
        .strip_prefix(BASE)
        .unwrap()
        .to_owned();
    let r = api.get(&next).await.expect(StatusCode::OK);
    assert_eq!(r.body, json!({"nodes": []}));

    // Requested fields, detail and descending order are carried into `next`.
    let r = api
        .get("/v1/nodes?limit=1&fields=uuid,name")
        .await
        .expect(StatusCode::OK);
    assert!(
        r.body["next"]
            .as_str()
            .unwrap()
            .contains("&fields=uuid,name&limit=1&marker=")
    );
    let r = api
        .get("/v1/nodes/detail?limit=4")
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        r.body["next"],
        format!(
            "{BASE}/v1/nodes/detail?sort_key=id&sort_dir=asc&limit=4&marker={}",
            uuids[3]
        )
    );
    let r = api
        .get("/v1/nodes?sort_key=name&sort_dir=desc&limit=2")
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&r.body), ["n4", "n3"]);
    let next = r.body["next"]
        .as_str()
        .unwrap()
        .strip_prefix(BASE)
        .unwrap()
        .to_owned();
    assert!(
        next.starts_with("/v1/nodes?sort_key=name&sort_dir=desc&"),
        "{next}"
    );
    let r = api.get(&next).await.expect(StatusCode::OK);
    assert_eq!(names(&r.body), ["n2", "n1"]);
    // Filters survive paging.
    api.set_state("n3", "manageable").await;
    api.set_state("n4", "manageable").await;
    let r = api
        .get("/v1/nodes?provision_state=manageable&limit=1")
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&r.body), ["n3"]);
    let next = r.body["next"]
        .as_str()
        .unwrap()
        .strip_prefix(BASE)
        .unwrap()
        .to_owned();
    let r = api.get(&next).await.expect(StatusCode::OK);
    assert_eq!(names(&r.body), ["n4"]);
}

#[tokio::test]
async fn max_limit_caps_pages() {
    let api = Api::with_settings(ApiSettings {
        max_limit: 2,
        ..ApiSettings::default()
    })
    .await;
    for i in 0..5 {
        api.node(&format!("n{i}")).await;
    }
    let r = api.get("/v1/nodes").await.expect(StatusCode::OK);
    assert_eq!(names(&r.body), ["n0", "n1"]);
    assert!(
        r.body["next"]
            .as_str()
            .unwrap()
            .contains("&limit=2&marker=")
    );
    let r = api.get("/v1/nodes?limit=100").await.expect(StatusCode::OK);
    assert_eq!(names(&r.body).len(), 2);
}
