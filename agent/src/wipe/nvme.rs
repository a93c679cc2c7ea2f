//! PURE: what an NVMe controller and namespace can do for a secure erase, read from their
//! Identify data, and the Format NVM command dword that erases while keeping the namespace's
//! LBA format, metadata and protection settings as they are.

/// Secure Erase Settings of Format NVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ses {
    /// Every user data block becomes indeterminate (the drive overwrites or unmaps).
    UserData = 1,
    /// The media encryption key is replaced: everything written before is unreadable.
    Crypto = 2,
}

impl Ses {
    /// The method name in wipe reports and the node's history.
    pub fn method(self) -> &'static str {
        match self {
            Ses::UserData => "nvme_user_data_erase",
            Ses::Crypto => "nvme_crypto_erase",
        }
    }
}

/// The controller's format and erase capabilities (Identify Controller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps {
    /// OACS bit 1: Format NVM is supported.
    pub format: bool,
    /// FNA bit 2: cryptographic erase is supported.
    pub crypto: bool,
    /// FNA bit 0: a format applies to every namespace of the controller.
    pub format_all_namespaces: bool,
    /// FNA bit 1: a secure erase applies to every namespace of the controller.
    pub erase_all_namespaces: bool,
}

/// Reads the capabilities from the 4096 bytes of Identify Controller (CNS 1): OACS at byte
/// 256 (16 bits, little endian), FNA at byte 524. Short data reads as no capability.
pub fn controller_caps(id: &[u8]) -> Caps {
    let oacs = id
        .get(256..258)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
    let fna = id.get(524).copied().unwrap_or(0);
    Caps {
        format: oacs & 0b10 != 0,
        crypto: fna & 0b100 != 0,
        format_all_namespaces: fna & 0b1 != 0,
        erase_all_namespaces: fna & 0b10 != 0,
    }
}

/// The namespace's current format (Identify Namespace, CNS 0): FLBAS at byte 26 and DPS at
/// byte 29.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NsFormat {
    pub flbas: u8,
    pub dps: u8,
}

pub fn namespace_format(id: &[u8]) -> NsFormat {
    NsFormat {
        flbas: id.get(26).copied().unwrap_or(0),
        dps: id.get(29).copied().unwrap_or(0),
    }
}

/// Format NVM's command dword 10 for `ses` that keeps the namespace as it is: the LBA format
/// index (FLBAS bits 3:0, and bits 6:5 as LBAFU in dword bits 13:12), metadata setting
/// (FLBAS bit 4 -> MSET), protection type and location (DPS bits 2:0 -> PI, bit 3 -> PIL).
pub fn format_cdw10(ns: NsFormat, ses: Ses) -> u32 {
    let lbaf = u32::from(ns.flbas & 0x0f);
    let lbafu = u32::from((ns.flbas >> 5) & 0b11);
    let mset = u32::from((ns.flbas >> 4) & 1);
    let pi = u32::from(ns.dps & 0b111);
    let pil = u32::from((ns.dps >> 3) & 1);
    lbaf | (mset << 4) | (pi << 5) | (pil << 8) | ((ses as u32) << 9) | (lbafu << 12)
}

/// The firmware erases to try, strongest first: crypto erase when the controller says it
/// can, then user-data erase; nothing without Format NVM. (What remains after a refusal is
/// the caller's fallback: write-zeroes, then overwrite.)
pub fn plan(caps: Caps) -> Vec<Ses> {
    match (caps.format, caps.crypto) {
        (false, _) => vec![],
        (true, true) => vec![Ses::Crypto, Ses::UserData],
        (true, false) => vec![Ses::UserData],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctrl(oacs: u16, fna: u8) -> Vec<u8> {
        let mut id = vec![0u8; 4096];
        id[256..258].copy_from_slice(&oacs.to_le_bytes());
        id[524] = fna;
        id
    }

    #[test]
    fn capabilities_and_plans() {
        let rows = [
            // QEMU's controller: Format NVM, no crypto erase.
            (
                ctrl(0x000a, 0),
                Caps {
                    format: true,
                    ..Default::default()
                },
                vec![Ses::UserData],
            ),
            (
                ctrl(0x0002, 0b101),
                Caps {
                    format: true,
                    crypto: true,
                    format_all_namespaces: true,
                    erase_all_namespaces: false,
                },
                vec![Ses::Crypto, Ses::UserData],
            ),
            // Crypto erase claimed without Format NVM: nothing to send it with.
            (
                ctrl(0x0000, 0b100),
                Caps {
                    crypto: true,
                    ..Default::default()
                },
                vec![],
            ),
            (vec![0u8; 100], Caps::default(), vec![]),
        ];
        for (id, caps, want) in rows {
            assert_eq!(controller_caps(&id), caps);
            assert_eq!(plan(caps), want, "{caps:?}");
        }
    }

    #[test]
    fn format_keeps_the_namespace_as_it_is() {
        let rows = [
            (NsFormat { flbas: 0, dps: 0 }, Ses::UserData, 0x0200),
            (NsFormat { flbas: 0, dps: 0 }, Ses::Crypto, 0x0400),
            // LBA format 1 with metadata at the end of each block (MSET 1), PI type 1 first.
            (
                NsFormat {
                    flbas: 0x11,
                    dps: 0b1001,
                },
                Ses::UserData,
                0x1 | 0x10 | 0x20 | 0x100 | 0x200,
            ),
            // LBA format 17: index 1 plus LBAFU 1.
            (
                NsFormat {
                    flbas: 0x21,
                    dps: 0,
                },
                Ses::Crypto,
                0x1 | 0x400 | 0x1000,
            ),
        ];
        for (ns, ses, want) in rows {
            assert_eq!(format_cdw10(ns, ses), want, "{ns:?} {ses:?}");
        }
        let mut id = vec![0u8; 4096];
        id[26] = 0x11;
        id[29] = 0b1001;
        assert_eq!(
            namespace_format(&id),
            NsFormat {
                flbas: 0x11,
                dps: 0b1001
            }
        );
    }
}
