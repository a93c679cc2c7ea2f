//! The agent's DHCP lease keeping (`agent::init::lease`, as the ramdisk runs it) against the
//! controller's own DHCP server in full mode with an 8 s lease (T1 4 s, T2 7 s), over a veth
//! pair between two network namespaces with no route anywhere else: two renewals at T1,
//! unicast to the server, keep the same address, and the server's lease store follows.
//!
//! Needs root (network namespaces, raw sockets). Without root the test prints "skipping"
//! and passes, except when `CI` is set, where it fails.

use std::net::Ipv4Addr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use agent::host::ifconfig::Ioctl;
use agent::init::dhcp::edge::Port;
use agent::init::dhcp::machine::{Action, Via};
use agent::init::lease;
use controller::netboot::MacAddr;
use controller::netboot::dhcp::leases::{LeaseState, MemoryLeaseStore};
use controller::netboot::dhcp::server::{self, DhcpServer};
use controller::netboot::dhcp::{
    BootFiles, BootTarget, DhcpConfig, DhcpMode, FixedBootPolicy, Pool,
};

use crate::netboot_support;

use netboot_support::{Lab, Running, in_ns, sh};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const MAC: [u8; 6] = [0x02, 0, 0, 0x77, 0, 3];

fn config() -> DhcpConfig {
    DhcpConfig {
        mode: DhcpMode::Full,
        server_ip: SERVER_IP,
        http_base: "http://10.77.0.1:8080".to_owned(),
        script_path: "/boot/ipxe".to_owned(),
        http_boot_path: "/boot/ipxe.efi".to_owned(),
        boot_files: BootFiles::default(),
        pool: Some(Pool {
            start: Ipv4Addr::new(10, 77, 0, 100),
            end: Ipv4Addr::new(10, 77, 0, 109),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            routers: vec![],
            dns: vec![],
            lease_time: Duration::from_secs(8),
            offer_hold: Duration::from_secs(30),
            decline_hold: Duration::from_secs(600),
        }),
        reservations: Default::default(),
    }
}

#[test]
fn agent_renews_its_lease_with_our_server() {
    test_needs::need!(test_needs::NETNS);
    let lab = Lab::new(false);
    sh(&[
        "ip",
        "-n",
        &lab.client_ns,
        "link",
        "set",
        "dev",
        &lab.client_if,
        "address",
        "02:00:00:77:00:03",
    ]);
    let leases = Arc::new(MemoryLeaseStore::new());
    let policy = Arc::new(FixedBootPolicy::new(BootTarget::Netboot));
    let srv = Arc::new(DhcpServer::new(config(), policy, leases.clone()).expect("valid config"));
    let iface = lab.server_if.clone();
    let _running = Running::start(&lab.server_ns, move |cancel, ready| async move {
        let sockets = server::bind_sockets(DhcpMode::Full, &[iface])?;
        let _ = ready.send(());
        srv.run(sockets, cancel).await
    });

    let client_if = lab.client_if.clone();
    let started = Instant::now();
    // (bound address, [(sends before it, renewed address, rebound)], address on the NIC)
    let (addr, renewals, on_nic) = in_ns(&lab.client_ns, move || {
        let name = std::ffi::CString::new(client_if.clone()).expect("name");
        // SAFETY: name is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "no {client_if}");
        let port = Port {
            name: client_if.clone(),
            ifindex,
        };
        let (mut client, l) =
            lease::obtain(&port, MAC, Duration::from_secs(10)).expect("a lease from our server");
        let mut renewals = Vec::new();
        let mut sends = Vec::new();
        lease::keep(&port, &mut client, &mut |_, a| match a {
            Action::Send { via, .. } => {
                sends.push(*via);
                ControlFlow::Continue(())
            }
            Action::Extended { lease, rebound } => {
                renewals.push((std::mem::take(&mut sends), lease.addr, *rebound));
                if renewals.len() == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
            other => panic!("unexpected {other:?}"),
        })
        .expect("keeping the lease");
        let on_nic = Ioctl::new()
            .and_then(|io| io.addr(&client_if))
            .expect("reading the address");
        (l.addr, renewals, on_nic)
    });
    let took = started.elapsed();
    println!("lease {addr}, two renewals in {took:?}: {renewals:?}");
    assert!(Pool::contains(config().pool.as_ref().expect("pool"), addr));
    assert_eq!(on_nic, Some(addr));
    for (sends, a, rebound) in &renewals {
        assert_eq!(*a, addr);
        assert!(!rebound, "renewed by rebinding");
        assert_eq!(sends, &vec![Via::Unicast(SERVER_IP)]);
    }
    // Renewals at T1 = 4 s: two of them take about 8 s, not the lease's 7 s T2.
    assert!(
        took >= Duration::from_secs(7) && took < Duration::from_secs(12),
        "{took:?}"
    );
    // The server's record: bound to this MAC, extended by the last renewal.
    let snap = leases.snapshot();
    let row = snap
        .iter()
        .find(|l| l.mac == MacAddr(MAC))
        .expect("a lease row");
    assert_eq!((row.ip, row.state), (addr, LeaseState::Bound));
    let left = row
        .expires
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > Duration::from_secs(5),
        "lease row expires in {left:?}"
    );
}
