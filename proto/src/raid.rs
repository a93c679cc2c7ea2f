//! Software RAID on the wire: what the controller asks the agent to build (Ironic's
//! `target_raid_config` with every `controller` set to `software`, checked and reduced by the
//! controller) and what the agent reports it built.
//!
//! One home for the shape rules: [`SoftwareRaid::check`] is run by the controller before it
//! sends a plan and by the agent before it touches a disk.

use serde::{Deserialize, Serialize};

use crate::RootDeviceHints;

/// Most member disks of one plan.
pub const RAID_MAX_DISKS: usize = 16;
/// Longest array name (the md superblock's `set_name` holds 32 bytes).
pub const RAID_NAME_MAX: usize = 32;

/// A RAID level Ingot builds in software.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaidLevel {
    /// Striping, no redundancy.
    #[serde(rename = "0")]
    Raid0,
    /// Mirroring.
    #[serde(rename = "1")]
    Raid1,
}

impl RaidLevel {
    /// Ironic's spelling (`"0"`, `"1"`).
    pub fn as_str(self) -> &'static str {
        match self {
            RaidLevel::Raid0 => "0",
            RaidLevel::Raid1 => "1",
        }
    }

    /// Parse Ironic's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "0" => Some(RaidLevel::Raid0),
            "1" => Some(RaidLevel::Raid1),
            _ => None,
        }
    }
}

/// One array to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaidVolume {
    /// Level.
    pub level: RaidLevel,
    /// Usable size of the array in GiB; `None` is Ironic's `"MAX"`: all the room left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<u64>,
    /// Array name (Ironic's `volume_name`), written into the md superblock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Arrays to build over the same member disks. The first volume is the root volume: it
/// holds the image's root file system and is always RAID-1, so that the machine still boots
/// when a member disk dies. Every volume has one partition on every member disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftwareRaid {
    /// The member disks, one hint set per disk (Ironic's `physical_disks`); empty means
    /// every eligible disk of the machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<RootDeviceHints>,
    /// One or two volumes.
    pub volumes: Vec<RaidVolume>,
}

impl SoftwareRaid {
    /// The shape rules every plan obeys (the disks themselves are checked by the agent).
    pub fn check(&self) -> Result<(), String> {
        match self.volumes.len() {
            1 | 2 => {}
            n => return Err(format!("software RAID has 1 or 2 volumes, not {n}")),
        }
        if self.volumes[0].level != RaidLevel::Raid1 {
            return Err(
                "the first software RAID volume holds the root file system and must be RAID-1"
                    .to_owned(),
            );
        }
        if self.volumes.iter().filter(|v| v.size_gb.is_none()).count() > 1 {
            return Err("only one software RAID volume can have size_gb MAX".to_owned());
        }
        for v in &self.volumes {
            if v.size_gb == Some(0) {
                return Err("a software RAID volume's size_gb is at least 1".to_owned());
            }
            if let Some(n) = &v.name
                && (n.is_empty()
                    || n.len() > RAID_NAME_MAX
                    || !n
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
            {
                return Err(format!(
                    "a software RAID volume name is 1 to {RAID_NAME_MAX} characters of \
                     [A-Za-z0-9._-], not {n:?}"
                ));
            }
        }
        if self.disks.len() == 1 {
            return Err("software RAID needs at least 2 member disks, 1 named".to_owned());
        }
        if self.disks.len() > RAID_MAX_DISKS {
            return Err(format!(
                "software RAID takes at most {RAID_MAX_DISKS} member disks, not {}",
                self.disks.len()
            ));
        }
        if self.disks.iter().any(RootDeviceHints::is_empty) {
            return Err("every software RAID member disk needs at least one hint".to_owned());
        }
        Ok(())
    }
}

/// A member of a built array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaidMember {
    /// The member partition (`/dev/vda3`).
    pub device: String,
    /// The disk holding it (`/dev/vda`).
    pub disk: String,
    /// The disk's serial number, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The disk's world wide name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
}

/// An array the agent built and the kernel assembled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaidArray {
    /// Level.
    pub level: RaidLevel,
    /// The name in the superblock.
    pub name: String,
    /// The array UUID, as mdadm prints it (`xxxxxxxx:xxxxxxxx:xxxxxxxx:xxxxxxxx`).
    pub uuid: String,
    /// md metadata version (`1.0` for the root volume, whose members start with the file
    /// system so that firmware and boot loaders read them as plain partitions; else `1.2`).
    pub metadata: String,
    /// Usable size of the array in bytes, as the kernel reported it.
    pub size_bytes: u64,
    /// Members, in role order.
    pub members: Vec<RaidMember>,
    /// True for the volume holding the root file system.
    pub root: bool,
}

/// What a RAID step or a RAID deploy built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaidReport {
    /// The arrays, in the plan's order.
    pub arrays: Vec<RaidArray>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(level: RaidLevel, size_gb: Option<u64>) -> RaidVolume {
        RaidVolume {
            level,
            size_gb,
            name: None,
        }
    }

    #[test]
    fn shape_rules() {
        let name = |n: &str| RootDeviceHints {
            name: Some(n.into()),
            ..Default::default()
        };
        let cases: Vec<(SoftwareRaid, Option<&str>)> = vec![
            (
                SoftwareRaid {
                    disks: vec![],
                    volumes: vec![vol(RaidLevel::Raid1, None)],
                },
                None,
            ),
            (
                SoftwareRaid {
                    disks: vec![name("vda"), name("vdb")],
                    volumes: vec![vol(RaidLevel::Raid1, Some(10)), vol(RaidLevel::Raid0, None)],
                },
                None,
            ),
            (SoftwareRaid::default(), Some("1 or 2 volumes")),
            (
                SoftwareRaid {
                    disks: vec![],
                    volumes: vec![vol(RaidLevel::Raid0, None)],
                },
                Some("must be RAID-1"),
            ),
            (
                SoftwareRaid {
                    disks: vec![],
                    volumes: vec![vol(RaidLevel::Raid1, None), vol(RaidLevel::Raid1, None)],
                },
                Some("only one"),
            ),
            (
                SoftwareRaid {
                    disks: vec![],
                    volumes: vec![vol(RaidLevel::Raid1, Some(0))],
                },
                Some("at least 1"),
            ),
            (
                SoftwareRaid {
                    disks: vec![name("vda")],
                    volumes: vec![vol(RaidLevel::Raid1, None)],
                },
                Some("at least 2 member disks"),
            ),
            (
                SoftwareRaid {
                    disks: vec![name("vda"), RootDeviceHints::default()],
                    volumes: vec![vol(RaidLevel::Raid1, None)],
                },
                Some("at least one hint"),
            ),
            (
                SoftwareRaid {
                    disks: vec![],
                    volumes: vec![RaidVolume {
                        level: RaidLevel::Raid1,
                        size_gb: None,
                        name: Some("root vol".into()),
                    }],
                },
                Some("volume name"),
            ),
        ];
        for (plan, want) in cases {
            match (plan.check(), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.contains(w), "{e} lacks {w}"),
                (got, want) => panic!("{plan:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn levels_use_ironics_spelling() {
        assert_eq!(
            serde_json::to_string(&RaidLevel::Raid1).expect("serializes"),
            "\"1\""
        );
        assert_eq!(RaidLevel::parse("0"), Some(RaidLevel::Raid0));
        assert_eq!(RaidLevel::parse("1+0"), None);
    }
}
