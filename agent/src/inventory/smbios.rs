//! SMBIOS system, firmware, baseboard, chassis and memory devices, parsed with
//! smbios-lib from the raw tables (`/sys/firmware/dmi/tables/{smbios_entry_point,DMI}`).

use std::path::Path;

use proto::{Baseboard, Chassis, Firmware, SystemVendor};
use smbioslib::{
    MemorySize, MemorySizeExtended, SMBiosBaseboardInformation, SMBiosData, SMBiosInformation,
    SMBiosMemoryDevice, SMBiosString, SMBiosSystemChassisInformation, SMBiosSystemInformation,
    SMBiosVersion, SystemUuidData,
};

/// What the inventory takes from SMBIOS.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SmbiosInfo {
    /// Types 1 and 0.
    pub system: SystemVendor,
    /// Type 2.
    pub baseboard: Option<Baseboard>,
    /// Type 3.
    pub chassis: Option<Chassis>,
    /// Sum of type 17 sizes, MiB.
    pub physical_mb: Option<u64>,
}

fn s(v: SMBiosString) -> Option<String> {
    let t = v.to_utf8_lossy()?.trim().to_string();
    (!t.is_empty()).then_some(t)
}

/// SMBIOS version from the entry point (`_SM3_` or `_SM_`).
fn version(entry: &[u8]) -> Option<SMBiosVersion> {
    if entry.starts_with(b"_SM3_") && entry.len() >= 10 {
        Some(SMBiosVersion {
            major: entry[7],
            minor: entry[8],
            revision: entry[9],
        })
    } else if entry.starts_with(b"_SM_") && entry.len() >= 8 {
        Some(SMBiosVersion {
            major: entry[6],
            minor: entry[7],
            revision: 0,
        })
    } else {
        None
    }
}

/// Parse an entry point and the structure table.
pub fn parse(entry: &[u8], table: Vec<u8>) -> SmbiosInfo {
    let data = SMBiosData::from_vec_and_version(table, version(entry));
    let mut info = SmbiosInfo::default();
    if let Some(sys) = data.first::<SMBiosSystemInformation<'_>>() {
        info.system.manufacturer = s(sys.manufacturer());
        info.system.product_name = s(sys.product_name());
        info.system.serial_number = s(sys.serial_number());
        info.system.sku = s(sys.sku_number());
        if let Some(SystemUuidData::Uuid(u)) = sys.uuid() {
            info.system.uuid = Some(u.to_string().to_ascii_lowercase());
        }
    }
    if let Some(b) = data.first::<SMBiosInformation<'_>>() {
        info.system.firmware = Some(Firmware {
            vendor: s(b.vendor()),
            version: s(b.version()),
            build_date: s(b.release_date()),
        });
    }
    info.baseboard = data
        .first::<SMBiosBaseboardInformation<'_>>()
        .map(|b| Baseboard {
            manufacturer: s(b.manufacturer()),
            product: s(b.product()),
            version: s(b.version()),
            serial_number: s(b.serial_number()),
        });
    info.chassis = data
        .first::<SMBiosSystemChassisInformation<'_>>()
        .map(|c| Chassis {
            manufacturer: s(c.manufacturer()),
            chassis_type: c.chassis_type().map(|t| t.raw & 0x7f),
            serial_number: s(c.serial_number()),
            asset_tag: s(c.asset_tag_number()),
        });
    let mut total = 0u64;
    let mut any = false;
    for m in data.defined_struct_iter::<SMBiosMemoryDevice<'_>>() {
        let mb = match m.size() {
            Some(MemorySize::Megabytes(v)) => u64::from(v),
            Some(MemorySize::Kilobytes(v)) => u64::from(v) / 1024,
            Some(MemorySize::SeeExtendedSize) => match m.extended_size() {
                Some(MemorySizeExtended::Megabytes(v)) => u64::from(v),
                _ => 0,
            },
            _ => 0,
        };
        any = true;
        total += mb;
    }
    info.physical_mb = (any && total > 0).then_some(total);
    info
}

/// Read the tables under `root`; None when the firmware has no SMBIOS.
pub fn read(root: &Path) -> Option<SmbiosInfo> {
    let dir = root.join("sys/firmware/dmi/tables");
    let entry = std::fs::read(dir.join("smbios_entry_point")).ok()?;
    let table = std::fs::read(dir.join("DMI")).ok()?;
    Some(parse(&entry, table))
}
