//! Conductor (placeholder while being written).
