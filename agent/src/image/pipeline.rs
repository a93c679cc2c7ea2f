//! The streaming stage of an image write: four threads joined by bounded
//! channels, so that network, hashing, decoding and disk writes overlap while
//! memory stays fixed whatever the image size.
//!
//! ```text
//!  fetch (tokio, reqwest) --Bytes--> hash (sha256/sha512/md5 over bytes as served)
//!        \------------------Bytes--> decode (sniff, zstd/gzip/xz/raw) --4 MiB aligned--> write (O_DIRECT)
//!                                          ^---------------- buffer pool <-------------------/
//! ```
//!
//! The first MiB is never written here: the writer keeps it in memory and hands
//! it back, so the caller writes it only after the checksum matched. Once the
//! head is decoded, the writer refuses an image that does not start with a
//! partition table the disk can read (`table::check`), before writing anything.

use std::io::{self, BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::{Buf, Bytes};

use super::checksum::{Algo, Hasher};
use super::fetch::{self, FetchError, FetchOptions, FetchSummary};
use super::format::{self, DecodeError, Format, Peek, Sink};
use super::{HEAD_LEN, ImageWriteError, table};
use crate::host::aligned::AlignedBuf;
use crate::host::blockdev::Disk;

/// Size of one disk write.
pub const BUF_LEN: usize = 4 << 20;
/// Disk buffers in flight (bounds memory: `BUF_COUNT * BUF_LEN`).
pub const BUF_COUNT: usize = 6;
/// Network chunks queued per consumer.
const NET_QUEUE: usize = 32;

/// Live counters for progress reports.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes received.
    pub fetched: AtomicU64,
    /// Bytes written to disk (including the held-back head once written).
    pub written: AtomicU64,
    /// Served size, 0 when unknown.
    pub total: AtomicU64,
}

/// Result of the streaming stage.
#[derive(Debug)]
pub struct Streamed {
    /// The held-back first MiB (zero padded).
    pub head: AlignedBuf,
    /// Detected format.
    pub format: Format,
    /// Hex digest of the bytes as served.
    pub digest: String,
    /// Decoded image size.
    pub image_len: u64,
    /// Download summary.
    pub fetch: FetchSummary,
}

/// [`Peek`] over the channel of network chunks; a closed channel is the end.
struct ChanReader {
    rx: Receiver<Bytes>,
    cur: Bytes,
    pos: u64,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChanReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.cur = b,
                Err(_) => break,
            }
        }
        Ok(&self.cur)
    }
    fn consume(&mut self, n: usize) {
        self.cur.advance(n);
        self.pos += n as u64;
    }
}

impl Peek for ChanReader {
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        while self.cur.len() < n {
            let Ok(next) = self.rx.recv() else { break };
            let mut v = Vec::with_capacity(self.cur.len() + next.len());
            v.extend_from_slice(&self.cur);
            v.extend_from_slice(&next);
            self.cur = Bytes::from(v);
        }
        Ok(&self.cur[..n.min(self.cur.len())])
    }
    fn position(&self) -> u64 {
        self.pos
    }
}

enum WriteMsg {
    Data {
        offset: u64,
        buf: AlignedBuf,
        len: usize,
    },
    Done,
}

/// Decoder output: fills pooled aligned buffers and ships full ones to the writer.
struct PoolSink {
    pool: Receiver<AlignedBuf>,
    tx: SyncSender<WriteMsg>,
    cur: Option<AlignedBuf>,
    filled: usize,
    offset: u64,
}

fn writer_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "disk writer stopped")
}

impl PoolSink {
    fn flush(&mut self) -> io::Result<()> {
        if let Some(buf) = self.cur.take() {
            if self.filled > 0 {
                let len = self.filled;
                self.tx
                    .send(WriteMsg::Data {
                        offset: self.offset,
                        buf,
                        len,
                    })
                    .map_err(|_| writer_gone())?;
                self.offset += len as u64;
                self.filled = 0;
            } else {
                self.cur = Some(buf);
            }
        }
        Ok(())
    }
}

impl Sink for PoolSink {
    fn space(&mut self) -> io::Result<&mut [u8]> {
        if self.cur.is_none() {
            self.cur = Some(self.pool.recv().map_err(|_| writer_gone())?);
            self.filled = 0;
        }
        let filled = self.filled;
        Ok(&mut self
            .cur
            .as_mut()
            .expect("buffer was just taken from the pool")[filled..])
    }
    fn commit(&mut self, n: usize) -> io::Result<()> {
        self.filled += n;
        if self.filled == BUF_LEN {
            self.flush()?;
        }
        Ok(())
    }
}

/// Refuses an image that cannot boot from this disk before any of it is
/// written: its table is checked as soon as the head is decoded
/// (`table::check::check`, again in `table::finish` before the head is
/// written), and when the GPT is rewritten for larger disk sectors, the first
/// sector of each partition as it streams by (`table::check::filesystem_fits`).
struct TableGate {
    disk_sector: u32,
    image_sector: u32,
    checked: bool,
    /// `(partition index, byte offset)` of boot sectors not seen yet.
    pending: Vec<(usize, u64)>,
}

impl TableGate {
    fn new(disk_sector: u32) -> TableGate {
        TableGate {
            disk_sector,
            image_sector: disk_sector,
            checked: false,
            pending: Vec::new(),
        }
    }

    fn head_decoded(&mut self, head: &[u8]) -> Result<(), ImageWriteError> {
        let t = table::check::check(head, self.disk_sector).map_err(ImageWriteError::Refused)?;
        if let table::check::ImageTable::Gpt { sector } = t {
            self.image_sector = sector;
        }
        self.pending = table::check::starts_to_check(head, t, self.disk_sector);
        self.checked = true;
        // Partitions that start in the head (zero padded past a short image).
        self.scan(head, 0)
    }

    /// Look at the boot sectors that lie in `data`, which starts at `offset`.
    fn scan(&mut self, data: &[u8], offset: u64) -> Result<(), ImageWriteError> {
        let (image, disk) = (self.image_sector, self.disk_sector);
        let mut result = Ok(());
        self.pending.retain(|&(index, start)| {
            let Some(rel) = start
                .checked_sub(offset)
                .and_then(|r| usize::try_from(r).ok())
                .filter(|&r| r + 512 <= data.len())
            else {
                return true;
            };
            if result.is_ok() {
                result = table::check::filesystem_fits(index, &data[rel..rel + 512], image, disk)
                    .map_err(ImageWriteError::Refused);
            }
            false
        });
        result
    }
}

fn write_loop(
    disks: &[Disk],
    rx: Receiver<WriteMsg>,
    pool: SyncSender<AlignedBuf>,
    counters: &Counters,
) -> Result<(AlignedBuf, u64), ImageWriteError> {
    let first = disks
        .first()
        .ok_or(ImageWriteError::Internal("no disk to write"))?;
    let sector_size = first.logical_sector_size();
    if disks.iter().any(|d| d.logical_sector_size() != sector_size) {
        return Err(ImageWriteError::Internal(
            "mirrored disks have different logical sector sizes",
        ));
    }
    let disk_size = disks.iter().map(Disk::size).min().unwrap_or(0);
    let sector = u64::from(sector_size);
    let mut head = AlignedBuf::new(HEAD_LEN);
    let mut end = 0u64;
    let mut gate = TableGate::new(sector_size);
    loop {
        let Ok(msg) = rx.recv() else {
            return Err(ImageWriteError::Cancelled);
        };
        let WriteMsg::Data {
            offset,
            mut buf,
            len,
        } = msg
        else {
            if !gate.checked {
                gate.head_decoded(&head)?;
            }
            return Ok((head, end));
        };
        end = offset + len as u64;
        if end > disk_size {
            return Err(ImageWriteError::TooLarge {
                disk_size,
                image_at_least: end,
            });
        }
        // Pad the last partial buffer to a whole sector; what follows the image
        // on the disk is ours to overwrite.
        let padded = (len as u64).div_ceil(sector) * sector;
        let padded = usize::try_from(padded).unwrap_or(len);
        buf[len..padded].fill(0);
        let mut from = 0usize;
        if offset < HEAD_LEN as u64 {
            let o = usize::try_from(offset).unwrap_or(0);
            let n = (HEAD_LEN - o).min(len);
            head[o..o + n].copy_from_slice(&buf[..n]);
            // A buffer that ends inside the head is not written at all here.
            from = if n == len { padded } else { n };
        }
        if !gate.checked && end >= HEAD_LEN as u64 {
            gate.head_decoded(&head)?;
        }
        if gate.checked {
            gate.scan(&buf[..len], offset)?;
        }
        if from < padded {
            for disk in disks {
                disk.write_aligned(&buf[from..padded], offset + from as u64)?;
            }
        }
        counters
            .written
            .fetch_add((len - from.min(len)) as u64, Ordering::Relaxed);
        // The decoder may already be gone; a closed pool is fine here.
        let _ = pool.send(buf);
    }
}

/// Run the streaming stage against `disks`: every byte goes to each of them at the same
/// offset (one disk for a plain deploy; the members of a software RAID, which all get the
/// image). They must share one logical sector size; the smallest bounds the image.
pub fn stream(
    url: &str,
    fetch_opts: &FetchOptions,
    algo: Algo,
    disks: &[Disk],
    counters: &Arc<Counters>,
) -> Result<Streamed, ImageWriteError> {
    let (hash_tx, hash_rx) = sync_channel::<Bytes>(NET_QUEUE);
    let (dec_tx, dec_rx) = sync_channel::<Bytes>(NET_QUEUE);
    let (write_tx, write_rx) = sync_channel::<WriteMsg>(BUF_COUNT);
    let (pool_tx, pool_rx) = sync_channel::<AlignedBuf>(BUF_COUNT);
    for _ in 0..BUF_COUNT {
        pool_tx
            .send(AlignedBuf::new(BUF_LEN))
            .map_err(|_| ImageWriteError::Internal("buffer pool"))?;
    }

    std::thread::scope(|s| {
        let fetch_h = std::thread::Builder::new()
            .name("fetch".into())
            .spawn_scoped(s, || -> Result<FetchSummary, FetchError> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| FetchError::Client(e.into()))?;
                let c = counters.clone();
                let c2 = counters.clone();
                rt.block_on(fetch::fetch(
                    url,
                    fetch_opts,
                    move |t| c2.total.store(t, Ordering::Relaxed),
                    move |chunk| {
                        c.fetched.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        hash_tx.send(chunk.clone()).is_ok() && dec_tx.send(chunk).is_ok()
                    },
                ))
            });
        let hash_h = std::thread::Builder::new()
            .name("hash".into())
            .spawn_scoped(s, move || {
                let mut h = Hasher::new(algo);
                for chunk in hash_rx {
                    h.update(&chunk);
                }
                h.finish_hex()
            });
        let decode_h = std::thread::Builder::new()
            .name("decode".into())
            .spawn_scoped(s, move || -> Result<Format, DecodeError> {
                let mut src = ChanReader {
                    rx: dec_rx,
                    cur: Bytes::new(),
                    pos: 0,
                };
                let fmt = format::sniff(src.peek(format::SNIFF_LEN).map_err(DecodeError::Input)?)?;
                let mut sink = PoolSink {
                    pool: pool_rx,
                    tx: write_tx,
                    cur: None,
                    filled: 0,
                    offset: 0,
                };
                format::decode(&mut src, fmt, &mut sink)?;
                sink.flush().map_err(DecodeError::Sink)?;
                sink.tx
                    .send(WriteMsg::Done)
                    .map_err(|_| DecodeError::Sink(writer_gone()))?;
                Ok(fmt)
            });
        let write_h = std::thread::Builder::new()
            .name("write".into())
            .spawn_scoped(s, || write_loop(disks, write_rx, pool_tx, counters));

        let spawn_err = |_| ImageWriteError::Internal("spawning a pipeline thread");
        let (fetch_h, hash_h, decode_h, write_h) = (
            fetch_h.map_err(spawn_err)?,
            hash_h.map_err(spawn_err)?,
            decode_h.map_err(spawn_err)?,
            write_h.map_err(spawn_err)?,
        );
        let panicked = |_| ImageWriteError::Internal("a pipeline thread panicked");
        let fetched = fetch_h.join().map_err(panicked)?;
        let decoded = decode_h.join().map_err(panicked)?;
        let written = write_h.join().map_err(panicked)?;
        let digest = hash_h.join().map_err(panicked)?;

        // Report the original failure: a broken download explains a truncated
        // stream, and a failed disk explains a decoder whose output was refused.
        let fetch = match fetched {
            Err(FetchError::Cancelled) => None,
            Err(e) => return Err(e.into()),
            Ok(f) => Some(f),
        };
        let written = match written {
            Err(ImageWriteError::Cancelled) => None,
            Err(e) => return Err(e),
            Ok(w) => Some(w),
        };
        let format = decoded?;
        let (head, image_len) =
            written.ok_or(ImageWriteError::Internal("writer stopped without an error"))?;
        let fetch = fetch.ok_or(ImageWriteError::Internal(
            "download cancelled without an error",
        ))?;
        Ok(Streamed {
            head,
            format,
            digest,
            image_len,
            fetch,
        })
    })
}

#[cfg(test)]
mod tests;
