//! The controller's integration tests, one binary (`cargo nextest run -p controller --test
//! it`), one module per subject; `cargo nextest run -p controller --test it api::` runs one
//! module. Tests that need root, network namespaces, QEMU or PostgreSQL say so in their
//! module docs and skip with a message (fail under `CI`) when the machine lacks them.
//! `support` starts `ingot serve` processes, `netboot_support` network namespaces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_api;
mod api;
mod auth;
mod bmc_ipmi;
mod bmc_ipmi17;
mod bmc_qemu;
mod bmc_redfish;
mod certs;
mod dhcp_agent_lease;
mod image_import_safety;
mod images;
mod ironic_clients;
mod load_isolation;
mod metrics;
mod netboot_ipxe;
mod netboot_netns;
mod netboot_qemu;
mod netboot_support;
mod replicas;
mod secret_grep;
mod secrets;
mod serve;
mod serve_hardening;
mod servers;
mod store;
mod support;
mod tls;
mod ui_browser;
mod webhooks;
