//! Turning a node's `image_source` into what the agent downloads.
//!
//! `image_source` names a stored image as `ingot://NAME` (or the bare `NAME`, as Ironic
//! takes a bare Glance image id); anything with another `scheme://` is an external URL and
//! is left alone. A stored image resolves to its URL on the provisioning listener and the
//! sha256 recorded at import, so the operator gives no checksum.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::signing::UrlSigner;
use super::{ImageError, ImageStore, validate_name};

/// Scheme of a stored-image reference.
pub const SCHEME: &str = "ingot://";

/// PURE: the stored image an `image_source` names, if it names one.
///
/// `ingot://NAME` always does (an invalid name is an error); a bare string is a name when it
/// has no `://` and is a valid name; URLs are `Ok(None)`.
pub fn stored_name(image_source: &str) -> Result<Option<&str>, ImageError> {
    if let Some(name) = image_source.strip_prefix(SCHEME) {
        let name = name.trim_end_matches('/');
        validate_name(name)?;
        return Ok(Some(name));
    }
    if image_source.contains("://") || validate_name(image_source).is_err() {
        return Ok(None);
    }
    Ok(Some(image_source))
}

/// A stored image as the agent fetches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    pub url: String,
    /// `sha256:HEX` of the bytes served.
    pub checksum: String,
}

/// Resolves stored-image names (the agent deploy interface asks it).
pub trait ImageResolver: Send + Sync + std::fmt::Debug {
    /// The URL (signed for `node` alone) and checksum of the stored image `name`.
    fn resolve(&self, name: &str, node: Uuid) -> Result<ResolvedImage, ImageError>;
}

/// The controller's own [`ImageStore`], served by [`super::http`] under `base_url`.
#[derive(Debug, Clone)]
pub struct LocalImages {
    pub store: Arc<ImageStore>,
    /// Base URL of the provisioning listener as machines reach it, e.g.
    /// `http://172.31.250.1:8080`.
    pub base_url: String,
    /// Signs each URL for the node it is resolved for.
    pub signer: Arc<UrlSigner>,
    /// How long a signed URL stays valid (`ingot serve`: the callback timeout plus an hour).
    pub url_ttl: Duration,
}

impl ImageResolver for LocalImages {
    fn resolve(&self, name: &str, node: Uuid) -> Result<ResolvedImage, ImageError> {
        let record = self.store.get(name)?;
        let ttl = i64::try_from(self.url_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let expires = chrono::Utc::now().timestamp().saturating_add(ttl);
        Ok(ResolvedImage {
            url: format!(
                "{}{}?{}",
                self.base_url.trim_end_matches('/'),
                super::http::data_path(&record.name),
                self.signer.query(node, &record.name, expires)
            ),
            checksum: format!("sha256:{}", record.sha256),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            stored_name("ingot://debian-12").ok(),
            Some(Some("debian-12"))
        );
        assert_eq!(
            stored_name("ingot://debian-12/").ok(),
            Some(Some("debian-12"))
        );
        assert_eq!(stored_name("debian-12.v2").ok(), Some(Some("debian-12.v2")));
        assert_eq!(stored_name("http://10.0.0.1/img.raw").ok(), Some(None));
        assert_eq!(stored_name("https://x/y").ok(), Some(None));
        assert_eq!(stored_name("file:///tmp/x").ok(), Some(None));
        assert_eq!(stored_name("not a name").ok(), Some(None));
        assert!(stored_name("ingot://../etc").is_err());
        assert!(stored_name("ingot://").is_err());
    }
}
