//! `agent_command`: one answer body from the controller into the agent (the ramdisk trusts
//! the network only after the CA pin, but a pinned controller's bug must not crash it
//! either): the `proto` lookup and heartbeat answers as the agent's client decodes them, the
//! agent's protocol machine (`run::machine::step`) taken from lookup through heartbeat,
//! the command, its report and the halt, and what a deploy command is parsed into before any
//! disk is touched (checksum, root device hints against a fixed disk list, the config drive:
//! base64 or the `config-2` ISO built from its parts).
//!
//! Invariants: every decoded `proto` value survives a JSON round trip unchanged; a chosen
//! disk is one of the list.

use agent::hints;
use agent::image::checksum::Checksum;
use agent::run::exec::configdrive_bytes;
use agent::run::machine::{Action, Outcome, State, action, step};
use proto::Disk;
use proto::protocol::{Command, EventReport, HeartbeatResponse, LookupResponse, Report};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

fn disks() -> Vec<Disk> {
    let disk = |name: &str, size: u64, serial: &str| Disk {
        name: name.to_owned(),
        model: Some("QEMU HARDDISK".to_owned()),
        size,
        serial: Some(serial.to_owned()),
        wwn: Some(format!("0x5000{serial}")),
        by_path: Some(format!("pci-0000:00:1f.2-ata-{serial}")),
        logical_sector_size: 512,
        physical_sector_size: 4096,
        transport: Some("sata".to_owned()),
        ..Disk::default()
    };
    vec![
        disk("/dev/sda", 8 << 30, "1"),
        disk("/dev/sdb", 64 << 30, "2"),
        disk("/dev/nvme0n1", 512 << 30, "3"),
    ]
}

/// Decodes `data` as `T` and checks it round-trips.
fn decoded<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    data: &[u8],
) -> Option<T> {
    let v: T = serde_json::from_slice(data).ok()?;
    let json = serde_json::to_vec(&v).expect("a decoded value serializes");
    let back: T = serde_json::from_slice(&json).expect("our own JSON decodes");
    assert_eq!(back, v, "JSON round trip");
    Some(v)
}

fn deploy_parts(command: &Command) {
    let Command::Deploy(d) = command else {
        return;
    };
    let _ = d.checksum.parse::<Checksum>();
    let list = disks();
    if let Some(chosen) = hints::choose(&d.root_device_hints, &list) {
        assert!(list.iter().any(|x| x.name == chosen.name));
    }
    if let Some(cd) = &d.configdrive {
        let _ = configdrive_bytes(cd);
    }
}

/// Entry point.
pub fn run(data: &[u8]) {
    let lookup = decoded::<LookupResponse>(data);
    let heartbeat = decoded::<HeartbeatResponse>(data);
    let _ = decoded::<EventReport>(data);
    if let Some(hb) = &heartbeat {
        deploy_parts(&hb.command);
    }
    if let Some(c) = decoded::<Command>(data) {
        deploy_parts(&c);
    }

    let lookup = lookup.unwrap_or(LookupResponse {
        node_uuid: Uuid::from_u128(1),
        token: Some("token".to_owned()),
        discovered: false,
        heartbeat_timeout_secs: 30,
    });
    let heartbeat = heartbeat.unwrap_or(HeartbeatResponse {
        command_id: Uuid::from_u128(2),
        command: Command::Reboot,
    });
    let mut s = step(State::start(), Outcome::Lookup(Ok(lookup)));
    for _ in 0..6 {
        let outcome = match action(&s) {
            Action::Lookup { .. } => break,
            Action::Heartbeat { .. } => Outcome::Heartbeat(Ok(heartbeat.clone())),
            Action::Run { .. } => Outcome::Ran(Report::Succeeded {
                inventory: None,
                detail: None,
            }),
            Action::Report { .. } => Outcome::Reported(Ok(())),
            Action::Halt(_) => break,
        };
        s = step(s, outcome);
    }
}
