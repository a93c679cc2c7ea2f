//! Wire types shared by the agent and the controller.
//!
//! This crate is an API boundary: it depends on serde-level crates only (no tokio,
//! axum or reqwest), and every type here is covered by golden JSON tests in
//! `proto/tests/`, so that a wire change shows up in review.

pub mod events;
pub mod hints;
pub mod inventory;
pub mod protocol;
pub mod raid;

pub use events::{
    AgentEvent, DiskId, ErrorReport, Phase, PhaseTiming, ProgressEvent, WipeDiskResult, WipeMode,
    WipeReport, WriteImageResult,
};
pub use hints::{RootDeviceHints, SizeHint, SizeHintError, SizeOp};
pub use inventory::{
    Baseboard, Boot, BootMode, Chassis, Cpu, Disk, Firmware, Interface, Inventory, LldpNeighbor,
    LldpVlan, Memory, NumaCpu, NumaNic, NumaRam, NumaTopology, PciDevice, SystemVendor,
};
pub use raid::{RaidArray, RaidLevel, RaidMember, RaidReport, RaidVolume, SoftwareRaid};

/// Version of the agent/controller protocol; the controller rejects a mismatch.
///
/// 2: agent sessions (issue 11): a lookup answers a token only to the first lookup of a
/// ramdisk boot (`token` may be absent), a second session is 409, a wipe result carries each
/// disk's identity ([`DiskId`]), and images come through signed URLs over HTTPS.
pub const PROTOCOL_VERSION: u32 = 2;
