//! Ingot agent library.
