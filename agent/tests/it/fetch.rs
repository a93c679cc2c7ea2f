//! The download stage alone (`image::fetch::fetch`) against the local HTTP server: every
//! byte delivered once and in order across cuts, with or without `Range`, and a refused
//! request failing with a clear error that carries no signature. No root, no disk.

use std::time::Duration;

use agent::image::fetch::{FetchError, FetchOptions, fetch};

use crate::server::{Route, Server};

fn body() -> Vec<u8> {
    (0..3_000_000u32).map(|i| (i % 253) as u8).collect()
}

fn quick() -> FetchOptions {
    FetchOptions {
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        stall_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

async fn download(url: &str, opts: &FetchOptions) -> (Result<(u64, u32), FetchError>, Vec<u8>) {
    let mut got = Vec::new();
    let r = fetch(
        url,
        opts,
        |_| {},
        |chunk| {
            got.extend_from_slice(&chunk);
            true
        },
    )
    .await
    .map(|s| (s.bytes, s.retries));
    (r, got)
}

#[tokio::test]
async fn fetch_resumes_after_cuts_and_delivers_each_byte_once() {
    let data = body();
    let srv = Server::start();
    for range in [true, false] {
        let url = srv.add(
            &format!("/img-{range}"),
            Route {
                data: data.clone().into(),
                range,
                cut_after: Some(1_000_000),
                cuts: 2,
                ..Default::default()
            },
        );
        let (r, got) = download(&url, &quick()).await;
        let (bytes, retries) = r.expect("downloaded");
        assert_eq!((bytes, retries), (data.len() as u64, 2), "range {range}");
        assert!(got == data, "range {range}: bytes differ");
    }
}

#[tokio::test]
async fn fetch_fails_clearly_on_a_refused_request_without_the_signature() {
    let srv = Server::start();
    let url = srv.add(
        "/gone",
        Route {
            data: body().into(),
            status: Some(404),
            ..Default::default()
        },
    );
    let (r, got) = download(&format!("{url}?sig=s3cret"), &quick()).await;
    let err = r.expect_err("404");
    assert!(
        matches!(err, FetchError::Status { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("server answered 404 for {url}?REDACTED")
    );
    assert!(!format!("{err:?}").contains("s3cret"));
    assert!(got.is_empty());
}

#[tokio::test]
async fn fetch_gives_up_after_its_retries_naming_the_offset() {
    let srv = Server::start();
    let url = srv.add(
        "/flaky",
        Route {
            data: body().into(),
            range: true,
            cut_after: Some(100_000),
            cuts: 100,
            ..Default::default()
        },
    );
    let opts = FetchOptions {
        max_retries: 2,
        ..quick()
    };
    let (r, got) = download(&url, &opts).await;
    let err = r.expect_err("gives up");
    let msg = agent::error_chain(&err);
    assert!(
        msg.starts_with(&format!(
            "download failed after 2 retries at byte {}",
            got.len()
        )),
        "{msg}"
    );
}
