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
fn offered_steps_are_the_built_ins_scan_disks_and_raid() {
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
            },
            {
                "interface": "raid",
                "step": "create_configuration",
                "clean_priority": 0,
                "service": false,
                "abortable": false,
                "argsinfo": {
                    "raid": {
                        "description": "The software RAID to build: {\"volumes\": [{\"level\": \
                                        \"1\", \"size_gb\": N or left out for MAX, \"name\": \
                                        ...}, ...], \"disks\": [root device hints, one set per \
                                        member]}; the first volume holds the root file system \
                                        and is RAID-1. Disks left out: every disk but read-only, \
                                        removable and virtual media and the boot medium.",
                        "required": true
                    }
                }
            },
            {
                "interface": "raid",
                "step": "delete_configuration",
                "clean_priority": 0,
                "service": false,
                "abortable": false
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

/// The RAID steps refuse a bad plan before any disk is looked at.
#[test]
fn raid_plans_are_checked_before_anything_runs() {
    let sink = CollectSink::default();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "create_configuration",
            json!({}),
            "step raid.create_configuration: argument `raid` is required",
        ),
        (
            "create_configuration",
            json!({"raid": "RAID-1 please"}),
            "step raid.create_configuration: argument `raid` must be a software RAID plan \
             ({\"volumes\": [...], \"disks\": [...]}): got the string \"RAID-1 please\"",
        ),
        (
            "create_configuration",
            json!({"raid": {"volumes": [{"level": "0"}]}}),
            "first software RAID volume holds the root file system and must be RAID-1",
        ),
        (
            "create_configuration",
            json!({"raid": {"volumes": [{"level": "5"}]}}),
            "unknown variant `5`, expected `0` or `1`",
        ),
        (
            "create_configuration",
            json!({"raid": {"volumes": [{"level": "1"}], "controller": "software"}}),
            "unknown field `controller`",
        ),
        (
            "create_configuration",
            json!({"raid": {"volumes": [{"level": "1"}], "disks": [{"serial": "A"}]}}),
            "software RAID needs at least 2 member disks, 1 named",
        ),
        (
            "create_configuration",
            json!({"raid": {"volumes": []}}),
            "software RAID has 1 or 2 volumes, not 0",
        ),
        (
            "delete_configuration",
            json!({"raid": {"volumes": [{"level": "1"}]}}),
            "step raid.delete_configuration: unknown argument `raid` (the step takes none)",
        ),
    ];
    for (step, args, want) in cases {
        let r = run("raid", step, &map(args.clone()), &sink);
        let m = &failure(&r).message;
        assert!(m.contains(want), "{step} {args}: {m}");
    }
    assert!(sink.events.lock().expect("lock").is_empty());
}

/// Members that cannot be resolved fail the step naming the hint, before any disk is
/// written.
#[test]
fn raid_member_errors_are_surfaced() {
    let t = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(t.path().join("sys/block")).expect("mkdir");
    let plan = |v: Value| -> proto::SoftwareRaid { serde_json::from_value(v).expect("plan") };
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"volumes": [{"level": "1"}], "disks": [{"serial": "A"}, {"serial": "B"}]}),
            r#"software RAID member hint {"serial":"A"} matches no disk"#,
        ),
        (
            json!({"volumes": [{"level": "1"}]}),
            "software RAID needs at least 2 member disks; 0 eligible",
        ),
        (
            json!({"volumes": [{"level": "1", "name": "x"}, {"level": "0", "name": "x"}]}),
            "both software RAID volumes are named x",
        ),
    ];
    for (v, want) in cases {
        let e = super::raid::create(t.path(), &plan(v.clone())).expect_err("refused");
        assert!(e.to_string().contains(want), "{v}: {e}");
    }
}
