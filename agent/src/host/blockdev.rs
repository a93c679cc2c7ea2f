//! A disk (block device, or a regular file in unit tests) opened for image
//! writing, wiping and surface scans, with the block ioctls the agent needs.
//!
//! Writes go through `O_DIRECT` when the device accepts it, so callers must
//! pass sector-aligned offsets and lengths and [`AlignedBuf`] memory;
//! [`Disk::write_at`] takes care of that for odd-sized callers.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::aligned::{ALIGN, AlignedBuf};

/// Block ioctls, declared here because neither nix nor libc define them.
mod ioctl {
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
    nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc::c_int);
    nix::ioctl_read_bad!(blkpbszget, nix::request_code_none!(0x12, 123), libc::c_int);
    nix::ioctl_read_bad!(blkroget, nix::request_code_none!(0x12, 94), libc::c_int);
    nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);
    nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
    nix::ioctl_none_bad!(blkrrpart, nix::request_code_none!(0x12, 95));
    nix::ioctl_none_bad!(blkflsbuf, nix::request_code_none!(0x12, 97));
}

/// Why a disk could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The path does not exist.
    #[error("device {0} does not exist")]
    NotFound(PathBuf),
    /// The kernel marks the device read-only.
    #[error("device {0} is read-only")]
    ReadOnly(PathBuf),
    /// Someone else holds the device (mounted, in a RAID or LVM).
    #[error("device {0} is busy (mounted or held by another driver)")]
    Busy(PathBuf),
    /// Any other open failure.
    #[error("opening {path}")]
    Open {
        /// Device path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An I/O call failed.
    #[error("{op} on {path} at offset {offset}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// Device path.
        path: PathBuf,
        /// Byte offset.
        offset: u64,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// An open disk.
#[derive(Debug)]
pub struct Disk {
    file: File,
    path: PathBuf,
    size: u64,
    logical: u32,
    physical: u32,
    block: bool,
    direct: bool,
}

fn ioctl_err(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Disk {
    /// Open `path` for writing: exclusively (a mounted disk is refused) and with
    /// `O_DIRECT` when `direct` is set and the device supports it.
    pub fn open_write(path: &Path, direct: bool) -> Result<Disk, DiskError> {
        Self::open_inner(path, true, direct)
    }

    /// Open `path` read-only (inventory, verification).
    pub fn open_read(path: &Path) -> Result<Disk, DiskError> {
        Self::open_inner(path, false, false)
    }

    /// Open `path` read-only for long sequential reads: with `O_DIRECT` (no page cache, so
    /// the medium itself answers) when the device takes it, else buffered. A file system
    /// that accepts `O_DIRECT` at open but refuses the first aligned read with `EINVAL`
    /// gets a buffered descriptor too. Never exclusive: a mounted disk may be read.
    pub fn open_read_direct(path: &Path) -> Result<Disk, DiskError> {
        let disk = Self::open_inner(path, false, true)?;
        if !disk.direct || disk.size == 0 {
            return Ok(disk);
        }
        let mut probe = AlignedBuf::new(disk.direct_granule_len());
        match disk.file.read_at(&mut probe, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(path = %path.display(), "O_DIRECT reads refused; reading through the page cache");
                Self::open_inner(path, false, false)
            }
            // Any other failure (a bad first sector) is the reader's to find and report.
            _ => Ok(disk),
        }
    }

    fn open_inner(path: &Path, write: bool, direct: bool) -> Result<Disk, DiskError> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => DiskError::NotFound(path.to_path_buf()),
            _ => DiskError::Open {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        let block = meta.file_type().is_block_device();
        let open = |flags: i32| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(flags)
                .open(path)
        };
        let mut flags = 0;
        if write && block {
            flags |= libc::O_EXCL;
        }
        let map_open = |e: io::Error| match e.raw_os_error() {
            Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) if write => {
                DiskError::ReadOnly(path.to_path_buf())
            }
            Some(libc::EBUSY) => DiskError::Busy(path.to_path_buf()),
            Some(libc::ENOENT) | Some(libc::ENXIO) => DiskError::NotFound(path.to_path_buf()),
            _ => DiskError::Open {
                path: path.to_path_buf(),
                source: e,
            },
        };
        let (file, direct) = if direct {
            match open(flags | libc::O_DIRECT) {
                Ok(f) => (f, true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    (open(flags).map_err(map_open)?, false)
                }
                Err(e) => return Err(map_open(e)),
            }
        } else {
            (open(flags).map_err(map_open)?, false)
        };
        let mut disk = Disk {
            file,
            path: path.to_path_buf(),
            size: meta.len(),
            logical: 512,
            physical: 512,
            block,
            direct,
        };
        if block {
            let fd = disk.file.as_raw_fd();
            let mut size = 0u64;
            let mut lss: libc::c_int = 0;
            let mut pss: libc::c_int = 0;
            let mut ro: libc::c_int = 0;
            let io_err = |op: &'static str, e| DiskError::Io {
                op,
                path: path.to_path_buf(),
                offset: 0,
                source: ioctl_err(e),
            };
            // SAFETY: fd is an open block device and each pointer is a valid
            // out-parameter of the type the ioctl writes.
            unsafe {
                ioctl::blkgetsize64(fd, &mut size).map_err(|e| io_err("BLKGETSIZE64", e))?;
                ioctl::blksszget(fd, &mut lss).map_err(|e| io_err("BLKSSZGET", e))?;
                ioctl::blkpbszget(fd, &mut pss).map_err(|e| io_err("BLKPBSZGET", e))?;
                ioctl::blkroget(fd, &mut ro).map_err(|e| io_err("BLKROGET", e))?;
            }
            if write && ro != 0 {
                return Err(DiskError::ReadOnly(path.to_path_buf()));
            }
            disk.size = size;
            disk.logical = u32::try_from(lss).unwrap_or(512).max(512);
            disk.physical = u32::try_from(pss).unwrap_or(512).max(disk.logical);
        }
        Ok(disk)
    }

    /// The open descriptor, for device ioctls (NVMe admin commands).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd as _;
        self.file.as_fd()
    }

    /// The device path this disk was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Logical sector size in bytes.
    pub fn logical_sector_size(&self) -> u32 {
        self.logical
    }
    /// Physical sector size in bytes.
    pub fn physical_sector_size(&self) -> u32 {
        self.physical
    }
    /// Whether reads and writes bypass the page cache (`O_DIRECT`).
    pub fn is_direct(&self) -> bool {
        self.direct
    }
    /// Whether this is a block device (not a regular file).
    pub fn is_block_device(&self) -> bool {
        self.block
    }

    fn io(&self, op: &'static str, offset: u64, source: io::Error) -> DiskError {
        DiskError::Io {
            op,
            path: self.path.clone(),
            offset,
            source,
        }
    }

    /// Write an aligned buffer at an aligned offset (the hot path).
    pub fn write_aligned(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.io("writing", offset, e))
    }

    /// Write any bytes at any offset: read-modify-write of the sectors around it
    /// when needed, so it also works under `O_DIRECT`.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<(), DiskError> {
        let sector = u64::from(self.logical);
        let start = offset / sector * sector;
        let end = (offset + data.len() as u64).div_ceil(sector) * sector;
        let len = usize::try_from(end - start)
            .map_err(|_| self.io("writing", offset, io::Error::other("write too large")))?;
        let mut buf = AlignedBuf::new(len);
        let buf = &mut buf[..len];
        if start != offset || end != offset + data.len() as u64 {
            self.file
                .read_exact_at(buf, start)
                .map_err(|e| self.io("reading", start, e))?;
        }
        let skip = usize::try_from(offset - start).unwrap_or(0);
        buf[skip..skip + data.len()].copy_from_slice(data);
        self.write_aligned(buf, start)
    }

    /// Offsets and lengths of reads and writes on a direct disk are multiples of this: the
    /// logical sector of a block device, at least [`ALIGN`] (which also covers a file's
    /// file system block).
    pub fn direct_granule_len(&self) -> usize {
        usize::try_from(self.logical).unwrap_or(ALIGN).max(ALIGN)
    }

    /// One positional read of at most `buf.len()` bytes at `offset` (aligned if the disk is
    /// direct): the bytes read, 0 at the end. A short read is not an error.
    pub fn read_some_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    /// Read exactly `buf.len()` bytes at `offset` (aligned if the disk is direct).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| self.io("reading", offset, e))
    }

    /// Write zeroes over `[offset, offset + len)`, clamped to the disk.
    pub fn zero_range(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        let end = (offset + len).min(self.size);
        let chunk = 1 << 20;
        let zeros = AlignedBuf::new(chunk);
        let mut pos = offset.min(end);
        while pos < end {
            let n = usize::try_from((end - pos).min(chunk as u64)).unwrap_or(chunk);
            self.write_at(&zeros[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }

    /// `BLKDISCARD` over a range.
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        let range = [offset, len];
        // SAFETY: fd is open; the ioctl reads a [u64; 2] we own.
        unsafe { ioctl::blkdiscard(self.file.as_raw_fd(), &range) }
            .map(|_| ())
            .map_err(|e| self.io("BLKDISCARD", offset, ioctl_err(e)))
    }

    /// `BLKZEROOUT` over a range (write-zeroes, may unmap).
    pub fn zeroout(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        let range = [offset, len];
        // SAFETY: fd is open; the ioctl reads a [u64; 2] we own.
        unsafe { ioctl::blkzeroout(self.file.as_raw_fd(), &range) }
            .map(|_| ())
            .map_err(|e| self.io("BLKZEROOUT", offset, ioctl_err(e)))
    }

    /// fsync, then drop the kernel's buffer cache for the device so that later
    /// readers see what is on the medium.
    pub fn sync(&self) -> Result<(), DiskError> {
        self.file.sync_all().map_err(|e| self.io("fsync", 0, e))?;
        if self.block {
            // SAFETY: fd is an open block device; BLKFLSBUF takes no argument.
            unsafe { ioctl::blkflsbuf(self.file.as_raw_fd()) }
                .map_err(|e| self.io("BLKFLSBUF", 0, ioctl_err(e)))?;
        }
        Ok(())
    }

    /// Ask the kernel to re-read the partition table. A loop device without
    /// partition scanning answers `EINVAL`, which is not a failure for us.
    pub fn reread_partitions(&self) -> Result<(), DiskError> {
        if !self.block {
            return Ok(());
        }
        let fd = self.file.as_raw_fd();
        let mut tries = 0;
        loop {
            // SAFETY: fd is an open block device; BLKRRPART takes no argument.
            match unsafe { ioctl::blkrrpart(fd) } {
                Ok(_) | Err(nix::errno::Errno::EINVAL) => return Ok(()),
                // Partitions can be briefly busy right after a write (udev probing).
                Err(nix::errno::Errno::EBUSY) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(self.io("BLKRRPART", 0, ioctl_err(e))),
            }
        }
    }
}
