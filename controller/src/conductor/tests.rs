//! Conductor tests against a real SQLite store.
