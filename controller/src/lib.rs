//! Ingot controller: machine inventory, lifecycle and the Ironic-compatible operator API.

pub mod agent_api;
pub mod api;
pub mod boot_http;
pub mod certs;
pub mod cli;
pub mod conductor;
pub mod config;
pub mod discovery;
pub mod drivers;
pub mod events;
pub mod flavors;
pub mod images;
pub mod instance;
pub mod live;
pub mod machine;
pub mod metrics;
pub mod model;
pub mod netboot;
pub mod secrets;
pub mod serve;
pub mod servers;
pub mod store;
pub mod supervise;
pub mod tls;
pub mod ui;
pub mod webhooks;
