//! Image formats, sniffed by magic (never by name or Content-Type), and the
//! decode loop that turns served bytes into disk bytes.
//!
//! A compressed image may hold several concatenated frames/members/streams of
//! the same format (pzstd and pigz write those); anything else after the last
//! one is trailing data and an error, because it means the image is not what
//! the checksum's author thought it was.

use std::io::{self, BufRead, Read};

/// A format we can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Uncompressed disk image.
    Raw,
    /// gzip (RFC 1952).
    Gzip,
    /// xz.
    Xz,
    /// Zstandard.
    Zstd,
}

impl Format {
    /// Lowercase name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Gzip => "gzip",
            Format::Xz => "xz",
            Format::Zstd => "zstd",
        }
    }

    fn magic(self) -> &'static [u8] {
        match self {
            Format::Raw => b"",
            Format::Gzip => GZIP,
            Format::Xz => XZ,
            Format::Zstd => ZSTD,
        }
    }
}

const GZIP: &[u8] = &[0x1f, 0x8b];
const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Bytes needed to sniff a format.
pub const SNIFF_LEN: usize = 8;

/// Formats we recognise but refuse.
const REFUSED: &[(&[u8], &str)] = &[
    (
        b"QFI\xfb",
        "qcow2 (convert it on the controller at import time)",
    ),
    (b"BZh", "bzip2"),
    (&[0x04, 0x22, 0x4d, 0x18], "lz4"),
    (b"KDMV", "vmdk"),
    (b"vhdxfile", "vhdx"),
    (b"PK\x03\x04", "zip"),
    (&[0x5d, 0x00, 0x00], "lzma (legacy .lzma, use xz)"),
    (b"\x89LZO", "lzop"),
];

/// Why decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A format we know but do not write.
    #[error("unsupported image format: {0}")]
    Unsupported(&'static str),
    /// The compressed stream ended early.
    #[error("{format} stream is truncated")]
    Truncated {
        /// Format being decoded.
        format: &'static str,
    },
    /// Bytes after the end of the compressed stream.
    #[error("trailing data after the end of the {format} stream at byte {offset}")]
    TrailingData {
        /// Format being decoded.
        format: &'static str,
        /// Offset in the served stream where the trailing data starts.
        offset: u64,
    },
    /// The decoder rejected the data.
    #[error("corrupt {format} stream")]
    Corrupt {
        /// Format being decoded.
        format: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The consumer of decoded bytes failed (disk full, writer gone).
    #[error("decoded output was refused")]
    Sink(#[source] io::Error),
    /// Reading the input failed (the producer went away).
    #[error("reading the served stream")]
    Input(#[source] io::Error),
}

/// Pick the format from the first bytes of the stream.
pub fn sniff(head: &[u8]) -> Result<Format, DecodeError> {
    for f in [Format::Zstd, Format::Gzip, Format::Xz] {
        if head.starts_with(f.magic()) {
            return Ok(f);
        }
    }
    for (magic, name) in REFUSED {
        if head.starts_with(magic) {
            return Err(DecodeError::Unsupported(name));
        }
    }
    Ok(Format::Raw)
}

/// A buffered reader that can show the next `n` bytes without consuming them.
pub trait Peek: BufRead {
    /// Up to `n` upcoming bytes (fewer only at end of stream).
    fn peek(&mut self, n: usize) -> io::Result<&[u8]>;
    /// Bytes consumed so far.
    fn position(&self) -> u64;
}

/// Receiver of decoded output: it is handed a writable region to fill, so the
/// decoder writes straight into the (aligned) disk buffers.
pub trait Sink {
    /// A region to fill; never empty.
    fn space(&mut self) -> io::Result<&mut [u8]>;
    /// `n` bytes of the last region were filled.
    fn commit(&mut self, n: usize) -> io::Result<()>;
}

fn pump<R: Read>(mut r: R, sink: &mut dyn Sink, format: Format) -> Result<u64, DecodeError> {
    let mut total = 0u64;
    loop {
        let space = sink.space().map_err(DecodeError::Sink)?;
        let n = loop {
            match r.read(space) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(DecodeError::Truncated {
                        format: format.name(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Err(DecodeError::Input(e));
                }
                Err(e) => {
                    return Err(DecodeError::Corrupt {
                        format: format.name(),
                        source: e,
                    });
                }
            }
        };
        if n == 0 {
            return Ok(total);
        }
        sink.commit(n).map_err(DecodeError::Sink)?;
        total += n as u64;
    }
}

/// Decode the whole input into `sink`, returning the decoded size.
pub fn decode<R: Peek>(
    src: &mut R,
    format: Format,
    sink: &mut dyn Sink,
) -> Result<u64, DecodeError> {
    if format == Format::Raw {
        return pump(src, sink, format);
    }
    let mut total = 0;
    loop {
        let before = src.position();
        total += match format {
            Format::Zstd => {
                let d = zstd::stream::read::Decoder::with_buffer(&mut *src)
                    .map_err(|e| DecodeError::Corrupt {
                        format: "zstd",
                        source: e,
                    })?
                    .single_frame();
                pump(d, sink, format)?
            }
            Format::Gzip => pump(flate2::bufread::GzDecoder::new(&mut *src), sink, format)?,
            Format::Xz => pump(XzStream::new(&mut *src)?, sink, format)?,
            Format::Raw => 0,
        };
        // A decoder that returned EOF without consuming anything saw an empty
        // or cut stream; treat that as truncation rather than looping.
        if src.position() == before {
            return Err(DecodeError::Truncated {
                format: format.name(),
            });
        }
        let offset = src.position();
        let magic = format.magic();
        let next = src.peek(magic.len()).map_err(DecodeError::Input)?;
        if next.is_empty() {
            return Ok(total);
        }
        if next != magic {
            return Err(DecodeError::TrailingData {
                format: format.name(),
                offset,
            });
        }
    }
}

/// One xz stream that stops at its end (liblzma's `XzDecoder` keeps going and calls
/// whatever follows corrupt, which would hide trailing data and concatenation).
struct XzStream<'a, R> {
    src: &'a mut R,
    stream: liblzma::stream::Stream,
    done: bool,
}

impl<'a, R: BufRead> XzStream<'a, R> {
    fn new(src: &'a mut R) -> Result<Self, DecodeError> {
        let stream = liblzma::stream::Stream::new_stream_decoder(u64::MAX, 0).map_err(|e| {
            DecodeError::Corrupt {
                format: "xz",
                source: io::Error::other(e),
            }
        })?;
        Ok(XzStream {
            src,
            stream,
            done: false,
        })
    }
}

impl<R: BufRead> Read for XzStream<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        loop {
            let input = self.src.fill_buf()?;
            let eof = input.is_empty();
            let (in0, out0) = (self.stream.total_in(), self.stream.total_out());
            let action = if eof {
                liblzma::stream::Action::Finish
            } else {
                liblzma::stream::Action::Run
            };
            let status = self.stream.process(input, buf, action);
            let consumed = usize::try_from(self.stream.total_in() - in0).unwrap_or(0);
            let read = usize::try_from(self.stream.total_out() - out0).unwrap_or(0);
            self.src.consume(consumed);
            let status = status.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if status == liblzma::stream::Status::StreamEnd {
                self.done = true;
                return Ok(read);
            }
            if read > 0 {
                return Ok(read);
            }
            if eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "xz stream ends early",
                ));
            }
            if consumed == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "xz decoder made no progress",
                ));
            }
        }
    }
}

/// [`Peek`] over an in-memory slice or any `Read`, for tests and local files.
#[derive(Debug)]
pub struct PeekReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    pos: u64,
}

impl<R: Read> PeekReader<R> {
    /// Wrap a reader.
    pub fn new(inner: R) -> Self {
        PeekReader {
            inner,
            buf: Vec::with_capacity(1 << 16),
            start: 0,
            pos: 0,
        }
    }
    fn fill_to(&mut self, n: usize) -> io::Result<()> {
        if self.start > 0 && self.buf.len() - self.start < n {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        while self.buf.len() - self.start < n {
            let old = self.buf.len();
            self.buf.resize(old + (1 << 16), 0);
            let got = self.inner.read(&mut self.buf[old..]);
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            };
            self.buf.truncate(old + got);
            if got == 0 {
                break;
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for PeekReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for PeekReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.fill_to(1)?;
        }
        Ok(&self.buf[self.start..])
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
        self.pos += n as u64;
    }
}

impl<R: Read> Peek for PeekReader<R> {
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        self.fill_to(n)?;
        let end = (self.start + n).min(self.buf.len());
        Ok(&self.buf[self.start..end])
    }
    fn position(&self) -> u64 {
        self.pos
    }
}

/// A [`Sink`] collecting into a `Vec`, for tests.
#[derive(Debug, Default)]
pub struct VecSink {
    /// Decoded bytes.
    pub data: Vec<u8>,
    chunk: Vec<u8>,
}

impl Sink for VecSink {
    fn space(&mut self) -> io::Result<&mut [u8]> {
        self.chunk.resize(4096, 0);
        Ok(&mut self.chunk)
    }
    fn commit(&mut self, n: usize) -> io::Result<()> {
        self.data.extend_from_slice(&self.chunk[..n]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn sample() -> Vec<u8> {
        (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    fn compress(format: Format, data: &[u8]) -> Vec<u8> {
        match format {
            Format::Raw => data.to_vec(),
            Format::Zstd => zstd::encode_all(data, 3).expect("zstd"),
            Format::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).expect("gzip");
                e.finish().expect("gzip")
            }
            Format::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).expect("xz");
                e.finish().expect("xz")
            }
        }
    }

    fn run(input: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let mut r = PeekReader::new(input);
        let fmt = sniff(r.peek(SNIFF_LEN).map_err(DecodeError::Input)?)?;
        let mut sink = VecSink::default();
        decode(&mut r, fmt, &mut sink)?;
        Ok(sink.data)
    }

    #[test]
    fn round_trips_every_format() {
        let data = sample();
        for f in [Format::Raw, Format::Zstd, Format::Gzip, Format::Xz] {
            let c = compress(f, &data);
            assert_eq!(sniff(&c[..8]).expect("sniff"), f);
            assert_eq!(run(&c).expect("decode"), data, "{f:?}");
        }
    }

    #[test]
    fn accepts_concatenated_frames() {
        let data = sample();
        for f in [Format::Zstd, Format::Gzip, Format::Xz] {
            let mut c = compress(f, &data[..1000]);
            c.extend(compress(f, &data[1000..]));
            assert_eq!(run(&c).expect("decode"), data, "{f:?}");
        }
    }

    #[test]
    fn rejects_trailing_garbage() {
        for f in [Format::Zstd, Format::Gzip, Format::Xz] {
            let mut c = compress(f, &sample());
            let at = c.len() as u64;
            c.extend_from_slice(b"garbage!");
            match run(&c) {
                Err(DecodeError::TrailingData { offset, .. }) => assert_eq!(offset, at),
                other => panic!("{f:?}: expected trailing data, got {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_truncated_streams() {
        for f in [Format::Zstd, Format::Gzip, Format::Xz] {
            let c = compress(f, &sample());
            let cut = &c[..c.len() / 2];
            assert!(
                matches!(
                    run(cut),
                    Err(DecodeError::Truncated { .. } | DecodeError::Corrupt { .. })
                ),
                "{f:?}: {:?}",
                run(cut).map(|v| v.len())
            );
        }
    }

    #[test]
    fn refuses_known_unsupported_formats() {
        assert!(matches!(
            sniff(b"QFI\xfb\0\0\0\x03"),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            sniff(b"BZh91AY&"),
            Err(DecodeError::Unsupported("bzip2"))
        ));
        assert_eq!(sniff(b"\0\0\0\0\0\0\0\0").expect("raw"), Format::Raw);
    }
}
