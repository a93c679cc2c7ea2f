//! Expected image checksums (`algo:hex`) and the streaming hashers behind them.

use std::fmt;
use std::str::FromStr;

use md5::Digest as _;

/// Supported checksum algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    /// SHA-256 (the default).
    Sha256,
    /// SHA-512.
    Sha512,
    /// MD5, accepted for Ironic compatibility only.
    Md5,
}

impl Algo {
    fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
            Algo::Md5 => "md5",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
            Algo::Md5 => 32,
        }
    }
}

/// An expected checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// Algorithm.
    pub algo: Algo,
    /// Lowercase hex digest.
    pub hex: String,
}

/// A checksum string that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid checksum {0:?}: expected [sha256|sha512|md5:]HEX")]
pub struct ChecksumParseError(String);

impl FromStr for Checksum {
    type Err = ChecksumParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ChecksumParseError(s.to_string());
        let (algo, hex) = match s.split_once(':') {
            Some((a, h)) => {
                let algo = match a.to_ascii_lowercase().as_str() {
                    "sha256" => Algo::Sha256,
                    "sha512" => Algo::Sha512,
                    "md5" => Algo::Md5,
                    _ => return Err(err()),
                };
                (algo, h)
            }
            None => (Algo::Sha256, s),
        };
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != algo.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        Ok(Checksum { algo, hex })
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex)
    }
}

/// A running hash of one of the supported algorithms.
#[derive(Debug)]
pub enum Hasher {
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-512.
    Sha512(sha2::Sha512),
    /// MD5.
    Md5(md5::Md5),
}

impl Hasher {
    /// A fresh hasher for `algo`.
    pub fn new(algo: Algo) -> Self {
        match algo {
            Algo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            Algo::Md5 => Hasher::Md5(md5::Md5::new()),
        }
    }
    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
        }
    }
    /// Lowercase hex digest.
    pub fn finish_hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
            Hasher::Md5(h) => hex::encode(h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_algorithms_and_defaults_to_sha256() {
        let h = "a".repeat(64);
        assert_eq!(h.parse::<Checksum>().expect("bare").algo, Algo::Sha256);
        assert_eq!(
            format!("SHA256:{h}")
                .parse::<Checksum>()
                .expect("upper")
                .algo,
            Algo::Sha256
        );
        let c: Checksum = format!("sha512:{}", "B".repeat(128))
            .parse()
            .expect("sha512");
        assert_eq!(c.algo, Algo::Sha512);
        assert_eq!(c.hex, "b".repeat(128));
        assert!(
            format!("md5:{}", "0".repeat(32))
                .parse::<Checksum>()
                .is_ok()
        );
        assert!(
            format!("sha1:{}", "0".repeat(40))
                .parse::<Checksum>()
                .is_err()
        );
        assert!("sha256:abc".parse::<Checksum>().is_err());
        assert!(
            format!("sha256:{}", "g".repeat(64))
                .parse::<Checksum>()
                .is_err()
        );
    }

    #[test]
    fn hashes_known_vectors() {
        let mut h = Hasher::new(Algo::Sha256);
        h.update(b"abc");
        assert_eq!(
            h.finish_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = Hasher::new(Algo::Md5);
        h.update(b"abc");
        assert_eq!(h.finish_hex(), "900150983cd24fb0d6963f7d28e17f72");
    }
}
