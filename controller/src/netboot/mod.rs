//! Network boot services: DHCP (full and proxy), TFTP for the iPXE binaries, a router
//! advertisement sender, and the iPXE script renderer.
//!
//! The pure parts (`dhcp::policy`, `ipxe`) do no IO and read no clock; the socket loops
//! (`dhcp::server`, `dhcp::ra`, `tftp`) only move bytes and call them. Nothing here depends
//! on the store, API or conductor: what the boot services need from them is expressed as
//! the small traits [`dhcp::BootPolicy`] and [`dhcp::LeaseStore`].

pub mod dhcp;
pub mod ipxe;
pub mod service;
pub mod tftp;

use std::fmt;
use std::str::FromStr;

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The iPXE `${mac:hexhyp}` form: `52-54-00-12-34-56`.
    pub fn hexhyp(&self) -> String {
        let b = self.0;
        format!(
            "{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Error parsing a [`MacAddr`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid MAC address {0:?} (expected six hex pairs separated by ':' or '-')")]
pub struct MacParseError(String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_owned());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(err());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        Ok(MacAddr(out))
    }
}

/// The firmware family a client boots with; decides the iPXE binary and how to leave iPXE
/// for the local disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Legacy BIOS (iPXE `${platform}` = `pcbios`).
    Bios,
    /// UEFI (iPXE `${platform}` = `efi`).
    Efi,
}

impl Platform {
    /// The name iPXE uses for `${platform}`, also used in the script URL query.
    pub fn as_str(&self) -> &'static str {
        match self {
            Platform::Bios => "pcbios",
            Platform::Efi => "efi",
        }
    }

    /// Parse iPXE's `${platform}` value.
    pub fn from_ipxe(s: &str) -> Option<Self> {
        match s {
            "pcbios" => Some(Platform::Bios),
            "efi" => Some(Platform::Efi),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_formats() {
        let mac: MacAddr = "52:54:00:AB:cd:01".parse().expect("valid mac");
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:01");
        assert_eq!(mac.hexhyp(), "52-54-00-ab-cd-01");
        assert_eq!("52-54-00-ab-cd-01".parse::<MacAddr>(), Ok(mac));
    }

    #[test]
    fn mac_rejects_garbage() {
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "5:54:00:ab:cd:01",
            "zz:54:00:ab:cd:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
