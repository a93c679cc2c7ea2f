//! Machines behind real BMC simulators in a [`Rack`], and images imported into its
//! controller's store.
//!
//! [`Rack::add_ipmi_machine`] and [`Rack::add_redfish_machine`] start an `ipmi_sim` or a
//! sushy-tools BMC for a new powered-off machine on the rack's bridge (see [`crate::bmc`]);
//! the returned [`BmcMachine`] knows the `--driver` and `driver_info` an operator gives
//! `baremetal node create`. Declare it after the rack, so that it drops (BMC and QEMU
//! stopped) before the rack's namespace goes.
//!
//! [`Rack::import_image`] runs `ingot image import` against the rack's state directory, as
//! an operator does on the controller's host; deploys then name `ingot://NAME`.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

use super::Rack;
use crate::bmc::{IpmiBmc, RedfishBmc};
use crate::power::Machine;
use crate::vm::VmSpec;

/// A rack machine and the BMC that powers it.
#[derive(Debug)]
pub enum BmcMachine {
    Ipmi(IpmiBmc),
    Redfish(RedfishBmc),
}

impl BmcMachine {
    /// The hardware type that drives this BMC (`ipmi` or `redfish`).
    pub fn driver(&self) -> &'static str {
        match self {
            BmcMachine::Ipmi(_) => "ipmi",
            BmcMachine::Redfish(_) => "redfish",
        }
    }

    /// The BMC credentials and address for `--driver-info`.
    pub fn driver_info(&self) -> Value {
        match self {
            BmcMachine::Ipmi(b) => b.driver_info(),
            BmcMachine::Redfish(b) => b.driver_info(),
        }
    }

    /// The machine behind the BMC (serial log, disk, power events).
    pub fn machine(&self) -> &Machine {
        match self {
            BmcMachine::Ipmi(b) => b.machine(),
            BmcMachine::Redfish(b) => b.machine(),
        }
    }

    /// `Firmware/driver`, e.g. `Bios/ipmi`: a label for timelines.
    pub fn label(&self) -> String {
        format!("{:?}/{}", self.machine().spec().firmware, self.driver())
    }

    /// The simulator's log (for failure messages).
    pub fn log(&self) -> String {
        match self {
            BmcMachine::Ipmi(b) => b.log(),
            BmcMachine::Redfish(b) => b.log(),
        }
    }
}

/// A stored image as `ingot image show --json` reports it.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub name: String,
    /// Raw disk bytes (what the agent writes).
    pub size: u64,
    /// Compressed bytes (what the agent downloads).
    pub stored_size: u64,
    /// Hex sha256 of the stored file.
    pub sha256: String,
    /// `ingot image import`'s own summary line(s).
    pub import_output: String,
}

impl StoredImage {
    /// The deploy's `image_source`.
    pub fn source(&self) -> String {
        format!("ingot://{}", self.name)
    }
}

impl Rack {
    /// A powered-off machine behind its own `ipmi_sim` on the rack's network.
    pub fn add_ipmi_machine(&mut self, spec: VmSpec) -> anyhow::Result<BmcMachine> {
        let dir = self.dir.path.join("machines");
        Ok(BmcMachine::Ipmi(IpmiBmc::start(&mut self.lab, spec, &dir)?))
    }

    /// As [`Rack::add_ipmi_machine`], the BMC also wired to the machine in-band (its KCS
    /// interface; see [`IpmiBmc::start_in_band`]), for `[discovery] enroll_bmc`.
    pub fn add_ipmi_machine_in_band(&mut self, spec: VmSpec) -> anyhow::Result<BmcMachine> {
        let dir = self.dir.path.join("machines");
        Ok(BmcMachine::Ipmi(IpmiBmc::start_in_band(
            &mut self.lab,
            spec,
            &dir,
        )?))
    }

    /// A powered-off machine behind its own sushy-tools Redfish BMC on the rack's network.
    pub fn add_redfish_machine(&mut self, spec: VmSpec) -> anyhow::Result<BmcMachine> {
        let dir = self.dir.path.join("machines");
        Ok(BmcMachine::Redfish(RedfishBmc::start(
            &mut self.lab,
            spec,
            &dir,
        )?))
    }

    /// `ingot image import FILE --name NAME` into the rack controller's image store.
    pub fn import_image(&self, file: &Path, name: &str) -> anyhow::Result<StoredImage> {
        let import_output = self.ingot_image(&[
            "import",
            file.to_str().context("image path is not UTF-8")?,
            "--name",
            name,
        ])?;
        let shown: Value = serde_json::from_str(&self.ingot_image(&["show", name, "--json"])?)
            .context("ingot image show --json")?;
        Ok(StoredImage {
            name: name.to_owned(),
            size: shown["size"].as_u64().context("image size")?,
            stored_size: shown["stored_size"].as_u64().context("stored size")?,
            sha256: shown["sha256"].as_str().context("image sha256")?.to_owned(),
            import_output,
        })
    }

    /// Runs `ingot image ARGS --state-dir <rack dir>` on the host.
    fn ingot_image(&self, args: &[&str]) -> anyhow::Result<String> {
        let ingot = crate::build::ingot_binary()?;
        let out = Command::new(&ingot)
            .arg("image")
            .args(args)
            .arg("--state-dir")
            .arg(&self.dir.path)
            .stdin(Stdio::null())
            .output()
            .context("running ingot image")?;
        if !out.status.success() {
            bail!(
                "ingot image {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
