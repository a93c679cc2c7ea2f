//! Root device hints: how an operator names the disk to install on.
//!
//! The names follow Ironic (`name`, `serial`, `wwn`, `size`, `rotational`,
//! `model`, `vendor`, `hctl`, `by_path`). `size` is in GiB and may carry an
//! operator (`">= 100"`, `"< 500"`, `"== 240"`, `"!= 0"`, or a bare number).
//! String hints compare exactly after trimming; this module holds the types and
//! the size parser, the matching itself lives in the agent.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Hints that choose one disk; every hint given must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootDeviceHints {
    /// Device path or kernel name (`/dev/sda` or `sda`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// World wide name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// Size in GiB, with an optional comparison operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeHint>,
    /// Spinning disk or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// Model string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Vendor string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// SCSI address `h:c:t:l`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hctl: Option<String>,
    /// `/dev/disk/by-path/...` (with or without the directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_path: Option<String>,
}

impl RootDeviceHints {
    /// True when no hint is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Comparison operator of a size hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeOp {
    /// `==` (also a bare number).
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl SizeOp {
    fn as_str(self) -> &'static str {
        match self {
            SizeOp::Eq => "==",
            SizeOp::Ne => "!=",
            SizeOp::Lt => "<",
            SizeOp::Le => "<=",
            SizeOp::Gt => ">",
            SizeOp::Ge => ">=",
        }
    }
}

/// A size hint in GiB: `op gib`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeHint {
    /// The comparison.
    pub op: SizeOp,
    /// The right-hand side, in GiB.
    pub gib: u64,
}

/// A size hint that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeHintError(pub String);

impl fmt::Display for SizeHintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid size hint {:?}: expected [op] GiB, op one of == != < <= > >=",
            self.0
        )
    }
}

impl std::error::Error for SizeHintError {}

impl SizeHint {
    /// Parse `">= 100"`, `"<=100"`, `"240"`, ...
    pub fn parse(text: &str) -> Result<Self, SizeHintError> {
        let t = text.trim();
        let ops = [
            ("<=", SizeOp::Le),
            (">=", SizeOp::Ge),
            ("==", SizeOp::Eq),
            ("!=", SizeOp::Ne),
            ("<", SizeOp::Lt),
            (">", SizeOp::Gt),
        ];
        let (op, rest) = ops
            .iter()
            .find_map(|(p, op)| t.strip_prefix(p).map(|r| (*op, r)))
            .unwrap_or((SizeOp::Eq, t));
        let gib = rest
            .trim()
            .parse::<u64>()
            .map_err(|_| SizeHintError(text.to_string()))?;
        Ok(SizeHint { op, gib })
    }

    /// Whether a disk of `size_bytes` satisfies the hint. Sizes are compared in
    /// whole GiB, rounded down, as Ironic does.
    pub fn matches(&self, size_bytes: u64) -> bool {
        let gib = size_bytes / (1 << 30);
        match self.op {
            SizeOp::Eq => gib == self.gib,
            SizeOp::Ne => gib != self.gib,
            SizeOp::Lt => gib < self.gib,
            SizeOp::Le => gib <= self.gib,
            SizeOp::Gt => gib > self.gib,
            SizeOp::Ge => gib >= self.gib,
        }
    }
}

impl fmt::Display for SizeHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.gib)
    }
}

impl Serialize for SizeHint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SizeHint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(gib) => Ok(SizeHint {
                op: SizeOp::Eq,
                gib,
            }),
            Raw::Text(t) => SizeHint::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operators_and_bare_numbers() {
        let cases = [
            (">= 100", SizeOp::Ge, 100),
            ("<=5", SizeOp::Le, 5),
            ("== 240", SizeOp::Eq, 240),
            ("!= 0", SizeOp::Ne, 0),
            ("< 7", SizeOp::Lt, 7),
            ("> 7", SizeOp::Gt, 7),
            (" 42 ", SizeOp::Eq, 42),
        ];
        for (text, op, gib) in cases {
            assert_eq!(SizeHint::parse(text), Ok(SizeHint { op, gib }), "{text}");
        }
        assert!(SizeHint::parse(">= lots").is_err());
        assert!(SizeHint::parse("=> 5").is_err());
    }

    #[test]
    fn compares_in_whole_gib() {
        let g = 1u64 << 30;
        assert!(SizeHint::parse(">= 100").expect("valid").matches(100 * g));
        assert!(
            !SizeHint::parse(">= 100")
                .expect("valid")
                .matches(100 * g - 1)
        );
        assert!(SizeHint::parse("< 1").expect("valid").matches(g - 1));
        assert!(SizeHint::parse("10").expect("valid").matches(10 * g + 5));
    }
}
