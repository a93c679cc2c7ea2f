//! A small Redfish HTTP client: TLS per node (system roots, a CA file, or no check), basic
//! or session authentication, JSON GET/PATCH/POST, and errors that name the BMC but never
//! the password.

use std::sync::Once;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::info::{AuthType, RedfishInfo, Verify};
use crate::drivers::DriverError;

/// Installs ring as rustls's process-wide provider (once; an earlier install stands).
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The text of an error and its causes ("error sending request: ...: invalid peer
/// certificate: UnknownIssuer").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

/// One logged-in conversation with a BMC.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    info: RedfishInfo,
    token: Option<String>,
    session_uri: Option<String>,
}

impl Client {
    /// Builds the HTTP client and logs in (a session for `session`/`auto`).
    pub async fn connect(info: &RedfishInfo) -> Result<Self, DriverError> {
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(info.timeout)
            .connect_timeout(info.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        builder = match &info.verify {
            Verify::System => builder,
            Verify::Off => builder.tls_danger_accept_invalid_certs(true),
            Verify::CaFile(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    DriverError::InvalidParameter(format!(
                        "cannot read redfish_verify_ca file {}: {e}",
                        path.display()
                    ))
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    DriverError::InvalidParameter(format!(
                        "redfish_verify_ca file {} holds no valid PEM certificate: {e}",
                        path.display()
                    ))
                })?;
                builder.tls_certs_only(certs)
            }
        };
        let http = builder.build().map_err(|e| {
            DriverError::Failed(format!(
                "cannot set up the Redfish HTTP client: {}",
                error_chain(&e)
            ))
        })?;
        let mut client = Self {
            http,
            info: info.clone(),
            token: None,
            session_uri: None,
        };
        match info.auth {
            AuthType::Basic => {}
            AuthType::Session => client.login().await?,
            AuthType::Auto => {
                // Any other failure (no session service, or one behind authentication as
                // in sushy-tools) falls back to basic; bad credentials then show as a 401.
                if let Err(e) = client.login().await {
                    if matches!(e, DriverError::Timeout { .. })
                        || e.to_string().starts_with("cannot reach")
                    {
                        return Err(e);
                    }
                    tracing::debug!(bmc = %info.base, error = %e, "no Redfish session, using basic authentication");
                }
            }
        }
        Ok(client)
    }

    /// The BMC's base URL.
    pub fn base(&self) -> &str {
        &self.info.base
    }

    async fn login(&mut self) -> Result<(), DriverError> {
        let body = serde_json::json!({
            "UserName": self.info.username.clone().unwrap_or_default(),
            "Password": self.info.password.clone().unwrap_or_default(),
        });
        let url = format!("{}/redfish/v1/SessionService/Sessions", self.info.base);
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(self.http_error(
                "POST",
                "/redfish/v1/SessionService/Sessions",
                status,
                &body,
            ));
        }
        let token = resp
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                DriverError::Failed(format!(
                    "Redfish BMC {} created a session without an X-Auth-Token",
                    self.info.base
                ))
            })?;
        self.session_uri = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.token = Some(token);
        Ok(())
    }

    /// Ends the session, if any (best effort).
    pub async fn logout(self) {
        if let (Some(_), Some(uri)) = (&self.token, &self.session_uri)
            && let Err(e) = self.request(Method::DELETE, uri, None).await
        {
            tracing::debug!(bmc = %self.info.base, error = %e, "deleting the Redfish session failed");
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.info.base)
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> DriverError {
        if e.is_timeout() {
            return DriverError::Timeout {
                operation: format!("Redfish request to {}", self.info.base),
                timeout: self.info.timeout,
            };
        }
        DriverError::Failed(format!(
            "cannot reach Redfish BMC {}: {}",
            self.info.base,
            error_chain(&e)
        ))
    }

    fn http_error(&self, method: &str, path: &str, status: StatusCode, body: &str) -> DriverError {
        if status == StatusCode::UNAUTHORIZED {
            return DriverError::Failed(format!(
                "Redfish authentication with BMC {} failed for user '{}': wrong username or \
                 password (HTTP 401)",
                self.info.base,
                self.info.username.as_deref().unwrap_or_default()
            ));
        }
        let message = redfish_message(body);
        DriverError::Failed(format!(
            "Redfish BMC {} answered {method} {path} with HTTP {}{}",
            self.info.base,
            status.as_u16(),
            message.map(|m| format!(": {m}")).unwrap_or_default()
        ))
    }

    /// Sends a request; returns the JSON body (`Null` when empty).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, DriverError> {
        let mut req = self
            .http
            .request(method.clone(), self.url(path))
            .header("Accept", "application/json")
            .header("OData-Version", "4.0");
        req = match (&self.token, &self.info.username) {
            (Some(token), _) => req.header("X-Auth-Token", token),
            (None, Some(user)) => req.basic_auth(user, self.info.password.as_deref()),
            (None, None) => req,
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport_error(e))?;
        if !status.is_success() {
            return Err(self.http_error(method.as_str(), path, status, &text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            DriverError::Failed(format!(
                "Redfish BMC {} sent invalid JSON for {method} {path}: {e}",
                self.info.base
            ))
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, DriverError> {
        self.request(Method::GET, path, None).await
    }
}

/// PURE: the message of a Redfish error body, if it has one.
pub fn redfish_message(body: &str) -> Option<String> {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        let text = body.trim();
        return (!text.is_empty()).then(|| text.chars().take(200).collect());
    };
    let err = v.get("error")?;
    let extended = err
        .get("@Message.ExtendedInfo")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|m| m.get("Message"))
        .and_then(Value::as_str);
    extended
        .or_else(|| err.get("message").and_then(Value::as_str))
        .map(|m| m.chars().take(300).collect())
}
