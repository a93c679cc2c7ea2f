//! Signed, expiring image URLs (as Swift temporary URLs): the provisioning listener serves a
//! stored image only to the machine being deployed.
//!
//! The deploy command carries `/images/NAME.raw.zst?node=UUID&expires=UNIX&sig=HEX`, where
//! `sig` is HMAC-SHA256 over `"{node}\n{name}\n{expires}"` under a key that `ingot serve`
//! creates (0600) in its state dir on first start and never logs. A request without a valid,
//! unexpired signature for that image is refused (403). The signature is checked when a
//! request starts, so a download that began before the expiry runs to its end; only resumes
//! (Range requests) after the expiry are refused.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// File name of the signing key under the state dir.
pub const KEY_FILE: &str = "image-url.key";

const KEY_LEN: usize = 32;

/// Why a signed request is refused (the answer says which, never the expected signature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("image URL is not signed (node, expires and sig are required)")]
    Unsigned,
    #[error("image URL signature is malformed")]
    Malformed,
    #[error("image URL has expired")]
    Expired,
    #[error("image URL signature is not valid for this image")]
    BadSignature,
}

/// The HMAC key image URLs are signed with. Its `Debug` does not show the key.
#[derive(Clone)]
pub struct UrlSigner {
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(******)")
    }
}

/// Query parameters of a signed URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub node: Uuid,
    pub expires: i64,
    pub sig: String,
}

impl UrlSigner {
    /// A signer with the given key (tests).
    pub fn from_key(key: [u8; KEY_LEN]) -> Self {
        Self { key }
    }

    /// A signer with a fresh random key, kept in memory only.
    pub fn random() -> Self {
        Self {
            key: rand::random(),
        }
    }

    /// Reads `<state_dir>/image-url.key`, creating it (mode 0600, 32 random bytes) first if
    /// it does not exist.
    pub fn load_or_create(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => return Self::from_file_bytes(&bytes, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("reading image URL key {}", path.display()));
            }
        }
        let key: [u8; KEY_LEN] = rand::random();
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match created {
            Ok(mut f) => {
                f.write_all(&key)
                    .and_then(|()| f.sync_all())
                    .with_context(|| format!("writing image URL key {}", path.display()))?;
                tracing::info!(path = %path.display(), "created image URL signing key");
                Ok(Self { key })
            }
            // Another process created it between our read and our create: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("reading image URL key {}", path.display()))?;
                Self::from_file_bytes(&bytes, &path)
            }
            Err(e) => Err(e).with_context(|| format!("creating image URL key {}", path.display())),
        }
    }

    fn from_file_bytes(bytes: &[u8], path: &Path) -> anyhow::Result<Self> {
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            anyhow::anyhow!(
                "image URL key {} has {} bytes, expected {KEY_LEN}",
                path.display(),
                bytes.len()
            )
        })?;
        Ok(Self { key })
    }

    fn mac(&self, node: Uuid, name: &str, expires: i64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(format!("{node}\n{name}\n{expires}").as_bytes());
        mac
    }

    /// The query string (`node=..&expires=..&sig=..`) that lets `node` fetch image `name`
    /// until `expires` (Unix seconds).
    pub fn query(&self, node: Uuid, name: &str, expires: i64) -> String {
        let tag = self.mac(node, name, expires).finalize().into_bytes();
        let sig: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("node={node}&expires={expires}&sig={sig}")
    }

    /// Checks a request's query for image `name` at `now` (Unix seconds).
    pub fn verify(&self, query: Option<&str>, name: &str, now: i64) -> Result<Uuid, Refusal> {
        let s = parse_query(query.unwrap_or(""))?;
        let tag = decode_hex(&s.sig).ok_or(Refusal::Malformed)?;
        // The MAC is checked before the expiry, so a forged URL never learns whether its
        // expiry would have passed; `verify_slice` compares in constant time.
        self.mac(s.node, name, s.expires)
            .verify_slice(&tag)
            .map_err(|_| Refusal::BadSignature)?;
        if now > s.expires {
            return Err(Refusal::Expired);
        }
        Ok(s.node)
    }
}

/// PURE: the `node`, `expires` and `sig` parameters of a query string.
pub fn parse_query(query: &str) -> Result<Signature, Refusal> {
    let (mut node, mut expires, mut sig) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k {
            "node" => &mut node,
            "expires" => &mut expires,
            "sig" => &mut sig,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(Refusal::Malformed);
        }
    }
    let (Some(node), Some(expires), Some(sig)) = (node, expires, sig) else {
        return Err(Refusal::Unsigned);
    };
    Ok(Signature {
        node: Uuid::parse_str(node).map_err(|_| Refusal::Malformed)?,
        expires: expires.parse().map_err(|_| Refusal::Malformed)?,
        sig: sig.to_owned(),
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Path of the key file under `state_dir`.
pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(KEY_FILE)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn signs_and_refuses_every_other_url() {
        let s = UrlSigner::from_key([7; 32]);
        let node = Uuid::new_v4();
        let q = s.query(node, "os", 1000);
        assert_eq!(s.verify(Some(&q), "os", 999), Ok(node));
        assert_eq!(s.verify(Some(&q), "os", 1000), Ok(node));
        assert_eq!(s.verify(Some(&q), "os", 1001), Err(Refusal::Expired));
        assert_eq!(s.verify(Some(&q), "other", 999), Err(Refusal::BadSignature));
        let other_node = q.replace(&node.to_string(), &Uuid::new_v4().to_string());
        assert_eq!(
            s.verify(Some(&other_node), "os", 999),
            Err(Refusal::BadSignature)
        );
        let later = q.replace("expires=1000", "expires=99999");
        assert_eq!(
            s.verify(Some(&later), "os", 999),
            Err(Refusal::BadSignature)
        );
        let other_key = UrlSigner::from_key([8; 32]);
        assert_eq!(
            other_key.verify(Some(&q), "os", 999),
            Err(Refusal::BadSignature)
        );
        assert_eq!(s.verify(None, "os", 999), Err(Refusal::Unsigned));
        assert_eq!(
            s.verify(Some("node=x&expires=1&sig=00"), "os", 0),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            s.verify(Some(&format!("{q}&sig=00")), "os", 0),
            Err(Refusal::Malformed)
        );
        assert!(!format!("{s:?}").contains('7'), "key not in Debug");
    }

    #[test]
    fn key_file_is_created_0600_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = UrlSigner::load_or_create(dir.path()).expect("create");
        let meta = std::fs::metadata(key_path(dir.path())).expect("key file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let b = UrlSigner::load_or_create(dir.path()).expect("reload");
        assert_eq!(a.key, b.key);
        std::fs::write(key_path(dir.path()), b"short").expect("truncate");
        let err = UrlSigner::load_or_create(dir.path()).expect_err("bad key");
        assert!(err.to_string().contains("expected 32"), "{err}");
    }
}
