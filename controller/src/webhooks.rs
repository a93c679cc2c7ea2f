//! Webhooks: every `[[webhooks]]` entry receives a JSON POST of each [`NodeEvent`] it
//! subscribed to, signed with HMAC-SHA256 when it has a secret.
//!
//! The conductor never waits for a receiver: [`Webhooks::publish`] puts the event on the
//! hook's bounded queue (an event that finds it full is dropped, counted and logged), and one
//! task per hook delivers them in order, retrying a failed delivery (connection error, 5xx,
//! 408, 429) with exponential backoff (1 s doubling to 60 s, 8 attempts). Headers:
//! `X-Ingot-Event` (the event name), `X-Ingot-Delivery` (the event id, the same on every
//! retry), and with a secret `X-Ingot-Signature: sha256=HEX` over the exact body.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{NODE_FAILED, NodeEvent, NodeEvents, PROVISION_STATE_CHANGED};

/// Events a queue holds before new ones are dropped.
const QUEUE: usize = 1024;
/// Attempts per event.
const MAX_ATTEMPTS: u32 = 8;
/// One attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One `[[webhooks]]` entry of the configuration file.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Event names (`provision_state_changed`, `node_failed`); default both.
    #[serde(default)]
    pub events: Vec<String>,
    /// HMAC-SHA256 key of the `X-Ingot-Signature` header.
    pub secret: Option<String>,
    /// CA certificates (PEM) an `https://` receiver's certificate must chain to; required
    /// for https (`/etc/ssl/certs/ca-certificates.crt` trusts the public CAs).
    pub ca_file: Option<PathBuf>,
    /// First retry delay in milliseconds (default 1000), doubling up to 60 s.
    pub retry_base_ms: Option<u64>,
}

impl std::fmt::Debug for WebhookSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSection")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "******"))
            .field("ca_file", &self.ca_file)
            .field("retry_base_ms", &self.retry_base_ms)
            .finish()
    }
}

/// A validated webhook.
#[derive(Clone, PartialEq)]
pub struct WebhookConfig {
    pub url: reqwest::Url,
    pub events: Vec<&'static str>,
    pub secret: Option<Vec<u8>>,
    pub ca_file: Option<PathBuf>,
    pub retry_base: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url.as_str())
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "******"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl WebhookSection {
    /// Checks the entry (`n` is its position, for messages).
    pub fn validate(&self, n: usize) -> anyhow::Result<WebhookConfig> {
        let url = reqwest::Url::parse(&self.url)
            .with_context(|| format!("webhooks[{n}].url is not a URL"))?;
        match url.scheme() {
            "http" => {}
            "https" if self.ca_file.is_some() => {}
            "https" => bail!(
                "webhooks[{n}]: an https URL needs ca_file (the CA bundle to trust, e.g. /etc/ssl/certs/ca-certificates.crt)"
            ),
            other => bail!("webhooks[{n}].url: scheme {other} is not http or https"),
        }
        if !url.username().is_empty() || url.password().is_some() {
            bail!("webhooks[{n}].url: credentials in the URL would be logged; use secret");
        }
        let mut events = Vec::new();
        for e in &self.events {
            match e.as_str() {
                PROVISION_STATE_CHANGED => events.push(PROVISION_STATE_CHANGED),
                NODE_FAILED => events.push(NODE_FAILED),
                other => bail!(
                    "webhooks[{n}].events: unknown event {other:?} (known: {PROVISION_STATE_CHANGED}, {NODE_FAILED})"
                ),
            }
        }
        if events.is_empty() {
            events = vec![PROVISION_STATE_CHANGED, NODE_FAILED];
        }
        if self.secret.as_deref() == Some("") {
            bail!("webhooks[{n}].secret is empty");
        }
        Ok(WebhookConfig {
            url,
            events,
            secret: self.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            ca_file: self.ca_file.clone(),
            retry_base: Duration::from_millis(self.retry_base_ms.unwrap_or(1000).max(1)),
        })
    }
}

/// Delivery counters of one hook.
#[derive(Debug, Default)]
pub struct HookStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub retries: AtomicU64,
}

#[derive(Debug)]
struct Hook {
    url: String,
    events: Vec<&'static str>,
    queue: mpsc::Sender<NodeEvent>,
    stats: Arc<HookStats>,
}

/// The running webhooks: a [`NodeEvents`] sink that queues, and one delivery task per hook.
#[derive(Debug, Default)]
pub struct Webhooks {
    hooks: Vec<Hook>,
    cancel: CancellationToken,
}

impl Webhooks {
    /// Starts one delivery task per hook on the current runtime (they end at [`Self::stop`]).
    pub fn start(configs: &[WebhookConfig]) -> anyhow::Result<Self> {
        let cancel = CancellationToken::new();
        let mut hooks = Vec::new();
        for cfg in configs {
            let client = client(cfg)?;
            let (tx, rx) = mpsc::channel(QUEUE);
            let stats = Arc::new(HookStats::default());
            tokio::spawn(deliver_all(
                cfg.clone(),
                client,
                rx,
                stats.clone(),
                cancel.clone(),
            ));
            hooks.push(Hook {
                url: redacted(&cfg.url),
                events: cfg.events.clone(),
                queue: tx,
                stats,
            });
        }
        Ok(Self { hooks, cancel })
    }

    /// Ends the delivery tasks; events still queued are not delivered.
    pub fn stop(&self) {
        let queued: usize = self.hooks.iter().map(|h| QUEUE - h.queue.capacity()).sum();
        if queued > 0 {
            tracing::warn!(queued, "stopping webhooks with events not yet delivered");
        }
        self.cancel.cancel();
    }

    /// Each hook's URL (without its query) and counters.
    pub fn stats(&self) -> Vec<(String, Arc<HookStats>)> {
        self.hooks
            .iter()
            .map(|h| (h.url.clone(), h.stats.clone()))
            .collect()
    }
}

impl NodeEvents for Webhooks {
    fn publish(&self, event: NodeEvent) {
        for hook in self
            .hooks
            .iter()
            .filter(|h| h.events.contains(&event.event))
        {
            if let Err(e) = hook.queue.try_send(event.clone()) {
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    hook.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(
                    node = %event.node_uuid,
                    webhook = %hook.url,
                    event = event.event,
                    "webhook queue full or closed: event dropped"
                );
            }
        }
    }
}

/// The URL as logs show it: no query (it may carry a token).
fn redacted(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

fn client(cfg: &WebhookConfig) -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a crypto provider; `ingot` installs ring first thing, this
    // covers the library used on its own (idempotent).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &cfg.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("no PEM certificates in {}", ca.display()))?;
        b = b.tls_certs_only(certs);
    }
    b.build().context("webhook HTTP client")
}

/// HMAC-SHA256 of `body` under `key`, as `sha256=HEX`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delay before retry `attempt` (1-based): `base` doubling, at most 60 s.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(Duration::from_secs(60))
}

/// Whether an answer asks for a retry.
pub fn retryable(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

async fn deliver_all(
    cfg: WebhookConfig,
    client: reqwest::Client,
    mut rx: mpsc::Receiver<NodeEvent>,
    stats: Arc<HookStats>,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return,
            e = rx.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        let delivered = tokio::select! {
            () = cancel.cancelled() => return,
            ok = deliver(&cfg, &client, &event, &stats) => ok,
        };
        let counter = if delivered {
            &stats.delivered
        } else {
            &stats.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Delivers one event with retries; whether a receiver took it.
async fn deliver(
    cfg: &WebhookConfig,
    client: &reqwest::Client,
    event: &NodeEvent,
    stats: &HookStats,
) -> bool {
    let body = match serde_json::to_vec(event) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(node = %event.node_uuid, error = %e, "webhook event not serialisable");
            return false;
        }
    };
    let url = redacted(&cfg.url);
    for attempt in 1..=MAX_ATTEMPTS {
        if attempt > 1 {
            stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff(cfg.retry_base, attempt - 1)).await;
        }
        let mut req = client
            .post(cfg.url.clone())
            .header("Content-Type", "application/json")
            .header("X-Ingot-Event", event.event)
            .header("X-Ingot-Delivery", event.id.to_string())
            .body(body.clone());
        if let Some(key) = &cfg.secret {
            req = req.header("X-Ingot-Signature", signature(key, &body));
        }
        let why = match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                tracing::debug!(node = %event.node_uuid, webhook = %url, attempt, "webhook delivered");
                return true;
            }
            Ok(resp) if !retryable(resp.status().as_u16()) => {
                tracing::warn!(
                    node = %event.node_uuid,
                    webhook = %url,
                    status = resp.status().as_u16(),
                    "webhook refused the event; not retried"
                );
                return false;
            }
            Ok(resp) => format!("HTTP {}", resp.status().as_u16()),
            // Without the URL: reqwest's error text names it, query included.
            Err(e) => e.without_url().to_string(),
        };
        tracing::info!(node = %event.node_uuid, webhook = %url, attempt, error = %why, "webhook delivery failed");
    }
    tracing::warn!(node = %event.node_uuid, webhook = %url, attempts = MAX_ATTEMPTS, "webhook event given up");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(url: &str) -> WebhookSection {
        WebhookSection {
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn validation() {
        let ok = section("http://127.0.0.1:9/hook").validate(0).expect("ok");
        assert_eq!(ok.events, vec![PROVISION_STATE_CHANGED, NODE_FAILED]);
        assert_eq!(ok.retry_base, Duration::from_secs(1));
        let rows: [(WebhookSection, &str); 5] = [
            (section("not a url"), "not a URL"),
            (section("ftp://h/x"), "not http or https"),
            (section("https://h/x"), "needs ca_file"),
            (section("http://u:p@h/x"), "credentials"),
            (
                WebhookSection {
                    events: vec!["node_exploded".into()],
                    ..section("http://h/x")
                },
                "unknown event",
            ),
        ];
        for (s, want) in rows {
            let err = s.validate(3).expect_err(want).to_string();
            assert!(err.contains(want) && err.contains("webhooks[3]"), "{err}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = WebhookSection {
            secret: Some("hook-key-1234".into()),
            ..section("http://h/x")
        };
        assert!(!format!("{s:?}").contains("hook-key-1234"));
        let c = s.validate(0).expect("ok");
        assert!(!format!("{c:?}").contains("hook-key-1234"));
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let b = Duration::from_secs(1);
        let got: Vec<u64> = (1..=8).map(|a| backoff(b, a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            backoff(Duration::from_millis(50), 2),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn which_answers_are_retried() {
        for (status, want) in [
            (500, true),
            (503, true),
            (429, true),
            (408, true),
            (404, false),
            (400, false),
            (301, false),
        ] {
            assert_eq!(retryable(status), want, "{status}");
        }
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn redacted_urls_lose_their_query() {
        let u = reqwest::Url::parse("http://h:8/x?token=abc").expect("url");
        assert_eq!(redacted(&u), "http://h:8/x");
    }
}
