//! Agent integration tests on real loop devices and real HTTP on 127.0.0.1.
//! Tests on loop devices and network namespaces need root (`test_needs::need!`: skipped
//! with a message without it, a failure under CI); tests that share loop devices take
//! the `LOOP` lock so they run one at a time.

mod configdrive;
mod dhcp_lease;
mod fetch;
mod image_tables;
mod inventory;
mod run;
mod scan;
mod server;
mod support;
mod wipe;
mod write_image;
