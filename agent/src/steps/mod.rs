//! The steps this agent offers (Ironic's hardware manager clean and deploy steps):
//! [`STEPS`] is the one list, each entry its description and its code. [`offered`] is what
//! every lookup reports (`LookupRequest::steps`); [`run`] is what `Command::RunStep` calls.
//! The controller offers whatever the agent reports (manual cleaning, deploy templates,
//! `service`) and sends `RunStep` for any step it has no special handling for, so a new
//! step is one entry here and its code, with no controller change.
//!
//! A step's code runs only with arguments [`args::check`] accepted: an unknown step, an
//! unknown argument or a wrong one is a failed report saying which, before anything runs.

pub mod args;
pub mod erase;
pub mod raid;
pub mod scan;

use proto::ErrorReport;
use proto::protocol::{AgentStep, Report, StepArg};
use serde_json::{Map, Value};

use crate::events::EventSink;
use args::{ArgDef, ArgKind, Args};

/// One step the agent offers.
#[derive(Debug)]
pub struct StepDef {
    pub interface: &'static str,
    pub step: &'static str,
    /// Priority in automated cleaning (0: only when asked for); `None`: not a clean step.
    pub clean_priority: Option<u32>,
    /// Priority in a deploy (0: only when named); `None`: not a deploy step.
    pub deploy_priority: Option<u32>,
    /// Whether `service` may run it on an active node.
    pub service: bool,
    /// Whether stopping it half way harms nothing.
    pub abortable: bool,
    pub args: &'static [ArgDef],
    /// Runs the step with checked arguments to its final report; progress goes to the sink.
    pub run: fn(&Args, &dyn EventSink) -> Report,
}

impl StepDef {
    /// How the lookup describes it.
    pub fn describe(&self) -> AgentStep {
        // Inserted one by one: collecting into the map would link a sort for a handful.
        let mut argsinfo = std::collections::BTreeMap::new();
        for a in self.args {
            argsinfo.insert(
                a.name.to_owned(),
                StepArg {
                    description: a.description.to_owned(),
                    required: a.required,
                },
            );
        }
        AgentStep {
            interface: self.interface.to_owned(),
            step: self.step.to_owned(),
            clean_priority: self.clean_priority,
            deploy_priority: self.deploy_priority,
            service: self.service,
            abortable: self.abortable,
            argsinfo,
        }
    }
}

const ERASE_DEVICES: ArgDef = ArgDef {
    name: "devices",
    description: "The disks to erase, as a list of /dev/... paths. Left out: every disk \
                  but virtual media and the boot medium.",
    required: false,
    kind: ArgKind::Devices,
};

const SCAN_DEVICES: ArgDef = ArgDef {
    name: "devices",
    description: "The disks to scan, as a list of /dev/... paths. Left out: every disk \
                  but virtual media and the boot medium (read-only disks included).",
    required: false,
    kind: ArgKind::Devices,
};

const SCAN_MAX_BYTES: ArgDef = ArgDef {
    name: "max_bytes",
    description: "Read at most this many bytes from the start of each disk (a whole \
                  number above 0), to bound the time the scan takes. Left out: whole disks.",
    required: false,
    kind: ArgKind::PositiveInt,
};

const RAID_PLAN: ArgDef = ArgDef {
    name: "raid",
    description: "The software RAID to build: {\"volumes\": [{\"level\": \"1\", \
                  \"size_gb\": N or left out for MAX, \"name\": ...}, ...], \"disks\": \
                  [root device hints, one set per member]}; the first volume holds the root \
                  file system and is RAID-1. Disks left out: every disk but read-only, \
                  removable and virtual media and the boot medium.",
    required: true,
    kind: ArgKind::SoftwareRaid,
};

/// Every step this agent offers.
pub static STEPS: &[StepDef] = &[
    // The `wipe` command in `metadata` mode: signatures, partition tables and both ends of
    // every eligible disk. Automated cleaning runs it by default, as Ironic's agent does.
    StepDef {
        interface: "deploy",
        step: "erase_devices_metadata",
        clean_priority: Some(99),
        deploy_priority: Some(0),
        service: false,
        abortable: false,
        args: &[],
        run: erase::erase_devices_metadata,
    },
    // The `wipe` command in `secure` mode. Not abortable: a disk erased half way is
    // neither the old data nor zeroes.
    StepDef {
        interface: "deploy",
        step: "erase_devices",
        clean_priority: Some(0),
        deploy_priority: None,
        service: true,
        abortable: false,
        args: &[ERASE_DEVICES],
        run: erase::erase_devices,
    },
    // Read-only, so stopping it half way harms nothing.
    StepDef {
        interface: "deploy",
        step: "scan_disks",
        clean_priority: Some(0),
        deploy_priority: None,
        service: true,
        abortable: true,
        args: &[SCAN_DEVICES, SCAN_MAX_BYTES],
        run: scan::scan_disks,
    },
    // Software RAID: the members' old arrays and tables go, then new ones are built. Not
    // abortable: a half-built array is worse than either.
    StepDef {
        interface: "raid",
        step: "create_configuration",
        clean_priority: Some(0),
        deploy_priority: None,
        service: false,
        abortable: false,
        args: &[RAID_PLAN],
        run: raid::create_configuration,
    },
    StepDef {
        interface: "raid",
        step: "delete_configuration",
        clean_priority: Some(0),
        deploy_priority: None,
        service: false,
        abortable: false,
        args: &[],
        run: raid::delete_configuration,
    },
];

/// The steps to report at lookup.
pub fn offered() -> Vec<AgentStep> {
    STEPS.iter().map(StepDef::describe).collect()
}

/// Runs the offered step `interface.step` with `args` (`Command::RunStep`) to its final
/// report.
pub fn run(interface: &str, step: &str, args: &Map<String, Value>, sink: &dyn EventSink) -> Report {
    run_in(STEPS, interface, step, args, sink)
}

/// [`run`] over any list of steps.
fn run_in(
    steps: &[StepDef],
    interface: &str,
    step: &str,
    given: &Map<String, Value>,
    sink: &dyn EventSink,
) -> Report {
    let Some(def) = steps
        .iter()
        .find(|d| d.interface == interface && d.step == step)
    else {
        let offered: Vec<String> = steps
            .iter()
            .map(|d| format!("{}.{}", d.interface, d.step))
            .collect();
        return refused(format!(
            "this agent does not offer step {}.{} (it offers {})",
            shorten(interface),
            shorten(step),
            offered.join(", ")
        ));
    };
    let args = match args::check(def.args, given) {
        Ok(a) => a,
        Err(why) => return refused(format!("step {interface}.{step}: {why}")),
    };
    // The arguments are in the loop's "running command" line already.
    tracing::info!(interface, step, "running step");
    (def.run)(&args, sink)
}

/// A step that did not run.
fn refused(message: String) -> Report {
    tracing::warn!(%message, "step refused");
    Report::Failed {
        error: ErrorReport {
            phase: None,
            message,
            causes: vec![],
        },
    }
}

/// At most 64 characters of a name the controller sent, for a message.
fn shorten(s: &str) -> String {
    s.chars().take(proto::protocol::STEP_NAME_MAX).collect()
}

#[cfg(test)]
mod tests;
