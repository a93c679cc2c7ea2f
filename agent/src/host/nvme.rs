//! NVMe admin commands through the kernel's passthrough ioctl (`NVME_IOCTL_ADMIN_CMD` on a
//! namespace's block device): Identify and Format NVM, for the secure erase. The command
//! words are built and the answers read by the pure code in `wipe::nvme`; this is the IO.

use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::time::Duration;

/// `struct nvme_passthru_cmd` of `<linux/nvme_ioctl.h>` (72 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PassthruCmd {
    pub opcode: u8,
    pub flags: u8,
    pub rsvd1: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub metadata: u64,
    pub addr: u64,
    pub metadata_len: u32,
    pub data_len: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
    pub timeout_ms: u32,
    pub result: u32,
}

const _: () = assert!(size_of::<PassthruCmd>() == 72);

mod ioctl {
    nix::ioctl_none!(nvme_ioctl_id, b'N', 0x40);
    nix::ioctl_readwrite!(nvme_admin_cmd, b'N', 0x41, super::PassthruCmd);
}

/// How an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    /// The ioctl itself failed (not an NVMe device, no permission, timeout).
    #[error("NVMe ioctl failed: {0}")]
    Ioctl(#[from] nix::errno::Errno),
    /// The controller completed the command with an error status.
    #[error("the controller refused the command: status {0:#06x}")]
    Status(u32),
}

/// The namespace ID of the namespace block device `fd`.
pub fn namespace_id(fd: BorrowedFd<'_>) -> Result<u32, NvmeError> {
    // SAFETY: NVME_IOCTL_ID takes no argument; `fd` is a valid open descriptor.
    let id = unsafe { ioctl::nvme_ioctl_id(fd.as_raw_fd()) }?;
    u32::try_from(id).map_err(|_| NvmeError::Status(0xffff))
}

/// Identify with `cns` for namespace `nsid`: the 4096-byte data structure.
pub fn identify(fd: BorrowedFd<'_>, nsid: u32, cns: u32) -> Result<Box<[u8; 4096]>, NvmeError> {
    let mut data = Box::new([0u8; 4096]);
    let mut cmd = PassthruCmd {
        opcode: 0x06,
        nsid,
        addr: data.as_mut_ptr() as u64,
        data_len: 4096,
        cdw10: cns,
        ..Default::default()
    };
    admin(fd, &mut cmd)?;
    Ok(data)
}

/// Format NVM on namespace `nsid` with command dword 10 `cdw10` (LBA format, metadata and
/// protection settings, secure erase setting), waiting up to `timeout`.
pub fn format(
    fd: BorrowedFd<'_>,
    nsid: u32,
    cdw10: u32,
    timeout: Duration,
) -> Result<(), NvmeError> {
    let mut cmd = PassthruCmd {
        opcode: 0x80,
        nsid,
        cdw10,
        timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        ..Default::default()
    };
    admin(fd, &mut cmd)
}

fn admin(fd: BorrowedFd<'_>, cmd: &mut PassthruCmd) -> Result<(), NvmeError> {
    // SAFETY: `cmd` is a valid, exclusively borrowed nvme_passthru_cmd; when it carries a
    // data buffer (`addr`, `data_len`), the caller keeps that buffer alive and writable for
    // `data_len` bytes until this call returns.
    let status = unsafe { ioctl::nvme_admin_cmd(fd.as_raw_fd(), cmd) }?;
    match u32::try_from(status) {
        Ok(0) => Ok(()),
        Ok(s) => Err(NvmeError::Status(s)),
        Err(_) => Err(NvmeError::Status(0xffff)),
    }
}
