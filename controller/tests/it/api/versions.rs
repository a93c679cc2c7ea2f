//! Version discovery, microversion negotiation and the headers on every response.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use super::{Api, BASE};

#[tokio::test]
async fn root_document_and_headers() {
    let api = Api::new().await;
    let r = api
        .send(Method::GET, "/", None, None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.header("x-openstack-ironic-api-version"), Some("1.1"));
    assert_eq!(
        r.header("x-openstack-ironic-api-minimum-version"),
        Some("1.1")
    );
    assert_eq!(
        r.header("x-openstack-ironic-api-maximum-version"),
        Some("1.115")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let rid = r.header("x-openstack-request-id").expect("request id");
    assert!(
        rid.starts_with("req-") && uuid::Uuid::parse_str(&rid[4..]).is_ok(),
        "{rid}"
    );
    assert_eq!(r.header("openstack-request-id"), Some(rid));
    let d = &r.body["default_version"];
    assert_eq!(d["id"], "v1");
    assert_eq!(d["version"], "1.115");
    assert_eq!(d["min_version"], "1.1");
    assert_eq!(d["status"], "CURRENT");
    assert_eq!(
        d["links"],
        json!([{"href": format!("{BASE}/v1/"), "rel": "self"}])
    );
    assert_eq!(r.body["versions"][0], *d);
    assert_eq!(r.body["name"], "OpenStack Ironic API");
}

#[tokio::test]
async fn v1_document_with_and_without_slash() {
    let api = Api::new().await;
    for path in ["/v1", "/v1/"] {
        let r = api
            .send(Method::GET, path, None, None)
            .await
            .expect(StatusCode::OK);
        assert_eq!(r.body["id"], "v1");
        assert_eq!(r.body["version"]["version"], "1.115");
        assert_eq!(r.body["version"]["min_version"], "1.1");
        assert_eq!(
            r.body["media_types"]["type"],
            "application/vnd.openstack.ironic.v1+json"
        );
        assert_eq!(r.body["nodes"][0]["href"], format!("{BASE}/v1/nodes/"));
        for key in ["chassis", "ports", "drivers"] {
            assert!(r.body[key].is_array(), "{key}");
        }
        assert_eq!(
            r.header("x-openstack-ironic-api-maximum-version"),
            Some("1.115")
        );
    }
}

#[tokio::test]
async fn absent_header_is_1_1_and_does_not_resolve_names() {
    let api = Api::new().await;
    let node = api.node("n1").await;
    let r = api.send(Method::GET, "/v1/nodes/n1", None, None).await;
    r.expect_fault(StatusCode::NOT_FOUND, "Node n1 could not be found.");
    assert_eq!(r.header("x-openstack-ironic-api-version"), Some("1.1"));
    let uuid = node["uuid"].as_str().unwrap();
    api.send(Method::GET, &format!("/v1/nodes/{uuid}"), None, None)
        .await
        .expect(StatusCode::OK);
    let r = api
        .send(Method::GET, "/v1/nodes/n1", None, Some("1.5"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.header("x-openstack-ironic-api-version"), Some("1.5"));
}

#[tokio::test]
async fn explicit_and_latest_versions_are_echoed() {
    let api = Api::new().await;
    for (sent, echoed) in [
        ("1.1", "1.1"),
        ("1.60", "1.60"),
        ("1.115", "1.115"),
        ("latest", "1.115"),
    ] {
        let r = api
            .send(Method::GET, "/v1/nodes", None, Some(sent))
            .await
            .expect(StatusCode::OK);
        assert_eq!(r.header("x-openstack-ironic-api-version"), Some(echoed));
    }
    // openstacksdk sends both headers.
    let req = Request::builder()
        .uri("/v1/nodes")
        .header("host", super::HOST)
        .header("x-openstack-ironic-api-version", "1.109")
        .header("openstack-api-version", "baremetal 1.109")
        .body(Body::empty())
        .unwrap();
    let r = api.request(req).await.expect(StatusCode::OK);
    assert_eq!(r.header("x-openstack-ironic-api-version"), Some("1.109"));
}

#[tokio::test]
async fn unsupported_versions_are_406_with_range_headers() {
    let api = Api::new().await;
    for v in ["1.116", "1.200", "1.0"] {
        let r = api
            .send(Method::GET, "/v1/nodes", None, Some(v))
            .await
            .expect(StatusCode::NOT_ACCEPTABLE);
        assert_eq!(
            r.header("x-openstack-ironic-api-minimum-version"),
            Some("1.1")
        );
        assert_eq!(
            r.header("x-openstack-ironic-api-maximum-version"),
            Some("1.115")
        );
        assert_eq!(r.header("x-openstack-ironic-api-version"), None);
        assert!(r.header("x-openstack-request-id").is_some());
        let inner: serde_json::Value =
            serde_json::from_str(r.body["error_message"].as_str().unwrap()).unwrap();
        assert_eq!(inner["code"], 406);
        assert_eq!(inner["title"], "Not Acceptable");
        assert_eq!(
            inner["description"],
            format!(
                "Version {v} was requested but the minor version is not supported by this service. The supported version range is: [1.1, 1.115]."
            )
        );
    }
    let r = api
        .send(Method::GET, "/v1/nodes", None, Some("2.0"))
        .await
        .expect(StatusCode::NOT_ACCEPTABLE);
    assert!(
        r.fault()
            .starts_with("Mutually exclusive versions requested."),
        "{}",
        r.fault()
    );
    assert_eq!(
        r.header("x-openstack-ironic-api-maximum-version"),
        Some("1.115")
    );

    let r = api
        .send(Method::GET, "/v1/nodes", None, Some("abc"))
        .await
        .expect(StatusCode::NOT_ACCEPTABLE);
    assert_eq!(
        r.fault(),
        "Invalid value for X-OpenStack-Ironic-API-Version header"
    );
    assert_eq!(r.header("x-openstack-ironic-api-minimum-version"), None);
    assert_eq!(r.header("x-openstack-ironic-api-maximum-version"), None);

    // The CLI's recovery request after a 406 carries no version header.
    let r = api
        .send(Method::GET, "/v1", None, None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        r.header("x-openstack-ironic-api-maximum-version"),
        Some("1.115")
    );
}

#[tokio::test]
async fn errors_carry_headers_and_ironic_shape() {
    let api = Api::new().await;
    let r = api
        .get("/v1/nodes/7d6b2b1e-6f0a-4a53-9a0a-3d7c1c1f0b11")
        .await;
    r.expect_fault(
        StatusCode::NOT_FOUND,
        "Node 7d6b2b1e-6f0a-4a53-9a0a-3d7c1c1f0b11 could not be found.",
    );
    assert_eq!(r.header("x-openstack-ironic-api-version"), Some("1.115"));
    assert_eq!(
        r.header("x-openstack-ironic-api-minimum-version"),
        Some("1.1")
    );
    assert!(r.header("x-openstack-request-id").is_some());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let inner: serde_json::Value =
        serde_json::from_str(r.body["error_message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["faultcode"], "Client");
    assert!(inner["debuginfo"].is_null());

    let r = api.get("/v1/bogus").await;
    r.expect_fault(StatusCode::NOT_FOUND, "The resource could not be found.");
    let r = api
        .send(Method::PUT, "/v1/nodes", None, Some("1.115"))
        .await;
    r.expect_fault(
        StatusCode::METHOD_NOT_ALLOWED,
        "The method is not allowed for this resource.",
    );
    assert!(r.header("x-openstack-request-id").is_some());
}

#[tokio::test]
async fn resources_newer_than_the_request_are_hidden() {
    let api = Api::new().await;
    api.node("n1").await;
    api.send(Method::GET, "/v1/allocations", None, Some("1.51"))
        .await
        .expect(StatusCode::NOT_FOUND);
    api.send(Method::GET, "/v1/allocations", None, Some("1.52"))
        .await
        .expect(StatusCode::OK);
    api.send(Method::GET, "/v1/nodes/n1/traits", None, Some("1.36"))
        .await
        .expect(StatusCode::NOT_FOUND);
    api.send(Method::GET, "/v1/nodes?fields=uuid", None, Some("1.7"))
        .await
        .expect(StatusCode::NOT_ACCEPTABLE);
    api.send(Method::GET, "/v1/nodes?fields=uuid", None, Some("1.8"))
        .await
        .expect(StatusCode::OK);
}
