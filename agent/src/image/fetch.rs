//! HTTP(S) download with resume: a cut connection is picked up again with a
//! `Range` request, a server that ignores `Range` is re-read from the start
//! (the bytes we already have are skipped), and a transfer that stops moving
//! for `stall_timeout` counts as cut. Retries are bounded, with exponential
//! backoff. Every byte goes to `deliver` exactly once and in order. No error carries the
//! URL's query string (a signed image URL's signature): see [`crate::redact`].
//!
//! With controller replicas the same image is served by each of them at the same path
//! ([`mirror_urls`]): each retry goes to the next one, resuming at the same offset, so a
//! download cut by its replica's death goes on from another.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};

/// Retry and timeout policy.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Reconnections allowed after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubled on each retry.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// No data for this long counts as a cut connection.
    pub stall_timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Extra CA certificate (PEM) to trust for HTTPS, instead of none.
    pub ca_cert: Option<PathBuf>,
    /// `ingot.ca=`: trust only the CA (or certificate) with this SHA-256 of its DER, as the
    /// controller client does (the ramdisk's deploys of `ingot://` images over HTTPS).
    pub pin_sha256: Option<[u8; 32]>,
    /// The same image elsewhere (other controller replicas): each retry takes the next URL
    /// of the URL and these, in turn.
    pub mirrors: Vec<String>,
}

/// PURE: the URLs of the same image at the other controllers, when `url` is served by one
/// of `controllers` (base URLs, as `ingot.url=`): same path and query (a signed URL is
/// valid on every replica that shares the signing key) on each other controller's base.
/// Empty when `url` is not a controller's (an operator's web server has no replicas).
pub fn mirror_urls(url: &str, controllers: &[String]) -> Vec<String> {
    let base_of = |c: &String| c.trim_end_matches('/').to_owned();
    let Some((own, rest)) = controllers.iter().map(base_of).find_map(|b| {
        url.strip_prefix(b.as_str())
            .filter(|rest| rest.starts_with('/'))
            .map(|rest| (b.clone(), rest.to_owned()))
    }) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for b in controllers.iter().map(base_of) {
        let m = format!("{b}{rest}");
        if b != own && !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_retries: 5,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ca_cert: None,
            pin_sha256: None,
            mirrors: Vec::new(),
        }
    }
}

/// Why the download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server refused the request with a status that retrying cannot fix.
    #[error("server answered {status} for {url}")]
    Status {
        /// HTTP status.
        status: u16,
        /// URL without its query string ([`crate::redact::url`]: a signed URL's signature
        /// never goes into an error).
        url: String,
    },
    /// Retries ran out; the last failure is the source.
    #[error("download failed after {retries} retries at byte {offset}")]
    RetriesExhausted {
        /// Retries made.
        retries: u32,
        /// Bytes received when we gave up.
        offset: u64,
        /// Last failure.
        #[source]
        last: Box<FetchError>,
    },
    /// No data arrived for the stall timeout.
    #[error("transfer stalled for {timeout:?} at byte {offset}")]
    Stalled {
        /// The timeout.
        timeout: Duration,
        /// Bytes received so far.
        offset: u64,
    },
    /// The connection broke or could not be made.
    #[error("transfer broke at byte {offset}")]
    Transport {
        /// Bytes received so far.
        offset: u64,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The body ended before Content-Length.
    #[error("body ended at byte {offset}, expected {expected}")]
    ShortBody {
        /// Bytes received.
        offset: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// A 206 answer for another range than we asked for.
    #[error("server answered range {got:?}, we asked for bytes {want}-")]
    BadRange {
        /// Content-Range received.
        got: String,
        /// Offset asked for.
        want: u64,
    },
    /// Building the client failed (bad CA file, TLS setup).
    #[error("setting up the HTTP client")]
    Client(#[source] anyhow::Error),
    /// The consumer stopped taking bytes (its own error is the real one).
    #[error("download cancelled because the image consumer stopped")]
    Cancelled,
}

impl FetchError {
    fn retryable(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            FetchError::Stalled { .. }
            | FetchError::Transport { .. }
            | FetchError::ShortBody { .. } => true,
            _ => false,
        }
    }
}

/// What a finished download looked like.
#[derive(Debug, Clone, Copy)]
pub struct FetchSummary {
    /// Bytes delivered.
    pub bytes: u64,
    /// Reconnections made.
    pub retries: u32,
}

fn client(opts: &FetchOptions) -> Result<reqwest::Client, FetchError> {
    // The agent uses ring; installing it again (another caller was first) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let b = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(opts.connect_timeout);
    if let Some(pin) = opts.pin_sha256 {
        let cfg = crate::run::client::pinned_tls_config(pin).map_err(FetchError::Client)?;
        return b
            .tls_backend_preconfigured(cfg)
            .build()
            .map_err(|e| FetchError::Client(e.into()));
    }
    if let Some(ca) = &opts.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| {
            FetchError::Client(anyhow::Error::new(e).context(format!("reading {}", ca.display())))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| FetchError::Client(e.into()))?;
        return b
            .tls_certs_only(certs)
            .build()
            .map_err(|e| FetchError::Client(e.into()));
    }
    match b.build() {
        Ok(c) => Ok(c),
        // No system CA store (the ramdisk has none): plain HTTP still works, and an HTTPS
        // URL fails with a certificate error instead of the whole client refusing to start.
        Err(_) => reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(opts.connect_timeout)
            .tls_certs_only(Vec::new())
            .build()
            .map_err(|e| FetchError::Client(e.into())),
    }
}

/// Parse the start and total of `bytes a-b/total`.
fn content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// Download `url`, calling `on_total` once the size is known and `deliver`
/// for each chunk; `deliver` returns false to cancel.
pub async fn fetch(
    url: &str,
    opts: &FetchOptions,
    mut on_total: impl FnMut(u64),
    mut deliver: impl FnMut(Bytes) -> bool,
) -> Result<FetchSummary, FetchError> {
    let client = client(opts)?;
    let urls: Vec<&str> = std::iter::once(url)
        .chain(opts.mirrors.iter().map(String::as_str))
        .collect();
    let mut offset = 0u64;
    let mut retries = 0u32;
    let mut backoff = opts.backoff;
    loop {
        // The first URL, then each retry at the next mirror.
        let at = urls[usize::try_from(retries).unwrap_or(0) % urls.len()];
        match attempt(&client, at, opts, &mut offset, &mut on_total, &mut deliver).await {
            Ok(()) => {
                return Ok(FetchSummary {
                    bytes: offset,
                    retries,
                });
            }
            Err(e) if e.retryable() && retries < opts.max_retries => {
                retries += 1;
                tracing::warn!(error = %crate::error_chain(&e), retries, offset, "download interrupted, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(opts.max_backoff);
            }
            Err(e) if e.retryable() => {
                return Err(FetchError::RetriesExhausted {
                    retries,
                    offset,
                    last: Box::new(e),
                });
            }
            Err(e) => return Err(e),
        }
    }
}

async fn attempt(
    client: &reqwest::Client,
    url: &str,
    opts: &FetchOptions,
    offset: &mut u64,
    on_total: &mut impl FnMut(u64),
    deliver: &mut impl FnMut(Bytes) -> bool,
) -> Result<(), FetchError> {
    let mut req = client.get(url);
    if *offset > 0 {
        req = req.header(RANGE, format!("bytes={offset}-"));
    }
    // reqwest's errors print the URL: without its query (a signed URL's signature).
    let transport = |offset: u64| {
        move |source| FetchError::Transport {
            offset,
            source: crate::redact::reqwest_error(source),
        }
    };
    let send = tokio::time::timeout(opts.stall_timeout, req.send());
    let mut resp = send
        .await
        .map_err(|_| FetchError::Stalled {
            timeout: opts.stall_timeout,
            offset: *offset,
        })?
        .map_err(transport(*offset))?;
    let status = resp.status();
    // Bytes at the front of this body that we already delivered.
    let mut skip = 0u64;
    let expected_end = match status {
        StatusCode::PARTIAL_CONTENT if *offset > 0 => {
            let cr = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            match content_range(&cr) {
                Some((start, total)) if start == *offset => {
                    if let Some(t) = total {
                        on_total(t);
                    }
                    total
                }
                _ => {
                    return Err(FetchError::BadRange {
                        got: cr,
                        want: *offset,
                    });
                }
            }
        }
        StatusCode::OK => {
            if *offset > 0 {
                tracing::warn!(offset, "server ignored Range; reading again from the start");
                skip = *offset;
            }
            let len = resp
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(l) = len {
                on_total(l);
            }
            len
        }
        s => {
            return Err(FetchError::Status {
                status: s.as_u16(),
                url: crate::redact::url(url),
            });
        }
    };
    loop {
        let chunk = tokio::time::timeout(opts.stall_timeout, resp.chunk())
            .await
            .map_err(|_| FetchError::Stalled {
                timeout: opts.stall_timeout,
                offset: *offset,
            })?
            .map_err(transport(*offset))?;
        let Some(mut chunk) = chunk else { break };
        if skip > 0 {
            let n = skip.min(chunk.len() as u64);
            skip -= n;
            chunk = chunk.slice(usize::try_from(n).unwrap_or(chunk.len())..);
            if chunk.is_empty() {
                continue;
            }
        }
        *offset += chunk.len() as u64;
        if !deliver(chunk) {
            return Err(FetchError::Cancelled);
        }
    }
    match expected_end {
        Some(end) if *offset < end => Err(FetchError::ShortBody {
            offset: *offset,
            expected: end,
        }),
        _ if skip > 0 => Err(FetchError::ShortBody {
            offset: *offset,
            expected: *offset + skip,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_the_other_controllers() {
        let ctl = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let three = ctl(&[
            "https://10.0.0.1:8443",
            "https://10.0.0.2:8443/",
            "https://10.0.0.3:8443",
        ]);
        // (url, controllers, mirrors)
        let rows: [(&str, Vec<String>, Vec<&str>); 5] = [
            (
                "https://10.0.0.2:8443/images/x.raw.zst?node=a&sig=b",
                three.clone(),
                vec![
                    "https://10.0.0.1:8443/images/x.raw.zst?node=a&sig=b",
                    "https://10.0.0.3:8443/images/x.raw.zst?node=a&sig=b",
                ],
            ),
            // An image elsewhere has no mirrors.
            ("http://images.example/x.raw", three.clone(), vec![]),
            // A longer port is not the same base.
            ("https://10.0.0.1:84430/images/x", three.clone(), vec![]),
            // One controller: nothing else to try.
            (
                "https://10.0.0.1:8443/images/x",
                ctl(&["https://10.0.0.1:8443"]),
                vec![],
            ),
            ("https://10.0.0.1:8443/images/x", vec![], vec![]),
        ];
        for (url, controllers, want) in rows {
            assert_eq!(mirror_urls(url, &controllers), want, "{url}");
        }
    }

    #[test]
    fn parses_content_range() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("items 1-2/3"), None);
    }
}
