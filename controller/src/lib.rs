//! Ingot controller: machine inventory, lifecycle and the Ironic-compatible operator API.

pub mod cli;
pub mod config;
pub mod model;
pub mod netboot;
pub mod store;
