//! Running the controller's commands on this machine: `inspect`, `wipe`, `deploy`,
//! `enroll_bmc` and `run_step` with the existing inventory, wipe, image, config drive, BMC
//! and step code (`crate::steps`). Blocking; the driver calls it on a blocking thread. Also
//! builds the lookup request, which lists the steps this agent offers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use proto::protocol::{Command, ConfigDrive, DeployCommand, LookupRequest, Report};
use proto::{AgentEvent, ErrorReport, Inventory};

use crate::events::EventSink;
use crate::failed;
use crate::image::fetch::FetchOptions;
use crate::image::{WriteImageOptions, write_image};

/// What the command loop needs from the machine.
pub trait Host: Send + Sync + 'static {
    /// Inventory and identity for a lookup.
    fn lookup_request(&self) -> LookupRequest;
    /// Runs `inspect`, `wipe`, `deploy`, `enroll_bmc` or `run_step` to its final report;
    /// events go to `sink`.
    fn execute(&self, command: &Command, sink: &dyn EventSink) -> Report;
}

/// The real machine.
#[derive(Debug, Clone)]
pub struct LiveHost {
    /// The boot MAC from the kernel command line.
    pub boot_mac: Option<String>,
    /// Where config drives are staged.
    pub scratch: PathBuf,
    /// An inventory collected ahead (by PID 1 while DHCP runs); the first lookup uses it
    /// with fresh addresses.
    pub early: std::sync::Arc<std::sync::Mutex<Option<Inventory>>>,
    /// `ingot.ca=`: the image fetcher pins the same CA as the controller client.
    pub ca_sha256: Option<[u8; 32]>,
    /// How long inspection listens for LLDP on NICs with a carrier.
    pub lldp_timeout: Duration,
    /// The controllers' base URLs (`ingot.url=`): an image one of them serves is fetched
    /// from the others when it stops answering.
    pub controllers: Vec<String>,
}

/// The lookup request for an inventory.
pub fn lookup_request(inv: Inventory, boot_mac: Option<String>) -> LookupRequest {
    let mut macs: Vec<String> = inv
        .interfaces
        .iter()
        .map(|i| i.mac_address.to_ascii_lowercase())
        .filter(|m| m != "00:00:00:00:00:00" && !m.is_empty())
        .collect();
    macs.sort();
    macs.dedup();
    LookupRequest {
        protocol_version: proto::PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        macs,
        boot_mac,
        system_uuid: inv.system_vendor.uuid.clone(),
        system_serial: inv.system_vendor.serial_number.clone(),
        inventory: inv,
        steps: crate::steps::offered(),
    }
}

impl Host for LiveHost {
    fn lookup_request(&self) -> LookupRequest {
        let early = self.early.lock().ok().and_then(|mut e| e.take());
        let inv = match early {
            Some(mut inv) => {
                crate::inventory::refresh_live(&mut inv);
                inv
            }
            None => crate::inventory::collect_live(),
        };
        lookup_request(inv, self.boot_mac.clone())
    }

    fn execute(&self, command: &Command, sink: &dyn EventSink) -> Report {
        match command {
            Command::Inspect => Report::Succeeded {
                inventory: Some(Box::new(inspect(self.lldp_timeout))),
                detail: None,
            },
            Command::Wipe { mode, devices } => crate::steps::erase::wipe(*mode, devices, sink),
            Command::Deploy(d) => match deploy(d, self, sink) {
                Ok(r) => r,
                Err(e) => failed(&e, Some(proto::Phase::Prepare)),
            },
            Command::EnrollBmc { user } => {
                enroll_report(crate::bmc::enroll(Path::new(crate::bmc::IPMI_DEVICE), user))
            }
            Command::RunStep {
                interface,
                step,
                args,
            } => crate::steps::run(interface, step, args, sink),
            Command::Wait { .. } | Command::Reboot | Command::PowerOff => failed(
                &anyhow::anyhow!("{command:?} is not run by the executor"),
                None,
            ),
        }
    }
}

/// The result of `enroll_bmc`: the [`proto::protocol::BmcEnrolled`] document as the
/// detail (it carries the password: the loop logs a result's command id and outcome only,
/// never its detail), or the error (which never holds the password).
pub fn enroll_report(r: Result<crate::bmc::Enrolled, crate::bmc::EnrollError>) -> Report {
    match r {
        Ok(e) => Report::Succeeded {
            inventory: None,
            detail: serde_json::to_value(e.document()).ok(),
        },
        Err(e) => Report::Failed {
            error: ErrorReport {
                phase: None,
                message: format!("BMC enrolment failed: {e}"),
                causes: crate::error_causes(&e),
            },
        },
    }
}

/// The inventory, with the LLDP neighbour of each NIC that has a carrier: the listeners run
/// beside the collection, each until its NIC's first frame or `lldp_timeout`.
fn inspect(lldp_timeout: Duration) -> Inventory {
    let carrier: Vec<String> = crate::inventory::net::interfaces(Path::new("/"), &BTreeMap::new())
        .into_iter()
        .filter(|i| i.has_carrier)
        .map(|i| i.name)
        .collect();
    let listener = (!lldp_timeout.is_zero() && !carrier.is_empty()).then(|| {
        std::thread::spawn(move || crate::inventory::lldp::listen(&carrier, lldp_timeout))
    });
    let mut inv = crate::inventory::collect_live();
    if let Some(heard) = listener.map(std::thread::JoinHandle::join) {
        let mut heard = heard.unwrap_or_default();
        for nic in &mut inv.interfaces {
            nic.lldp = heard.remove(&nic.name);
        }
    }
    inv
}

/// Standard base64 (with or without padding, whitespace ignored).
pub fn base64_decode(s: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            c if c.is_ascii_whitespace() => continue,
            c => anyhow::bail!("invalid base64 byte {c:#04x}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// The config drive image bytes (ISO, or gzip-compressed ISO) for a deploy.
pub fn configdrive_bytes(cd: &ConfigDrive) -> anyhow::Result<Vec<u8>> {
    match cd {
        ConfigDrive::Parts {
            meta_data,
            user_data,
            network_data,
            vendor_data,
        } => crate::configdrive::ConfigDrive {
            meta_data: meta_data.clone(),
            user_data: user_data.as_ref().map(|u| u.as_bytes().to_vec()),
            network_data: network_data.clone(),
            vendor_data: vendor_data.clone(),
        }
        .build()
        .context("building the config drive"),
        ConfigDrive::GzipBase64 { data } => {
            base64_decode(data).context("decoding the config drive")
        }
    }
}

fn deploy(d: &DeployCommand, host: &LiveHost, sink: &dyn EventSink) -> anyhow::Result<Report> {
    let scratch = host.scratch.as_path();
    let checksum = d.checksum.parse().context("parsing the checksum")?;
    let disks = crate::inventory::block::disks(Path::new("/")).context("listing disks")?;
    let boot = crate::wipe::select::boot_disks(Path::new("/"));
    let raid_members = match &d.software_raid {
        // Checks the plan's shape too (`SoftwareRaid::check`).
        Some(raid) => Some(
            crate::raid::resolve_excluding(raid, &disks, &boot)
                .context("choosing the RAID members")?,
        ),
        None => None,
    };
    let device = match &raid_members {
        Some(m) => m
            .first()
            .map(|x| PathBuf::from(&x.name))
            .context("no RAID member")?,
        None => choose_target(&disks, &boot, d)?,
    };
    let configdrive = match &d.configdrive {
        Some(cd) => {
            std::fs::create_dir_all(scratch).ok();
            let p = scratch.join("configdrive.img");
            std::fs::write(&p, configdrive_bytes(cd)?)
                .with_context(|| format!("writing {}", p.display()))?;
            Some(p)
        }
        None => None,
    };
    let opts = WriteImageOptions {
        url: d.image_url.clone(),
        checksum,
        device,
        configdrive,
        fetch: FetchOptions {
            pin_sha256: host.ca_sha256,
            mirrors: crate::image::fetch::mirror_urls(&d.image_url, &host.controllers),
            ..FetchOptions::default()
        },
        direct: true,
        progress_interval: Duration::from_secs(1),
    };
    let written = match (&d.software_raid, &raid_members) {
        (Some(raid), Some(members)) => {
            crate::image::raid::write_image_raid(&opts, raid, members, sink)
        }
        _ => write_image(&opts, sink),
    };
    Ok(match written {
        Ok(r) => {
            sink.emit(&AgentEvent::WriteImageDone(r.clone()));
            Report::Succeeded {
                inventory: None,
                detail: serde_json::to_value(&r).ok(),
            }
        }
        Err((phase, e)) => Report::Failed {
            error: ErrorReport {
                phase: Some(phase),
                message: crate::error_chain(&e),
                causes: crate::error_causes(&e),
            },
        },
    })
}

/// The deploy's target disk: not a boot/virtual medium, matching the root device hints and
/// at least `min_disk_bytes`; the smallest such disk, as Ironic picks.
fn choose_target(
    disks: &[proto::Disk],
    boot: &[String],
    d: &DeployCommand,
) -> anyhow::Result<PathBuf> {
    let matching: Vec<&proto::Disk> = disks
        .iter()
        .filter(|x| crate::wipe::select::skip_reason(x, boot).is_none())
        .filter(|x| crate::hints::matches(&d.root_device_hints, x))
        .collect();
    let min = d.min_disk_bytes.unwrap_or(0);
    matching
        .iter()
        .filter(|x| x.size >= min)
        .min_by_key(|x| x.size)
        .map(|x| PathBuf::from(&x.name))
        .with_context(|| match d.min_disk_bytes {
            Some(min) if !matching.is_empty() => format!(
                "none of the {} disks matching the root device hints has the {} GiB root_gb \
                 asks for",
                matching.len(),
                min >> 30
            ),
            _ => format!(
                "no disk matches the root device hints among {}",
                disks.len()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_is_the_smallest_matching_disk_that_fits() {
        let disk = |name: &str, gib: u64, serial: &str| proto::Disk {
            name: name.into(),
            size: gib << 30,
            serial: Some(serial.into()),
            ..Default::default()
        };
        let disks = vec![
            disk("/dev/vda", 8, "A"),
            disk("/dev/vdb", 2, "B"),
            disk("/dev/vdc", 4, "C"),
        ];
        let cmd = |hints: serde_json::Value, min_gib: Option<u64>| DeployCommand {
            image_url: "http://127.0.0.1/x".into(),
            checksum: format!("sha256:{}", "0".repeat(64)),
            root_device_hints: serde_json::from_value(hints).expect("hints"),
            configdrive: None,
            min_disk_bytes: min_gib.map(|g| g << 30),
            software_raid: None,
        };
        let cases: Vec<(serde_json::Value, Option<u64>, Result<&str, &str>)> = vec![
            (serde_json::json!({}), None, Ok("/dev/vdb")),
            (serde_json::json!({}), Some(3), Ok("/dev/vdc")),
            (serde_json::json!({}), Some(5), Ok("/dev/vda")),
            (serde_json::json!({}), Some(9), Err("has the 9 GiB root_gb")),
            (serde_json::json!({"serial": "A"}), Some(4), Ok("/dev/vda")),
            (
                serde_json::json!({"serial": "B"}),
                Some(4),
                Err("none of the 1 disks"),
            ),
            (
                serde_json::json!({"serial": "Z"}),
                None,
                Err("no disk matches"),
            ),
        ];
        for (hints, min, want) in cases {
            let got = choose_target(&disks, &[], &cmd(hints.clone(), min));
            match want {
                Ok(dev) => assert_eq!(got.expect("chosen"), PathBuf::from(dev), "{hints} {min:?}"),
                Err(part) => {
                    let err = format!("{:#}", got.expect_err("refused"));
                    assert!(err.contains(part), "{hints} {min:?}: {err}");
                }
            }
        }
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(
            base64_decode("aGVsbG8gd29ybGQ=").expect("ok"),
            b"hello world"
        );
        assert_eq!(base64_decode("aGVs\nbG8").expect("ok"), b"hello");
        assert!(base64_decode("a*b").is_err());
    }

    #[test]
    fn lookup_request_lists_real_macs() {
        let mut inv = Inventory::default();
        for (n, m) in [
            ("eth1", "52:54:00:00:00:02"),
            ("eth0", "52:54:00:00:00:01"),
            ("x", "00:00:00:00:00:00"),
        ] {
            inv.interfaces.push(proto::Interface {
                name: n.into(),
                mac_address: m.to_uppercase(),
                ..Default::default()
            });
        }
        inv.system_vendor.uuid = Some("u".into());
        inv.system_vendor.serial_number = Some("s".into());
        let r = lookup_request(inv, Some("52:54:00:00:00:02".into()));
        assert_eq!(r.macs, vec!["52:54:00:00:00:01", "52:54:00:00:00:02"]);
        assert_eq!(r.system_uuid.as_deref(), Some("u"));
        assert_eq!(r.system_serial.as_deref(), Some("s"));
        assert_eq!(r.protocol_version, proto::PROTOCOL_VERSION);
    }
}
