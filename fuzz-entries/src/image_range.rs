//! `image_range`: a `Range` header on an image download (`images::mapped`), against a file
//! whose length the input's first bytes choose.
//!
//! Invariants: a range answered 206 lies inside the file and is not empty; the answer's
//! `Content-Length` and `Content-Range` say the bytes it carries; nothing panics.

use axum::http::{HeaderMap, HeaderValue, Method, header};
use bytes::Bytes;
use controller::images::mapped::{RangeAnswer, range_answer, respond};

/// Entry point.
pub fn run(data: &[u8]) {
    let (len, value) = match data.split_first() {
        Some((&n, rest)) => (usize::from(n) * 3, rest),
        None => (0, data),
    };
    match range_answer(Some(value), len as u64) {
        RangeAnswer::Part(start, end) => {
            assert!(start <= end && end < len as u64, "{start}-{end} of {len}");
        }
        RangeAnswer::Whole => panic!("a Range header answered with the whole file"),
        RangeAnswer::Unsatisfiable => {}
    }
    let Ok(v) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::RANGE, v);
    let body = Bytes::from(vec![7u8; len]);
    let resp = respond(&Method::GET, &headers, body);
    let status = resp.status().as_u16();
    assert!(status == 206 || status == 416, "status {status}");
    if status == 206 {
        let length: u64 = resp.headers()[header::CONTENT_LENGTH]
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("a Content-Length");
        let range = resp.headers()[header::CONTENT_RANGE]
            .to_str()
            .expect("ASCII")
            .to_owned();
        let (span, total) = range
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('/'))
            .expect("bytes a-b/len");
        let (a, b) = span.split_once('-').expect("a-b");
        let (a, b): (u64, u64) = (a.parse().expect("a"), b.parse().expect("b"));
        assert_eq!(total, len.to_string());
        assert_eq!(b - a + 1, length, "{range} carries {length}");
    }
}
