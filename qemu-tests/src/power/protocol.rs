//! The power socket's request language (shared by the server and `lab-chassis`) and what
//! the firmware's console output says about the device it booted first.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::vm::{BootOrder, Firmware};

/// A boot device a lab machine can be steered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    Pxe,
    Disk,
}

impl BootDevice {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pxe => "pxe",
            Self::Disk => "disk",
        }
    }

    pub(crate) fn order(self) -> BootOrder {
        match self {
            Self::Pxe => BootOrder::NetworkFirst,
            Self::Disk => BootOrder::DiskFirst,
        }
    }
}

/// One request on the power socket (see [`crate::power`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    On,
    Off,
    Soft,
    Reset,
    Status,
    BootDev {
        device: BootDevice,
        once: bool,
    },
    /// ipmi_sim `get NAME...`: answered with `NAME:VALUE` lines.
    Get(Vec<String>),
    /// ipmi_sim `check ...`: accepted.
    Check,
}

/// Parses a request line. ipmi_sim quotes values (`set power "1"`); the shell removes
/// the quotes, but they are stripped here too.
pub fn parse_request(line: &str) -> anyhow::Result<Request> {
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| w.trim_matches('"').to_owned())
        .collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    Ok(match w.as_slice() {
        ["on"] => Request::On,
        ["off"] => Request::Off,
        ["soft"] => Request::Soft,
        ["reset"] => Request::Reset,
        ["status"] => Request::Status,
        ["bootdev", dev] => Request::BootDev {
            device: parse_device(dev)?,
            once: false,
        },
        ["bootdev", dev, "once"] => Request::BootDev {
            device: parse_device(dev)?,
            once: true,
        },
        ["get", names @ ..] => Request::Get(names.iter().map(|s| (*s).to_owned()).collect()),
        ["check", ..] => Request::Check,
        ["set", "power", v] => match *v {
            "1" => Request::On,
            "0" => Request::Off,
            _ => bail!("bad power value {v:?}"),
        },
        ["set", "reset", _] => Request::Reset,
        ["set", "shutdown", _] => Request::Soft,
        // ipmi_sim's boot map: none, pxe, default (hard drive), cdrom, bios.
        ["set", "boot", v] => Request::BootDev {
            device: match *v {
                "pxe" => BootDevice::Pxe,
                "default" | "none" => BootDevice::Disk,
                other => bail!("boot device {other:?} is not supported by lab machines"),
            },
            once: false,
        },
        _ => bail!("unknown request {line:?}"),
    })
}

fn parse_device(s: &str) -> anyhow::Result<BootDevice> {
    match s {
        "pxe" => Ok(BootDevice::Pxe),
        "disk" => Ok(BootDevice::Disk),
        other => bail!("unknown boot device {other:?} (pxe or disk)"),
    }
}

/// Which device the firmware tried first in `serial` (console output of one boot), from
/// what SeaBIOS (`Booting from Hard Disk` / `Booting from ROM`, the iPXE ROM) and OVMF
/// (`BdsDxe: ... "UEFI QEMU NVMe Ctrl ..."` / iPXE's banner, or `Start PXE over IPv4`
/// without the NIC ROM) print; `None` before either.
pub fn first_boot_attempt(firmware: Firmware, serial: &str) -> Option<BootDevice> {
    let (disk, net) = match firmware {
        Firmware::Bios => ("Booting from Hard Disk", "Booting from ROM"),
        Firmware::Uefi => ("NVMe Ctrl", "iPXE"),
        Firmware::UefiNativePxe => ("NVMe Ctrl", "Start PXE over IPv4"),
    };
    match (serial.find(disk), serial.find(net)) {
        (Some(d), Some(n)) if n < d => Some(BootDevice::Pxe),
        (Some(_), _) => Some(BootDevice::Disk),
        (None, Some(_)) => Some(BootDevice::Pxe),
        (None, None) => None,
    }
}

/// Sends one request to a power socket and returns its output (what `lab-chassis` does).
pub fn client_request(socket: &Path, line: &str) -> anyhow::Result<String> {
    let mut s =
        UnixStream::connect(socket).with_context(|| format!("connecting {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    writeln!(s, "{line}")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    match reply.split_once('\n') {
        Some(("ok", out)) => Ok(out.to_owned()),
        _ => bail!("{}", reply.trim().trim_start_matches("error ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_boot_attempt_from_firmware_output() {
        let bios_disk = "iPXE (http://ipxe.org) 00:02.0\nBooting from Hard Disk...\n\
                         Boot failed\nBooting from ROM...\niPXE (PCI 00:02.0) starting";
        let bios_net = "iPXE (http://ipxe.org) 00:02.0\nBooting from ROM...\n";
        assert_eq!(
            first_boot_attempt(Firmware::Bios, bios_disk),
            Some(BootDevice::Disk)
        );
        assert_eq!(
            first_boot_attempt(Firmware::Bios, bios_net),
            Some(BootDevice::Pxe)
        );
        assert_eq!(
            first_boot_attempt(Firmware::Bios, "SeaBIOS\niPXE (http"),
            None
        );
        let uefi_disk = "BdsDxe: failed to load Boot0001 \"UEFI QEMU NVMe Ctrl D 1\"\niPXE 1.0";
        assert_eq!(
            first_boot_attempt(Firmware::Uefi, uefi_disk),
            Some(BootDevice::Disk)
        );
        assert_eq!(
            first_boot_attempt(Firmware::Uefi, "iPXE 1.0.0 -- Open Source"),
            Some(BootDevice::Pxe)
        );
    }

    #[test]
    fn parses_ipmi_sim_and_direct_requests() {
        assert_eq!(parse_request("set power \"1\"").ok(), Some(Request::On));
        assert_eq!(parse_request("set power 0").ok(), Some(Request::Off));
        assert_eq!(parse_request("set reset \"1\"").ok(), Some(Request::Reset));
        assert_eq!(parse_request("set shutdown 1").ok(), Some(Request::Soft));
        assert_eq!(
            parse_request("set boot \"default\"").ok(),
            Some(Request::BootDev {
                device: BootDevice::Disk,
                once: false
            })
        );
        assert_eq!(
            parse_request("bootdev pxe once").ok(),
            Some(Request::BootDev {
                device: BootDevice::Pxe,
                once: true
            })
        );
        assert_eq!(
            parse_request("get power boot").ok(),
            Some(Request::Get(vec!["power".into(), "boot".into()]))
        );
        for bad in ["", "set power 2", "set boot cdrom", "bootdev floppy", "fly"] {
            assert!(parse_request(bad).is_err(), "{bad}");
        }
    }
}
