//! Wire types shared by the agent and the controller.
//!
//! This crate is an API boundary: it depends on serde-level crates only (no tokio,
//! axum or reqwest), and every type here is covered by golden JSON tests in
//! `proto/tests/`, so that a wire change shows up in review.

pub mod events;
pub mod hints;
pub mod inventory;
pub mod protocol;

pub use events::{
    AgentEvent, DiskId, ErrorReport, Phase, PhaseTiming, ProgressEvent, WipeDiskResult, WipeMode,
    WipeReport, WriteImageResult,
};
pub use hints::{RootDeviceHints, SizeHint, SizeHintError, SizeOp};
pub use inventory::{
    Baseboard, Boot, BootMode, Chassis, Cpu, Disk, Firmware, Interface, Inventory, Memory,
    SystemVendor,
};

/// Version of the agent/controller protocol; the controller rejects a mismatch.
pub const PROTOCOL_VERSION: u32 = 1;
