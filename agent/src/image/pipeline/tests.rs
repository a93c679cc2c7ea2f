//! Each stage of the streaming pipeline on its own, over in-memory buffers and a regular
//! file: no root, no loop device, no HTTP. Every stage has a case that must fail, with the
//! error the operator would read. (The threaded whole, with HTTP and loop devices, is in
//! `tests/it/write_image.rs`.)

use std::io::Write as _;
use std::sync::mpsc::sync_channel;

use super::*;
use crate::image::checksum::Checksum;
use crate::image::verify_checksum;

/// A whole-disk MBR image of `len` bytes: a boot signature and a non-zero pattern (so that
/// what is not written stays visibly zero on the disk).
fn image(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
    v[510] = 0x55;
    v[511] = 0xAA;
    v
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// The channel reader fed with `data` in `chunk`-byte network chunks, then closed.
fn chan(data: &[u8], chunk: usize) -> ChanReader {
    let chunks: Vec<Bytes> = data.chunks(chunk).map(Bytes::copy_from_slice).collect();
    let (tx, rx) = sync_channel(chunks.len() + 1);
    for c in chunks {
        tx.send(c).expect("queued");
    }
    ChanReader {
        rx,
        cur: Bytes::new(),
        pos: 0,
    }
}

// --- hash and verify -------------------------------------------------------------------

fn digest(data: &[u8], chunk: usize) -> String {
    let mut h = Hasher::new(Algo::Sha256);
    for c in data.chunks(chunk) {
        h.update(c);
    }
    h.finish_hex()
}

#[test]
fn verify_accepts_the_bytes_as_served_whatever_the_chunking() {
    let served = zstd(&image(3 << 20));
    let expected = Checksum {
        algo: Algo::Sha256,
        hex: digest(&served, served.len()),
    };
    for chunk in [1 << 10, 64 << 10, 1 << 20] {
        verify_checksum(&expected, &digest(&served, chunk)).expect("same bytes");
    }
}

#[test]
fn verify_refuses_one_flipped_byte_naming_both_digests() {
    let mut served = zstd(&image(1 << 20));
    let good = digest(&served, 4096);
    let expected = Checksum {
        algo: Algo::Sha256,
        hex: good.clone(),
    };
    let mid = served.len() / 2;
    served[mid] ^= 0x01;
    let bad = digest(&served, 4096);
    let err = verify_checksum(&expected, &bad).expect_err("corrupted");
    assert!(
        matches!(err, ImageWriteError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("checksum mismatch: expected sha256:{good}, got sha256:{bad}")
    );
}

// --- the network-to-decoder reader -----------------------------------------------------

#[test]
fn chan_reader_peeks_across_chunks_and_reads_in_order() {
    let mut r = chan(b"abcdefg", 2);
    assert_eq!(r.peek(5).expect("peek"), b"abcde");
    assert_eq!(r.position(), 0);
    let mut out = Vec::new();
    r.read_to_end(&mut out).expect("read");
    assert_eq!(out, b"abcdefg");
    assert_eq!(r.position(), 7);
    assert_eq!(r.peek(4).expect("peek at the end"), b"");
}

// --- decode into pooled aligned buffers ------------------------------------------------

/// What the decoder hands the writer: (offset, bytes) per buffer.
type Shipped = Vec<(u64, Vec<u8>)>;

/// Runs the decode stage as the pipeline does: sniff, decode into a [`PoolSink`], flush,
/// `Done`; returns the format and the messages the writer would get, as (offset, bytes).
fn decode_stage(served: &[u8]) -> Result<(Format, Shipped), DecodeError> {
    let mut src = chan(served, 64 << 10);
    let (pool_tx, pool_rx) = sync_channel(BUF_COUNT);
    for _ in 0..BUF_COUNT {
        pool_tx.send(AlignedBuf::new(BUF_LEN)).expect("pool");
    }
    let (tx, rx) = sync_channel(64);
    let collect = std::thread::spawn(move || {
        let mut got = Vec::new();
        for m in rx {
            match m {
                WriteMsg::Data { offset, buf, len } => {
                    got.push((offset, buf[..len].to_vec()));
                    // The writer hands each buffer back to the pool.
                    let _ = pool_tx.send(buf);
                }
                WriteMsg::Done => break,
            }
        }
        got
    });
    let result = (|| {
        let fmt = format::sniff(src.peek(format::SNIFF_LEN).map_err(DecodeError::Input)?)?;
        let mut sink = PoolSink {
            pool: pool_rx,
            tx,
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
    })();
    let got = collect.join().expect("collector");
    result.map(|fmt| (fmt, got))
}

fn concat(msgs: &[(u64, Vec<u8>)]) -> Vec<u8> {
    msgs.iter().flat_map(|(_, b)| b.iter().copied()).collect()
}

#[test]
fn decode_stage_ships_whole_buffers_in_order() {
    let img = image(2 * BUF_LEN + 1000);
    for (served, want) in [(zstd(&img), Format::Zstd), (gzip(&img), Format::Gzip)] {
        let (fmt, msgs) = decode_stage(&served).expect("decodes");
        assert_eq!(fmt, want);
        let shape: Vec<(u64, usize)> = msgs.iter().map(|(o, b)| (*o, b.len())).collect();
        assert_eq!(
            shape,
            vec![
                (0, BUF_LEN),
                (BUF_LEN as u64, BUF_LEN),
                (2 * BUF_LEN as u64, 1000)
            ]
        );
        assert!(concat(&msgs) == img, "{want:?} output differs");
    }
}

#[test]
fn decode_stage_fails_clearly_on_a_truncated_or_corrupt_stream() {
    let img = image(BUF_LEN + 1000);
    let z = zstd(&img);
    let err = decode_stage(&z[..z.len() / 2]).expect_err("truncated zstd");
    assert_eq!(err.to_string(), "zstd stream is truncated");

    let mut g = gzip(&img);
    let n = g.len();
    g[n - 6] ^= 0xff; // in the CRC32 of the gzip trailer
    let err = decode_stage(&g).expect_err("corrupt gzip");
    assert_eq!(err.to_string(), "corrupt gzip stream", "{err:?}");
}

// --- the writer: head held back, size bound, table gate, sector padding ----------------

/// A regular file as the disk (512-byte sectors, no `O_DIRECT`), all zeroes.
fn file_disk(dir: &tempfile::TempDir, len: u64) -> Disk {
    let path = dir.path().join("disk.img");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(len))
        .expect("disk file");
    Disk::open_write(&path, false).expect("open")
}

/// Runs the writer stage on `data` as the decoder would send it (whole `BUF_LEN` buffers).
fn write_stage(disk: &Disk, data: &[u8]) -> (Result<(AlignedBuf, u64), ImageWriteError>, u64) {
    write_stage_to(std::slice::from_ref(disk), data)
}

/// Runs the writer stage against several disks.
fn write_stage_to(
    disks: &[Disk],
    data: &[u8],
) -> (Result<(AlignedBuf, u64), ImageWriteError>, u64) {
    let chunks: Vec<&[u8]> = data.chunks(BUF_LEN).collect();
    let (tx, rx) = sync_channel(chunks.len() + 1);
    for (i, c) in chunks.iter().enumerate() {
        let mut buf = AlignedBuf::new(BUF_LEN);
        buf[..c.len()].copy_from_slice(c);
        tx.send(WriteMsg::Data {
            offset: (i * BUF_LEN) as u64,
            buf,
            len: c.len(),
        })
        .expect("queued");
    }
    tx.send(WriteMsg::Done).expect("queued");
    let (pool_tx, _pool_rx) = sync_channel(chunks.len() + 1);
    let counters = Counters::default();
    let r = write_loop(disks, rx, pool_tx, &counters);
    (r, counters.written.load(Ordering::Relaxed))
}

fn disk_bytes(disk: &Disk) -> Vec<u8> {
    std::fs::read(disk.path()).expect("read disk")
}

#[test]
fn writer_mirrors_every_byte_to_each_disk_and_is_bounded_by_the_smallest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    std::fs::File::create(&a)
        .and_then(|f| f.set_len(16 << 20))
        .expect("disk a");
    let disks = [
        Disk::open_write(&a, false).expect("open a"),
        file_disk(&dir, 32 << 20),
    ];
    let img = image(2 * BUF_LEN + 3000);
    let (r, written) = write_stage_to(&disks, &img);
    r.expect("written");
    assert_eq!(written, (img.len() - HEAD_LEN) as u64);
    for d in &disks {
        let on_disk = disk_bytes(d);
        assert!(on_disk[..HEAD_LEN].iter().all(|&b| b == 0));
        assert!(on_disk[HEAD_LEN..img.len()] == img[HEAD_LEN..]);
    }
    let (r, _) = write_stage_to(&disks, &image(5 * BUF_LEN));
    assert!(
        matches!(r, Err(ImageWriteError::TooLarge { disk_size, .. }) if disk_size == 16 << 20),
        "the smaller disk bounds the image"
    );
}

#[test]
fn writer_writes_all_but_the_head_and_pads_the_last_sector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = file_disk(&dir, 16 << 20);
    let img = image(2 * BUF_LEN + 3000);
    let (r, written) = write_stage(&disk, &img);
    let (head, end) = r.expect("written");
    assert_eq!(end, img.len() as u64);
    assert_eq!(&head[..], &img[..HEAD_LEN]);
    assert_eq!(written, (img.len() - HEAD_LEN) as u64);
    let on_disk = disk_bytes(&disk);
    assert!(
        on_disk[..HEAD_LEN].iter().all(|&b| b == 0),
        "the head is written last, by the caller"
    );
    assert!(on_disk[HEAD_LEN..img.len()] == img[HEAD_LEN..]);
    let padded = img.len().div_ceil(512) * 512;
    assert!(on_disk[img.len()..padded].iter().all(|&b| b == 0));
}

#[test]
fn writer_keeps_a_short_image_entirely_in_the_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = file_disk(&dir, 4 << 20);
    let img = image(4096);
    let (r, written) = write_stage(&disk, &img);
    let (head, end) = r.expect("written");
    assert_eq!((end, written), (4096, 0));
    assert_eq!(&head[..4096], &img[..]);
    assert!(head[4096..].iter().all(|&b| b == 0));
    assert!(disk_bytes(&disk).iter().all(|&b| b == 0));
}

#[test]
fn writer_refuses_an_image_larger_than_the_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = file_disk(&dir, BUF_LEN as u64 + 512);
    let img = image(2 * BUF_LEN);
    let (r, _) = write_stage(&disk, &img);
    let err = r.expect_err("too large");
    assert!(
        matches!(
            err,
            ImageWriteError::TooLarge {
                disk_size,
                image_at_least
            } if disk_size == BUF_LEN as u64 + 512 && image_at_least == 2 * BUF_LEN as u64
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "image is larger than the disk ({} bytes): at least {} bytes",
            BUF_LEN + 512,
            2 * BUF_LEN
        )
    );
}

#[test]
fn writer_refuses_an_image_without_a_table_before_writing_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = file_disk(&dir, 16 << 20);
    let mut noise = image(2 * BUF_LEN);
    noise[510] = 0;
    noise[511] = 0;
    let (r, written) = write_stage(&disk, &noise);
    let err = r.expect_err("refused");
    assert!(matches!(err, ImageWriteError::Refused(_)), "{err:?}");
    assert!(
        crate::error_chain(&err).contains("not a whole-disk image"),
        "{}",
        crate::error_chain(&err)
    );
    assert_eq!(written, 0);
    assert!(disk_bytes(&disk).iter().all(|&b| b == 0), "nothing written");
}
