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
fn offered_steps_are_the_built_ins() {
    let got = serde_json::to_value(offered()).expect("json");
    let devices = json!({
        "description": "The disks to erase, as a list of /dev/... paths. Left out: every disk \
                        but virtual media and the boot medium.",
        "required": false
    });
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
                "argsinfo": {"devices": devices}
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
        assert!(e.message.contains("deploy.erase_devices"), "{}", e.message);
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
            "erase_devices",
            json!({"devices": "/dev/sda"}),
            "step deploy.erase_devices: argument `devices` must be a list of 1 to 64 /dev/... \
             paths: got the string \"/dev/sda\"",
        ),
        (
            "erase_devices",
            json!({"devices": ["/tmp/disk.img"]}),
            "step deploy.erase_devices: argument `devices` must be a list of 1 to 64 /dev/... \
             paths: \"/tmp/disk.img\" is not a /dev/... path",
        ),
        (
            "erase_devices",
            json!({"devices": ["/dev/sda"], "mode": "full"}),
            "step deploy.erase_devices: unknown argument `mode` (it takes devices)",
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
    let r = run_in(FAKE, "deploy", "erase_devices", &Map::new(), &sink);
    assert_eq!(
        failure(&r).message,
        "this agent does not offer step deploy.erase_devices (it offers deploy.fake)"
    );
    assert_eq!(
        *RAN.lock().expect("lock"),
        vec![
            (Some(vec!["/dev/vdb".to_owned()]), Some(8192)),
            (None, None)
        ]
    );
}
