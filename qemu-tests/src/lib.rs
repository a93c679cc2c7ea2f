//! QEMU end-to-end test harness (not yet built: see the discovery issue).
