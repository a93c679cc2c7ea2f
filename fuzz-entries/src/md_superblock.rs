//! `md_superblock`: the bytes where an md v1 superblock may sit on a disk the agent is
//! asked to clean or build RAID on (anything the last tenant left), read by
//! `agent::md::superblock::parse`, and the search of an area's ends for superblocks of any
//! version (`agent::raid::find`).
//!
//! Invariants: what parses has the magic, major version 1 and 1 to `MAX_DEV_LIMIT` roles,
//! and encodes back to bytes that parse to the same superblock (the fields Ingot keeps);
//! the search only reports offsets inside the area.

use agent::md::superblock::{MAGIC, MAX_DEV_LIMIT, parse};

pub fn run(data: &[u8]) {
    if let Ok(sb) = parse(data) {
        assert!(!sb.dev_roles.is_empty() && sb.dev_roles.len() <= MAX_DEV_LIMIT as usize);
        let bytes = sb.encode();
        assert_eq!(
            u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            MAGIC
        );
        assert_eq!(parse(&bytes).as_ref(), Ok(&sb), "round trip");
    }
    // The same bytes as the head and tail of a small area.
    let len = data.len() as u64 * 2 + 8192;
    for (off, version) in agent::raid::find(data, data, len, 512) {
        assert!(off < len, "{off} {version}");
    }
}
