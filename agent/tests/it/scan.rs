//! `run_step` through the live host's executor on loop devices: `deploy.scan_disks` reads
//! every byte (or `max_bytes`) and changes none, a read-only disk included, and fails naming
//! a disk it cannot open; `deploy.erase_devices` run by name is the `wipe` command.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::events::CollectSink;
use agent::run::exec::{Host, LiveHost};
use proto::protocol::{Command, Report};
use proto::{AgentEvent, Phase};
use serde_json::{Value, json};

use crate::support::{LoopDev, MIB, lock};

fn live_host(scratch: &std::path::Path) -> LiveHost {
    LiveHost {
        boot_mac: None,
        scratch: scratch.to_path_buf(),
        early: Arc::new(Mutex::new(None)),
        ca_sha256: None,
        lldp_timeout: Duration::ZERO,
        controllers: vec![],
    }
}

fn run_step(step: &str, args: Value) -> (Report, CollectSink) {
    let scratch = tempfile::tempdir().expect("scratch");
    let sink = CollectSink::default();
    let command = Command::RunStep {
        interface: "deploy".into(),
        step: step.into(),
        args: args.as_object().cloned().expect("args object"),
    };
    let report = live_host(scratch.path()).execute(&command, &sink);
    (report, sink)
}

fn detail(r: &Report) -> &Value {
    match r {
        Report::Succeeded {
            detail: Some(d), ..
        } => d,
        other => panic!("the step did not succeed: {other:?}"),
    }
}

#[test]
fn scan_disks_reads_loop_devices_and_changes_nothing() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let rw = LoopDev::new(24 * MIB, 512, false);
    let ro = LoopDev::new(8 * MIB, 4096, true);
    rw.fill(0x5a);
    let devices = json!([rw.dev, ro.dev]);

    let (r, sink) = run_step("scan_disks", json!({ "devices": devices }));
    let d = detail(&r);
    assert_eq!(d["disks"][0]["device"], json!(rw.dev));
    assert_eq!(d["disks"][0]["bytes_read"], 24 * MIB);
    assert_eq!(d["disks"][1]["device"], json!(ro.dev));
    assert_eq!(
        d["disks"][1]["bytes_read"],
        8 * MIB,
        "read-only disks are scanned"
    );
    for disk in d["disks"].as_array().expect("disks") {
        assert!(disk["seconds"].as_f64().is_some(), "{disk}");
        assert!(disk["mib_per_s"].as_f64().is_some(), "{disk}");
    }
    let events = sink.events.lock().expect("events");
    let Some(AgentEvent::Progress(last)) = events.last() else {
        panic!("a last progress event: {events:?}")
    };
    assert_eq!(last.phase, Phase::Verify);
    assert_eq!(last.bytes_written, 32 * MIB as u64);
    assert!(rw.read_all().iter().all(|&b| b == 0x5a), "nothing written");

    // Bounded: a byte count that is not whole sectors, on a 4 KiB-sector disk too.
    let (r, _) = run_step(
        "scan_disks",
        json!({ "devices": devices, "max_bytes": MIB + 512 }),
    );
    let d = detail(&r);
    assert_eq!(d["disks"][0]["bytes_read"], MIB + 512);
    assert_eq!(d["disks"][1]["bytes_read"], MIB + 512);

    // A disk that is not there fails the step, naming it; the others are still scanned.
    let (r, _) = run_step(
        "scan_disks",
        json!({ "devices": [rw.dev, "/dev/ingot-no-such-disk"] }),
    );
    let Report::Failed { error } = r else {
        panic!("a missing disk fails the scan: {r:?}")
    };
    assert_eq!(error.message, "the surface scan failed on 1 of 2 disks");
    assert_eq!(
        error.causes,
        vec![
            "/dev/ingot-no-such-disk: cannot be opened: device /dev/ingot-no-such-disk does not \
             exist"
        ]
    );
}

#[test]
fn erase_devices_by_name_is_the_wipe_command() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let disk = LoopDev::new(16 * MIB, 512, false);
    disk.fill(0xee);
    let (r, sink) = run_step("erase_devices", json!({ "devices": [disk.dev] }));
    let d = detail(&r);
    assert_eq!(d["ok"], true);
    assert_eq!(d["disks"][0]["device"], json!(disk.dev));
    assert_eq!(d["disks"][0]["mode"], "secure");
    assert_eq!(
        d["disks"][0]["method"], "write_zeroes",
        "a loop device has no firmware erase: zeroes, as the wipe command does"
    );
    assert!(
        sink.events
            .lock()
            .expect("events")
            .iter()
            .any(|e| matches!(e, AgentEvent::WipeDone(_))),
        "the wipe's own events"
    );
    assert!(disk.read_all().iter().all(|&b| b == 0));
}
