//! Authentication of the operator API: Ironic's standalone strategies `noauth` and
//! `http_basic` (an Apache htpasswd file with bcrypt entries), so `baremetal --os-auth-type
//! http_basic` and openstacksdk work unchanged.
//!
//! `/` and `/v1` stay public, as in Ironic (clients discover versions before they log in).
//! Everything else needs valid credentials; a failure is 401 with `WWW-Authenticate: Basic`
//! and Ironic's error shape. bcrypt is deliberately slow (tens to hundreds of ms), so the
//! check runs on a blocking thread, and a successful check is remembered for a short while
//! under a keyed hash of the credentials (never the password itself), so a CLI session that
//! sends the same header on every request pays once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

/// Largest htpasswd file read (a line per user).
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// How long a verified credential is remembered.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most credentials remembered at once.
const CACHE_MAX: usize = 1024;
/// Longest user name or password looked at.
const MAX_CREDENTIAL_BYTES: usize = 1024;

/// How the API authenticates.
#[derive(Debug, Clone, Default)]
pub enum AuthStrategy {
    /// Anyone who reaches the listener is the admin (Ironic's `noauth`).
    #[default]
    NoAuth,
    /// HTTP basic against an htpasswd file (Ironic's `http_basic`).
    HttpBasic(Arc<HtpasswdUsers>),
}

/// Who made a request, for the access log and the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user name (`None` under `noauth`).
    pub user: Option<String>,
}

/// Why a request was not authenticated (the message is safe to show: no credential in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unauthorized(pub &'static str);

/// The users of an htpasswd file and a cache of verified credentials.
pub struct HtpasswdUsers {
    path: PathBuf,
    users: HashMap<String, String>,
    /// A hash checked for unknown users, of the same cost as the file's.
    dummy: String,
    cache_key: [u8; 32],
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl std::fmt::Debug for HtpasswdUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HtpasswdUsers")
            .field("path", &self.path)
            .field("users", &self.users.len())
            .finish()
    }
}

/// PURE: the users of an htpasswd file (`name:$2y$...` per line; `#` comments and blank
/// lines allowed). Only bcrypt entries (`$2a$`, `$2b$`, `$2y$`) are accepted, as Ironic's
/// http_basic; an error names the line, never its content.
pub fn parse_htpasswd(text: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            bail!("line {n}: not of the form user:hash");
        };
        if user.is_empty() || user.len() > 255 {
            bail!("line {n}: empty or overlong user name");
        }
        if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            bail!("line {n}: only bcrypt entries are supported (htpasswd -B)");
        }
        if users.insert(user.to_owned(), hash.to_owned()).is_some() {
            bail!("line {n}: user {user:?} appears twice");
        }
    }
    Ok(users)
}

/// PURE: the user and password of an `Authorization: Basic ...` header.
pub fn basic_credentials(headers: &HeaderMap) -> Result<(String, String), Unauthorized> {
    let missing = Unauthorized("Authentication required");
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(missing.clone())?
        .to_str()
        .map_err(|_| missing.clone())?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or(missing.clone())?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 4 * MAX_CREDENTIAL_BYTES {
        return Err(missing);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| missing.clone())?;
    let text = String::from_utf8(decoded).map_err(|_| missing.clone())?;
    let (user, password) = text.split_once(':').ok_or(missing)?;
    Ok((user.to_owned(), password.to_owned()))
}

impl HtpasswdUsers {
    /// Reads the htpasswd file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("reading the htpasswd file {}", path.display()))?;
        if meta.len() > MAX_FILE_BYTES {
            bail!(
                "htpasswd file {} is larger than {MAX_FILE_BYTES} bytes",
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the htpasswd file {}", path.display()))?;
        let users =
            parse_htpasswd(&text).with_context(|| format!("htpasswd file {}", path.display()))?;
        if users.is_empty() {
            bail!("htpasswd file {} has no user", path.display());
        }
        Ok(Self::from_users(path.to_path_buf(), users))
    }

    fn from_users(path: PathBuf, users: HashMap<String, String>) -> Self {
        let cost = users
            .values()
            .next()
            .and_then(|h| h.get(4..6))
            .and_then(|c| c.parse().ok())
            .unwrap_or(10);
        let secret: [u8; 16] = rand::random();
        let dummy = bcrypt::hash(secret, cost).unwrap_or_default();
        HtpasswdUsers {
            path,
            users,
            dummy,
            cache_key: rand::random(),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// How many users the file holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file holds no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn cache_id(&self, user: &str, password: &str) -> [u8; 32] {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.cache_key) else {
            return [0; 32];
        };
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Checks `user`/`password` (blocking: bcrypt). Unknown users cost a bcrypt check too,
    /// so timing does not tell which names exist.
    pub fn verify_blocking(&self, user: &str, password: &str) -> bool {
        if user.len() > MAX_CREDENTIAL_BYTES || password.len() > MAX_CREDENTIAL_BYTES {
            return false;
        }
        let id = self.cache_id(user, password);
        if let Ok(mut seen) = self.verified.lock() {
            match seen.get(&id) {
                Some(at) if at.elapsed() < CACHE_TTL => return true,
                Some(_) => {
                    seen.remove(&id);
                }
                None => {}
            }
        }
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy.as_str(), false),
        };
        let ok = bcrypt::verify(password, hash).unwrap_or(false) && known;
        if ok && let Ok(mut seen) = self.verified.lock() {
            if seen.len() >= CACHE_MAX {
                seen.retain(|_, at| at.elapsed() < CACHE_TTL);
                if seen.len() >= CACHE_MAX {
                    seen.clear();
                }
            }
            seen.insert(id, Instant::now());
        }
        ok
    }
}

/// PURE: whether a path is public under every strategy (`/` and `/v1`, as Ironic, and the
/// web console's static files, which hold no data: [`crate::ui`]).
pub fn is_public(method: &axum::http::Method, path: &str) -> bool {
    matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD)
        && (matches!(path, "/" | "/v1") || crate::ui::is_console_path(path))
}

/// Authenticates a request's headers under `strategy`.
pub async fn authenticate(
    strategy: &AuthStrategy,
    headers: &HeaderMap,
) -> Result<Caller, Unauthorized> {
    match strategy {
        AuthStrategy::NoAuth => Ok(Caller { user: None }),
        AuthStrategy::HttpBasic(users) => {
            let (user, password) = basic_credentials(headers)?;
            let users = Arc::clone(users);
            let name = user.clone();
            let ok = tokio::task::spawn_blocking(move || users.verify_blocking(&name, &password))
                .await
                .unwrap_or(false);
            if ok {
                Ok(Caller { user: Some(user) })
            } else {
                Err(Unauthorized("Incorrect username or password"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn users(pairs: &[(&str, &str)]) -> HtpasswdUsers {
        let text: String = pairs
            .iter()
            .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).expect("hash")))
            .collect();
        HtpasswdUsers::from_users(PathBuf::from("t"), parse_htpasswd(&text).expect("parses"))
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let raw = format!("{user}:{password}");
        let enc = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {enc}")).expect("header"),
        );
        h
    }

    #[test]
    fn htpasswd_takes_bcrypt_only_and_names_lines_not_content() {
        let good =
            "# operators\n\nadmin:$2y$05$abcdefghijklmnopqrstuu5Jm0Ck5VqKf1v6bO7cYSfZ4Wbd3ZQ9K\n";
        assert_eq!(parse_htpasswd(good).expect("parses").len(), 1);
        let cases = [
            (
                "admin:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
                "line 1: only bcrypt",
            ),
            ("x\nadmin:$apr1$salt$hash\n", "line 1: not of the form"),
            (
                "a:$2y$05$x\na:$2y$05$y\n",
                "line 2: user \"a\" appears twice",
            ),
            (":$2y$05$x\n", "line 1: empty or overlong"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse_htpasswd(text).expect_err(text));
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains("W6ph5") && !err.contains("apr1"), "{err}");
        }
    }

    #[test]
    fn basic_header_parsing() {
        assert_eq!(
            basic_credentials(&basic("op", "pa:ss")).expect("ok"),
            ("op".to_owned(), "pa:ss".to_owned())
        );
        let mut h = HeaderMap::new();
        assert!(basic_credentials(&h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert!(basic_credentials(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(basic_credentials(&h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic bm9jb2xvbg=="),
        );
        assert!(basic_credentials(&h).is_err(), "no colon");
    }

    #[tokio::test]
    async fn http_basic_checks_the_file() {
        let strategy = AuthStrategy::HttpBasic(Arc::new(users(&[("op", "right")])));
        let who = authenticate(&strategy, &basic("op", "right"))
            .await
            .expect("valid");
        assert_eq!(who.user.as_deref(), Some("op"));
        // Cached the second time, and still right.
        assert!(authenticate(&strategy, &basic("op", "right")).await.is_ok());
        for (u, p) in [("op", "wrong"), ("nobody", "right"), ("op", "")] {
            assert_eq!(
                authenticate(&strategy, &basic(u, p)).await,
                Err(Unauthorized("Incorrect username or password")),
                "{u}/{p}"
            );
        }
        assert_eq!(
            authenticate(&strategy, &HeaderMap::new()).await,
            Err(Unauthorized("Authentication required"))
        );
        assert!(
            authenticate(&AuthStrategy::NoAuth, &HeaderMap::new())
                .await
                .is_ok()
        );
    }

    #[test]
    fn only_the_version_documents_are_public() {
        use axum::http::Method;
        assert!(is_public(&Method::GET, "/") && is_public(&Method::GET, "/v1"));
        assert!(!is_public(&Method::GET, "/v1/nodes"));
        assert!(is_public(&Method::GET, "/ui") && is_public(&Method::GET, "/ui/app.js"));
        assert!(!is_public(&Method::GET, "/ui/secret") && !is_public(&Method::POST, "/ui"));
        assert!(!is_public(&Method::GET, "/v1/ingot/events"));
        assert!(!is_public(&Method::POST, "/v1"));
        assert!(!is_public(&Method::GET, "/v1/drivers"));
    }
}
