//! Drivers (placeholder while being written).
