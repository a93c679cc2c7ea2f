//! The erase steps (`deploy.erase_devices_metadata`, `deploy.erase_devices`) and the
//! `wipe` command: one function, [`wipe`], runs both, so a step run by name does exactly
//! what the command does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::protocol::Report;
use proto::{AgentEvent, ErrorReport, WipeMode, WipeReport};

use super::args::Args;
use crate::events::EventSink;

/// `deploy.erase_devices_metadata`: the metadata wipe of every eligible disk.
pub(super) fn erase_devices_metadata(_args: &Args, sink: &dyn EventSink) -> Report {
    wipe(WipeMode::Metadata, &[], sink)
}

/// `deploy.erase_devices`: the secure erase (firmware erase, else zeroes) of the disks in
/// `devices`, or of every eligible disk.
pub(super) fn erase_devices(args: &Args, sink: &dyn EventSink) -> Report {
    wipe(
        WipeMode::Secure,
        args.devices("devices").unwrap_or_default(),
        sink,
    )
}

/// The `wipe` command: `devices`, or every eligible disk when empty (`wipe::select`), wiped
/// in parallel; the [`WipeReport`] with each disk's identity is the detail, and any disk
/// that failed fails it.
pub fn wipe(mode: WipeMode, devices: &[String], sink: &dyn EventSink) -> Report {
    let (list, skipped) = if devices.is_empty() {
        match crate::wipe::select::plan(Path::new("/"), mode) {
            Ok(v) => v,
            Err(e) => return crate::failed(&e, Some(proto::Phase::Wipe)),
        }
    } else {
        let root = Path::new("/");
        let checked =
            anyhow::Context::context(crate::inventory::block::disks(root), "listing disks")
                .and_then(|disks| {
                    let boot = crate::wipe::select::boot_disks(root);
                    crate::wipe::select::check_named(devices, &disks, &boot, &root.join("sys"))
                        .map_err(|e| anyhow::anyhow!(e))
                });
        if let Err(e) = checked {
            return crate::failed(&e, Some(proto::Phase::Wipe));
        }
        (devices.iter().map(PathBuf::from).collect(), vec![])
    };
    tracing::info!(?mode, devices = ?list, "wiping");
    let mut report: WipeReport =
        crate::wipe::wipe_all_with_progress(&list, mode, sink, Duration::from_secs(1));
    report.disks.extend(skipped);
    match crate::inventory::block::disks(Path::new("/")) {
        Ok(disks) => crate::wipe::select::identify(&mut report, &disks),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no disk identities for the wipe report")
        }
    }
    sink.emit(&AgentEvent::WipeDone(report.clone()));
    let detail = serde_json::to_value(&report).ok();
    if report.ok {
        Report::Succeeded {
            inventory: None,
            detail,
        }
    } else {
        let causes = report
            .disks
            .iter()
            .filter(|d| !d.ok && d.skipped.is_none())
            .map(|d| format!("{}: {}", d.device, d.error.as_deref().unwrap_or("failed")))
            .collect();
        Report::Failed {
            error: ErrorReport {
                phase: Some(proto::Phase::Wipe),
                message: "wiping failed on at least one disk".into(),
                causes,
            },
        }
    }
}
