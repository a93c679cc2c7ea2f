//! Interface configuration through the classic `SIOCSIF*`/`SIOCADDRT` ioctls, which need
//! no netlink stack: up, MII reads, IPv4 address and mask, default route. Nothing here
//! decides anything; callers are the ramdisk's network bring-up ([`crate::init::net`]) and
//! lease keeper ([`crate::init::lease`]).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::Context;

/// An `AF_INET` socket to issue interface ioctls on.
#[derive(Debug)]
pub struct Ioctl(OwnedFd);

fn ifreq(name: &str) -> anyhow::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    anyhow::ensure!(name.len() < r.ifr_name.len(), "interface name too long");
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) on Linux.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// `struct rtentry` of glibc (the libc crate has it only for musl).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

impl Ioctl {
    pub fn new() -> anyhow::Result<Self> {
        // SAFETY: plain socket(2) call, checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening an AF_INET socket");
        }
        // SAFETY: fd is fresh and owned by nobody else.
        Ok(Ioctl(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Issues `ioctl(2)` request `req` on the socket with `arg` as its argument; a failure
    /// is the OS error with `what` as context.
    ///
    /// # Safety
    ///
    /// `T` must be the type the kernel reads and writes for `req` (`libc::ifreq` for the
    /// `SIOC*IF*` and MII requests, [`RtEntry`] for `SIOCADDRT`), with every pointer in it
    /// valid for the call: the kernel copies `size_of` of that type from and to `arg`.
    unsafe fn call<T>(&self, req: libc::c_ulong, arg: &mut T, what: &str) -> anyhow::Result<()> {
        // SAFETY: the caller guarantees that `T` is what `req` expects (see # Safety), and
        // `arg` is a live exclusive reference, so the kernel's copy stays within it.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), req, arg as *mut T) };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context(what.to_owned());
        }
        Ok(())
    }

    pub fn up(&self, name: &str) -> anyhow::Result<()> {
        let mut r = ifreq(name)?;
        // SAFETY: SIOCGIFFLAGS reads and writes a `struct ifreq`, which `r` is.
        unsafe { self.call(libc::SIOCGIFFLAGS, &mut r, "reading interface flags") }?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { r.ifr_ifru.ifru_flags };
        r.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads a `struct ifreq`, which `r` is.
        unsafe { self.call(libc::SIOCSIFFLAGS, &mut r, "setting the interface up") }
            .with_context(|| format!("bringing {name} up"))
    }

    /// Reads MII register `reg` of the NIC's PHY (`SIOCGMIIPHY` + `SIOCGMIIREG`); works on
    /// a NIC that is still down for drivers that implement it (e1000, e1000e, igb, ...).
    pub fn mii_read(&self, name: &str, reg: u16) -> anyhow::Result<u16> {
        /// `struct mii_ioctl_data`, which the kernel reads and writes in the ifreq union.
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct MiiData {
            phy_id: u16,
            reg_num: u16,
            val_in: u16,
            val_out: u16,
        }
        let mut r = ifreq(name)?;
        // SAFETY: SIOCGMIIPHY reads and writes a `struct ifreq` (MII data in its union),
        // which `r` is.
        unsafe { self.call(libc::SIOCGMIIPHY, &mut r, "SIOCGMIIPHY") }?;
        // SAFETY: the union is 24 bytes, larger than MiiData; SIOCGMIIPHY filled phy_id.
        let mut data: MiiData = unsafe { std::ptr::read((&raw const r.ifr_ifru).cast()) };
        data.reg_num = reg;
        // SAFETY: as above, writing within the union.
        unsafe { std::ptr::write((&raw mut r.ifr_ifru).cast(), data) };
        // SAFETY: SIOCGMIIREG reads and writes a `struct ifreq` (MII data in its union),
        // which `r` is.
        unsafe { self.call(libc::SIOCGMIIREG, &mut r, "SIOCGMIIREG") }?;
        // SAFETY: SIOCGMIIREG filled val_out.
        let data: MiiData = unsafe { std::ptr::read((&raw const r.ifr_ifru).cast()) };
        Ok(data.val_out)
    }

    pub fn set_addr(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> anyhow::Result<()> {
        let mut r = ifreq(name)?;
        r.ifr_ifru.ifru_addr = sockaddr_in(addr);
        // SAFETY: SIOCSIFADDR reads a `struct ifreq`, which `r` is.
        unsafe { self.call(libc::SIOCSIFADDR, &mut r, "setting the address") }?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix.min(32)))
        };
        let mut r = ifreq(name)?;
        r.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
        // SAFETY: SIOCSIFNETMASK reads a `struct ifreq`, which `r` is.
        unsafe { self.call(libc::SIOCSIFNETMASK, &mut r, "setting the netmask") }?;
        let mut r = ifreq(name)?;
        r.ifr_ifru.ifru_broadaddr = sockaddr_in(Ipv4Addr::from(u32::from(addr) | !mask));
        // SAFETY: SIOCSIFBRDADDR reads a `struct ifreq`, which `r` is.
        unsafe {
            self.call(
                libc::SIOCSIFBRDADDR,
                &mut r,
                "setting the broadcast address",
            )
        }
    }

    /// Removes the IPv4 address (setting 0.0.0.0 deletes it); the kernel drops the routes
    /// through it.
    pub fn del_addr(&self, name: &str) -> anyhow::Result<()> {
        let mut r = ifreq(name)?;
        r.ifr_ifru.ifru_addr = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        // SAFETY: SIOCSIFADDR reads a `struct ifreq`, which `r` is.
        unsafe { self.call(libc::SIOCSIFADDR, &mut r, "removing the address") }
    }

    /// The interface's IPv4 address, if it has one.
    pub fn addr(&self, name: &str) -> anyhow::Result<Option<Ipv4Addr>> {
        let mut r = ifreq(name)?;
        // SAFETY: SIOCGIFADDR reads and writes a `struct ifreq`, which `r` is.
        let got = unsafe { self.call(libc::SIOCGIFADDR, &mut r, "reading the address") };
        match got {
            Ok(()) => {}
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::raw_os_error)
                    == Some(libc::EADDRNOTAVAIL) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        // SAFETY: SIOCGIFADDR filled ifru_addr with a sockaddr_in.
        let sin: libc::sockaddr_in = unsafe { std::mem::transmute(r.ifr_ifru.ifru_addr) };
        Ok(Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
    }

    pub fn default_route(&self, name: &str, gw: Ipv4Addr) -> anyhow::Result<()> {
        let mut dev: Vec<libc::c_char> = name.bytes().map(|b| b as libc::c_char).collect();
        dev.push(0);
        let mut rt = RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            rt_gateway: sockaddr_in(gw),
            rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            rt_flags: (libc::RTF_UP | libc::RTF_GATEWAY),
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: dev.as_mut_ptr(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        // SAFETY: SIOCADDRT reads a `struct rtentry`, which `RtEntry` lays out as glibc
        // does; `rt_dev` points into `dev`, a NUL-terminated buffer that outlives the call.
        unsafe { self.call(libc::SIOCADDRT, &mut rt, "adding the default route") }
    }
}
