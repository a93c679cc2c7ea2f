//! `htpasswd`: an htpasswd file (`api::auth::parse_htpasswd`, what `http_basic` loads at
//! start) and, from the same bytes, an `Authorization` header value
//! (`api::auth::basic_credentials`, on every API request).
//!
//! Invariants: every user accepted is non-empty, at most 255 bytes, without `:`, and has a
//! bcrypt hash; credentials round-trip through the header as the client builds it. No bcrypt
//! work is done here (a hash's cost is the file's, up to 2^31 rounds).

use axum::http::{HeaderMap, HeaderValue, header};
use controller::api::auth::{basic_credentials, parse_htpasswd};

/// Base64 (standard alphabet, padded), as a client encodes `user:password`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Entry point.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(users) = parse_htpasswd(&text) {
        for (user, hash) in &users {
            assert!(!user.is_empty() && user.len() <= 255, "user {user:?}");
            assert!(!user.contains(':'), "user {user:?} holds a colon");
            assert!(
                ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)),
                "non-bcrypt hash accepted"
            );
        }
    }

    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(data) {
        headers.insert(header::AUTHORIZATION, v);
        if let Ok((user, _password)) = basic_credentials(&headers) {
            assert!(!user.contains(':'), "user {user:?} holds a colon");
        }
    }

    // What a client sends for user `data` before the first ':' and the rest as password.
    if let Ok(s) = std::str::from_utf8(data)
        && s.len() <= 1024
    {
        let (user, password) = s.split_once(':').unwrap_or((s, ""));
        if !user.contains(':') {
            let value = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&value).expect("base64 is a valid header value"),
            );
            let got = basic_credentials(&headers).expect("a well-formed Basic header");
            assert_eq!((got.0.as_str(), got.1.as_str()), (user, password));
        }
    }
}
