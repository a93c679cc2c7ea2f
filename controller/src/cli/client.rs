//! Operator commands that read the API (`ingot node list`, `ingot node show`), over HTTP or
//! HTTPS (trusting only the CA given with `--cacert`, when one is).

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use super::table;

/// The microversion the CLI asks for.
const API_VERSION: &str = "1.115";

/// A small API client: GET a path and return JSON, turning Ironic error bodies into errors.
#[derive(Debug)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    /// User and password for an API with http_basic authentication.
    credentials: Option<(String, String)>,
}

impl ApiClient {
    /// A client of the API at `base` (`http://` or `https://`) that sends `credentials`
    /// (HTTP basic) with every request, if given. With `cacert`, an https:// API must
    /// present a certificate that CA signed (the system's CAs are not trusted then);
    /// without it, the system's CAs decide.
    pub fn connect(
        base: &str,
        credentials: Option<(String, String)>,
        cacert: Option<&Path>,
    ) -> anyhow::Result<Self> {
        // reqwest is built without a default TLS provider; the workspace's one is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(file) = cacert {
            let pem = std::fs::read(file)
                .with_context(|| format!("reading the CA certificate {}", file.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("reading the CA certificate {}", file.display()))?;
            if certs.is_empty() {
                bail!("no PEM certificate in {}", file.display());
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().context("building HTTP client")?;
        Ok(Self {
            base: base
                .trim_end_matches('/')
                .trim_end_matches("/v1")
                .to_owned(),
            http,
            credentials,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// POSTs a JSON body and returns the answer's JSON.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// DELETEs; the answer's JSON, `Null` when it has no body.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    /// One request: JSON in (when `body`), JSON out (`Null` for an empty 2xx answer); an
    /// Ironic error body becomes an error with its message and status.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .http
            .request(method, &url)
            .header("X-OpenStack-Ironic-API-Version", API_VERSION)
            .header("Accept", "application/json");
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some((user, password)) = &self.credentials {
            req = req.basic_auth(user, Some(password));
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => bail!("{}", send_failure(&url, &e)),
        };
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        if status.is_success() && bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        let body: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            // Not the API's JSON (a proxy, or the HTTPS listener refusing plain HTTP): show
            // what was said.
            Err(_) if !status.is_success() => bail!(
                "{url}: HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes).trim()
            ),
            Err(e) => return Err(e).with_context(|| format!("the answer of {url} is not JSON")),
        };
        if !status.is_success() {
            bail!("{} (HTTP {})", error_message(&body), status.as_u16());
        }
        Ok(body)
    }
}

/// Why a request never got an answer, in the operator's terms: an untrusted or misnamed
/// certificate says which flag fixes it; anything else keeps reqwest's whole chain.
fn send_failure(url: &str, err: &reqwest::Error) -> String {
    match tls_failure(err) {
        Some(rustls::Error::InvalidCertificate(why)) => {
            let hint = match why {
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    "the certificate does not name this address; use an address it names, or \
                     issue one that does (ingot certs init --ip ADDR)"
                }
                _ => {
                    "pass the CA that signed it with --cacert FILE (INGOT_CACERT, OS_CACERT); \
                     ingot certs init wrote it as ca.pem"
                }
            };
            format!("{url}: the API's TLS certificate was refused ({why}): {hint}")
        }
        Some(rustls::Error::InvalidMessage(_)) => {
            format!("{url}: the server did not answer with TLS; is the API plain HTTP (http://)?")
        }
        Some(other) => format!("{url}: TLS failed: {other}"),
        None => format!("requesting {url}: {}", chain(err)),
    }
}

/// The rustls error behind a reqwest error, if any. An io error's `source()` skips the
/// error it wraps (and rustls's sits inside two of them), so io errors are opened with
/// `get_ref`.
fn tls_failure(err: &reqwest::Error) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        cur = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// `a: b: c` of an error and its sources.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// Extracts the message of an Ironic error body (`error_message` holds a JSON string).
pub fn error_message(body: &Value) -> String {
    let Some(raw) = body.get("error_message") else {
        return body.to_string();
    };
    let inner = match raw {
        Value::String(s) => serde_json::from_str::<Value>(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    };
    match &inner {
        Value::Object(o) => o
            .get("faultstring")
            .or_else(|| o.get("description"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| inner.to_string()),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `ingot node list`.
pub async fn node_list(
    client: &ApiClient,
    long: bool,
    provision_state: Option<&str>,
    json: bool,
) -> anyhow::Result<String> {
    let mut path = String::from("/v1/nodes/detail");
    if let Some(state) = provision_state {
        path.push_str("?provision_state=");
        path.push_str(&state.replace(' ', "%20"));
    }
    let body = client.get(&path).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&body)? + "\n");
    }
    let nodes = body
        .get("nodes")
        .and_then(Value::as_array)
        .context("the API answer has no node list")?;
    Ok(render_node_list(nodes, long))
}

/// Renders nodes as the `node list` table.
pub fn render_node_list(nodes: &[Value], long: bool) -> String {
    let mut header = vec![
        "uuid",
        "name",
        "provision state",
        "power",
        "maint",
        "instance",
    ];
    if long {
        header.extend(["driver", "resource class", "target", "last error"]);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let mut row = vec![
                cell(n.get("uuid")),
                cell(n.get("name")),
                cell(n.get("provision_state")),
                cell(n.get("power_state")),
                if n.get("maintenance") == Some(&Value::Bool(true)) {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
                cell(n.get("instance_uuid")),
            ];
            if long {
                row.push(cell(n.get("driver")));
                row.push(cell(n.get("resource_class")));
                row.push(cell(n.get("target_provision_state")));
                row.push(cell(n.get("last_error")));
            }
            row
        })
        .collect();
    table::render(&header, &rows)
}

/// `ingot node show`.
pub async fn node_show(client: &ApiClient, ident: &str, json: bool) -> anyhow::Result<String> {
    let body = client.get(&format!("/v1/nodes/{ident}")).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&body)? + "\n");
    }
    Ok(render_node_show(&body))
}

/// Renders one node as a field/value table, skipping link lists.
pub fn render_node_show(node: &Value) -> String {
    const SKIP: [&str; 5] = ["links", "ports", "portgroups", "states", "volume"];
    let rows: Vec<Vec<String>> = node
        .as_object()
        .map(|o| {
            let mut keys: Vec<&String> = o.keys().filter(|k| !SKIP.contains(&k.as_str())).collect();
            keys.sort();
            keys.into_iter()
                .map(|k| vec![k.clone(), cell(o.get(k))])
                .collect()
        })
        .unwrap_or_default();
    let mut rows = rows;
    if let Some(p) = super::watch::Progress::of_node(node) {
        rows.push(vec!["progress".to_owned(), super::watch::progress_text(&p)]);
    }
    table::render(&["field", "value"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ironic_error_bodies() {
        let body = json!({"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"Node x could not be found.\", \"debuginfo\": null}"});
        assert_eq!(error_message(&body), "Node x could not be found.");
        let body = json!({"error_message": "{\"code\": 406, \"title\": \"Not Acceptable\", \"description\": \"bad version\"}"});
        assert_eq!(error_message(&body), "bad version");
        assert_eq!(error_message(&json!({"error_message": "plain"})), "plain");
    }

    #[test]
    fn list_and_show_tables() {
        let n = json!({"uuid": "u1", "name": "n1", "provision_state": "available",
            "power_state": "power off", "maintenance": false, "instance_uuid": null,
            "driver": "fake-hardware", "links": [], "last_error": null});
        let t = render_node_list(std::slice::from_ref(&n), false);
        assert!(
            t.starts_with("UUID  NAME  PROVISION STATE  POWER      MAINT  INSTANCE\n"),
            "{t}"
        );
        assert!(
            t.contains("u1    n1    available        power off  no"),
            "{t}"
        );
        let s = render_node_show(&n);
        assert!(s.contains("driver           fake-hardware"), "{s}");
        assert!(!s.contains("links"));
        assert!(!s.contains("progress"));
        let mut n = n;
        n["driver_internal_info"] = json!({"agent_progress": {"phase": "wipe",
            "bytes_fetched": 0, "bytes_written": 2048, "bytes_total": null, "rate_bps": 1_000_000,
            "elapsed_ms": 2}});
        let s = render_node_show(&n);
        assert!(s.contains("\nprogress "), "{s}");
        assert!(s.contains("wipe 2.0 KiB written 1.0 MB/s\n"), "{s}");
    }
}
