//! The BMC's IPv4 address, read in-band through the kernel's IPMI device (`/dev/ipmi0`,
//! from `ipmi_si` + `ipmi_devintf`): IPMI "Get LAN Configuration Parameters" (network
//! function transport `0x0c`, command `0x02`), parameter 3 (IP address), on LAN channels 1
//! to 11 until one has a non-zero address, as Ironic's agent does with `ipmitool lan print`.
//!
//! Request building and response parsing are pure; [`address`] is the only IO and returns
//! `None` quickly when the machine has no IPMI device (every VM here).

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// Network function "transport" (requests).
pub const NETFN_TRANSPORT: u8 = 0x0c;
/// Get LAN Configuration Parameters.
pub const CMD_GET_LAN_CONFIG: u8 = 0x02;
/// LAN configuration parameter 3: IP address.
pub const PARAM_IP_ADDRESS: u8 = 3;

/// The request data for `channel`'s IP address: channel (bit 7 clear: get the value, not
/// only the revision), parameter selector, set selector, block selector.
pub fn lan_ip_request(channel: u8) -> [u8; 4] {
    [channel & 0x0f, PARAM_IP_ADDRESS, 0, 0]
}

/// The address in a Get LAN Configuration Parameters response (completion code, parameter
/// revision, four address bytes); `None` on an error completion code, a short answer or
/// 0.0.0.0 (no address configured on that channel).
pub fn parse_lan_ip(resp: &[u8]) -> Option<Ipv4Addr> {
    let (&cc, rest) = resp.split_first()?;
    if cc != 0 {
        return None;
    }
    let b: [u8; 4] = rest.get(1..5)?.try_into().ok()?;
    let ip = Ipv4Addr::from(b);
    (!ip.is_unspecified()).then_some(ip)
}

/// The first channel's address among `answers` (channel, response), in channel order.
pub fn first_address<'a>(answers: impl IntoIterator<Item = (u8, &'a [u8])>) -> Option<Ipv4Addr> {
    answers.into_iter().find_map(|(_, r)| parse_lan_ip(r))
}

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

/// Sends one request to the local BMC and waits up to `timeout` for its response data
/// (completion code first).
fn transact(
    dev: &std::fs::File,
    netfn: u8,
    cmd: u8,
    data: &[u8],
    msgid: i64,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
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
    unsafe { ipmi_send_command(dev.as_raw_fd(), &raw mut req) }.map_err(std::io::Error::from)?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd {
            fd: dev.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&raw mut pfd, 1, left.as_millis().min(60_000) as i32) };
        if r <= 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
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
        unsafe { ipmi_receive_msg_trunc(dev.as_raw_fd(), &raw mut recv) }
            .map_err(std::io::Error::from)?;
        if recv.msgid == msgid {
            let n = usize::from(recv.msg.data_len).min(rdata.len());
            return Ok(rdata[..n].to_vec());
        }
    }
}

/// The BMC's IPv4 address, or `None` when there is no IPMI device or no channel has one.
pub fn address(dev_path: &Path) -> Option<String> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_path)
        .ok()?;
    let mut answers: Vec<(u8, Vec<u8>)> = Vec::new();
    for channel in 1u8..=11 {
        match transact(
            &dev,
            NETFN_TRANSPORT,
            CMD_GET_LAN_CONFIG,
            &lan_ip_request(channel),
            i64::from(channel),
            Duration::from_secs(2),
        ) {
            Ok(r) => {
                let found = parse_lan_ip(&r).is_some();
                answers.push((channel, r));
                if found {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(channel, error = %e, "IPMI LAN parameters");
                if e.kind() == std::io::ErrorKind::TimedOut {
                    break;
                }
            }
        }
    }
    first_address(answers.iter().map(|(c, r)| (*c, r.as_slice()))).map(|ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_asks_for_the_ip_parameter_of_a_channel() {
        assert_eq!(lan_ip_request(1), [0x01, 0x03, 0x00, 0x00]);
        assert_eq!(lan_ip_request(0x8e), [0x0e, 0x03, 0x00, 0x00]);
    }

    #[test]
    fn parses_lan_ip_answers() {
        // A Dell iDRAC-style answer: completion code 0, revision 0x11, 10.20.30.40.
        assert_eq!(
            parse_lan_ip(&[0x00, 0x11, 10, 20, 30, 40]),
            Some(Ipv4Addr::new(10, 20, 30, 40))
        );
        // Extra trailing bytes are ignored.
        assert_eq!(
            parse_lan_ip(&[0x00, 0x11, 192, 0, 2, 7, 0xff]),
            Some(Ipv4Addr::new(192, 0, 2, 7))
        );
        assert_eq!(parse_lan_ip(&[0x00, 0x11, 0, 0, 0, 0]), None, "unset");
        assert_eq!(
            parse_lan_ip(&[0xcc]),
            None,
            "invalid data field (no such channel)"
        );
        assert_eq!(
            parse_lan_ip(&[0x80, 0x11, 10, 0, 0, 1]),
            None,
            "param unsupported"
        );
        assert_eq!(parse_lan_ip(&[0x00, 0x11, 10, 0]), None, "short");
        assert_eq!(parse_lan_ip(&[]), None);
    }

    #[test]
    fn first_channel_with_an_address_wins() {
        let a: &[u8] = &[0xcc];
        let b: &[u8] = &[0x00, 0x11, 0, 0, 0, 0];
        let c: &[u8] = &[0x00, 0x11, 172, 16, 0, 9];
        let d: &[u8] = &[0x00, 0x11, 172, 16, 0, 10];
        assert_eq!(
            first_address([(1, a), (2, b), (3, c), (4, d)]),
            Some(Ipv4Addr::new(172, 16, 0, 9))
        );
        assert_eq!(first_address([(1, a), (2, b)]), None);
    }

    #[test]
    fn no_ipmi_device_is_no_address() {
        let t = std::time::Instant::now();
        assert_eq!(address(Path::new("/nonexistent/ipmi0")), None);
        assert!(t.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn kernel_structs_have_the_x86_64_layout() {
        // <linux/ipmi.h> on LP64: the ioctl numbers encode these sizes.
        assert_eq!(std::mem::size_of::<IpmiMsg>(), 16);
        assert_eq!(std::mem::size_of::<IpmiReq>(), 40);
        assert_eq!(std::mem::size_of::<IpmiRecv>(), 48);
        assert_eq!(std::mem::size_of::<SystemInterfaceAddr>(), 8);
    }
}
