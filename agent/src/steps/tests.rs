//! The registry: what the lookup reports, and how `RunStep` is dispatched and refused.

use std::sync::Mutex;

use proto::protocol::check_agent_steps;
use serde_json::{Value, json};

use super::*;
use crate::events::CollectSink;

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn failure(r: &Report) -> &ErrorReport {
    match r {
        Report::Failed { error } => error,
        other => panic!("not a failure: {other:?}"),
    }
}

#[test]
fn offered_steps_pass_the_controllers_check() {
    let steps = offered();
    check_agent_steps(&steps).expect("the controller accepts what the agent offers");
    assert_eq!(steps.len(), STEPS.len());
}

/// What the controller engineer relies on, spelled out: a change here is a change in what
/// every node offers.
#[test]
fn offered_steps_are_the_built_ins_and_scan_disks() {
    let got = serde_json::to_value(offered()).expect("json");
    let devices = |what: &str, extra: &str| {
        json!({
            "description": format!(
                "The disks to {what}, as a list of /dev/... paths. Left out: every disk but \
                 virtual media and the boot medium{extra}."
            ),
            "required": false
        })
    };
    assert_eq!(
        got,
        json!([
            {
                "interface": "deploy",
                "step": "erase_devices_metadata",
                "clean_priority": 99,
                "deploy_priority": 0,
                "service": false,
                "abortable": false
            },
            {
                "interface": "deploy",
                "step": "erase_devices",
                "clean_priority": 0,
                "service": true,
                "abortable": false,
                "argsinfo": {"devices": devices("erase", "")}
            },
            {
                "interface": "deploy",
                "step": "scan_disks",
                "clean_priority": 0,
                "service": true,
                "abortable": true,
                "argsinfo": {
                    "devices": devices("scan", " (read-only disks included)"),
                    "max_bytes": {
                        "description": "Read at most this many bytes from the start of each \
                                        disk (a whole number above 0), to bound the time the \
                                        scan takes. Left out: whole disks.",
                        "required": false
                    }
                }
            }
        ])
    );
}

#[test]
fn unknown_steps_are_refused_naming_them() {
    let sink = CollectSink::default();
    for (interface, step) in [
        ("deploy", "erase_everything"),
        ("raid", "scan_disks"),
        ("", ""),
    ] {
        let r = run(interface, step, &Map::new(), &sink);
        let e = failure(&r);
        assert!(
            e.message.starts_with(&format!(
                "this agent does not offer step {interface}.{step} (it offers "
            )),
            "{}",
            e.message
        );
        assert!(e.message.contains("deploy.scan_disks"), "{}", e.message);
    }
    let long = "x".repeat(10_000);
    let r = run(&long, "s", &Map::new(), &sink);
    assert!(
        failure(&r).message.len() < 400,
        "a name the controller sent is shortened"
    );
    assert!(sink.events.lock().expect("lock").is_empty());
}

/// Bad arguments are refused before the step's code runs (so no disk is touched here).
#[test]
fn bad_arguments_are_refused_before_anything_runs() {
    let sink = CollectSink::default();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "scan_disks",
            json!({"devices": "/dev/sda"}),
            "step deploy.scan_disks: argument `devices` must be a list of 1 to 64 /dev/... \
             paths: got the string \"/dev/sda\"",
        ),
        (
            "scan_disks",
            json!({"devices": ["/tmp/disk.img"]}),
            "step deploy.scan_disks: argument `devices` must be a list of 1 to 64 /dev/... \
             paths: \"/tmp/disk.img\" is not a /dev/... path",
        ),
        (
            "scan_disks",
            json!({"max_bytes": 0}),
            "step deploy.scan_disks: argument `max_bytes` must be a whole number above 0, not 0",
        ),
        (
            "scan_disks",
            json!({"max_bytes": -1}),
            "step deploy.scan_disks: argument `max_bytes` must be a whole number above 0, not -1",
        ),
        (
            "scan_disks",
            json!({"max_bytes": "lots"}),
            "step deploy.scan_disks: argument `max_bytes` must be a whole number above 0, not \
             the string \"lots\"",
        ),
        (
            "scan_disks",
            json!({"max_bytes": 4096, "verify": true}),
            "step deploy.scan_disks: unknown argument `verify` (it takes devices, max_bytes)",
        ),
        (
            "erase_devices",
            json!({"devices": []}),
            "step deploy.erase_devices: argument `devices` must be a list of 1 to 64 /dev/... \
             paths: the list is empty (leave the argument out for the default)",
        ),
        (
            "erase_devices_metadata",
            json!({"devices": ["/dev/sda"]}),
            "step deploy.erase_devices_metadata: unknown argument `devices` (the step takes \
             none)",
        ),
    ];
    for (step, args, want) in cases {
        let r = run("deploy", step, &map(args.clone()), &sink);
        assert_eq!(failure(&r).message, want, "{step} {args}");
    }
    assert!(
        sink.events.lock().expect("lock").is_empty(),
        "nothing ran, so nothing was reported"
    );
}

/// The devices and byte bound each run of the fake step was given.
type Ran = (Option<Vec<String>>, Option<u64>);

static RAN: Mutex<Vec<Ran>> = Mutex::new(Vec::new());

fn record(args: &Args, _sink: &dyn EventSink) -> Report {
    RAN.lock().expect("lock").push((
        args.devices("devices").map(<[String]>::to_vec),
        args.positive_int("max_bytes"),
    ));
    Report::Succeeded {
        inventory: None,
        detail: Some(json!("ran")),
    }
}

const FAKE: &[StepDef] = &[StepDef {
    interface: "deploy",
    step: "fake",
    clean_priority: Some(0),
    deploy_priority: None,
    service: false,
    abortable: true,
    args: &[
        ArgDef {
            name: "devices",
            description: "disks",
            required: false,
            kind: ArgKind::Devices,
        },
        ArgDef {
            name: "max_bytes",
            description: "bound",
            required: false,
            kind: ArgKind::PositiveInt,
        },
    ],
    run: record,
}];

#[test]
fn run_step_calls_the_named_step_with_its_checked_arguments() {
    let sink = CollectSink::default();
    let r = run_in(
        FAKE,
        "deploy",
        "fake",
        &map(json!({"devices": ["/dev/vdb"], "max_bytes": 8192})),
        &sink,
    );
    assert_eq!(
        r,
        Report::Succeeded {
            inventory: None,
            detail: Some(json!("ran"))
        }
    );
    let r = run_in(FAKE, "deploy", "fake", &Map::new(), &sink);
    assert!(matches!(r, Report::Succeeded { .. }));
    let r = run_in(FAKE, "deploy", "scan_disks", &Map::new(), &sink);
    assert_eq!(
        failure(&r).message,
        "this agent does not offer step deploy.scan_disks (it offers deploy.fake)"
    );
    assert_eq!(
        *RAN.lock().expect("lock"),
        vec![
            (Some(vec!["/dev/vdb".to_owned()]), Some(8192)),
            (None, None)
        ]
    );
}
