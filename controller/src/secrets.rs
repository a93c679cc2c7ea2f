//! BMC secrets at rest: every value under a secret key of a node's `driver_info` (at any
//! depth, [`crate::model::is_secret_key`]) is stored AES-256-GCM encrypted as
//! `enc:v1:<key id>:<hex of nonce + ciphertext>`, under a key file that `ingot serve`
//! creates 0600 in its state dir on first start.
//!
//! The key file holds one hex key per line: the first encrypts, the others only decrypt
//! (what `ingot secrets rotate` leaves while it re-encrypts). A value without the prefix
//! is plaintext from before encryption and is read as it is; the next write encrypts it.
//! Each value gets a fresh random 96-bit nonce. The key id (the first 4 bytes of the key's
//! SHA-256) tells which key opens a value, so rotation never guesses.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead as _, KeyInit as _};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context as _, bail};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::model::{Node, is_secret_key};

/// Prefix of an encrypted value.
const PREFIX: &str = "enc:v1:";
/// File name of the key file in the state dir.
pub const KEY_FILE: &str = "secrets.key";

/// One key and its id.
struct Key {
    id: String,
    cipher: Aes256Gcm,
}

impl Key {
    fn new(bytes: &[u8; 32]) -> anyhow::Result<Self> {
        let cipher =
            Aes256Gcm::new_from_slice(bytes).map_err(|_| anyhow::anyhow!("bad key length"))?;
        Ok(Key {
            id: hex::encode(&Sha256::digest(bytes)[..4]),
            cipher,
        })
    }
}

/// The keys of a key file: seals with the first, opens with any.
pub struct SecretBox {
    keys: Vec<Key>,
    path: PathBuf,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("path", &self.path)
            .field(
                "key_ids",
                &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why a stored value cannot be opened (no key or value in the message).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("an encrypted value needs key {0}, which the key file does not hold")]
    UnknownKey(String),
    #[error("an encrypted value is malformed or was changed")]
    Corrupt,
}

/// PURE: the keys in a key file's text (hex, one per line, `#` comments).
fn parse_keys(text: &str) -> anyhow::Result<Vec<[u8; 32]>> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bytes = hex::decode(line).map_err(|_| anyhow::anyhow!("line {}: not hex", i + 1))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("line {}: not a 32-byte key", i + 1))?;
        keys.push(key);
    }
    if keys.is_empty() {
        bail!("no key");
    }
    Ok(keys)
}

fn key_file_text(keys: &[[u8; 32]]) -> String {
    let mut text = String::from(
        "# Ingot's key for BMC secrets at rest (AES-256-GCM). Keep it 0600 and back it up:\n\
         # without it the stored BMC passwords cannot be read. The first key encrypts.\n",
    );
    for k in keys {
        text.push_str(&hex::encode(k));
        text.push('\n');
    }
    text
}

/// Writes `keys` to `path` (0600) through a temporary file renamed into place.
fn write_key_file(path: &Path, keys: &[[u8; 32]]) -> anyhow::Result<()> {
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(key_file_text(keys).as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

impl SecretBox {
    /// Opens the key file at `path`, creating it (0600, one new key) when missing.
    pub fn open_or_create(path: &Path) -> anyhow::Result<SecretBox> {
        if !path.exists() {
            write_key_file(path, &[rand::random()])?;
            tracing::info!(file = %path.display(), "created the key for BMC secrets at rest");
        }
        Self::open(path)
    }

    /// Opens an existing key file; refuses one that others can read.
    pub fn open(path: &Path) -> anyhow::Result<SecretBox> {
        use std::os::unix::fs::PermissionsExt as _;
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            bail!(
                "key file {} is readable by others (mode {:o}): chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let keys = parse_keys(&text).with_context(|| format!("key file {}", path.display()))?;
        Ok(SecretBox {
            keys: keys.iter().map(Key::new).collect::<anyhow::Result<_>>()?,
            path: path.to_path_buf(),
        })
    }

    /// Puts a new first key in the file (the old ones stay, to open older values) and
    /// returns the box with it.
    pub fn add_key(path: &Path) -> anyhow::Result<SecretBox> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut keys = parse_keys(&text).with_context(|| format!("key file {}", path.display()))?;
        keys.insert(0, rand::random());
        write_key_file(path, &keys)?;
        Self::open(path)
    }

    /// Keeps only the first key in the file (after every value was re-encrypted with it).
    pub fn drop_old_keys(path: &Path) -> anyhow::Result<()> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let keys = parse_keys(&text).with_context(|| format!("key file {}", path.display()))?;
        write_key_file(path, &keys[..1])
    }

    /// Ids of the keys, the encrypting one first.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    /// Encrypts `plain` with the first key.
    pub fn seal(&self, plain: &str) -> String {
        let Some(key) = self.keys.first() else {
            return plain.to_owned();
        };
        let nonce_bytes: [u8; 12] = rand::random();
        let nonce = Nonce::from(nonce_bytes);
        match key.cipher.encrypt(&nonce, plain.as_bytes()) {
            Ok(ct) => {
                let mut blob = nonce_bytes.to_vec();
                blob.extend_from_slice(&ct);
                format!("{PREFIX}{}:{}", key.id, hex::encode(blob))
            }
            // AES-GCM encryption of a short value does not fail; never store it in clear.
            Err(_) => String::new(),
        }
    }

    /// Decrypts a stored value; a value without the prefix is legacy plaintext.
    pub fn open_value(&self, stored: &str) -> Result<String, SecretError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, hexed) = rest.split_once(':').ok_or(SecretError::Corrupt)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SecretError::UnknownKey(id.to_owned()))?;
        let blob = hex::decode(hexed).map_err(|_| SecretError::Corrupt)?;
        if blob.len() < 12 + 16 {
            return Err(SecretError::Corrupt);
        }
        let nonce_bytes: [u8; 12] = blob[..12].try_into().map_err(|_| SecretError::Corrupt)?;
        let plain = key
            .cipher
            .decrypt(&Nonce::from(nonce_bytes), &blob[12..])
            .map_err(|_| SecretError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Corrupt)
    }

    /// Encrypts every string under a secret key of `node.driver_info`, at any depth.
    pub fn seal_node(&self, node: &mut Node) {
        for (k, v) in node.driver_info.iter_mut() {
            walk(k, v, &mut |s| {
                if !s.starts_with(PREFIX) {
                    *s = self.seal(s);
                }
                Ok(())
            })
            .ok();
        }
    }

    /// Decrypts what [`SecretBox::seal_node`] encrypted.
    pub fn open_node(&self, node: &mut Node) -> Result<(), SecretError> {
        for (k, v) in node.driver_info.iter_mut() {
            walk(k, v, &mut |s| {
                *s = self.open_value(s)?;
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// Calls `f` on every string that is, or is inside, the value of a secret key.
fn walk(
    key: &str,
    v: &mut Value,
    f: &mut dyn FnMut(&mut String) -> Result<(), SecretError>,
) -> Result<(), SecretError> {
    fn all(
        v: &mut Value,
        f: &mut dyn FnMut(&mut String) -> Result<(), SecretError>,
    ) -> Result<(), SecretError> {
        match v {
            Value::String(s) => f(s),
            Value::Array(items) => items.iter_mut().try_for_each(|i| all(i, f)),
            Value::Object(map) => map.values_mut().try_for_each(|i| all(i, f)),
            _ => Ok(()),
        }
    }
    if is_secret_key(key) {
        return all(v, f);
    }
    match v {
        Value::Object(map) => map.iter_mut().try_for_each(|(k, i)| walk(k, i, f)),
        Value::Array(items) => items.iter_mut().try_for_each(|i| walk(key, i, f)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn node() -> Node {
        let mut n = Node::new(Uuid::new_v4(), "ipmi", Utc::now());
        n.driver_info = json!({
            "ipmi_address": "10.0.0.5",
            "ipmi_password": "S3cret",
            "ipmi_hex_kg_key": "0011",
            "extra_bmcs": [{"redfish_password": "R3d", "redfish_address": "https://b"}],
        })
        .as_object()
        .cloned()
        .expect("object");
        n
    }

    #[test]
    fn key_file_is_created_0600_and_seals_every_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE);
        let b = SecretBox::open_or_create(&path).expect("created");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut n = node();
        b.seal_node(&mut n);
        let stored = serde_json::to_string(&n.driver_info).expect("json");
        for secret in ["S3cret", "0011", "R3d"] {
            assert!(!stored.contains(secret), "{secret} in {stored}");
        }
        assert!(
            stored.contains("10.0.0.5") && stored.contains("https://b"),
            "{stored}"
        );
        assert!(
            n.driver_info["ipmi_password"]
                .as_str()
                .is_some_and(|s| s.starts_with(PREFIX))
        );
        // Sealing twice changes nothing; opening gives the original back.
        let once = n.clone();
        b.seal_node(&mut n);
        assert_eq!(n, once);
        b.open_node(&mut n).expect("opens");
        assert_eq!(n.driver_info, node().driver_info);
        // The same box reopened from the file opens it too.
        let again = SecretBox::open(&path).expect("reopen");
        let mut m = once.clone();
        again.open_node(&mut m).expect("opens");
        assert_eq!(m.driver_info, node().driver_info);
    }

    #[test]
    fn legacy_plaintext_reads_and_tampering_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = SecretBox::open_or_create(&dir.path().join(KEY_FILE)).expect("box");
        assert_eq!(b.open_value("plain").expect("legacy"), "plain");
        let sealed = b.seal("pw");
        assert_ne!(b.seal("pw"), sealed, "a fresh nonce each time");
        let mut bad = sealed.clone();
        let last = bad.pop().expect("char");
        bad.push(if last == '0' { '1' } else { '0' });
        assert!(matches!(b.open_value(&bad), Err(SecretError::Corrupt)));
        let other = tempfile::tempdir().expect("tempdir");
        let b2 = SecretBox::open_or_create(&other.path().join(KEY_FILE)).expect("box");
        assert!(matches!(
            b2.open_value(&sealed),
            Err(SecretError::UnknownKey(_))
        ));
        assert!(!format!("{}", b2.open_value(&sealed).expect_err("unknown")).contains("pw"));
    }

    #[test]
    fn rotation_keeps_old_values_readable_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE);
        let old = SecretBox::open_or_create(&path).expect("box");
        let sealed_old = old.seal("pw");
        let new = SecretBox::add_key(&path).expect("rotated");
        assert_eq!(new.key_ids().len(), 2);
        assert_eq!(new.key_ids()[1], old.key_ids()[0]);
        assert_eq!(
            new.open_value(&sealed_old).expect("old key still opens"),
            "pw"
        );
        let sealed_new = new.seal("pw");
        assert!(sealed_new.contains(&new.key_ids()[0]));
        SecretBox::drop_old_keys(&path).expect("dropped");
        let only = SecretBox::open(&path).expect("open");
        assert_eq!(only.key_ids(), vec![new.key_ids()[0].clone()]);
        assert_eq!(only.open_value(&sealed_new).expect("opens"), "pw");
        assert!(only.open_value(&sealed_old).is_err());
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE);
        SecretBox::open_or_create(&path).expect("box");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = format!("{:#}", SecretBox::open(&path).expect_err("open to others"));
        assert!(err.contains("readable by others"), "{err}");
    }
}
