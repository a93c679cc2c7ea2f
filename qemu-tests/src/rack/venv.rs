//! The Python venv of the OpenStack clients the rack's tests run.

use std::path::PathBuf;

/// The venv of the pinned OpenStack clients (`python/clients.txt`: the `baremetal` CLI the API
/// contract was captured with), built once by `python/venv`.
pub fn clients_venv() -> anyhow::Result<PathBuf> {
    crate::build::python_venv("clients")
}
