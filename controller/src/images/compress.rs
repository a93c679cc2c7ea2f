//! Streaming zstd compression of a raw disk with both digests computed on the way.
//!
//! One reader thread reads the raw file in 1 MiB blocks and hands each block to a hashing
//! thread (sha256 of the raw content) and to the zstd encoder, whose worker threads
//! compress while the encoder's output is hashed (sha256 of the stored bytes, the ones the
//! agent downloads and verifies) and written. Memory stays bounded by a few blocks plus the
//! encoder's windows, whatever the image size.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use sha2::{Digest, Sha256};

const BLOCK: usize = 1 << 20;
/// Blocks in flight to the raw hasher.
const QUEUE: usize = 4;

/// Compression settings.
#[derive(Debug, Clone, Copy)]
pub struct CompressOptions {
    /// zstd level (1..=19).
    pub level: i32,
    /// zstd worker threads (0: single-threaded in the caller's thread).
    pub threads: u32,
}

impl Default for CompressOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        CompressOptions { level: 3, threads }
    }
}

/// What came out of [`compress_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    /// Raw bytes read.
    pub raw_size: u64,
    /// Hex sha256 of the raw bytes.
    pub raw_sha256: String,
    /// Bytes written.
    pub stored_size: u64,
    /// Hex sha256 of the bytes written.
    pub stored_sha256: String,
}

/// A writer that hashes and counts what passes through.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses `src` into a new file `dst` (which must not exist) and fsyncs it; calls
/// `progress(raw bytes read, raw size)` after each block.
pub fn compress_file(
    src: &Path,
    dst: &Path,
    opts: CompressOptions,
    progress: &dyn Fn(u64, u64),
) -> io::Result<Compressed> {
    let mut input = File::open(src)?;
    let size_hint = input.metadata()?.len();
    let out = File::options().write(true).create_new(true).open(dst)?;
    let writer = HashingWriter {
        inner: io::BufWriter::with_capacity(BLOCK, out),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut encoder = zstd::stream::write::Encoder::new(writer, opts.level)?;
    if opts.threads > 1 {
        encoder.multithread(opts.threads)?;
    }
    encoder.include_checksum(true)?;
    encoder.set_pledged_src_size(Some(size_hint))?;

    let (tx, rx) = sync_channel::<Arc<Vec<u8>>>(QUEUE);
    let hasher = std::thread::Builder::new()
        .name("raw-sha256".into())
        .spawn(move || {
            let mut h = Sha256::new();
            for block in rx {
                h.update(block.as_slice());
            }
            hex_lower(&h.finalize())
        })?;
    let mut raw_size = 0u64;
    let copied: io::Result<()> = (|| {
        loop {
            let mut block = vec![0u8; BLOCK];
            let n = read_full(&mut input, &mut block)?;
            if n == 0 {
                return Ok(());
            }
            block.truncate(n);
            raw_size += n as u64;
            encoder.write_all(&block)?;
            if tx.send(Arc::new(block)).is_err() {
                return Err(io::Error::other("raw hashing thread stopped"));
            }
            progress(raw_size, size_hint);
        }
    })();
    drop(tx);
    let raw_sha256 = hasher
        .join()
        .map_err(|_| io::Error::other("raw hashing thread panicked"))?;
    copied?;
    if raw_size != size_hint {
        return Err(io::Error::other(format!(
            "source changed size while reading ({size_hint} -> {raw_size} bytes)"
        )));
    }
    let mut writer = encoder.finish()?;
    writer.flush()?;
    let stored_sha256 = hex_lower(&writer.hasher.finalize());
    let file = writer.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(Compressed {
        raw_size,
        raw_sha256,
        stored_size: writer.bytes,
        stored_sha256,
    })
}

/// Reads until `buf` is full or the file ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Lower-case hex.
pub fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_both_digests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("disk.raw");
        // 3.5 MiB: not a multiple of the block, some zeros and some noise.
        let mut data = vec![0u8; 3 * BLOCK + BLOCK / 2];
        for (i, b) in data.iter_mut().enumerate().skip(BLOCK) {
            *b = (i.wrapping_mul(2654435761) >> 13) as u8;
        }
        std::fs::write(&src, &data).expect("write");
        let dst = dir.path().join("disk.raw.zst");
        let seen = std::sync::Mutex::new(Vec::new());
        let got = compress_file(
            &src,
            &dst,
            CompressOptions {
                level: 3,
                threads: 2,
            },
            &|done, total| seen.lock().expect("lock").push((done, total)),
        )
        .expect("compress");
        // One report per block, the last one at the end of the disk.
        let len = data.len() as u64;
        let b = BLOCK as u64;
        assert_eq!(
            seen.into_inner().expect("lock"),
            vec![(b, len), (2 * b, len), (3 * b, len), (len, len)]
        );
        let stored = std::fs::read(&dst).expect("read");
        assert_eq!(got.raw_size, data.len() as u64);
        assert_eq!(got.stored_size, stored.len() as u64);
        assert_eq!(got.raw_sha256, hex_lower(&Sha256::digest(&data)));
        assert_eq!(got.stored_sha256, hex_lower(&Sha256::digest(&stored)));
        assert_eq!(zstd::decode_all(stored.as_slice()).expect("decode"), data);
        // The destination is never overwritten.
        assert!(compress_file(&src, &dst, CompressOptions::default(), &|_, _| {}).is_err());
    }
}
