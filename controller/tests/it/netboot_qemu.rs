//! Real firmware against our boot services: QEMU (TCG) with SeaBIOS + its iPXE NIC ROM, and
//! OVMF's own PXE (TFTP of `snponly.efi`, then iPXE), in a network namespace with a tap.
//! The oracle is the HTTP request for the iPXE script: it proves DHCP, TFTP and the
//! chainload-loop break with the firmware the lab uses.
//!
//! Needs root, qemu-system-x86, ovmf, ipxe and ipxe-qemu (`test_needs::LAB`): skipped with a
//! message without them, a failure under CI.

use crate::netboot_support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use controller::netboot::dhcp::leases::MemoryLeaseStore;
use controller::netboot::dhcp::server::DhcpCounters;
use controller::netboot::dhcp::{BootTarget, FixedBootPolicy};
use controller::netboot::service::{self, NetbootConfig, NetbootSection};
use netboot_support::{Running, sh};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A namespace with one tap at 10.78.0.1/24 for QEMU; deleted on drop.
struct TapLab {
    ns: String,
    tap: String,
}

impl TapLab {
    fn new(tag: &str) -> TapLab {
        let id = std::process::id() % 100_000;
        let lab = TapLab {
            ns: format!("ingot-nbq-{tag}-{id}"),
            tap: format!("nbq{tag}{id}"),
        };
        sh(&["ip", "netns", "add", &lab.ns]);
        sh(&["ip", "-n", &lab.ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip", "-n", &lab.ns, "tuntap", "add", "dev", &lab.tap, "mode", "tap",
        ]);
        sh(&[
            "ip",
            "-n",
            &lab.ns,
            "addr",
            "add",
            "10.78.0.1/24",
            "dev",
            &lab.tap,
        ]);
        sh(&[
            "ip",
            "-n",
            &lab.ns,
            "addr",
            "add",
            "fe80::1/64",
            "dev",
            &lab.tap,
            "nodad",
        ]);
        sh(&["ip", "-n", &lab.ns, "link", "set", &lab.tap, "up"]);
        lab
    }
}

impl Drop for TapLab {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// QEMU, killed (by its PID) and reaped on drop.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Requests = Arc<Mutex<Vec<(Duration, String)>>>;

/// The DHCP counters of the services started last (for reporting which ports were used).
static COUNTERS: Mutex<Option<Arc<DhcpCounters>>> = Mutex::new(None);

/// Start DHCP (full) + TFTP + RA from a config section, plus a tiny HTTP server that records
/// request lines and answers every request with a one-line script.
fn start_services(lab: &TapLab, ra: bool, t0: Instant) -> (Running, Requests) {
    start_services_on(
        &lab.ns,
        &lab.tap,
        78,
        "full",
        ra,
        t0,
        WAIT_SCRIPT.to_owned(),
    )
}

/// The default script: show that it ran, then wait (the test kills the VM).
const WAIT_SCRIPT: &str = "#!ipxe\necho INGOT-SCRIPT-OK\nsleep 600\n";

fn start_services_on(
    ns: &str,
    iface: &str,
    net: u8,
    mode: &str,
    ra: bool,
    t0: Instant,
    script: String,
) -> (Running, Requests) {
    let section = NetbootSection {
        mode: Some(mode.to_owned()),
        interfaces: Some(vec![iface.to_owned()]),
        server_ip: Some(Ipv4Addr::new(10, net, 0, 1)),
        pool_start: (mode == "full").then_some(Ipv4Addr::new(10, net, 0, 100)),
        pool_end: (mode == "full").then_some(Ipv4Addr::new(10, net, 0, 110)),
        router_advertisements: Some(ra),
        ..NetbootSection::default()
    };
    let cfg = NetbootConfig::try_from(section).expect("valid section");
    let requests: Requests = Arc::default();
    let seen = requests.clone();
    let running = Running::start(ns, move |cancel, ready| async move {
        let netboot = service::start(
            cfg,
            Arc::new(FixedBootPolicy::new(BootTarget::Netboot)),
            Arc::new(MemoryLeaseStore::new()),
            cancel.clone(),
        )?;
        *COUNTERS.lock().unwrap_or_else(|e| e.into_inner()) = netboot.dhcp_counters.clone();
        let http = tokio::net::TcpListener::bind(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(10, net, 0, 1),
            8080,
        )))
        .await
        .context("binding the test http server")?;
        let _ = ready.send(());
        let c = cancel.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = tokio::select! {
                    r = http.accept() => match r { Ok(v) => v, Err(_) => continue },
                    () = c.cancelled() => return,
                };
                let seen = seen.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]);
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((t0.elapsed(), line));
                    let body = script.clone();
                    let resp = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                });
            }
        });
        netboot.wait().await
    });
    (running, requests)
}

fn wait_for_script(requests: &Requests, limit: Duration) -> Option<(Duration, String)> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(r) = requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(_, l)| l.starts_with("GET /boot/ipxe?"))
        {
            return Some(r.clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn qemu(lab: &TapLab, args: &[&str], serial: &Path) -> Qemu {
    qemu_in(&lab.ns, &lab.tap, args, serial)
}

fn qemu_in(ns: &str, tap: &str, args: &[&str], serial: &Path) -> Qemu {
    let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-netdev", &netdev])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu");
    Qemu(child)
}

fn bios_boot(tag: &str, ra: bool) -> Option<(Duration, String)> {
    let lab = TapLab::new(tag);
    let t0 = Instant::now();
    let (_services, requests) = start_services(&lab, ra, t0);
    let tmp = tempfile::tempdir().expect("tempdir");
    let _vm = qemu(
        &lab,
        &[
            "-machine",
            "pc,graphics=off",
            "-device",
            "e1000,netdev=n0,mac=52:54:00:78:00:01",
            "-boot",
            "n",
        ],
        &tmp.path().join("serial.log"),
    );
    wait_for_script(&requests, Duration::from_secs(60))
}

#[test]
fn seabios_ipxe_rom_gets_the_script_url_from_our_dhcp() {
    test_needs::need!(test_needs::LAB);
    // iPXE percent-encodes the ':' of the MAC in the query; the HTTP side must decode it.
    let want = "GET /boot/ipxe?mac=52%3A54%3A00%3A78%3A00%3A01&platform=pcbios HTTP/1.1";
    let with_ra = bios_boot("b", true).expect("iPXE fetched the script (with RA)");
    assert_eq!(with_ra.1, want);
    let without_ra = bios_boot("n", false).expect("iPXE fetched the script (without RA)");
    assert_eq!(without_ra.1, want);
    eprintln!(
        "BIOS: script fetched {:.1} s after start with RA, {:.1} s without",
        with_ra.0.as_secs_f64(),
        without_ra.0.as_secs_f64()
    );
    // The RA is what saves iPXE's IPv6 wait (about 15 s in the lab).
    assert!(
        with_ra.0 + Duration::from_secs(5) < without_ra.0,
        "RA made no difference"
    );
}

#[test]
fn ovmf_native_pxe_tftps_snponly_and_chainloads_to_the_script() {
    test_needs::need!(test_needs::LAB);
    let lab = TapLab::new("u");
    let t0 = Instant::now();
    let (_services, requests) = start_services(&lab, true, t0);
    let tmp = tempfile::tempdir().expect("tempdir");
    let vars = tmp.path().join("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("copy OVMF vars");
    let code = "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd";
    let vars = format!("if=pflash,format=raw,unit=1,file={}", vars.display());
    let _vm = qemu(
        &lab,
        &[
            "-machine",
            "q35,graphics=off",
            "-drive",
            code,
            "-drive",
            &vars,
            // romfile= (empty): OVMF's own PXE, not the iPXE ROM, so TFTP and the chainload run.
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:78:00:02,romfile=",
        ],
        &tmp.path().join("serial.log"),
    );
    let got = wait_for_script(&requests, Duration::from_secs(120))
        .expect("snponly.efi fetched the script");
    assert_eq!(
        got.1,
        "GET /boot/ipxe?mac=52%3A54%3A00%3A78%3A00%3A02&platform=efi HTTP/1.1"
    );
    eprintln!(
        "UEFI native PXE: script fetched {:.1} s after start",
        got.0.as_secs_f64()
    );
}

// --- proxy mode ---------------------------------------------------------------------------

/// A site DHCP server (addresses only) in its own namespace, and our proxy on a bridge with
/// the VM's tap, as in the lab: two DHCP servers need two network stacks.
struct ProxyLab {
    ns: String,
    site_ns: String,
    bridge: String,
    tap: String,
}

impl ProxyLab {
    fn new() -> ProxyLab {
        let id = std::process::id() % 100_000;
        let lab = ProxyLab {
            ns: format!("ingot-nbp-{id}"),
            site_ns: format!("ingot-nbp-site-{id}"),
            bridge: format!("nbpbr{id}"),
            tap: format!("nbpt{id}"),
        };
        let (ns, site) = (lab.ns.as_str(), lab.site_ns.as_str());
        let (veth, site_if) = (format!("nbpv{id}"), format!("nbps{id}"));
        sh(&["ip", "netns", "add", ns]);
        sh(&["ip", "netns", "add", site]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", site, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", ns, "link", "add", &lab.bridge, "type", "bridge"]);
        sh(&[
            "ip",
            "-n",
            ns,
            "link",
            "set",
            &lab.bridge,
            "address",
            "02:00:00:79:00:01",
        ]);
        sh(&[
            "ip", "-n", ns, "tuntap", "add", "dev", &lab.tap, "mode", "tap",
        ]);
        sh(&[
            "ip", "link", "add", "name", &veth, "netns", ns, "type", "veth", "peer", "name",
            &site_if, "netns", site,
        ]);
        for port in [&lab.tap, &veth] {
            sh(&["ip", "-n", ns, "link", "set", port, "master", &lab.bridge]);
            sh(&["ip", "-n", ns, "link", "set", port, "up"]);
        }
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            "10.79.0.1/24",
            "dev",
            &lab.bridge,
        ]);
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            "fe80::1/64",
            "dev",
            &lab.bridge,
            "nodad",
        ]);
        sh(&["ip", "-n", ns, "link", "set", &lab.bridge, "up"]);
        sh(&[
            "ip",
            "-n",
            site,
            "addr",
            "add",
            "10.79.0.2/24",
            "dev",
            &site_if,
        ]);
        sh(&["ip", "-n", site, "link", "set", &site_if, "up"]);
        lab
    }

    fn site_if(&self) -> String {
        format!("nbps{}", std::process::id() % 100_000)
    }
}

impl Drop for ProxyLab {
    fn drop(&mut self) {
        for ns in [&self.ns, &self.site_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The site server: our DHCP in full mode with a policy that gives no boot options.
fn start_site_dhcp(lab: &ProxyLab) -> Running {
    let section = NetbootSection {
        mode: Some("full".to_owned()),
        interfaces: Some(vec![lab.site_if()]),
        server_ip: Some(Ipv4Addr::new(10, 79, 0, 2)),
        pool_start: Some(Ipv4Addr::new(10, 79, 0, 100)),
        pool_end: Some(Ipv4Addr::new(10, 79, 0, 110)),
        tftp: Some(false),
        router_advertisements: Some(false),
        ..NetbootSection::default()
    };
    let cfg = NetbootConfig::try_from(section).expect("valid site section");
    Running::start(&lab.site_ns, move |cancel, ready| async move {
        let netboot = service::start(
            cfg,
            Arc::new(FixedBootPolicy::new(BootTarget::AddressOnly)),
            Arc::new(MemoryLeaseStore::new()),
            cancel,
        )?;
        let _ = ready.send(());
        netboot.wait().await
    })
}

#[test]
fn proxy_mode_with_seabios_ipxe_rom_and_ovmf_native_pxe() {
    test_needs::need!(test_needs::LAB);
    let lab = ProxyLab::new();
    let _site = start_site_dhcp(&lab);
    let t0 = Instant::now();
    let (_proxy, requests) = start_services_on(
        &lab.ns,
        &lab.bridge,
        79,
        "proxy",
        true,
        t0,
        WAIT_SCRIPT.to_owned(),
    );
    let tmp = tempfile::tempdir().expect("tempdir");

    let bios = qemu_in(
        &lab.ns,
        &lab.tap,
        &[
            "-machine",
            "pc,graphics=off",
            "-device",
            "e1000,netdev=n0,mac=52:54:00:79:00:01",
            "-boot",
            "n",
        ],
        &tmp.path().join("bios.log"),
    );
    let got = wait_for_script(&requests, Duration::from_secs(60))
        .expect("BIOS iPXE fetched the script through the proxy");
    assert_eq!(
        got.1,
        "GET /boot/ipxe?mac=52%3A54%3A00%3A79%3A00%3A01&platform=pcbios HTTP/1.1"
    );
    let pxe_port = || {
        COUNTERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.snapshot().received_pxe_port)
    };
    eprintln!(
        "proxy, BIOS: script fetched {:.1} s after start; packets on 4011: {:?}",
        got.0.as_secs_f64(),
        pxe_port()
    );
    drop(bios);
    requests.lock().unwrap_or_else(|e| e.into_inner()).clear();

    let t1 = t0.elapsed();
    let vars = tmp.path().join("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("copy OVMF vars");
    let code = "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd";
    let vars = format!("if=pflash,format=raw,unit=1,file={}", vars.display());
    let _uefi = qemu_in(
        &lab.ns,
        &lab.tap,
        &[
            "-machine",
            "q35,graphics=off",
            "-drive",
            code,
            "-drive",
            &vars,
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:79:00:02,romfile=",
        ],
        &tmp.path().join("uefi.log"),
    );
    let got = wait_for_script(&requests, Duration::from_secs(120))
        .expect("OVMF native PXE fetched the script through the proxy");
    assert_eq!(
        got.1,
        "GET /boot/ipxe?mac=52%3A54%3A00%3A79%3A00%3A02&platform=efi HTTP/1.1"
    );
    eprintln!(
        "proxy, UEFI native PXE: script fetched {:.1} s after start; packets on 4011 (both VMs): {:?}",
        (got.0 - t1).as_secs_f64(),
        pxe_port()
    );
    // EDK2 takes the bare proxy offer as "ask the boot server": the 4011 exchange happened.
    assert!(
        pxe_port().is_some_and(|n| n >= 1),
        "EDK2 never asked port 4011"
    );
}

// --- leaving iPXE for the local disk ------------------------------------------------------

/// A 512-byte MBR whose code writes `INGOT-DISK-BOOT` to COM1 and halts.
fn marker_mbr() -> Vec<u8> {
    let mut mbr = vec![
        0x31, 0xC0, // xor ax, ax
        0x8E, 0xD8, // mov ds, ax
        0xBA, 0xF8, 0x03, // mov dx, 0x3f8
        0xBE, 0x14, 0x7C, // mov si, 0x7c14 (the message)
        0xAC, // lodsb
        0x84, 0xC0, // test al, al
        0x74, 0x03, // jz halt
        0xEE, // out dx, al
        0xEB, 0xF8, // jmp lodsb
        0xFA, // halt: cli
        0xF4, // hlt
    ];
    mbr.extend_from_slice(b"INGOT-DISK-BOOT\r\n\0");
    mbr.resize(510, 0);
    mbr.extend_from_slice(&[0x55, 0xAA]);
    mbr
}

fn wait_for_serial(path: &Path, marker: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::fs::read(path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(marker)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn seabios_leaves_ipxe_for_the_disk_with_sanboot_and_with_exit() {
    use controller::netboot::Platform;
    use controller::netboot::ipxe::{BootPlan, render};
    test_needs::need!(test_needs::LAB);
    for (tag, plan) in [
        (
            "s",
            BootPlan::LocalDisk {
                platform: Some(Platform::Bios),
            },
        ),
        ("x", BootPlan::Exit),
    ] {
        let lab = TapLab::new(&format!("d{tag}"));
        let t0 = Instant::now();
        let (_services, requests) =
            start_services_on(&lab.ns, &lab.tap, 78, "full", true, t0, render(&plan));
        let tmp = tempfile::tempdir().expect("tempdir");
        let disk = tmp.path().join("disk.raw");
        let mut image = marker_mbr();
        image.resize(1024 * 1024, 0);
        std::fs::write(&disk, image).expect("write disk");
        let drive = format!("file={},format=raw,if=none,id=d0", disk.display());
        let serial = tmp.path().join("serial.log");
        let _vm = qemu(
            &lab,
            &[
                "-machine",
                "pc,graphics=off",
                "-device",
                "e1000,netdev=n0,mac=52:54:00:78:00:03,bootindex=1",
                "-drive",
                &drive,
                "-device",
                "virtio-blk-pci,drive=d0,bootindex=2",
            ],
            &serial,
        );
        assert!(
            wait_for_script(&requests, Duration::from_secs(60)).is_some(),
            "{plan:?}: no script fetch"
        );
        assert!(
            wait_for_serial(&serial, "INGOT-DISK-BOOT", Duration::from_secs(30)),
            "{plan:?}: the disk did not boot"
        );
        eprintln!(
            "{plan:?}: disk booted {:.1} s after start",
            t0.elapsed().as_secs_f64()
        );
    }
}
