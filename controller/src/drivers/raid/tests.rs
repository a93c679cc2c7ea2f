use proto::protocol::{Command, DeployCommand};
use proto::{RaidArray, RaidMember};
use serde_json::json;

use super::*;

fn doc(v: Value) -> JsonMap {
    v.as_object().cloned().unwrap_or_default()
}

#[test]
fn ironic_schema_rules() {
    let ok = |v: Value| (v, None::<&str>);
    let bad = |v: Value, why: &'static str| (v, Some(why));
    let cases = vec![
        ok(json!({"logical_disks": [{"raid_level": "1", "size_gb": 100}]})),
        ok(json!({"logical_disks": [
            {"raid_level": "5", "size_gb": "MAX", "volume_name": "v", "is_root_volume": true,
             "share_physical_disks": false, "disk_type": "ssd", "interface_type": "sas",
             "number_of_physical_disks": 3, "controller": "RAID.Integrated.1-1",
             "physical_disks": ["Disk.Bay.0", "Disk.Bay.1"]},
            {"raid_level": "JBOD", "size_gb": 0}]})),
        bad(json!({}), "'logical_disks' is a required property"),
        bad(
            json!({"logical_disks": [], "x": 1}),
            "Additional properties are not allowed ('x' was unexpected)",
        ),
        bad(json!({"logical_disks": {}}), "{} is not of type 'array'"),
        bad(json!({"logical_disks": []}), "[] is too short"),
        bad(json!({"logical_disks": [7]}), "7 is not of type 'object'"),
        bad(
            json!({"logical_disks": [{"size_gb": 1}]}),
            "'raid_level' is a required property",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1"}]}),
            "'size_gb' is a required property",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "7", "size_gb": 1}]}),
            "'7' is not one of ['JBOD', '0', '1', '2', '5', '6', '1+0', '5+0', '6+0']",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": -1}]}),
            "-1 is not valid under any of the given schemas",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": "max"}]}),
            "'max' is not valid under any of the given schemas",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 1, "colour": "red"}]}),
            "Additional properties are not allowed ('colour' was unexpected)",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 1, "disk_type": "nvme"}]}),
            "'nvme' is not one of ['hdd', 'ssd']",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 1, "is_root_volume": "yes"}]}),
            "'yes' is not of type 'boolean'",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 1, "number_of_physical_disks": 0}]}),
            "0 is less than or equal to the minimum of 0",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 1, "physical_disks": ["a"]}]}),
            "'controller' is a dependency of 'physical_disks'",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 1, "controller": "software",
                                      "physical_disks": [{"name": "/dev/sda"}]}]}),
            "is not valid under any of the given schemas",
        ),
        bad(
            json!({"logical_disks": [
                {"raid_level": "1", "size_gb": 1, "is_root_volume": true},
                {"raid_level": "0", "size_gb": 1, "is_root_volume": true}]}),
            "Raid config cannot have more than one root volume. 2 root volumes were specified",
        ),
    ];
    for (v, want) in cases {
        match (validate(&doc(v.clone())), want) {
            (Ok(()), None) => {}
            (Err(e), Some(w)) => assert!(e.contains(w), "{v}: {e}"),
            (got, want) => panic!("{v}: {got:?} instead of {want:?}"),
        }
    }
    let e = validate(&doc(json!({}))).expect_err("empty");
    assert!(e.starts_with("RAID config validation error: "), "{e}");
}

#[test]
fn software_raid_reduction() {
    let sw = |level: &str, size: Value| json!({"raid_level": level, "size_gb": size, "controller": "software"});
    let hints = json!([{"name": "/dev/vda"}, {"serial": "S2"}]);
    let named = |level: &str, size: Value| {
        let mut d = sw(level, size);
        d["physical_disks"] = hints.clone();
        d
    };
    let ok = |v: Value, want: SoftwareRaid| (v, Ok(want));
    let bad = |v: Value, why: &'static str| (v, Err(why));
    let vol = |level, size_gb, name: Option<&str>| RaidVolume {
        level,
        size_gb,
        name: name.map(str::to_owned),
    };
    let cases: Vec<(Value, Result<SoftwareRaid, &str>)> = vec![
        ok(
            json!({"logical_disks": [sw("1", json!("MAX"))]}),
            SoftwareRaid {
                disks: vec![],
                volumes: vec![vol(RaidLevel::Raid1, None, None)],
            },
        ),
        ok(
            json!({"logical_disks": [
                {"raid_level": "1", "size_gb": 20, "controller": "software", "volume_name": "root",
                 "is_root_volume": true, "physical_disks": hints},
                named("0", json!("MAX"))]}),
            SoftwareRaid {
                disks: vec![
                    RootDeviceHints {
                        name: Some("/dev/vda".into()),
                        ..Default::default()
                    },
                    RootDeviceHints {
                        serial: Some("S2".into()),
                        ..Default::default()
                    },
                ],
                volumes: vec![
                    vol(RaidLevel::Raid1, Some(20), Some("root")),
                    vol(RaidLevel::Raid0, None, None),
                ],
            },
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 10}]}),
            "controller unset",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 10, "controller": "RAID.1"}]}),
            "controller \"RAID.1\"",
        ),
        bad(
            json!({"logical_disks": [sw("1", json!(10)), sw("1+0", json!("MAX"))]}),
            "RAID level \"1+0\" is not supported by Ingot",
        ),
        bad(
            json!({"logical_disks": [sw("1", json!(10)), sw("5", json!("MAX"))]}),
            "not supported by Ingot",
        ),
        bad(
            json!({"logical_disks": [sw("0", json!(10))]}),
            "must be RAID-1",
        ),
        bad(
            json!({"logical_disks": [sw("1", json!(0))]}),
            "size_gb 0 is refused",
        ),
        bad(
            json!({"logical_disks": [sw("1", json!("MAX")), sw("1", json!("MAX"))]}),
            "only one",
        ),
        bad(
            json!({"logical_disks": [sw("1", json!(1)), sw("1", json!(1)), sw("0", json!(1))]}),
            "1 or 2 volumes",
        ),
        bad(
            json!({"logical_disks": [named("1", json!(10)), sw("0", json!("MAX"))]}),
            "same list on every logical disk",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 10, "controller": "software",
                                      "physical_disks": ["/dev/vda", "/dev/vdb"]}]}),
            "root device hints",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 10, "controller": "software",
                                      "physical_disks": [{"name": "a"}, {"speed": 1}]}]}),
            "invalid root device hints",
        ),
        bad(
            json!({"logical_disks": [sw("1", json!(1)),
                                     {"raid_level": "0", "size_gb": 1, "controller": "software",
                                      "is_root_volume": true}]}),
            "the first logical disk",
        ),
        bad(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 1, "controller": "software",
                                      "volume_name": "has space"}]}),
            "volume name",
        ),
    ];
    for (v, want) in cases {
        let d = doc(v.clone());
        match (software_raid(&d), want) {
            (Ok(got), Ok(w)) => assert_eq!(got, w, "{v}"),
            (Err(e), Err(w)) => assert!(e.contains(w), "{v}: {e}"),
            (got, want) => panic!("{v}: {got:?} instead of {want:?}"),
        }
    }
}

#[test]
fn each_raid_interface_judges_a_target() {
    let valid_hw = doc(json!({"logical_disks": [{"raid_level": "5", "size_gb": 100}]}));
    let valid_sw = doc(json!({"logical_disks": [
        {"raid_level": "1", "size_gb": "MAX", "controller": "software"}]}));
    let invalid = doc(json!({"logical_disks": []}));
    let unsupported = Refusal::Unsupported(
        "Driver ipmi does not support raid (disabled or not implemented).".into(),
    );
    assert_eq!(validate_for("no-raid", "ipmi", &valid_sw), Err(unsupported));
    assert_eq!(validate_for("no-raid", "ipmi", &JsonMap::new()), Ok(()));
    assert_eq!(validate_for("agent", "ipmi", &JsonMap::new()), Ok(()));
    assert_eq!(validate_for("fake", "fake-hardware", &valid_hw), Ok(()));
    assert!(matches!(
        validate_for("fake", "fake-hardware", &invalid),
        Err(Refusal::Invalid(_))
    ));
    assert_eq!(validate_for("agent", "ipmi", &valid_sw), Ok(()));
    match validate_for("agent", "ipmi", &valid_hw) {
        Err(Refusal::Invalid(e)) => assert!(e.contains("software"), "{e}"),
        other => panic!("{other:?}"),
    }
    match validate_for("agent", "ipmi", &invalid) {
        Err(Refusal::Invalid(e)) => assert!(e.starts_with("RAID config validation error"), "{e}"),
        other => panic!("{other:?}"),
    }
}

fn agent_node(target: Value) -> Node {
    let mut node = Node::new(uuid::Uuid::new_v4(), "ipmi", chrono::Utc::now());
    node.interfaces
        .insert("raid_interface".into(), "agent".into());
    node.target_raid_config = doc(target);
    node
}

#[test]
fn create_configuration_takes_its_plan_from_the_target() {
    let node = agent_node(json!({"logical_disks": [
        {"raid_level": "1", "size_gb": "MAX", "controller": "software"}]}));
    let step = CleanStep::new("raid", CREATE_STEP, 0);
    assert!(is_create(&step));
    let with = with_plan(&node, &step).expect("plan");
    assert_eq!(with.args["raid"], json!({"volumes": [{"level": "1"}]}));
    let mut asked = step.clone();
    asked.args.insert("raid".into(), json!({}));
    assert!(with_plan(&node, &asked).is_err());
    let empty = agent_node(json!({}));
    let e = with_plan(&empty, &step).expect_err("no target");
    assert_eq!(
        e.to_string(),
        format!("Node {} has no target RAID configuration.", empty.uuid)
    );
    // The deploy builds the target only on an `agent` RAID node with a target.
    assert!(deploy_plan(&node).expect("plan").is_some());
    assert!(deploy_plan(&empty).expect("no plan").is_none());
    let mut other = node.clone();
    other
        .interfaces
        .insert("raid_interface".into(), "no-raid".into());
    assert!(deploy_plan(&other).expect("no plan").is_none());
}

fn report() -> RaidReport {
    let member = |d: &str, p: &str| RaidMember {
        device: p.into(),
        disk: d.into(),
        serial: None,
        wwn: None,
    };
    RaidReport {
        arrays: vec![
            RaidArray {
                level: RaidLevel::Raid1,
                name: "root".into(),
                uuid: "a:b:c:d".into(),
                metadata: "1.0".into(),
                size_bytes: (20 << 30) + 123,
                members: vec![
                    member("/dev/vda", "/dev/vda1"),
                    member("/dev/vdb", "/dev/vdb1"),
                ],
                root: true,
            },
            RaidArray {
                level: RaidLevel::Raid0,
                name: "data".into(),
                uuid: "e:f:g:h".into(),
                metadata: "1.2".into(),
                size_bytes: (1 << 30) - 1,
                members: vec![
                    member("/dev/vda", "/dev/vda2"),
                    member("/dev/vdb", "/dev/vdb2"),
                ],
                root: false,
            },
        ],
    }
}

#[test]
fn a_report_renders_as_ironic_raid_config() {
    let got = raid_config_of(&report(), "2026-12-01 10:00:00.000001");
    assert_eq!(
        Value::Object(got),
        json!({
            "logical_disks": [
                {"raid_level": "1", "size_gb": 20, "controller": "software", "is_root_volume": true,
                 "volume_name": "root", "physical_disks": ["/dev/vda", "/dev/vdb"]},
                {"raid_level": "0", "size_gb": 0, "controller": "software", "is_root_volume": false,
                 "volume_name": "data", "physical_disks": ["/dev/vda", "/dev/vdb"]},
            ],
            "last_updated": "2026-12-01 10:00:00.000001",
        })
    );
}

#[test]
fn which_results_change_raid_config() {
    let now = "t";
    let report = serde_json::to_value(report()).expect("json");
    let run = |step: &str| Command::RunStep {
        interface: "raid".into(),
        step: step.into(),
        args: JsonMap::new(),
    };
    let created = config_after(&run(CREATE_STEP), Some(&report), now).expect("raid");
    assert_eq!(
        created.expect("ok")["logical_disks"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(
        config_after(&run(CREATE_STEP), Some(&json!({"x": 1})), now)
            .expect("raid")
            .is_err()
    );
    assert!(
        config_after(&run(CREATE_STEP), None, now)
            .expect("raid")
            .is_err()
    );
    assert_eq!(
        config_after(&run(DELETE_STEP), None, now),
        Some(Ok(JsonMap::new()))
    );
    let other = Command::RunStep {
        interface: "deploy".into(),
        step: CREATE_STEP.into(),
        args: JsonMap::new(),
    };
    assert_eq!(config_after(&other, None, now), None);
    let wipe = |devices: Vec<String>| Command::Wipe {
        mode: proto::WipeMode::Metadata,
        devices,
    };
    assert_eq!(
        config_after(&wipe(vec![]), None, now),
        Some(Ok(JsonMap::new()))
    );
    assert_eq!(
        config_after(&wipe(vec!["/dev/vdb".into()]), None, now),
        None
    );
    let deploy = |raid: Option<SoftwareRaid>| {
        Command::Deploy(Box::new(DeployCommand {
            image_url: "http://x/i".into(),
            checksum: "sha256:00".into(),
            root_device_hints: RootDeviceHints::default(),
            configdrive: None,
            min_disk_bytes: None,
            software_raid: raid,
        }))
    };
    assert_eq!(
        config_after(&deploy(None), Some(&json!({"raid": report})), now),
        None
    );
    let plan = SoftwareRaid {
        disks: vec![],
        volumes: vec![RaidVolume {
            level: RaidLevel::Raid1,
            size_gb: None,
            name: None,
        }],
    };
    assert!(
        config_after(
            &deploy(Some(plan.clone())),
            Some(&json!({"raid": report})),
            now
        )
        .expect("raid")
        .is_ok()
    );
    assert!(
        config_after(
            &deploy(Some(plan)),
            Some(&json!({"device": "/dev/md0"})),
            now
        )
        .expect("raid")
        .is_err()
    );
}

#[test]
fn a_raid_deploy_records_every_member_disk_as_the_instance() {
    let plain = json!({"device": "/dev/vda"});
    assert_eq!(written_disks(&plain), Some(json!("/dev/vda")));
    let raid = json!({"device": "md:root", "raid": {"arrays": [
        {"members": [{"device": "/dev/vda3", "disk": "/dev/vda"},
                     {"device": "/dev/vdb3", "disk": "/dev/vdb"}]},
        {"members": [{"device": "/dev/vda4", "disk": "/dev/vda"},
                     {"device": "/dev/vdb4", "disk": "/dev/vdb"}]}
    ]}});
    assert_eq!(written_disks(&raid), Some(json!(["/dev/vda", "/dev/vdb"])));
    assert_eq!(written_disks(&json!({})), None);
}
