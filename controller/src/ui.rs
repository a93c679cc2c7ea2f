//! The web console's static files under `/ui` on the API listener, embedded in the binary
//! (`include_str!`: a handful of hand-written files, no build step, no framework).
//!
//! They are public (no authentication): they hold no data. Every data call the page makes
//! goes through the API with the user's credentials. Each answer carries a strict
//! Content-Security-Policy (scripts, styles and connections from this origin only, no inline
//! script, no framing, no form posts), `nosniff` and an ETag.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};

/// The console's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../ui/index.html"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../ui/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/api.js"),
    },
    Asset {
        name: "util.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/util.js"),
    },
    Asset {
        name: "rack.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/rack.js"),
    },
    Asset {
        name: "node.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/node.js"),
    },
    Asset {
        name: "forms.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/forms.js"),
    },
];

/// ETags of the assets, in [`ASSETS`] order (SHA-256 of the content, shortened).
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body.as_bytes());
            format!("\"{}\"", hex::encode(&digest[..12]))
        })
        .collect()
});

/// PURE: whether `path` (no trailing slash) is one of the console's public files.
pub fn is_console_path(path: &str) -> bool {
    path == "/ui" || path.strip_prefix("/ui/").is_some_and(|f| find(f).is_some())
}

fn find(name: &str) -> Option<usize> {
    ASSETS.iter().position(|a| a.name == name)
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|h: HeaderMap| async move { serve(0, &h) }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>, h: HeaderMap| async move {
                match find(&file) {
                    Some(i) => serve(i, &h),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
}

fn serve(i: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = ETAGS.get(i).map_or("", String::as_str);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = resp.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_paths_are_the_embedded_files_only() {
        assert!(is_console_path("/ui"));
        assert!(is_console_path("/ui/app.js"));
        assert!(!is_console_path("/ui/nope.js"));
        assert!(!is_console_path("/ui/../v1/nodes"));
        assert!(!is_console_path("/uix"));
        assert!(!is_console_path("/v1/nodes"));
    }

    #[test]
    fn no_inline_script_or_remote_origin_in_the_page() {
        let html = ASSETS[0].body;
        assert!(!html.contains("<script>"), "inline script");
        assert!(!html.contains("style="), "inline style");
        // Nothing is loaded from elsewhere (the CSP would refuse it anyway).
        let remote = [
            "src=\"http",
            "href=\"http",
            "from 'http",
            "import('http",
            "fetch('http",
            "fetch(`http",
            "url(http",
            "@import",
        ];
        for a in ASSETS {
            for r in remote {
                assert!(!a.body.contains(r), "{} loads {r}...", a.name);
            }
        }
    }
}
