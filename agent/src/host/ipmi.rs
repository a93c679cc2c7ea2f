//! The kernel's IPMI device (`/dev/ipmi0`, from `ipmi_si` + `ipmi_devintf`): one request
//! to the local BMC through the system interface and its response, by ioctl
//! (`IPMICTL_SEND_COMMAND`, `poll`, `IPMICTL_RECEIVE_MSG_TRUNC`), as `ipmitool -I open`
//! does. No IPMI rule lives here: what a request holds and what an answer means is
//! `crate::bmc`'s business.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// `struct ipmi_msg` of `<linux/ipmi.h>`.
#[repr(C)]
struct IpmiMsg {
    netfn: u8,
    cmd: u8,
    data_len: u16,
    data: *mut u8,
}

/// `struct ipmi_req`.
#[repr(C)]
struct IpmiReq {
    addr: *mut u8,
    addr_len: u32,
    msgid: libc::c_long,
    msg: IpmiMsg,
}

/// `struct ipmi_recv`.
#[repr(C)]
struct IpmiRecv {
    recv_type: libc::c_int,
    addr: *mut u8,
    addr_len: u32,
    msgid: libc::c_long,
    msg: IpmiMsg,
}

/// `struct ipmi_system_interface_addr`: the local BMC.
#[repr(C)]
struct SystemInterfaceAddr {
    addr_type: libc::c_int,
    channel: libc::c_short,
    lun: u8,
}

const IPMI_SYSTEM_INTERFACE_ADDR_TYPE: libc::c_int = 0x0c;
const IPMI_BMC_CHANNEL: libc::c_short = 0x0f;

nix::ioctl_read!(ipmi_send_command, b'i', 13, IpmiReq);
nix::ioctl_readwrite!(ipmi_receive_msg_trunc, b'i', 11, IpmiRecv);

/// An open IPMI device; each request gets its own message id.
#[derive(Debug)]
pub struct IpmiDevice {
    file: File,
    next_msgid: i64,
}

impl IpmiDevice {
    /// Opens the device read-write (the kernel needs both for requests).
    pub fn open(path: &Path) -> io::Result<IpmiDevice> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(IpmiDevice {
            file,
            next_msgid: 1,
        })
    }

    /// Sends one request to the local BMC and waits up to `timeout` for its response data
    /// (completion code first). A response to an earlier request that timed out is read
    /// and dropped.
    pub fn request(
        &mut self,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        let msgid = self.next_msgid;
        self.next_msgid = self.next_msgid.wrapping_add(1);
        let fd = self.file.as_raw_fd();
        let mut addr = SystemInterfaceAddr {
            addr_type: IPMI_SYSTEM_INTERFACE_ADDR_TYPE,
            channel: IPMI_BMC_CHANNEL,
            lun: 0,
        };
        let mut body = data.to_vec();
        let mut req = IpmiReq {
            addr: (&raw mut addr).cast(),
            addr_len: std::mem::size_of::<SystemInterfaceAddr>() as u32,
            msgid,
            msg: IpmiMsg {
                netfn,
                cmd,
                data_len: u16::try_from(body.len()).unwrap_or(u16::MAX),
                data: body.as_mut_ptr(),
            },
        };
        // SAFETY: req points at an address and a body that live until the call returns; the
        // kernel copies both during the ioctl.
        unsafe { ipmi_send_command(fd, &raw mut req) }.map_err(io::Error::from)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&raw mut pfd, 1, left.as_millis().min(60_000) as i32) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer from the BMC",
                ));
            }
            let mut raddr = [0u8; 64];
            let mut rdata = [0u8; 256];
            let mut recv = IpmiRecv {
                recv_type: 0,
                addr: raddr.as_mut_ptr(),
                addr_len: raddr.len() as u32,
                msgid: 0,
                msg: IpmiMsg {
                    netfn: 0,
                    cmd: 0,
                    data_len: rdata.len() as u16,
                    data: rdata.as_mut_ptr(),
                },
            };
            // SAFETY: recv points at buffers of the lengths it states, alive for the call.
            unsafe { ipmi_receive_msg_trunc(fd, &raw mut recv) }.map_err(io::Error::from)?;
            if recv.msgid == msgid {
                let n = usize::from(recv.msg.data_len).min(rdata.len());
                return Ok(rdata[..n].to_vec());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_structs_have_the_x86_64_layout() {
        // <linux/ipmi.h> on LP64: the ioctl numbers encode these sizes.
        assert_eq!(std::mem::size_of::<IpmiMsg>(), 16);
        assert_eq!(std::mem::size_of::<IpmiReq>(), 40);
        assert_eq!(std::mem::size_of::<IpmiRecv>(), 48);
        assert_eq!(std::mem::size_of::<SystemInterfaceAddr>(), 8);
    }

    #[test]
    fn a_missing_device_fails_to_open() {
        let e = IpmiDevice::open(Path::new("/nonexistent/ipmi0")).expect_err("no device");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
