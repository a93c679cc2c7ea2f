//! Ingot controller: machine inventory, lifecycle and the Ironic-compatible operator API.

pub mod api;
pub mod conductor;
pub mod drivers;
pub mod machine;
pub mod model;
pub mod store;
