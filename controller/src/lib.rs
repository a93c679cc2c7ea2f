//! Ingot controller: machine inventory, lifecycle and the Ironic-compatible operator API.

pub mod api;
pub mod model;
pub mod store;
