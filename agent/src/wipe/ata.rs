//! PURE: ATA security erase through ATA PASS-THROUGH(16) (SAT): the command blocks, what
//! IDENTIFY DEVICE says about the security feature set, and the order of the erase.
//!
//! The erase sets a user password (SECURITY SET PASSWORD), then SECURITY ERASE PREPARE +
//! SECURITY ERASE UNIT (enhanced when the drive offers it, else normal); a completed erase
//! leaves security disabled. The password is a fixed, published one ([`PASSWORD`]), as
//! IPA's `NULL`: if the agent dies mid-erase, the next run (or an operator with `hdparm`)
//! can still unlock and disable it, so the drive is never left locked by a secret nobody
//! has. A drive found locked is unlocked with it first; one found frozen (by the BIOS) is
//! not touched.

use std::time::Duration;

/// The user password the erase sets (at most 32 bytes, NUL-padded).
pub const PASSWORD: &[u8] = b"ingot-secure-erase";

pub const IDENTIFY_DEVICE: u8 = 0xec;
pub const SECURITY_SET_PASSWORD: u8 = 0xf1;
pub const SECURITY_UNLOCK: u8 = 0xf2;
pub const SECURITY_ERASE_PREPARE: u8 = 0xf3;
pub const SECURITY_ERASE_UNIT: u8 = 0xf4;
pub const SECURITY_DISABLE_PASSWORD: u8 = 0xf6;

/// A command's data phase, as ATA PASS-THROUGH encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    NonData,
    /// One 512-byte sector from the drive.
    PioIn,
    /// One 512-byte sector to the drive.
    PioOut,
}

/// ATA PASS-THROUGH(16) for `command` with one sector (or none) of data.
pub fn cdb(command: u8, proto: Proto) -> [u8; 16] {
    let (protocol, flags, count) = match proto {
        // PROTOCOL 3; no transfer.
        Proto::NonData => (3u8, 0x00u8, 0u8),
        // PROTOCOL 4; T_DIR from the device, BYTE_BLOCK, T_LENGTH in SECTOR COUNT.
        Proto::PioIn => (4, 0x0e, 1),
        // PROTOCOL 5; T_DIR to the device, BYTE_BLOCK, T_LENGTH in SECTOR COUNT.
        Proto::PioOut => (5, 0x06, 1),
    };
    let mut c = [0u8; 16];
    c[0] = 0x85;
    c[1] = protocol << 1;
    c[2] = flags;
    c[6] = count;
    c[14] = command;
    c
}

/// The 512-byte data of SET PASSWORD, UNLOCK, ERASE UNIT and DISABLE PASSWORD: word 0 says
/// user password (bit 0 clear), enhanced erase (bit 1, ERASE UNIT only) and high master
/// capability (bit 8 clear); words 1-16 hold the password.
pub fn password_block(enhanced: bool) -> [u8; 512] {
    let mut b = [0u8; 512];
    if enhanced {
        b[0] = 0b10;
    }
    b[2..2 + PASSWORD.len()].copy_from_slice(PASSWORD);
    b
}

/// The security state IDENTIFY DEVICE reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Security {
    /// Word 82 bit 1 and word 128 bit 0: the security feature set is there.
    pub supported: bool,
    /// Word 128 bit 1: a user password is set.
    pub enabled: bool,
    /// Word 128 bit 2: the drive is locked.
    pub locked: bool,
    /// Word 128 bit 3: security commands are refused until a power cycle.
    pub frozen: bool,
    /// Word 128 bit 5: enhanced erase is offered.
    pub enhanced: bool,
    /// Words 89 and 90: the drive's time estimates for normal and enhanced erase.
    pub normal_time: Duration,
    pub enhanced_time: Duration,
}

fn word(id: &[u8], n: usize) -> u16 {
    id.get(2 * n..2 * n + 2)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
}

/// An erase time word: bits 7:0 in units of 2 minutes; 0 is "not given", 255 "over 508
/// minutes". `None` when not given.
fn erase_time(w: u16) -> Option<Duration> {
    match w & 0xff {
        0 => None,
        n => Some(Duration::from_secs(u64::from(n) * 120)),
    }
}

/// Reads the security state from the 512 bytes of IDENTIFY DEVICE; short data reads as none.
pub fn security(id: &[u8]) -> Security {
    let w82 = word(id, 82);
    let w128 = word(id, 128);
    // A word of all ones (or zeroes) is "not reported".
    let valid = |w: u16| w != 0xffff;
    let sec = if valid(w128) { w128 } else { 0 };
    Security {
        supported: valid(w82) && w82 & 0b10 != 0 && sec & 1 != 0,
        enabled: sec & 0b10 != 0,
        locked: sec & 0b100 != 0,
        frozen: sec & 0b1000 != 0,
        enhanced: sec & 0b10_0000 != 0,
        normal_time: erase_time(word(id, 89)).unwrap_or(Duration::ZERO),
        enhanced_time: erase_time(word(id, 90)).unwrap_or(Duration::ZERO),
    }
}

/// What to do with a drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No ATA security erase here (say why); the wipe falls back to writing zeroes.
    Skip(&'static str),
    /// Erase: enhanced first when offered, then normal, each with its timeout; `unlock` when
    /// the drive is locked (by an earlier, interrupted run) and must be unlocked first.
    Erase {
        unlock: bool,
        tries: Vec<(bool, Duration)>,
    },
}

/// The erase a drive allows. Timeouts are the drive's estimate doubled, at least an hour
/// (an estimate of 0 means "not given").
pub fn plan(s: Security) -> Plan {
    if !s.supported {
        return Plan::Skip("the drive has no ATA security feature set");
    }
    if s.frozen {
        return Plan::Skip("the drive's security is frozen (by the firmware) until a power cycle");
    }
    let timeout = |t: Duration| (t * 2).max(Duration::from_secs(3600));
    let mut tries = Vec::new();
    if s.enhanced {
        tries.push((true, timeout(s.enhanced_time)));
    }
    tries.push((false, timeout(s.normal_time)));
    Plan::Erase {
        unlock: s.locked,
        tries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identify(w82: u16, w128: u16, w89: u16, w90: u16) -> Vec<u8> {
        let mut id = vec![0u8; 512];
        for (n, w) in [(82, w82), (128, w128), (89, w89), (90, w90)] {
            id[2 * n..2 * n + 2].copy_from_slice(&w.to_le_bytes());
        }
        id
    }

    #[test]
    fn command_blocks() {
        assert_eq!(
            cdb(IDENTIFY_DEVICE, Proto::PioIn),
            [0x85, 0x08, 0x0e, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xec, 0]
        );
        assert_eq!(
            cdb(SECURITY_ERASE_UNIT, Proto::PioOut),
            [0x85, 0x0a, 0x06, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xf4, 0]
        );
        assert_eq!(
            cdb(SECURITY_ERASE_PREPARE, Proto::NonData),
            [0x85, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf3, 0]
        );
        let b = password_block(true);
        assert_eq!(b[0], 2);
        assert_eq!(&b[2..2 + PASSWORD.len()], PASSWORD);
        assert!(b[2 + PASSWORD.len()..].iter().all(|&x| x == 0));
        assert_eq!(password_block(false)[0], 0);
        assert!(PASSWORD.len() <= 32);
    }

    #[test]
    fn plans_by_security_state() {
        let hour = Duration::from_secs(3600);
        let rows = [
            // No security feature set (QEMU's disks report none).
            (
                identify(0, 0, 0, 0),
                Plan::Skip("the drive has no ATA security feature set"),
            ),
            (
                identify(0xffff, 0xffff, 0, 0),
                Plan::Skip("the drive has no ATA security feature set"),
            ),
            // Supported, frozen by the BIOS.
            (
                identify(0b10, 0b1001, 0, 0),
                Plan::Skip("the drive's security is frozen (by the firmware) until a power cycle"),
            ),
            // Supported, enhanced offered, estimates 4 h and 1 h.
            (
                identify(0b10, 0b10_0001, 120, 30),
                Plan::Erase {
                    unlock: false,
                    tries: vec![(true, hour * 2), (false, hour * 8)],
                },
            ),
            // Locked by an interrupted run: unlock first; normal erase only.
            (
                identify(0b10, 0b0111, 0, 0),
                Plan::Erase {
                    unlock: true,
                    tries: vec![(false, hour)],
                },
            ),
        ];
        for (id, want) in rows {
            assert_eq!(plan(security(&id)), want);
        }
        assert_eq!(security(&[0u8; 10]), Security::default());
    }
}
