//! Flavors: the operator's named machine sizes (`[[flavors]]` in the config file) that users
//! request machines by (`POST /v1/ingot/servers`), and the one rule that says which nodes an
//! allocation may take ([`matching`]).
//!
//! A flavor is a resource class, required traits and minimum properties (`cpus`,
//! `memory_mb`, `local_gb`) plus an exact `cpu_arch`; a node that meets or exceeds it is
//! picked.

pub mod matching;

use std::collections::BTreeSet;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::model::PropertyMinimums;

/// One `[[flavors]]` entry, as written and as served (`GET /v1/ingot/flavors`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    /// What users ask for (`--flavor NAME`); unique.
    pub name: String,
    /// Only nodes of this resource class; none: any class.
    pub resource_class: Option<String>,
    /// Traits every picked node must have.
    #[serde(default)]
    pub traits: Vec<String>,
    /// Minimum `properties.cpus`.
    pub cpus: Option<u64>,
    /// Minimum `properties.memory_mb`.
    pub memory_mb: Option<u64>,
    /// Minimum `properties.local_gb`.
    pub local_gb: Option<u64>,
    /// Exact `properties.cpu_arch` (`x86_64`, `aarch64`).
    pub cpu_arch: Option<String>,
}

impl Flavor {
    /// The property minimums an allocation for this flavor carries.
    pub fn minimums(&self) -> PropertyMinimums {
        PropertyMinimums {
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            local_gb: self.local_gb,
            cpu_arch: self.cpu_arch.clone(),
        }
    }
}

/// PURE: checks `[[flavors]]` (names unique and URL-safe, resource class and traits as the
/// API takes them, minimums at least 1); `flavors[N]` in messages.
pub fn validate(flavors: &[Flavor]) -> anyhow::Result<()> {
    let mut names = BTreeSet::new();
    for (n, f) in flavors.iter().enumerate() {
        if !is_flavor_name(&f.name) {
            bail!(
                "flavors[{n}].name {:?}: use 1-64 letters, digits, '.', '_' or '-'",
                f.name
            );
        }
        if !names.insert(f.name.as_str()) {
            bail!("flavors[{n}].name {:?} is used twice", f.name);
        }
        if let Some(rc) = &f.resource_class
            && (rc.is_empty() || rc.len() > 80)
        {
            bail!(
                "flavors[{n}] ({}): resource_class must be 1-80 characters",
                f.name
            );
        }
        for t in &f.traits {
            if !crate::model::is_valid_trait(t) {
                bail!(
                    "flavors[{n}] ({}): traits: {t:?} does not match '^CUSTOM_[A-Z0-9_]+$'",
                    f.name
                );
            }
        }
        for (key, v) in [
            ("cpus", f.cpus),
            ("memory_mb", f.memory_mb),
            ("local_gb", f.local_gb),
        ] {
            if v == Some(0) {
                bail!(
                    "flavors[{n}] ({}): {key} must be at least 1 (leave it out to ask for none)",
                    f.name
                );
            }
        }
        if f.cpu_arch.as_deref().is_some_and(|a| a.trim().is_empty()) {
            bail!("flavors[{n}] ({}): cpu_arch is empty", f.name);
        }
    }
    Ok(())
}

fn is_flavor_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flavor(name: &str) -> Flavor {
        Flavor {
            name: name.to_owned(),
            ..Flavor::default()
        }
    }

    #[test]
    fn flavors_are_checked_at_load() {
        let ok = Flavor {
            resource_class: Some("baremetal".into()),
            traits: vec!["CUSTOM_GPU".into(), "HW_CPU_X86_AVX2".into()],
            cpus: Some(8),
            memory_mb: Some(16384),
            local_gb: Some(100),
            cpu_arch: Some("x86_64".into()),
            ..flavor("m1.large")
        };
        validate(&[ok.clone(), flavor("small")]).expect("valid");
        validate(&[]).expect("none is fine");
        let cases: [(Vec<Flavor>, &str); 7] = [
            (vec![flavor("a"), flavor("a")], "used twice"),
            (vec![flavor("")], "flavors[0].name"),
            (vec![flavor("a b")], "flavors[0].name"),
            (
                vec![Flavor {
                    cpus: Some(0),
                    ..flavor("z")
                }],
                "cpus must be at least 1",
            ),
            (
                vec![Flavor {
                    traits: vec!["gpu".into()],
                    ..flavor("t")
                }],
                "traits",
            ),
            (
                vec![Flavor {
                    resource_class: Some(String::new()),
                    ..flavor("r")
                }],
                "resource_class",
            ),
            (
                vec![Flavor {
                    cpu_arch: Some(" ".into()),
                    ..flavor("c")
                }],
                "cpu_arch",
            ),
        ];
        for (flavors, want) in cases {
            let err = validate(&flavors).expect_err(want).to_string();
            assert!(err.contains(want), "{err}");
        }
        assert_eq!(
            ok.minimums(),
            PropertyMinimums {
                cpus: Some(8),
                memory_mb: Some(16384),
                local_gb: Some(100),
                cpu_arch: Some("x86_64".into()),
            }
        );
    }
}
