//! Network bring-up for the ramdisk: every physical NIC up, wait for carrier, DHCP on each
//! NIC with carrier (in parallel), apply the leases (address, default route from the first
//! lease, preferring the boot NIC) and write `/etc/resolv.conf` and `/etc/hosts`.
//!
//! IPv4 configuration uses the classic `SIOCSIF*`/`SIOCADDRT` ioctls, which need no netlink
//! stack. [`resolv_conf`] and [`hosts`] are pure.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::dhcp::{self, Lease};

/// A physical NIC.
#[derive(Debug, Clone)]
pub struct Nic {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    v.try_into().ok()
}

/// NICs backed by a device (`sys/class/net/*/device`), Ethernet type, sorted by name.
pub fn physical_nics(sys: &Path) -> Vec<Nic> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(sys.join("class/net")) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        if !p.join("device").exists() || read("type").trim() != "1" {
            continue;
        }
        let (Some(mac), Ok(ifindex)) =
            (parse_mac(&read("address")), read("ifindex").trim().parse())
        else {
            continue;
        };
        out.push(Nic {
            name: e.file_name().to_string_lossy().into_owned(),
            ifindex,
            mac,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `/etc/resolv.conf` for the leases.
pub fn resolv_conf(leases: &[Lease]) -> String {
    let mut s = String::new();
    if let Some(d) = leases.iter().find_map(|l| l.domain.as_deref()) {
        s.push_str(&format!("search {d}\n"));
    }
    let mut seen = Vec::new();
    for ns in leases.iter().flat_map(|l| &l.dns) {
        if !seen.contains(ns) {
            seen.push(*ns);
            s.push_str(&format!("nameserver {ns}\n"));
        }
    }
    s
}

/// `/etc/hosts`: localhost plus our own name and first address.
pub fn hosts(hostname: &str, addr: Option<Ipv4Addr>) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(a) = addr {
        s.push_str(&format!("{a}\t{hostname}\n"));
    }
    s
}

struct Ioctl(OwnedFd);

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
    fn new() -> anyhow::Result<Self> {
        // SAFETY: plain socket(2) call, checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening an AF_INET socket");
        }
        // SAFETY: fd is fresh and owned by nobody else.
        Ok(Ioctl(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn call<T>(&self, req: libc::c_ulong, arg: &mut T, what: &str) -> anyhow::Result<()> {
        // SAFETY: every caller passes the struct type the request expects.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), req, arg as *mut T) };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context(what.to_owned());
        }
        Ok(())
    }

    fn up(&self, name: &str) -> anyhow::Result<()> {
        let mut r = ifreq(name)?;
        self.call(libc::SIOCGIFFLAGS, &mut r, "reading interface flags")?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { r.ifr_ifru.ifru_flags };
        r.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        self.call(libc::SIOCSIFFLAGS, &mut r, "setting the interface up")
            .with_context(|| format!("bringing {name} up"))
    }

    fn set_addr(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> anyhow::Result<()> {
        let mut r = ifreq(name)?;
        r.ifr_ifru.ifru_addr = sockaddr_in(addr);
        self.call(libc::SIOCSIFADDR, &mut r, "setting the address")?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix.min(32)))
        };
        let mut r = ifreq(name)?;
        r.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
        self.call(libc::SIOCSIFNETMASK, &mut r, "setting the netmask")?;
        let mut r = ifreq(name)?;
        r.ifr_ifru.ifru_broadaddr = sockaddr_in(Ipv4Addr::from(u32::from(addr) | !mask));
        self.call(
            libc::SIOCSIFBRDADDR,
            &mut r,
            "setting the broadcast address",
        )
    }

    fn default_route(&self, name: &str, gw: Ipv4Addr) -> anyhow::Result<()> {
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
        self.call(libc::SIOCADDRT, &mut rt, "adding the default route")
    }
}

fn carrier(sys: &Path, name: &str) -> bool {
    std::fs::read_to_string(sys.join("class/net").join(name).join("carrier"))
        .is_ok_and(|s| s.trim() == "1")
}

/// What the bring-up achieved.
#[derive(Debug, Default)]
pub struct NetReport {
    /// (interface, lease) for each NIC that got one.
    pub leases: Vec<(String, Lease)>,
    /// NICs without carrier.
    pub no_carrier: Vec<String>,
}

/// Brings the network up; `boot_mac` (from `BOOTIF=`) is tried first for the default route.
pub fn bring_up(
    sys: &Path,
    etc: &Path,
    boot_mac: Option<&str>,
    carrier_wait: Duration,
    dhcp_timeout: Duration,
) -> anyhow::Result<NetReport> {
    let io = Ioctl::new()?;
    if let Err(e) = io.up("lo") {
        tracing::warn!(error = %format!("{e:#}"), "loopback");
    }
    let mut nics = physical_nics(sys);
    let fmt = |m: &[u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    // The boot NIC first: its lease supplies the default route.
    nics.sort_by_key(|n| Some(fmt(&n.mac).as_str()) != boot_mac);
    for n in &nics {
        if let Err(e) = io.up(&n.name) {
            tracing::warn!(nic = %n.name, error = %format!("{e:#}"), "cannot bring NIC up");
        }
    }
    let started = Instant::now();
    let mut report = NetReport::default();
    let with_carrier: Vec<Nic> = loop {
        let with_carrier: Vec<Nic> = nics
            .iter()
            .filter(|n| carrier(sys, &n.name))
            .cloned()
            .collect();
        // Go once every NIC has carrier, or one has and the others had a second.
        let waited = started.elapsed();
        if with_carrier.len() == nics.len()
            || (!with_carrier.is_empty() && waited >= Duration::from_secs(1))
            || waited >= carrier_wait
        {
            break with_carrier;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    report.no_carrier = nics
        .iter()
        .filter(|n| !with_carrier.iter().any(|c| c.name == n.name))
        .map(|n| n.name.clone())
        .collect();
    tracing::info!(nics = nics.len(), carrier = ?with_carrier.iter().map(|n| &n.name).collect::<Vec<_>>(), "links up");
    let results: Vec<(Nic, anyhow::Result<Lease>)> = std::thread::scope(|s| {
        let hs: Vec<_> = with_carrier
            .iter()
            .map(|n| s.spawn(move || (n.clone(), dhcp::obtain(n.ifindex, n.mac, dhcp_timeout))))
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut have_route = false;
    for (n, r) in results {
        match r {
            Ok(l) => {
                tracing::info!(nic = %n.name, addr = %l.addr, prefix = l.prefix, router = ?l.router, dns = ?l.dns, "dhcp lease");
                io.set_addr(&n.name, l.addr, l.prefix)
                    .with_context(|| format!("configuring {}", n.name))?;
                if let (Some(gw), false) = (l.router, have_route) {
                    match io.default_route(&n.name, gw) {
                        Ok(()) => have_route = true,
                        Err(e) => {
                            tracing::warn!(nic = %n.name, error = %format!("{e:#}"), "default route")
                        }
                    }
                }
                report.leases.push((n.name.clone(), l));
            }
            Err(e) => tracing::warn!(nic = %n.name, error = %format!("{e:#}"), "no DHCP lease"),
        }
    }
    let leases: Vec<Lease> = report.leases.iter().map(|(_, l)| l.clone()).collect();
    let _ = std::fs::create_dir_all(etc);
    std::fs::write(etc.join("resolv.conf"), resolv_conf(&leases)).context("writing resolv.conf")?;
    let hostname = leases
        .iter()
        .find_map(|l| l.hostname.clone())
        .unwrap_or_else(|| "ingot-agent".into());
    std::fs::write(
        etc.join("hosts"),
        hosts(&hostname, leases.first().map(|l| l.addr)),
    )
    .context("writing /etc/hosts")?;
    let _ = std::fs::write("/proc/sys/kernel/hostname", &hostname);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(dns: &[[u8; 4]], domain: Option<&str>) -> Lease {
        Lease {
            addr: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            router: None,
            dns: dns.iter().map(|&d| Ipv4Addr::from(d)).collect(),
            domain: domain.map(str::to_owned),
            hostname: None,
            server: None,
            lease_secs: None,
        }
    }

    #[test]
    fn resolv_conf_merges_leases() {
        let s = resolv_conf(&[
            lease(&[[10, 0, 2, 3]], Some("lab")),
            lease(&[[10, 0, 2, 3], [192, 0, 2, 53]], None),
        ]);
        assert_eq!(
            s,
            "search lab\nnameserver 10.0.2.3\nnameserver 192.0.2.53\n"
        );
        assert_eq!(resolv_conf(&[]), "");
        assert!(hosts("n1", Some(Ipv4Addr::new(10, 0, 2, 15))).ends_with("10.0.2.15\tn1\n"));
        assert!(hosts("n1", None).starts_with("127.0.0.1\tlocalhost\n"));
    }

    #[test]
    fn physical_nics_skip_virtual_ones() {
        let d = tempfile::tempdir().expect("tempdir");
        let net = d.path().join("class/net");
        for (n, dev, typ, mac, idx) in [
            ("eth0", true, "1", "52:54:00:12:34:56", "2"),
            ("lo", false, "772", "00:00:00:00:00:00", "1"),
            ("ib0", true, "32", "52:54:00:12:34:57", "3"),
        ] {
            let p = net.join(n);
            std::fs::create_dir_all(&p).expect("mkdir");
            if dev {
                std::fs::create_dir_all(p.join("device")).expect("mkdir");
            }
            std::fs::write(p.join("type"), format!("{typ}\n")).expect("w");
            std::fs::write(p.join("address"), format!("{mac}\n")).expect("w");
            std::fs::write(p.join("ifindex"), format!("{idx}\n")).expect("w");
        }
        let v = physical_nics(d.path());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "eth0");
        assert_eq!(v[0].ifindex, 2);
        assert_eq!(v[0].mac, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    }
}
