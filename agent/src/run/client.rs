//! The controller's agent API over HTTP(S) (`proto::protocol`), with optional certificate
//! pinning by SHA-256 fingerprint (`ingot.ca=sha256:HEX`), against one or several controller
//! replicas (`ingot.url=` repeated): calls go to the current one, and a call that does not
//! reach it (connection refused, reset, timed out) moves on to the next, so the run loop's
//! retry goes there. An answer with a status, even an error, keeps the controller.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proto::protocol::{
    EventReport, HeartbeatRequest, HeartbeatResponse, LookupRequest, LookupResponse, PATH_EVENTS,
    PATH_HEARTBEAT, PATH_LOOKUP, TOKEN_HEADER,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;

use super::machine::CallError;

/// Calls the controller makes available to the agent. Every call may be retried.
pub trait Controller: Send + Sync {
    /// `token`: the token the agent holds from an earlier lookup of this boot, if any.
    fn lookup(
        &self,
        req: &LookupRequest,
        token: Option<&str>,
    ) -> impl Future<Output = Result<LookupResponse, CallError>> + Send;
    /// Long-polls; `wait` is how long the controller may hold the call.
    fn heartbeat(
        &self,
        token: &str,
        req: &HeartbeatRequest,
        wait: Duration,
    ) -> impl Future<Output = Result<HeartbeatResponse, CallError>> + Send;
    fn event(
        &self,
        token: &str,
        rep: &EventReport,
    ) -> impl Future<Output = Result<(), CallError>> + Send;
}

/// Accepts the server certificate when the pinned SHA-256 is that of the DER of the CA in
/// the chain the server sent (what `ingot certs init` prints and the iPXE script passes; the
/// chain is then verified against that CA alone: signature, validity, the name or address
/// dialled), or of the server certificate itself.
#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hash = |c: &CertificateDer<'_>| -> [u8; 32] { sha2::Sha256::digest(c.as_ref()).into() };
        let got = hash(end_entity);
        if got == self.sha256 {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(ca) = intermediates.iter().find(|c| hash(c) == self.sha256) else {
            return Err(rustls::Error::General(format!(
                "controller certificate sha256:{} (and its chain) is not the pinned sha256:{}",
                hex::encode(got),
                hex::encode(self.sha256)
            )));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| c.as_ref() != ca.as_ref())
            .cloned()
            .collect();
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(format!("pinned CA unusable: {e}")))?
        .verify_server_cert(end_entity, &others, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client config that trusts only the pinned CA (or certificate): the controller
/// client and the image fetcher share it.
pub fn pinned_tls_config(sha256: [u8; 32]) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { sha256, provider }))
            .with_no_client_auth(),
    )
}

/// [`Controller`] over reqwest.
#[derive(Debug, Clone)]
pub struct HttpController {
    bases: Vec<String>,
    /// Index into `bases` of the controller calls go to.
    current: Arc<AtomicUsize>,
    http: reqwest::Client,
}

impl HttpController {
    /// `base` is `http(s)://host:port`; `pin` the controller certificate's SHA-256.
    pub fn new(base: &str, pin: Option<[u8; 32]>) -> anyhow::Result<Self> {
        Self::with_replicas(&[base.to_owned()], pin)
    }

    /// A client of several controller replicas (`bases`, tried in order, at least one).
    pub fn with_replicas(bases: &[String], pin: Option<[u8; 32]>) -> anyhow::Result<Self> {
        Self::build(bases, pin, None)
    }

    /// [`Self::with_replicas`] from the source address `local` (the rack bench's simulated
    /// machines each take a loopback address, as real machines each have their own: the
    /// controller limits lookups per source address).
    pub fn with_source(
        bases: &[String],
        pin: Option<[u8; 32]>,
        local: std::net::IpAddr,
    ) -> anyhow::Result<Self> {
        Self::build(bases, pin, Some(local))
    }

    fn build(
        bases: &[String],
        pin: Option<[u8; 32]>,
        local: Option<std::net::IpAddr>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!bases.is_empty(), "no controller URL");
        // reqwest needs a process-wide provider; installing it again (another caller was
        // first) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .local_address(local)
            .connect_timeout(Duration::from_secs(5));
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        // The ramdisk has no CA store (reqwest's default verifier fails to start without
        // one): trust the pinned certificate, or nothing (plain HTTP only).
        let cfg = match pin {
            Some(sha256) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { sha256, provider }))
                .with_no_client_auth(),
            None => builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        b = b.tls_backend_preconfigured(cfg);
        Ok(HttpController {
            bases: bases
                .iter()
                .map(|b| b.trim_end_matches('/').to_owned())
                .collect(),
            current: Arc::new(AtomicUsize::new(0)),
            http: b.build()?,
        })
    }

    /// The controller calls go to now.
    pub fn current(&self) -> &str {
        let i = self.current.load(Ordering::Acquire);
        &self.bases[i % self.bases.len()]
    }

    /// After a call to `bases[failed]` did not reach it: the next replica becomes current
    /// (unless another call already moved on).
    fn move_on(&self, failed: usize) {
        if self.bases.len() < 2 {
            return;
        }
        let next = (failed + 1) % self.bases.len();
        if self
            .current
            .compare_exchange(failed, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!(
                unreachable = %self.bases[failed],
                next = %self.bases[next],
                "the controller does not answer; moving to the next one"
            );
        }
    }

    async fn post<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &T,
        timeout: Duration,
    ) -> Result<Option<R>, CallError> {
        let at = self.current.load(Ordering::Acquire) % self.bases.len();
        let mut req = self
            .http
            .post(format!("{}{path}", self.bases[at]))
            .json(body)
            .timeout(timeout);
        if let Some(t) = token {
            req = req.header(TOKEN_HEADER, t);
        }
        let resp = req.send().await.map_err(|e| {
            self.move_on(at);
            CallError::Transport(crate::error_chain(&e))
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(CallError::Unauthorized);
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(CallError::TooManyRequests(after));
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(CallError::Status(status.as_u16(), text));
        }
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::Transport(crate::error_chain(&e)))?;
        if bytes.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CallError::Status(status.as_u16(), format!("bad JSON answer: {e}")))
    }
}

fn required<R>(r: Option<R>, what: &str) -> Result<R, CallError> {
    r.ok_or_else(|| CallError::Status(200, format!("empty {what} answer")))
}

impl Controller for HttpController {
    async fn lookup(
        &self,
        req: &LookupRequest,
        token: Option<&str>,
    ) -> Result<LookupResponse, CallError> {
        let r = self
            .post(PATH_LOOKUP, token, req, Duration::from_secs(30))
            .await?;
        required(r, "lookup")
    }

    async fn heartbeat(
        &self,
        token: &str,
        req: &HeartbeatRequest,
        wait: Duration,
    ) -> Result<HeartbeatResponse, CallError> {
        let r = self
            .post(
                PATH_HEARTBEAT,
                Some(token),
                req,
                wait + Duration::from_secs(15),
            )
            .await?;
        required(r, "heartbeat")
    }

    async fn event(&self, token: &str, rep: &EventReport) -> Result<(), CallError> {
        self.post::<_, serde_json::Value>(PATH_EVENTS, Some(token), rep, Duration::from_secs(30))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::routing::post;
    use proto::protocol::{LookupRequest, LookupResponse};
    use uuid::Uuid;

    use super::*;

    const NODE: Uuid = Uuid::from_u128(0x1234);

    /// A controller on 127.0.0.1 whose lookup answers `status` (the node on 200).
    async fn controller(status: u16) -> String {
        let app = axum::Router::new().route(
            PATH_LOOKUP,
            post(move || async move {
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let body = axum::Json(LookupResponse {
                    node_uuid: NODE,
                    token: Some("t".into()),
                    discovered: false,
                    heartbeat_timeout_secs: 1,
                });
                (code, body)
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    }

    /// An address nothing listens on (connection refused).
    fn dead() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    }

    fn request() -> LookupRequest {
        crate::run::exec::lookup_request(proto::Inventory::default(), None)
    }

    #[tokio::test]
    async fn an_unreachable_replica_sends_the_next_call_to_the_next_one() {
        let (dead, live) = (dead(), controller(200).await);
        let ctl =
            HttpController::with_replicas(&[dead.clone(), live.clone()], None).expect("client");
        assert_eq!(ctl.current(), dead);
        let first = ctl.lookup(&request(), None).await;
        assert!(matches!(first, Err(CallError::Transport(_))), "{first:?}");
        assert_eq!(ctl.current(), live);
        let second = ctl
            .lookup(&request(), None)
            .await
            .expect("the next replica answers");
        assert_eq!(second.node_uuid, NODE);
        assert_eq!(ctl.current(), live, "an answer keeps the replica");
    }

    #[tokio::test]
    async fn the_last_replica_wraps_around_to_the_first() {
        let (live, dead) = (controller(200).await, dead());
        let ctl =
            HttpController::with_replicas(&[live.clone(), dead.clone()], None).expect("client");
        ctl.move_on(0);
        assert_eq!(ctl.current(), dead);
        assert!(ctl.lookup(&request(), None).await.is_err());
        assert_eq!(ctl.current(), live);
        assert!(ctl.lookup(&request(), None).await.is_ok());
    }

    #[tokio::test]
    async fn an_error_status_keeps_the_replica() {
        let (busy, live) = (controller(503).await, controller(200).await);
        let ctl = HttpController::with_replicas(&[busy.clone(), live], None).expect("client");
        let r = ctl.lookup(&request(), None).await;
        assert!(matches!(r, Err(CallError::Status(503, _))), "{r:?}");
        assert_eq!(
            ctl.current(),
            busy,
            "a controller that answers is not skipped"
        );
    }

    #[test]
    fn one_url_or_more() {
        assert!(HttpController::with_replicas(&[], None).is_err());
        let one = HttpController::new("http://127.0.0.1:1/", None).expect("client");
        assert_eq!(one.current(), "http://127.0.0.1:1");
        one.move_on(0);
        assert_eq!(one.current(), "http://127.0.0.1:1");
    }
}
