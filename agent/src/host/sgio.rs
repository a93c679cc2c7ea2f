//! SCSI generic `SG_IO` on a disk's block device: one command descriptor block, an optional
//! data buffer, the sense data back. Used for ATA PASS-THROUGH(16) (`wipe::ata`), which the
//! kernel's libata translates to the drive.

use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::time::Duration;

/// `struct sg_io_hdr` of `<scsi/sg.h>` (not in the libc crate).
#[repr(C)]
#[derive(Debug)]
struct SgIoHdr {
    interface_id: i32,
    dxfer_direction: i32,
    cmd_len: u8,
    mx_sb_len: u8,
    iovec_count: u16,
    dxfer_len: u32,
    dxferp: *mut libc::c_void,
    cmdp: *const u8,
    sbp: *mut u8,
    timeout: u32,
    flags: u32,
    pack_id: i32,
    usr_ptr: *mut libc::c_void,
    status: u8,
    masked_status: u8,
    msg_status: u8,
    sb_len_wr: u8,
    host_status: u16,
    driver_status: u16,
    resid: i32,
    duration: u32,
    info: u32,
}

const SG_IO: libc::c_ulong = 0x2285;
const SG_DXFER_NONE: i32 = -1;
const SG_DXFER_TO_DEV: i32 = -2;
const SG_DXFER_FROM_DEV: i32 = -3;

/// Which way a command's data goes.
#[derive(Debug)]
pub enum Data<'a> {
    None,
    /// From the drive into the buffer.
    In(&'a mut [u8]),
    /// From the buffer to the drive.
    Out(&'a [u8]),
}

/// How a command failed.
#[derive(Debug, thiserror::Error)]
pub enum SgError {
    #[error("SG_IO failed: {0}")]
    Ioctl(std::io::Error),
    #[error(
        "the command failed: SCSI status {status:#04x}, host {host:#06x}, driver {driver:#06x}, sense {sense}"
    )]
    Failed {
        status: u8,
        host: u16,
        driver: u16,
        sense: String,
    },
    #[error("data buffer larger than SG_IO takes")]
    TooLarge,
}

/// Sends `cdb` with `data`, waiting up to `timeout`.
pub fn command(
    fd: BorrowedFd<'_>,
    cdb: &[u8; 16],
    data: Data<'_>,
    timeout: Duration,
) -> Result<(), SgError> {
    let mut sense = [0u8; 32];
    let (dir, ptr, len) = match data {
        Data::None => (SG_DXFER_NONE, std::ptr::null_mut(), 0),
        Data::In(b) => (SG_DXFER_FROM_DEV, b.as_mut_ptr().cast(), b.len()),
        Data::Out(b) => (SG_DXFER_TO_DEV, b.as_ptr().cast_mut().cast(), b.len()),
    };
    let mut hdr = SgIoHdr {
        interface_id: i32::from(b'S'),
        dxfer_direction: dir,
        cmd_len: 16,
        mx_sb_len: 32,
        iovec_count: 0,
        dxfer_len: u32::try_from(len).map_err(|_| SgError::TooLarge)?,
        dxferp: ptr,
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY: `hdr` is a valid sg_io_hdr; `cdb` (16 bytes), `sense` (32 bytes) and the data
    // buffer (`len` bytes, writable for `Data::In`; for `Data::Out` the kernel only reads it)
    // all outlive this call, which is synchronous.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SG_IO, &raw mut hdr) };
    if rc < 0 {
        return Err(SgError::Ioctl(std::io::Error::last_os_error()));
    }
    if hdr.status != 0 || hdr.host_status != 0 || hdr.driver_status != 0 {
        let n = usize::from(hdr.sb_len_wr).min(sense.len());
        return Err(SgError::Failed {
            status: hdr.status,
            host: hdr.host_status,
            driver: hdr.driver_status,
            sense: hex::encode(&sense[..n]),
        });
    }
    Ok(())
}
