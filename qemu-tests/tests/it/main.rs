//! The end-to-end tests, one binary (`cargo nextest run -p qemu-tests --test it`), one
//! module per proof; `--test it lifecycle::` runs one. Every test says what it needs with
//! `test_needs::need!` (root, QEMU, firmware: `test_needs::LAB`): without it, it prints
//! `skipping` and passes under a plain `cargo test`, and fails under CI. What each module
//! proves: `../../README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bmc_faults;
mod bmc_lab;
mod bmc_lifecycle;
mod bmc_serve;
mod bmc_sushy;
mod direct_kernel;
mod discovery;
mod faults;
mod forward;
mod harness;
mod inband_bmc;
mod lifecycle;
mod ramdisk_lease;
mod replica_takeover;
mod server_create;
mod service;
mod software_raid;
mod spoof;
mod user_net;
