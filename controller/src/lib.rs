//! Ingot controller: machine inventory, lifecycle and the Ironic-compatible operator API.

pub mod model;
pub mod store;
pub mod api;
