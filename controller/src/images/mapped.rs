//! The body of `GET|HEAD /images/NAME.raw.zst`: the stored file mapped into memory once and
//! shared by every download of it running now, answered as one slice of that mapping, with
//! `Range` (one range: resumed downloads).
//!
//! Why not read the file into buffers (tower-http's `ServeFile`, as before): every byte was
//! then copied twice in the controller (page cache -> buffer -> socket) in chunks of 256 KiB,
//! and at a rack's fan-out that copy and its system calls were the controller's CPU. From a
//! mapping hyper writes straight from the page cache to the socket (one copy, the kernel's,
//! as large as the socket takes). `cargo xtask bench rack` measures it against loopback.
//!
//! A mapping lives while a download of that file runs (the cache holds it weakly): an idle
//! controller maps nothing. It is keyed by device and inode, so an image deleted and
//! imported again under the same name is a new mapping.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use memmap2::Mmap;

/// A mapped image file; `Bytes` slices of it keep it mapped.
#[derive(Debug)]
struct Shared(Arc<Mmap>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The mappings of image files being downloaded now.
#[derive(Debug, Default)]
pub struct MappedFiles {
    live: Mutex<HashMap<(u64, u64), Weak<Mmap>>>,
}

impl MappedFiles {
    /// The whole of the file at `path` as bytes backed by its (shared) mapping.
    pub fn bytes(&self, path: &Path) -> std::io::Result<Bytes> {
        use std::os::unix::fs::MetadataExt as _;
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if meta.len() == 0 {
            return Ok(Bytes::new());
        }
        let key = (meta.dev(), meta.ino());
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, m| m.strong_count() > 0);
        if let Some(map) = live.get(&key).and_then(Weak::upgrade) {
            return Ok(Bytes::from_owner(Shared(map)));
        }
        // SAFETY: the mapping is read-only and the file is never changed in place: the image
        // store writes an image in a hidden import directory and renames it into place,
        // deletes by renaming away and unlinking (the inode and its pages stay while
        // mapped), and its directory is the controller's own (mode 0700). Truncating the
        // file under a live mapping would fault the reader; nothing in Ingot does.
        let map = Arc::new(unsafe { Mmap::map(&file)? });
        // Downloads read front to back: let the kernel read ahead.
        let _ = map.advise(memmap2::Advice::Sequential);
        live.insert(key, Arc::downgrade(&map));
        Ok(Bytes::from_owner(Shared(map)))
    }

    /// How many files are mapped now.
    #[cfg(test)]
    fn mapped(&self) -> usize {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.values().filter(|m| m.strong_count() > 0).count()
    }
}

/// What a request's `Range` asks of a file of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No `Range`: the whole file, 200.
    Whole,
    /// One satisfiable range, inclusive bounds: 206.
    Part(u64, u64),
    /// Malformed, several ranges, or outside the file: 416.
    Unsatisfiable,
}

/// PURE: the answer to a `Range` header value (`None`: none sent) for a file of `len` bytes.
pub fn range_answer(range: Option<&[u8]>, len: u64) -> RangeAnswer {
    let Some(raw) = range else {
        return RangeAnswer::Whole;
    };
    let Ok(text) = std::str::from_utf8(raw) else {
        return RangeAnswer::Unsatisfiable;
    };
    let Ok(parsed) = http_range_header::parse_range_header(text) else {
        return RangeAnswer::Unsatisfiable;
    };
    match parsed.validate(len).as_deref() {
        // (The parser accepts `0-0` of an empty file: nothing is in range there.)
        Ok([one]) if one.start() <= one.end() && *one.end() < len => {
            RangeAnswer::Part(*one.start(), *one.end())
        }
        _ => RangeAnswer::Unsatisfiable,
    }
}

/// The answer to `method` (GET or HEAD) for `body` (a whole file) given the request headers.
pub fn respond(method: &Method, headers: &HeaderMap, body: Bytes) -> Response {
    let len = body.len() as u64;
    let range = headers.get(header::RANGE).map(HeaderValue::as_bytes);
    let (status, part, content_range) = match range_answer(range, len) {
        RangeAnswer::Whole => (StatusCode::OK, body, None),
        RangeAnswer::Part(start, end) => {
            let (s, e) = (
                usize::try_from(start).unwrap_or(usize::MAX),
                usize::try_from(end).unwrap_or(usize::MAX),
            );
            if body.get(s..=e).is_none() {
                return unsatisfiable(len);
            }
            (
                StatusCode::PARTIAL_CONTENT,
                body.slice(s..=e),
                Some(format!("bytes {start}-{end}/{len}")),
            )
        }
        RangeAnswer::Unsatisfiable => return unsatisfiable(len),
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/zstd")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, part.len());
    if let Some(v) = content_range {
        resp = resp.header(header::CONTENT_RANGE, v);
    }
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(part)
    };
    resp.body(body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "building an image answer");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
}

fn unsatisfiable(len: u64) -> Response {
    (
        StatusCode::RANGE_NOT_SATISFIABLE,
        [(header::CONTENT_RANGE, format!("bytes */{len}"))],
        "range not satisfiable\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_answers() {
        use RangeAnswer::*;
        let table: &[(Option<&str>, u64, RangeAnswer)] = &[
            (None, 100, Whole),
            (Some("bytes=0-9"), 100, Part(0, 9)),
            (Some("bytes=90-"), 100, Part(90, 99)),
            (Some("bytes=-10"), 100, Part(90, 99)),
            (Some("bytes=0-999"), 100, Part(0, 99)),
            (Some("bytes=100-"), 100, Unsatisfiable),
            (Some("bytes=5-2"), 100, Unsatisfiable),
            (Some("bytes=0-1,5-6"), 100, Unsatisfiable),
            (Some("bytes=abc"), 100, Unsatisfiable),
            (Some("items=0-1"), 100, Unsatisfiable),
            (Some(""), 100, Unsatisfiable),
            (Some("bytes=0-0"), 0, Unsatisfiable),
        ];
        for (header, len, want) in table {
            assert_eq!(
                range_answer(header.map(str::as_bytes), *len),
                *want,
                "{header:?} of {len}"
            );
        }
        assert_eq!(range_answer(Some(&[0xff, 0xfe]), 10), Unsatisfiable);
    }

    #[tokio::test]
    async fn answers_whole_part_head_and_refusal() {
        let body = Bytes::from((0..=255u8).collect::<Vec<_>>());
        let mut headers = HeaderMap::new();
        let whole = respond(&Method::GET, &headers, body.clone());
        assert_eq!(whole.status(), 200);
        assert_eq!(whole.headers()["content-length"], "256");
        assert_eq!(whole.headers()["accept-ranges"], "bytes");
        let got = axum::body::to_bytes(whole.into_body(), 1 << 20)
            .await
            .expect("body");
        assert_eq!(got, body);

        headers.insert(header::RANGE, HeaderValue::from_static("bytes=250-"));
        let part = respond(&Method::GET, &headers, body.clone());
        assert_eq!(part.status(), 206);
        assert_eq!(part.headers()["content-range"], "bytes 250-255/256");
        assert_eq!(part.headers()["content-length"], "6");
        let got = axum::body::to_bytes(part.into_body(), 1 << 20)
            .await
            .expect("body");
        assert_eq!(&got[..], &body[250..]);

        let head = respond(&Method::HEAD, &headers, body.clone());
        assert_eq!(head.headers()["content-length"], "6");
        let got = axum::body::to_bytes(head.into_body(), 1 << 20)
            .await
            .expect("body");
        assert!(got.is_empty());

        headers.insert(header::RANGE, HeaderValue::from_static("bytes=300-"));
        let refused = respond(&Method::GET, &headers, body);
        assert_eq!(refused.status(), 416);
        assert_eq!(refused.headers()["content-range"], "bytes */256");
    }

    #[test]
    fn one_mapping_per_file_while_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.raw.zst");
        std::fs::write(&path, b"0123456789").expect("write");
        let files = MappedFiles::default();
        let a = files.bytes(&path).expect("map");
        let b = files.bytes(&path).expect("map again");
        assert_eq!(&a[..], b"0123456789");
        assert_eq!(a.as_ptr(), b.as_ptr(), "one mapping shared");
        assert_eq!(files.mapped(), 1);
        let tail = a.slice(5..);
        drop((a, b));
        assert_eq!(files.mapped(), 1, "a slice keeps it mapped");
        assert_eq!(&tail[..], b"56789");
        drop(tail);
        assert_eq!(files.mapped(), 0, "unmapped when no download holds it");
        // Replaced under the same name (as an import does): a new mapping, new bytes.
        let next = dir.path().join(".next");
        std::fs::write(&next, b"abc").expect("write");
        let old = files.bytes(&path).expect("map");
        std::fs::rename(&next, &path).expect("rename");
        let new = files.bytes(&path).expect("map new");
        assert_eq!(&old[..], b"0123456789", "a running download keeps its file");
        assert_eq!(&new[..], b"abc");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").expect("write");
        assert!(files.bytes(&empty).expect("empty").is_empty());
    }
}
