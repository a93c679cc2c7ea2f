//! Cleaning that cannot be skipped: the agent's wipe report must cover every disk of the
//! node's last inventory.
//!
//! The agent wipes every disk it finds except virtual media and its boot medium, and fails
//! when it finds none. The controller does not take the report's word for completeness: each
//! disk the last inspection found (except virtual media, told by driver and transport,
//! [`proto::Disk::is_virtual_media`]) must appear in the report as wiped and verified,
//! matched by serial, WWN or by-path ([`proto::DiskId::same_disk`]), never by device name,
//! which can change between boots. A disk the agent calls its boot medium is not excused:
//! the agent runs from a network-booted ramdisk, so a disk it booted from is a disk it was
//! not told about. Each disk's result goes into the node's history.

use chrono::Utc;
use proto::{DiskId, Inventory, WipeReport};
use uuid::Uuid;

use crate::model::HistoryEvent;
use crate::store::{Store, StoreError};

/// PURE: the disks of `inventory` that `report` does not prove wiped, each described with
/// the reason (empty when the cleaning covered every disk).
pub fn uncovered(inventory: &Inventory, report: &WipeReport) -> Vec<String> {
    let mut missing = Vec::new();
    for disk in inventory.disks.iter().filter(|d| !d.is_virtual_media()) {
        let id = DiskId::of(disk);
        let name = format!("{} ({})", disk.name, id.describe());
        if id.is_anonymous() {
            missing.push(format!("{name}: cannot be matched with the wipe report"));
            continue;
        }
        let results: Vec<_> = report
            .disks
            .iter()
            .filter(|r| r.id.same_disk(&id))
            .collect();
        if results.iter().any(|r| r.ok) {
            continue;
        }
        let why = match results.first() {
            None => "not in the wipe report".to_owned(),
            Some(r) => match (&r.skipped, &r.error) {
                (Some(s), _) => format!("skipped as {s}"),
                (None, Some(e)) => format!("failed: {e}"),
                (None, None) => "not verified".to_owned(),
            },
        };
        missing.push(format!("{name}: {why}"));
    }
    missing
}

/// PURE: one history line per disk of the report: device, identity, mode, method, size and
/// whether it was verified (or why not).
pub fn history_lines(report: &WipeReport) -> Vec<(bool, String)> {
    report
        .disks
        .iter()
        .map(|r| {
            let outcome = if r.ok {
                "wiped and verified".to_owned()
            } else if let Some(s) = &r.skipped {
                format!("skipped ({s})")
            } else {
                format!(
                    "failed ({})",
                    r.error.as_deref().unwrap_or("no error given")
                )
            };
            let mut text = format!(
                "wipe {}: {}; {}, mode {:?}",
                r.device,
                outcome,
                r.id.describe(),
                r.mode
            );
            if let Some(m) = &r.method {
                text.push_str(&format!(", method {m}"));
            }
            if let Some(size) = r.id.size {
                text.push_str(&format!(", {size} bytes"));
            }
            if !r.cleared.is_empty() {
                text.push_str(&format!(", cleared {}", r.cleared.join(" ")));
            }
            text.push_str(&format!(", {} ms", r.elapsed_ms));
            (r.ok || r.skipped.is_some(), text)
        })
        .collect()
}

/// Checks a whole-machine wipe's report (the `detail` of its result) against the node's
/// last inventory and records each disk in the history. `Ok(())` when the cleaning may
/// succeed, `Err(reason)` when it must fail.
pub async fn check(
    store: &dyn Store,
    conductor: &str,
    node: Uuid,
    detail: Option<&serde_json::Value>,
) -> Result<Result<(), String>, StoreError> {
    let Some(report) = detail.and_then(|d| serde_json::from_value::<WipeReport>(d.clone()).ok())
    else {
        return Ok(Err(
            "the agent's wipe result carries no per-disk report".into()
        ));
    };
    let now = Utc::now();
    for (ok, text) in history_lines(&report) {
        store
            .add_history(&HistoryEvent {
                uuid: Uuid::new_v4(),
                node_uuid: node,
                created_at: now,
                severity: if ok { "INFO" } else { "ERROR" }.into(),
                event_type: "cleaning".into(),
                event: text,
                conductor: Some(conductor.to_owned()),
                user: None,
            })
            .await?;
    }
    let Some(inventory) = store
        .get_inventory(node)
        .await?
        .as_ref()
        .and_then(crate::discovery::inventory_of)
    else {
        // Never inspected: nothing to compare with; the agent found and wiped at least one
        // disk (it fails otherwise).
        tracing::info!(node = %node, "no inventory to check the wipe against");
        return Ok(Ok(()));
    };
    let missing = uncovered(&inventory, &report);
    if missing.is_empty() {
        Ok(Ok(()))
    } else {
        Ok(Err(format!(
            "cleaning did not wipe every disk of the node's inventory: {}",
            missing.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use proto::{Disk, WipeDiskResult, WipeMode};

    use super::*;

    fn disk(name: &str, serial: Option<&str>, transport: &str, removable: bool) -> Disk {
        Disk {
            name: name.into(),
            serial: serial.map(Into::into),
            transport: Some(transport.into()),
            removable,
            size: 1 << 30,
            ..Default::default()
        }
    }

    fn result(
        device: &str,
        serial: Option<&str>,
        ok: bool,
        skipped: Option<&str>,
    ) -> WipeDiskResult {
        WipeDiskResult {
            device: device.into(),
            mode: WipeMode::Metadata,
            ok,
            method: ok.then(|| "signatures".into()),
            cleared: vec![],
            skipped: skipped.map(Into::into),
            error: (!ok && skipped.is_none()).then(|| "read-only".into()),
            elapsed_ms: 3,
            id: DiskId {
                serial: serial.map(Into::into),
                ..Default::default()
            },
        }
    }

    fn inventory(disks: Vec<Disk>) -> Inventory {
        Inventory {
            disks,
            ..Default::default()
        }
    }

    #[test]
    fn every_inventory_disk_but_virtual_media_must_be_wiped() {
        let inv = inventory(vec![
            disk("/dev/vda", Some("A"), "virtio", false),
            disk("/dev/vdb", Some("B"), "virtio", false),
            disk("/dev/sr0", None, "usb", true),
        ]);
        let cases: Vec<(&str, Vec<WipeDiskResult>, Vec<&str>)> = vec![
            (
                "both wiped",
                vec![
                    result("/dev/vda", Some("A"), true, None),
                    result("/dev/vdb", Some("B"), true, None),
                ],
                vec![],
            ),
            (
                "renamed between boots: matched by serial",
                vec![
                    result("/dev/vdb", Some("A"), true, None),
                    result("/dev/vda", Some("B"), true, None),
                ],
                vec![],
            ),
            (
                "one left out",
                vec![result("/dev/vda", Some("A"), true, None)],
                vec!["/dev/vdb (serial B): not in the wipe report"],
            ),
            (
                "the same name is not the same disk",
                vec![
                    result("/dev/vda", Some("A"), true, None),
                    result("/dev/vdb", Some("X"), true, None),
                ],
                vec!["/dev/vdb (serial B): not in the wipe report"],
            ),
            (
                "a disk passed over as the boot medium is not excused",
                vec![
                    result("/dev/vda", Some("A"), true, None),
                    result("/dev/vdb", Some("B"), false, Some("boot medium")),
                ],
                vec!["/dev/vdb (serial B): skipped as boot medium"],
            ),
            (
                "failed",
                vec![
                    result("/dev/vda", Some("A"), true, None),
                    result("/dev/vdb", Some("B"), false, None),
                ],
                vec!["/dev/vdb (serial B): failed: read-only"],
            ),
            (
                "nothing wiped",
                vec![],
                vec![
                    "/dev/vda (serial A): not in the wipe report",
                    "/dev/vdb (serial B): not in the wipe report",
                ],
            ),
        ];
        for (what, disks, want) in cases {
            let report = WipeReport { ok: true, disks };
            assert_eq!(uncovered(&inv, &report), want, "{what}");
        }
        let anonymous = inventory(vec![disk("/dev/sda", None, "sata", false)]);
        let report = WipeReport {
            ok: true,
            disks: vec![result("/dev/sda", None, true, None)],
        };
        assert_eq!(
            uncovered(&anonymous, &report),
            vec!["/dev/sda (no serial, WWN or by-path): cannot be matched with the wipe report"]
        );
    }

    #[test]
    fn history_names_each_disk() {
        let report = WipeReport {
            ok: false,
            disks: vec![
                result("/dev/vda", Some("A"), true, None),
                result("/dev/sr0", None, false, Some("virtual media")),
                result("/dev/vdb", Some("B"), false, None),
            ],
        };
        let lines = history_lines(&report);
        assert_eq!(
            lines[0],
            (
                true,
                "wipe /dev/vda: wiped and verified; serial A, mode Metadata, method signatures, 3 ms"
                    .to_owned()
            )
        );
        assert!(lines[1].0 && lines[1].1.contains("skipped (virtual media)"));
        assert!(!lines[2].0 && lines[2].1.contains("failed (read-only)"));
    }
}
