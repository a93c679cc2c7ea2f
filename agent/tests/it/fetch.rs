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

/// A replica that dies mid-download (its connection cut, then refused): the download goes
/// on from the next replica at the same offset, every byte once.
#[tokio::test]
async fn a_download_cut_by_its_replica_goes_on_from_another() {
    let data = body();
    let dying = Server::start();
    let survivor = Server::start();
    let route = |cuts| Route {
        data: data.clone().into(),
        range: true,
        cut_after: Some(1_000_000),
        cuts,
        ..Default::default()
    };
    // The test server matches the whole target, query included.
    let url = dying.add("/images/x.raw.zst?node=n&sig=s", route(usize::MAX));
    survivor.add("/images/x.raw.zst?node=n&sig=s", route(0));
    let controllers = vec![dying.addr.clone(), format!("{}/", survivor.addr)];
    let mirrors = agent::image::fetch::mirror_urls(&url, &controllers);
    assert_eq!(
        mirrors,
        [format!("{}/images/x.raw.zst?node=n&sig=s", survivor.addr)]
    );
    let opts = FetchOptions { mirrors, ..quick() };
    let (r, got) = download(&url, &opts).await;
    let (bytes, retries) = r.expect("downloaded from the survivor");
    assert_eq!((bytes, retries), (data.len() as u64, 1));
    assert!(got == data, "bytes differ");
    // Gone altogether (connection refused): straight to the other one.
    drop(dying);
    let (r, got) = download(&url, &opts).await;
    assert_eq!(r.expect("downloaded").0, data.len() as u64);
    assert!(got == data, "bytes differ");
}
