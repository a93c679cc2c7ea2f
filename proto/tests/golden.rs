//! Golden JSON tests: every wire type is serialized and compared with a checked-in
//! file in `tests/output/`, then parsed back. Run with `EXPECTORATE=overwrite` to
//! update the files after an intended wire change.

use std::path::PathBuf;

use proto::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(name: &str, value: &T) {
    let text = serde_json::to_string_pretty(value).expect("serializable") + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/output/{name}.json"));
    if std::env::var("EXPECTORATE").as_deref() == Ok("overwrite") {
        std::fs::write(&path, &text).expect("writing golden file");
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (run with EXPECTORATE=overwrite)",
            path.display()
        )
    });
    assert_eq!(golden, text, "{name} differs from its golden file");
    let back: T = serde_json::from_str(&golden).expect("golden parses back");
    assert_eq!(&back, value);
}

fn sample_inventory() -> Inventory {
    Inventory {
        interfaces: vec![Interface {
            name: "eth0".into(),
            mac_address: "52:54:00:12:34:56".into(),
            ipv4_address: Some("192.0.2.10".into()),
            ipv6_address: None,
            has_carrier: true,
            speed_mbps: Some(1000),
            vendor: Some("0x1af4".into()),
            product: Some("0x1000".into()),
            driver: Some("virtio_net".into()),
            pci_address: Some("0000:00:03.0".into()),
            addresses: vec!["192.0.2.10/24".into()],
            lldp: None,
        }],
        cpu: Cpu {
            model_name: "QEMU Virtual CPU version 2.5+".into(),
            frequency: Some("2400".into()),
            count: 2,
            socket_count: 1,
            architecture: "x86_64".into(),
            flags: vec!["fpu".into(), "sse2".into()],
        },
        memory: Memory {
            total: 2_147_483_648,
            physical_mb: Some(2048),
        },
        disks: vec![Disk {
            name: "/dev/nvme0n1".into(),
            model: Some("Samsung SSD 980 PRO 1TB".into()),
            vendor: None,
            size: 1_000_204_886_016,
            rotational: false,
            serial: Some("S5GXNX0R123456".into()),
            wwn: Some("eui.002538b111b2c3d4".into()),
            hctl: None,
            by_path: Some("/dev/disk/by-path/pci-0000:01:00.0-nvme-1".into()),
            logical_sector_size: 512,
            physical_sector_size: 512,
            transport: Some("nvme".into()),
            read_only: false,
            removable: false,
        }],
        system_vendor: SystemVendor {
            product_name: Some("Standard PC (Q35 + ICH9, 2009)".into()),
            serial_number: Some("SN-1".into()),
            manufacturer: Some("QEMU".into()),
            uuid: Some("2b7e1516-28ae-4d2a-8f0e-1f2e3d4c5b6a".into()),
            sku: None,
            firmware: Some(Firmware {
                vendor: Some("SeaBIOS".into()),
                version: Some("1.16.2-debian-1.16.2-1".into()),
                build_date: Some("04/01/2014".into()),
            }),
        },
        boot: Boot {
            current_boot_mode: BootMode::Uefi,
            pxe_interface: None,
            secure_boot: Some(false),
        },
        bmc_address: None,
        baseboard: Some(Baseboard {
            manufacturer: Some("QEMU".into()),
            product: None,
            version: None,
            serial_number: None,
        }),
        chassis: Some(Chassis {
            manufacturer: Some("QEMU".into()),
            chassis_type: Some(1),
            serial_number: None,
            asset_tag: None,
        }),
        hostname: Some("localhost".into()),
        pci_devices: vec![proto::PciDevice {
            bus: "0000:00:03.0".into(),
            vendor_id: "1af4".into(),
            product_id: "1000".into(),
            class: Some("020000".into()),
            revision: Some("00".into()),
            kind: "nic".into(),
            driver: Some("virtio-pci".into()),
            numa_node: Some(0),
        }],
        numa_topology: Some(proto::NumaTopology {
            ram: vec![proto::NumaRam {
                numa_node: 0,
                size_kb: 2_097_152,
            }],
            cpus: vec![proto::NumaCpu {
                cpu: 0,
                numa_node: 0,
                thread_siblings: vec![0, 1],
            }],
            nics: vec![proto::NumaNic {
                name: "eth0".into(),
                numa_node: 0,
            }],
        }),
    }
}

#[test]
fn inventory_golden() {
    check("inventory", &sample_inventory());
}

#[test]
fn root_device_hints_golden() {
    let hints = RootDeviceHints {
        serial: Some("S5GXNX0R123456".into()),
        size: Some(SizeHint {
            op: SizeOp::Ge,
            gib: 100,
        }),
        rotational: Some(false),
        ..Default::default()
    };
    check("root_device_hints", &hints);
    let from_int: RootDeviceHints = serde_json::from_str(r#"{"size": 240}"#).expect("int size");
    assert_eq!(
        from_int.size,
        Some(SizeHint {
            op: SizeOp::Eq,
            gib: 240
        })
    );
    assert!(serde_json::from_str::<RootDeviceHints>(r#"{"size": "about 3"}"#).is_err());
    assert!(serde_json::from_str::<RootDeviceHints>(r#"{"colour": "red"}"#).is_err());
}

#[test]
fn events_golden() {
    let events = vec![
        AgentEvent::Progress(ProgressEvent {
            phase: Phase::Stream,
            bytes_fetched: 1_048_576,
            bytes_written: 4_194_304,
            bytes_total: Some(16_777_216),
            rate_bps: 524_288_000,
            elapsed_ms: 8,
        }),
        AgentEvent::PhaseDone(PhaseTiming {
            phase: Phase::WriteHead,
            ms: 3,
        }),
        AgentEvent::WriteImageDone(WriteImageResult {
            device: "/dev/loop0".into(),
            format: "zstd".into(),
            checksum: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                .into(),
            bytes_fetched: 1_048_576,
            bytes_written: 67_108_864,
            retries: 1,
            elapsed_ms: 120,
            rate_bps: 559_240_533,
            timings: vec![PhaseTiming {
                phase: Phase::Stream,
                ms: 110,
            }],
            configdrive_offset: None,
            raid: None,
        }),
        AgentEvent::WriteImageDone(WriteImageResult {
            device: "/dev/md/root".into(),
            format: "raw".into(),
            checksum: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                .into(),
            bytes_fetched: 1_048_576,
            bytes_written: 1_048_576,
            retries: 0,
            elapsed_ms: 120,
            rate_bps: 8_738_133,
            timings: vec![],
            configdrive_offset: Some(2_080_374_784),
            raid: Some(RaidReport {
                arrays: vec![RaidArray {
                    level: RaidLevel::Raid1,
                    name: "root".into(),
                    uuid: "3f2a9c41:0b1e5d27:9c4f6a80:12d3e4f5".into(),
                    metadata: "1.0".into(),
                    size_bytes: 2_013_265_920,
                    members: vec![
                        RaidMember {
                            device: "/dev/vda3".into(),
                            disk: "/dev/vda".into(),
                            serial: Some("S5GXNX0R123456".into()),
                            wwn: None,
                        },
                        RaidMember {
                            device: "/dev/vdb3".into(),
                            disk: "/dev/vdb".into(),
                            serial: Some("S5GXNX0R654321".into()),
                            wwn: Some("0x5002538e40a1b2c3".into()),
                        },
                    ],
                    root: true,
                }],
            }),
        }),
        AgentEvent::WipeDone(WipeReport {
            ok: false,
            disks: vec![
                WipeDiskResult {
                    device: "/dev/sda".into(),
                    mode: WipeMode::Metadata,
                    ok: true,
                    method: Some("signatures".into()),
                    cleared: vec!["ext4@1080".into()],
                    skipped: None,
                    error: None,
                    elapsed_ms: 12,
                    id: DiskId {
                        serial: Some("S3EVNX0K123456".into()),
                        wwn: None,
                        by_path: Some("pci-0000:00:1f.2-ata-1".into()),
                        size: Some(480_103_981_056),
                    },
                },
                WipeDiskResult {
                    device: "/dev/sdb".into(),
                    mode: WipeMode::Metadata,
                    ok: false,
                    method: None,
                    cleared: vec![],
                    skipped: None,
                    error: Some("device is read-only".into()),
                    elapsed_ms: 0,
                    id: Default::default(),
                },
            ],
        }),
        AgentEvent::Failed(ErrorReport {
            phase: Some(Phase::Stream),
            message: "checksum mismatch".into(),
            causes: vec![],
        }),
    ];
    check("events", &events);
}

/// The token is handed out once per agent boot: the first lookup carries it, a later one
/// says `null` (the agent keeps its token).
#[test]
fn lookup_responses_golden() {
    use proto::protocol::LookupResponse;
    let node_uuid = uuid::Uuid::from_u128(0x6a3f_0c1e_2b4d_4e5f_8a9b_0c1d_2e3f_4a5b);
    let answers = vec![
        LookupResponse {
            node_uuid,
            token: Some("4f1c".repeat(16)),
            discovered: false,
            heartbeat_timeout_secs: 30,
        },
        LookupResponse {
            node_uuid,
            token: None,
            discovered: false,
            heartbeat_timeout_secs: 30,
        },
    ];
    check("lookup_responses", &answers);
    let later: serde_json::Value = serde_json::to_value(&answers[1]).expect("json");
    assert_eq!(later["token"], serde_json::Value::Null);
}

fn node() -> uuid::Uuid {
    uuid::Uuid::from_u128(0x6a3f_0c1e_2b4d_4e5f_8a9b_0c1d_2e3f_4a5b)
}

fn command_id() -> uuid::Uuid {
    uuid::Uuid::from_u128(0x1d2c_3b4a_5968_4776_8584_9392_a1b0_cfde)
}

#[test]
fn lookup_request_golden() {
    use proto::protocol::LookupRequest;
    let req = LookupRequest {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "0.1.0".into(),
        macs: vec!["52:54:00:12:34:56".into(), "52:54:00:12:34:57".into()],
        boot_mac: Some("52:54:00:12:34:56".into()),
        system_uuid: Some("2b7e1516-28ae-4d2a-8f0e-1f2e3d4c5b6a".into()),
        system_serial: Some("SN-1".into()),
        inventory: sample_inventory(),
        steps: vec![proto::protocol::AgentStep {
            interface: "deploy".into(),
            step: "scan_disks".into(),
            clean_priority: Some(0),
            deploy_priority: None,
            service: true,
            abortable: false,
            argsinfo: [(
                "devices".to_owned(),
                proto::protocol::StepArg {
                    description: "the disks to scan (every disk when absent)".into(),
                    required: false,
                },
            )]
            .into_iter()
            .collect(),
        }],
    };
    proto::protocol::check_agent_steps(&req.steps).expect("valid steps");
    check("lookup_request", &req);
}

/// One value of every [`Command`] variant (a deploy for each config drive kind). The match
/// makes a new variant a compile error here until it has a golden value.
fn every_command() -> Vec<proto::protocol::Command> {
    use proto::protocol::{Command, ConfigDrive, DeployCommand};
    let deploy = |configdrive| {
        Command::Deploy(Box::new(DeployCommand {
            image_url: "https://192.0.2.1:8443/images/debian-12.raw.zst?node=n&expires=1&sig=s"
                .into(),
            checksum: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                .into(),
            root_device_hints: RootDeviceHints {
                serial: Some("S5GXNX0R123456".into()),
                ..Default::default()
            },
            configdrive,
            min_disk_bytes: Some(10_737_418_240),
            software_raid: None,
        }))
    };
    let raid_deploy = Command::Deploy(Box::new(DeployCommand {
        image_url: "https://192.0.2.1:8443/images/debian-12.raw.zst?node=n&expires=1&sig=s".into(),
        checksum: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        root_device_hints: RootDeviceHints::default(),
        configdrive: None,
        min_disk_bytes: None,
        software_raid: Some(SoftwareRaid {
            disks: vec![
                RootDeviceHints {
                    name: Some("/dev/vda".into()),
                    ..Default::default()
                },
                RootDeviceHints {
                    serial: Some("S5GXNX0R654321".into()),
                    ..Default::default()
                },
            ],
            volumes: vec![
                RaidVolume {
                    level: RaidLevel::Raid1,
                    size_gb: Some(100),
                    name: Some("root".into()),
                },
                RaidVolume {
                    level: RaidLevel::Raid0,
                    size_gb: None,
                    name: None,
                },
            ],
        }),
    }));
    let commands = vec![
        Command::Wait { seconds: 5 },
        Command::Inspect,
        Command::Wipe {
            mode: WipeMode::Metadata,
            devices: vec!["/dev/sda".into()],
        },
        deploy(Some(ConfigDrive::Parts {
            meta_data: serde_json::json!({"uuid": "u-1", "hostname": "web-1"}),
            user_data: Some("#cloud-config\n".into()),
            network_data: None,
            vendor_data: None,
        })),
        deploy(Some(ConfigDrive::GzipBase64 {
            data: "H4sIAAAAAAAA/wMAAAAAAAAAAAA=".into(),
        })),
        deploy(None),
        raid_deploy,
        Command::Reboot,
        Command::PowerOff,
        Command::EnrollBmc {
            user: "ingot".into(),
        },
        Command::RunStep {
            interface: "deploy".into(),
            step: "scan_disks".into(),
            args: serde_json::json!({"devices": ["/dev/sda"]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        },
    ];
    for c in &commands {
        match c {
            Command::Wait { .. }
            | Command::Inspect
            | Command::Wipe { .. }
            | Command::Deploy(_)
            | Command::Reboot
            | Command::PowerOff
            | Command::EnrollBmc { .. }
            | Command::RunStep { .. } => {}
        }
    }
    commands
}

#[test]
fn commands_golden() {
    check("commands", &every_command());
}

#[test]
fn heartbeats_golden() {
    use proto::protocol::{AgentState, HeartbeatRequest, HeartbeatResponse};
    let requests = vec![
        HeartbeatRequest {
            node_uuid: node(),
            state: AgentState::Idle,
        },
        HeartbeatRequest {
            node_uuid: node(),
            state: AgentState::Busy {
                command_id: command_id(),
            },
        },
    ];
    check("heartbeat_requests", &requests);
    let responses: Vec<HeartbeatResponse> = every_command()
        .into_iter()
        .map(|command| HeartbeatResponse {
            command_id: command_id(),
            command,
        })
        .take(3)
        .collect();
    check("heartbeat_responses", &responses);
}

#[test]
fn reports_golden() {
    use proto::protocol::{EventReport, Report};
    let report = |report| EventReport {
        node_uuid: node(),
        command_id: command_id(),
        report,
    };
    let reports = vec![
        report(Report::Event {
            event: AgentEvent::PhaseDone(PhaseTiming {
                phase: Phase::WriteHead,
                ms: 3,
            }),
        }),
        report(Report::Succeeded {
            inventory: Some(Box::new(sample_inventory())),
            detail: None,
        }),
        report(Report::Succeeded {
            inventory: None,
            detail: Some(serde_json::json!({"device": "/dev/sda", "bytes_written": 67_108_864})),
        }),
        report(Report::Failed {
            error: ErrorReport {
                phase: Some(Phase::Stream),
                message: "checksum mismatch".into(),
                causes: vec!["expected sha256:9f86, got sha256:e3b0".into()],
            },
        }),
    ];
    check("reports", &reports);
}

/// The result document of `enroll_bmc`, with and without what the BMC may not say.
#[test]
fn bmc_enrolled_golden() {
    use proto::protocol::BmcEnrolled;
    let enrolled = vec![
        BmcEnrolled {
            bmc_address: Some("10.11.12.13".into()),
            bmc_mac: Some("52:54:00:aa:bb:cc".into()),
            channel: 1,
            user_id: 3,
            username: "ingot".into(),
            password: "Q7rXk2mPz9LcW4tB".into(),
        },
        BmcEnrolled {
            bmc_address: None,
            bmc_mac: None,
            channel: 8,
            user_id: 10,
            username: "ingot".into(),
            password: "h3NwT8vRq1ZyB6pK".into(),
        },
    ];
    check("bmc_enrolled", &enrolled);
}

#[test]
fn protocol_version_is_two() {
    // A change to the wire shapes above bumps it (and this line).
    assert_eq!(PROTOCOL_VERSION, 2);
}

#[test]
fn disks_are_matched_by_identity_not_name() {
    let id = |serial: Option<&str>, wwn: Option<&str>, path: Option<&str>| DiskId {
        serial: serial.map(Into::into),
        wwn: wwn.map(Into::into),
        by_path: path.map(Into::into),
        size: None,
    };
    let cases = [
        // WWN decides when both have one, even if the serials differ.
        (
            id(Some("A"), Some("0x5000"), None),
            id(Some("B"), Some("0X5000"), None),
            true,
        ),
        (
            id(Some("A"), Some("0x5000"), None),
            id(Some("A"), Some("0x5001"), None),
            false,
        ),
        // Else the serial, else the by-path name.
        (
            id(Some("A"), None, Some("p1")),
            id(Some("A"), Some("0x1"), Some("p2")),
            true,
        ),
        (id(Some("A"), None, None), id(Some("B"), None, None), false),
        (
            id(None, None, Some("p1")),
            id(Some("A"), None, Some("p1")),
            true,
        ),
        // Nothing in common: never the same disk.
        (id(Some("A"), None, None), id(None, None, Some("p1")), false),
        (id(None, None, None), id(None, None, None), false),
    ];
    for (a, b, want) in cases {
        assert_eq!(a.same_disk(&b), want, "{a:?} vs {b:?}");
        assert_eq!(b.same_disk(&a), want, "{b:?} vs {a:?}");
    }
    assert!(id(None, None, None).is_anonymous());
    assert_eq!(
        id(Some("A"), None, Some("p1")).describe(),
        "serial A, by-path p1"
    );
}

#[test]
fn virtual_media_is_told_by_driver_and_transport() {
    let disk = |name: &str, transport: Option<&str>, removable: bool, model: &str| Disk {
        name: name.into(),
        transport: transport.map(Into::into),
        removable,
        model: Some(model.into()),
        ..Default::default()
    };
    let cases = [
        (disk("/dev/sr0", Some("usb"), true, "Virtual CDROM"), true),
        (disk("/dev/sr1", Some("sata"), true, "DVD-ROM"), true),
        (disk("/dev/sdb", Some("usb"), true, "Virtual Floppy"), true),
        // A word in the model string is not enough.
        (disk("/dev/sda", Some("sata"), false, "Virtual Disk"), false),
        (disk("/dev/sdc", Some("usb"), false, "USB SSD"), false),
        (disk("/dev/srx", None, true, ""), false),
        (disk("/dev/nvme0n1", Some("nvme"), false, "Samsung"), false),
    ];
    for (d, want) in cases {
        assert_eq!(d.is_virtual_media(), want, "{}", d.name);
    }
}
