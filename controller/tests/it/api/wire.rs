//! One test over a real socket on 127.0.0.1: raw HTTP/1.1 as the CLI sends it (unencoded
//! query values, `Content-Type: application/json` on GETs, keep-alive), with absolute URLs
//! built from the `Host` the client used.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Api;

/// Sends one request on an open connection and reads one response (status, head, body).
async fn roundtrip(conn: &mut TcpStream, request: &str) -> (u16, String, String) {
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        if buf.len() >= head_end + 4 + length {
            let body =
                String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + length]).to_string();
            let status = head[9..12].parse().unwrap();
            return (status, head, body);
        }
    }
}

#[tokio::test]
async fn cli_requests_over_a_real_socket() {
    let api = Api::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let mut conn = TcpStream::connect(addr).await.unwrap();
    let headers = format!(
        "Host: {addr}\r\nUser-Agent: python-ironicclient\r\nAccept: application/json\r\nContent-Type: application/json\r\nX-Auth-Token: notused\r\nX-OpenStack-Ironic-API-Version: 1.115\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
    );
    let body = r#"{"driver": "fake-hardware", "name": "n1"}"#;
    let (status, head, created) = roundtrip(
        &mut conn,
        &format!(
            "POST /v1/nodes HTTP/1.1\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status, 201, "{head}\n{created}");
    let node: serde_json::Value = serde_json::from_str(&created).unwrap();
    let uuid = node["uuid"].as_str().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("location: http://{addr}/v1/nodes/{uuid}")),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("x-openstack-ironic-api-version: 1.115")
    );

    let body = format!(r#"{{"address": "52:54:00:00:00:01", "node_uuid": "{uuid}"}}"#);
    let (status, _, _) = roundtrip(
        &mut conn,
        &format!(
            "POST /v1/ports HTTP/1.1\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status, 201);

    // Same connection (keep-alive), unencoded MAC in the query, slash before `?`.
    let (status, _, body) = roundtrip(
        &mut conn,
        &format!("GET /v1/ports/detail?address=52:54:00:00:00:01 HTTP/1.1\r\n{headers}\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    let ports: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ports["ports"][0]["node_uuid"], uuid);
    assert_eq!(
        ports["ports"][0]["links"][0]["href"],
        format!(
            "http://{addr}/v1/ports/{}",
            ports["ports"][0]["uuid"].as_str().unwrap()
        )
    );

    let (status, _, body) = roundtrip(
        &mut conn,
        &format!("GET /v1/nodes/?maintenance=False&limit=1 HTTP/1.1\r\n{headers}\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        list["next"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{addr}/v1/nodes?")),
        "{list}"
    );

    let (status, head, body) = roundtrip(
        &mut conn,
        &format!("DELETE /v1/nodes/n1 HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nX-OpenStack-Ironic-API-Version: 1.115\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 204, "{head}{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-openstack-request-id: req-")
    );
    server.abort();
}

/// A web page can send a cross-site POST as `text/plain` or a form without a preflight: the
/// API takes JSON bodies only as JSON, so such a request is 415 and creates nothing.
#[tokio::test]
async fn bodies_not_declared_as_json_are_refused() {
    let api = Api::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let body = r#"{"driver": "fake-hardware", "name": "csrf"}"#;
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let ct_line = ct
            .map(|c| format!("Content-Type: {c}\r\n"))
            .unwrap_or_default();
        let (status, head, text) = roundtrip(
            &mut conn,
            &format!(
                "POST /v1/nodes HTTP/1.1\r\nHost: {addr}\r\n{ct_line}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert_eq!(status, 415, "{ct:?}: {head}\n{text}");
        assert!(text.contains("must be JSON"), "{text}");
    }
    // JSON-patch clients may send a +json type; PATCH with text/plain is refused too.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let patch = r#"[{"op": "add", "path": "/extra/a", "value": 1}]"#;
    let (status, _, _) = roundtrip(
        &mut conn,
        &format!(
            "PATCH /v1/nodes/csrf HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{patch}",
            patch.len()
        ),
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(
        api.get("/v1/nodes").await.body["nodes"],
        serde_json::json!([])
    );
    let body = r#"{"driver": "fake-hardware", "name": "ok"}"#;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let (status, _, text) = roundtrip(
        &mut conn,
        &format!(
            "POST /v1/nodes HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    server.abort();
}
