//! `image_head`: the first bytes of an image from outside, on both sides.
//!
//! * Controller: the import's format sniffing (`images::format::detect`).
//! * Agent: the stream's format sniffing and decoding (`image::format::sniff`, `decode`:
//!   raw, zstd, gzip, xz; output capped at 4 MiB here), then the partition table check and
//!   edit of the decoded first MiB (`image::table::check::check`, `image::table::finish`) for
//!   disks of 512- and 4096-byte sectors, with and without a config drive.
//!
//! Invariants: what `finish` accepted reads back on the disk it was made for (`check` with
//! the disk's sector size agrees), and every extra write lies on the disk; a plain MBR image
//! (no protective 0xEE entry, no GPT signature at LBA 1) that the import takes as raw passes
//! the agent's check on a 512-byte disk. (GPT images are not compared: the import reads only
//! the boot signature, the agent checks the GPT's CRCs, see ARCHITECTURE.md.)

use std::io;

use agent::image::format::{PeekReader, Sink, decode, sniff};
use agent::image::table::check::{ImageTable, check};
use agent::image::table::finish;
use controller::images::format::{SourceFormat, detect};

const MIB: usize = 1 << 20;
const CAP: usize = 4 * MIB;
const DISK: u64 = 8 << 30;

/// A sink that keeps at most `CAP` bytes and then refuses (a decompression bomb stops here).
#[derive(Default)]
struct CappedSink {
    data: Vec<u8>,
    chunk: Vec<u8>,
}

impl Sink for CappedSink {
    fn space(&mut self) -> io::Result<&mut [u8]> {
        self.chunk.resize(64 * 1024, 0);
        Ok(&mut self.chunk)
    }
    fn commit(&mut self, n: usize) -> io::Result<()> {
        if self.data.len() + n > CAP {
            return Err(io::Error::other("fuzz cap reached"));
        }
        self.data.extend_from_slice(&self.chunk[..n]);
        Ok(())
    }
}

fn tables(decoded: &[u8]) {
    let mut head = decoded[..decoded.len().min(MIB)].to_vec();
    head.resize(MIB, 0);
    for sector in [512u32, 4096] {
        let checked = check(&head, sector);
        for configdrive in [None, Some(64 * 1024)] {
            let mut edited = head.clone();
            let Ok(plan) = finish(&mut edited, sector, DISK, configdrive) else {
                continue;
            };
            assert!(checked.is_ok(), "finish accepted what check refused");
            let again = check(&edited, sector);
            let reads = match again {
                Ok(ImageTable::Mbr) => true,
                Ok(ImageTable::Gpt { sector: s }) => s == sector,
                Err(_) => false,
            };
            assert!(
                reads,
                "the edited table does not read on a {sector}-byte disk: {again:?}"
            );
            for (offset, bytes) in &plan.writes {
                assert!(
                    offset
                        .checked_add(bytes.len() as u64)
                        .is_some_and(|end| end <= DISK),
                    "a write past the end of the disk"
                );
            }
            if let Some(at) = plan.configdrive_offset {
                assert!(at < DISK, "config drive past the end of the disk");
            }
        }
    }
}

/// Whether `head` is an MBR without any sign of a GPT.
fn plain_mbr(head: &[u8]) -> bool {
    let protective = (0..4).any(|i| head.get(0x1be + 16 * i + 4) == Some(&0xee));
    let gpt_sig = [512, 4096]
        .iter()
        .any(|&s| head.get(s..s + 8) == Some(&b"EFI PART"[..]));
    !protective && !gpt_sig
}

/// Entry point.
pub fn run(data: &[u8]) {
    if detect(data, data.len() as u64) == Ok(SourceFormat::Raw) && plain_mbr(data) {
        let mut head = data[..data.len().min(MIB)].to_vec();
        head.resize(MIB, 0);
        let agent = check(&head, 512);
        assert!(
            agent.is_ok(),
            "the import takes a plain MBR image the agent refuses: {agent:?}"
        );
    }

    let Ok(format) = sniff(data) else {
        return;
    };
    let mut src = PeekReader::new(data);
    let mut sink = CappedSink::default();
    let _ = decode(&mut src, format, &mut sink);
    tables(&sink.data);
}
