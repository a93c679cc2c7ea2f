//! DHCP, proxyDHCP, TFTP and router advertisements over a real veth pair between two
//! network namespaces (server and client), with no route anywhere else.
//!
//! Needs root (network namespaces, raw sockets). Without root the tests print "skipping"
//! and pass, except when `CI` is set, where they fail.

use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::netboot::MacAddr;
use controller::netboot::dhcp::client::{self, DropReason};
use controller::netboot::dhcp::leases::{LeaseState, MemoryLeaseStore};
use controller::netboot::dhcp::ra::{self, RaConfig};
use controller::netboot::dhcp::request::RequestBuilder;
use controller::netboot::dhcp::server::{self, DhcpCounters, DhcpServer};
use controller::netboot::dhcp::{
    BootFiles, BootTarget, DhcpConfig, DhcpMode, FixedBootPolicy, Pool,
};
use controller::netboot::tftp::{self, TftpFiles};
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 150);

use crate::netboot_support;

use netboot_support::{Lab, Running, in_ns, sh};

fn dhcp_config(mode: DhcpMode) -> DhcpConfig {
    DhcpConfig {
        mode,
        server_ip: SERVER_IP,
        http_base: "http://10.77.0.1:8080".to_owned(),
        script_path: "/boot/ipxe".to_owned(),
        http_boot_path: "/boot/ipxe.efi".to_owned(),
        boot_files: BootFiles::default(),
        pool: (mode == DhcpMode::Full).then(|| Pool {
            start: Ipv4Addr::new(10, 77, 0, 100),
            end: Ipv4Addr::new(10, 77, 0, 109),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            routers: vec![],
            dns: vec![],
            lease_time: Duration::from_secs(600),
            offer_hold: Duration::from_secs(30),
            decline_hold: Duration::from_secs(600),
        }),
        reservations: Default::default(),
    }
}

struct Dhcp {
    _running: Running,
    counters: Arc<DhcpCounters>,
    leases: Arc<MemoryLeaseStore>,
    policy: Arc<FixedBootPolicy>,
}

fn start_dhcp(lab: &Lab, mode: DhcpMode) -> Dhcp {
    let leases = Arc::new(MemoryLeaseStore::new());
    let policy = Arc::new(FixedBootPolicy::new(BootTarget::Netboot));
    let server = Arc::new(
        DhcpServer::new(dhcp_config(mode), policy.clone(), leases.clone()).expect("valid config"),
    );
    let counters = server.counters();
    let iface = lab.server_if.clone();
    let running = Running::start(&lab.server_ns, move |cancel, ready| async move {
        let sockets = server::bind_sockets(mode, &[iface])?;
        let _ = ready.send(());
        server.run(sockets, cancel).await
    });
    Dhcp {
        _running: running,
        counters,
        leases,
        policy,
    }
}

/// A client socket on `port` in the client namespace, bound to the client veth.
fn client_socket(iface: &str, bind: SocketAddrV4) -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    s.set_reuse_address(true).expect("reuse");
    s.set_broadcast(true).expect("broadcast");
    s.bind_device(Some(iface.as_bytes())).expect("bind device");
    s.bind(&bind.into()).expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    s.into()
}

/// Send `req` to `to` and wait up to 3 s for a reply with the same (chaddr, xid).
fn exchange(sock: &UdpSocket, req: &Message, to: SocketAddrV4) -> Option<(Message, SocketAddr)> {
    use dhcproto::Encodable;
    let bytes = req.to_vec().expect("encode");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 1500];
    let mut next_send = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            sock.send_to(&bytes, to).expect("send");
            next_send = Instant::now() + Duration::from_secs(1);
        }
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(m) = client::parse(&buf[..n]) else {
            continue;
        };
        if m.xid() == req.xid()
            && m.chaddr() == req.chaddr()
            && m.opcode() == dhcproto::v4::Opcode::BootReply
        {
            return Some((m, from));
        }
    }
    None
}

/// The counters once `done` holds (or after 2 s): a reply can reach the client before the
/// server thread has counted it.
fn counters_when(
    counters: &DhcpCounters,
    done: impl Fn(&server::CounterSnapshot) -> bool,
) -> server::CounterSnapshot {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let c = counters.snapshot();
        if done(&c) || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

const BCAST67: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);

fn file(m: &Message) -> Option<String> {
    match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => Some(String::from_utf8_lossy(f).into_owned()),
        _ => None,
    }
}

fn vendor(m: &Message) -> Option<Vec<u8>> {
    match m.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(v.clone()),
        _ => None,
    }
}

fn mac(last: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0x77, 0x00, last])
}

/// DISCOVER/OFFER then REQUEST/ACK; returns (offer, ack).
fn dora(sock: &UdpSocket, discover: RequestBuilder, request: RequestBuilder) -> (Message, Message) {
    let (offer, _) = exchange(sock, &discover.build(), BCAST67).expect("an offer");
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    let request = request
        .server_id(SERVER_IP)
        .requested(offer.yiaddr())
        .build();
    let (ack, _) = exchange(sock, &request, BCAST67).expect("an ack");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), offer.yiaddr());
    (offer, ack)
}

#[test]
fn full_mode_bios_uefi_and_ipxe_clients() {
    test_needs::need!(test_needs::NETNS);
    let lab = Lab::new(false);
    let dhcp = start_dhcp(&lab, DhcpMode::Full);
    let iface = lab.client_if.clone();
    let uuid = uuid::Uuid::parse_str("1ab0c0de-0000-4000-8000-000000000001").expect("uuid");
    let results = in_ns(&lab.client_ns, move || {
        let sock = client_socket(&iface, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
        let bios = dora(
            &sock,
            RequestBuilder::new(MessageType::Discover, mac(1), 100).pxe(0),
            RequestBuilder::new(MessageType::Request, mac(1), 100).pxe(0),
        );
        let uefi = dora(
            &sock,
            RequestBuilder::new(MessageType::Discover, mac(2), 200)
                .pxe(7)
                .uuid(uuid),
            RequestBuilder::new(MessageType::Request, mac(2), 200)
                .pxe(7)
                .uuid(uuid),
        );
        // The chainloaded iPXE of the BIOS machine: same MAC, new xid, gets the script URL.
        let ipxe = dora(
            &sock,
            RequestBuilder::new(MessageType::Discover, mac(1), 101)
                .pxe(0)
                .ipxe(),
            RequestBuilder::new(MessageType::Request, mac(1), 101)
                .pxe(0)
                .ipxe(),
        );
        // Two machines using one xid (seen with OVMF) are told apart by chaddr.
        let twin = exchange(
            &sock,
            &RequestBuilder::new(MessageType::Discover, mac(3), 200)
                .pxe(7)
                .build(),
            BCAST67,
        )
        .expect("offer for the second machine with the same xid");
        (bios, uefi, ipxe, twin.0)
    });
    let ((bios_offer, bios_ack), (uefi_offer, uefi_ack), (_, ipxe_ack), twin) = results;
    assert_eq!(file(&bios_offer).as_deref(), Some("undionly.kpxe"));
    assert_eq!(file(&bios_ack).as_deref(), Some("undionly.kpxe"));
    assert_eq!(bios_ack.siaddr(), SERVER_IP);
    assert_eq!(file(&uefi_offer).as_deref(), Some("snponly.efi"));
    assert_eq!(file(&uefi_ack).as_deref(), Some("snponly.efi"));
    assert_ne!(bios_ack.yiaddr(), uefi_ack.yiaddr());
    assert_eq!(
        file(&ipxe_ack).as_deref(),
        Some("http://10.77.0.1:8080/boot/ipxe?mac=52:54:00:77:00:01&platform=pcbios")
    );
    assert_eq!(
        ipxe_ack.yiaddr(),
        bios_ack.yiaddr(),
        "the same machine keeps its address"
    );
    assert!(
        matches!(ipxe_ack.opts().get(OptionCode::Unknown(175)), Some(DhcpOption::Unknown(u)) if u.data() == [176, 1, 1])
    );
    assert!(!bios_ack.opts().contains(OptionCode::Router));
    assert!(!bios_ack.opts().contains(OptionCode::DomainNameServer));
    assert_ne!(twin.yiaddr(), uefi_ack.yiaddr());

    let bound: Vec<_> = dhcp
        .leases
        .snapshot()
        .into_iter()
        .filter(|l| l.state == LeaseState::Bound)
        .collect();
    assert_eq!(bound.len(), 2, "{bound:?}");
    assert!(
        dhcp.policy.seen().contains(&(mac(2), Some(uuid))),
        "option 97 reaches the policy"
    );
    let c = counters_when(&dhcp.counters, |c| c.replied >= 7);
    assert!(c.received >= 7 && c.replied >= 7, "{c:?}");
    assert_eq!(c.send_errors, 0);
}

#[test]
fn malformed_packets_are_dropped_and_counted_while_serving_goes_on() {
    test_needs::need!(test_needs::NETNS);
    let lab = Lab::new(false);
    let dhcp = start_dhcp(&lab, DhcpMode::Full);
    let iface = lab.client_if.clone();
    let offer = in_ns(&lab.client_ns, move || {
        let sock = client_socket(&iface, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
        let good = RequestBuilder::new(MessageType::Discover, mac(9), 9)
            .pxe(0)
            .bytes();
        let mut bad_magic = good.clone();
        bad_magic[236] = 0;
        let mut bad_option = good[..240].to_vec();
        bad_option.extend_from_slice(&[53, 1, 1, 94, 2, 1, 1, 255]);
        let mut reply_op = good.clone();
        reply_op[0] = 2;
        for junk in [
            vec![0xffu8; 7],
            good[..100].to_vec(),
            bad_magic,
            bad_option,
            reply_op,
        ] {
            sock.send_to(&junk, BCAST67).expect("send junk");
        }
        exchange(
            &sock,
            &RequestBuilder::new(MessageType::Discover, mac(9), 10)
                .pxe(0)
                .build(),
            BCAST67,
        )
    });
    assert!(
        offer.is_some(),
        "the server still answers after malformed packets"
    );
    let c = counters_when(&dhcp.counters, |c| c.replied >= 1);
    assert_eq!(c.dropped(DropReason::TooShort), 2, "{c:?}");
    assert_eq!(c.dropped(DropReason::BadMagic), 1, "{c:?}");
    assert_eq!(c.dropped(DropReason::BadOption), 1, "{c:?}");
    assert_eq!(c.dropped(DropReason::NotBootRequest), 1, "{c:?}");
    assert!(c.received >= 6 && c.replied >= 1, "{c:?}");
}

#[test]
fn proxy_mode_offer_on_67_and_boot_file_on_4011() {
    test_needs::need!(test_needs::NETNS);
    let lab = Lab::new(true);
    let dhcp = start_dhcp(&lab, DhcpMode::Proxy);
    let iface = lab.client_if.clone();
    let uuid = uuid::Uuid::parse_str("1ab0c0de-0000-4000-8000-000000000002").expect("uuid");
    let (offer, edk2, ipxe, site_request) = in_ns(&lab.client_ns, move || {
        let s68 = client_socket(&iface, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
        let offer = exchange(
            &s68,
            &RequestBuilder::new(MessageType::Discover, mac(5), 50)
                .pxe(7)
                .uuid(uuid)
                .build(),
            BCAST67,
        );
        let pxe_server = SocketAddrV4::new(SERVER_IP, 4011);
        // EDK2 asks the boot server from port 4011 of its new address.
        let s4011 = client_socket(&iface, SocketAddrV4::new(CLIENT_IP, 4011));
        let req = RequestBuilder::new(MessageType::Request, mac(5), 51)
            .pxe(7)
            .uuid(uuid)
            .ciaddr(CLIENT_IP)
            .build();
        let edk2 = exchange(&s4011, &req, pxe_server);
        // iPXE asks from port 68.
        let s68u = client_socket(&iface, SocketAddrV4::new(CLIENT_IP, 68));
        let req = RequestBuilder::new(MessageType::Request, mac(5), 52)
            .pxe(7)
            .ipxe()
            .ciaddr(CLIENT_IP)
            .build();
        let ipxe = exchange(&s68u, &req, pxe_server);
        drop(s68u);
        // A REQUEST meant for the site server gets nothing from the proxy.
        let req = RequestBuilder::new(MessageType::Request, mac(5), 53)
            .pxe(7)
            .requested(CLIENT_IP)
            .build();
        let site = exchange(&s68, &req, BCAST67);
        (offer, edk2, ipxe, site)
    });
    let (offer, _) = offer.expect("proxy offer on 67");
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(vendor(&offer).as_deref(), Some(&b"PXEClient"[..]));
    assert!(
        matches!(offer.opts().get(OptionCode::ClientMachineIdentifier), Some(DhcpOption::ClientMachineIdentifier(v)) if client::decode_client_uuid(v) == Some(uuid))
    );
    let (edk2, from) = edk2.expect("4011 reply to port 4011");
    assert_eq!(
        from,
        SocketAddr::V4(SocketAddrV4::new(SERVER_IP, 4011)),
        "reply comes from 4011"
    );
    assert_eq!(file(&edk2).as_deref(), Some("snponly.efi"));
    assert_eq!(vendor(&edk2).as_deref(), Some(&b"PXEClient"[..]));
    let (ipxe, _) = ipxe.expect("4011 reply to port 68");
    assert_eq!(
        file(&ipxe).as_deref(),
        Some("http://10.77.0.1:8080/boot/ipxe?mac=52:54:00:77:00:05&platform=efi")
    );
    assert!(site_request.is_none());
    let c = dhcp.counters.snapshot();
    assert!(c.dropped(DropReason::NotForProxy) >= 1, "{c:?}");
    assert!(
        dhcp.leases.snapshot().is_empty(),
        "a proxy hands out no addresses"
    );
}

// --- TFTP ---------------------------------------------------------------------------------

fn start_tftp(lab: &Lab, dir: &Path, counters: Arc<tftp::TftpCounters>) -> Running {
    let files = TftpFiles::ipxe_binaries(dir);
    let iface = lab.server_if.clone();
    Running::start(&lab.server_ns, move |cancel, ready| async move {
        let sock = tftp::bind_socket(
            SocketAddr::V4(SocketAddrV4::new(SERVER_IP, 69)),
            Some(&iface),
        )?;
        let _ = ready.send(());
        tftp::serve(sock, files, counters, cancel).await
    })
}

fn rrq(name: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, 1];
    for s in [name, "octet"] {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    }
    for (k, v) in opts {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
    p
}

/// What a hand-rolled RFC 1350/2347/2348/7440 read produced.
#[derive(Debug)]
enum TftpResult {
    Data {
        bytes: Vec<u8>,
        oack: Vec<(String, String)>,
        packets: usize,
    },
    Error(u16),
}

fn tftp_get(name: &str, opts: &[(&str, &str)]) -> TftpResult {
    let sock = UdpSocket::bind("10.77.0.150:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    sock.send_to(&rrq(name, opts), "10.77.0.1:69")
        .expect("send rrq");
    let window: u16 = opts
        .iter()
        .find(|(k, _)| *k == "windowsize")
        .map_or(1, |(_, v)| v.parse().expect("number"));
    let mut buf = vec![0u8; 70_000];
    let mut out = Vec::new();
    let mut oack = Vec::new();
    let mut expected: u16 = 1;
    let mut packets = 0;
    let mut blksize = 512;
    loop {
        let (n, peer) = sock.recv_from(&mut buf).expect("tftp packet");
        let p = &buf[..n];
        let ack = |block: u16| {
            let mut a = vec![0, 4];
            a.extend_from_slice(&block.to_be_bytes());
            sock.send_to(&a, peer).expect("send ack");
        };
        match u16::from_be_bytes([p[0], p[1]]) {
            6 => {
                let fields: Vec<String> = p[2..]
                    .split(|b| *b == 0)
                    .filter(|f| !f.is_empty())
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
                oack = fields
                    .chunks(2)
                    .map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default()))
                    .collect();
                if let Some((_, v)) = oack.iter().find(|(k, _)| k == "blksize") {
                    blksize = v.parse().expect("blksize");
                }
                ack(0);
            }
            3 => {
                packets += 1;
                let block = u16::from_be_bytes([p[2], p[3]]);
                assert_eq!(block, expected, "blocks arrive in order on a veth");
                let data = &p[4..];
                assert!(data.len() <= blksize);
                out.extend_from_slice(data);
                expected = expected.wrapping_add(1);
                let last = data.len() < blksize;
                if last || block.is_multiple_of(window) {
                    ack(block);
                }
                if last {
                    return TftpResult::Data {
                        bytes: out,
                        oack,
                        packets,
                    };
                }
            }
            5 => return TftpResult::Error(u16::from_be_bytes([p[2], p[3]])),
            other => panic!("unexpected tftp opcode {other}"),
        }
    }
}

/// The files to serve: Debian's iPXE binaries when installed, else generated stand-ins.
fn ipxe_dir(tmp: &Path) -> PathBuf {
    let debian = Path::new(tftp::DEBIAN_IPXE_DIR);
    if debian.join("undionly.kpxe").is_file() && debian.join("snponly.efi").is_file() {
        return debian.to_owned();
    }
    let mut seed: u32 = 12345;
    for (name, len) in [
        ("undionly.kpxe", 70_001usize),
        ("snponly.efi", 180_000),
        ("ipxe.efi", 1468 * 3),
    ] {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        std::fs::write(tmp.join(name), data).expect("write stand-in");
    }
    tmp.to_owned()
}

#[test]
fn tftp_serves_ipxe_binaries_with_blksize_and_windowsize_and_nothing_else() {
    test_needs::need!(test_needs::NETNS);
    let lab = Lab::new(true);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = ipxe_dir(tmp.path());
    let counters = Arc::new(tftp::TftpCounters::default());
    let _tftp = start_tftp(&lab, &dir, counters.clone());
    let want_undi = std::fs::read(dir.join("undionly.kpxe")).expect("read");
    let want_snp = std::fs::read(dir.join("snponly.efi")).expect("read");
    let (a, b, c, d, e, f) = in_ns(&lab.client_ns, || {
        (
            tftp_get(
                "undionly.kpxe",
                &[("blksize", "1468"), ("windowsize", "4"), ("tsize", "0")],
            ),
            // Asking for more than 1468 gets 1468 (no IP fragmentation).
            tftp_get("/snponly.efi", &[("blksize", "65464")]),
            tftp_get("snponly.efi", &[]),
            tftp_get("../../etc/passwd", &[]),
            tftp_get("/etc/passwd", &[("blksize", "1468")]),
            tftp_get("ipxe.efi/../../../etc/passwd", &[]),
        )
    });
    match a {
        TftpResult::Data {
            bytes,
            oack,
            packets,
        } => {
            assert!(bytes == want_undi, "undionly.kpxe content differs");
            assert!(
                oack.contains(&("blksize".to_owned(), "1468".to_owned())),
                "{oack:?}"
            );
            assert!(
                oack.contains(&("windowsize".to_owned(), "4".to_owned())),
                "{oack:?}"
            );
            assert!(
                oack.contains(&("tsize".to_owned(), want_undi.len().to_string())),
                "{oack:?}"
            );
            assert_eq!(packets, want_undi.len() / 1468 + 1);
        }
        TftpResult::Error(code) => panic!("tftp error {code}"),
    }
    match b {
        TftpResult::Data { bytes, oack, .. } => {
            assert!(bytes == want_snp, "snponly.efi content differs");
            assert!(
                oack.contains(&("blksize".to_owned(), "1468".to_owned())),
                "{oack:?}"
            );
        }
        TftpResult::Error(code) => panic!("tftp error {code}"),
    }
    match c {
        TftpResult::Data {
            bytes,
            oack,
            packets,
        } => {
            assert!(bytes == want_snp);
            assert!(oack.is_empty(), "no options asked, no OACK");
            assert_eq!(packets, want_snp.len() / 512 + 1);
        }
        TftpResult::Error(code) => panic!("tftp error {code}"),
    }
    for refused in [d, e, f] {
        assert!(
            matches!(refused, TftpResult::Error(1)),
            "file not found expected, got {refused:?}"
        );
    }
    // What `/metrics` reads: three transfers of known sizes, three refusals.
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(count(&counters.transfers), 3);
    assert_eq!(
        count(&counters.bytes),
        (want_undi.len() + 2 * want_snp.len()) as u64
    );
    assert_eq!(count(&counters.refused), 3);
    assert_eq!(count(&counters.unreadable), 0);
    // An independent client: curl's TFTP.
    let out = tmp.path().join("curl.kpxe");
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns,
            "curl",
            "-sS",
            "--tftp-blksize",
            "1468",
            "-o",
        ])
        .arg(&out)
        .arg("tftp://10.77.0.1/undionly.kpxe")
        .status()
        .expect("run curl");
    assert!(status.success());
    assert!(std::fs::read(&out).expect("read curl output") == want_undi);
}

// --- router advertisements ----------------------------------------------------------------

#[test]
fn router_advertisement_with_lifetime_zero_answers_solicitations() {
    test_needs::need!(test_needs::NETNS);
    let lab = Lab::new(false);
    sh(&[
        "ip",
        "-n",
        &lab.server_ns,
        "addr",
        "add",
        "fe80::1/64",
        "dev",
        &lab.server_if,
        "nodad",
    ]);
    sh(&[
        "ip",
        "-n",
        &lab.client_ns,
        "addr",
        "add",
        "fe80::2/64",
        "dev",
        &lab.client_if,
        "nodad",
    ]);
    // The client's socket first, so the RA sent at start cannot go out before anyone
    // listens (a socket keeps the namespace it was created in).
    let client_if = lab.client_if.clone();
    let client = in_ns(&lab.client_ns, move || {
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).expect("raw socket");
        s.bind_device(Some(client_if.as_bytes()))
            .expect("bind device");
        s
    });
    let iface = lab.server_if.clone();
    let cfg = RaConfig {
        interface: iface.clone(),
        // Long: the client only sees an RA quickly if its solicitation is answered.
        interval: Duration::from_secs(3600),
        prefix: None,
    };
    let _ra = Running::start(&lab.server_ns, move |cancel, ready| async move {
        let sock = ra::bind_socket(&iface)?;
        let _ = ready.send(());
        ra::run(sock, cfg, cancel).await.map(|_| ())
    });
    let (first, solicited, elapsed) = in_ns(&lab.client_ns, move || {
        let s = client;
        s.set_multicast_hops_v6(255).expect("hops");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let recv_ra = |deadline: Instant| -> Option<(Vec<u8>, u32)> {
            let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
            while Instant::now() < deadline {
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    // SAFETY: recv_from initialised the first `n` bytes.
                    let p: Vec<u8> = buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    if p.first() == Some(&134) {
                        return Some((p, 255));
                    }
                }
            }
            None
        };
        // The periodic timer fires once at start.
        let first = recv_ra(Instant::now() + Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1100));
        let rs = [133u8, 0, 0, 0, 0, 0, 0, 0];
        let all_routers = SockAddr::from(SocketAddrV6::new(
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
            0,
            0,
            0,
        ));
        let t = Instant::now();
        s.send_to(&rs, &all_routers).expect("send rs");
        let solicited = recv_ra(Instant::now() + Duration::from_secs(3));
        (first, solicited, t.elapsed())
    });
    let (first, _) = first.expect("an unsolicited RA at start");
    assert_eq!(&first[6..8], &[0, 0], "router lifetime 0");
    assert!(solicited.is_some(), "an RA in answer to the RS");
    assert!(elapsed < Duration::from_secs(2), "answered in {elapsed:?}");
}

// --- everything together, from a configuration section ------------------------------------

#[test]
fn services_start_from_config_section() {
    use controller::netboot::service::{self, NetbootConfig, NetbootSection};
    test_needs::need!(test_needs::NETNS);
    let lab = Lab::new(false);
    sh(&[
        "ip",
        "-n",
        &lab.server_ns,
        "addr",
        "add",
        "fe80::1/64",
        "dev",
        &lab.server_if,
        "nodad",
    ]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = ipxe_dir(tmp.path());
    let section = NetbootSection {
        mode: Some("full".to_owned()),
        interfaces: Some(vec![lab.server_if.clone()]),
        server_ip: Some(SERVER_IP),
        pool_start: Some(Ipv4Addr::new(10, 77, 0, 120)),
        pool_end: Some(Ipv4Addr::new(10, 77, 0, 121)),
        ipxe_dir: Some(dir.clone()),
        ..NetbootSection::default()
    };
    let cfg = NetbootConfig::try_from(section).expect("valid section");
    let _running = Running::start(&lab.server_ns, move |cancel, ready| async move {
        let policy = Arc::new(FixedBootPolicy::new(BootTarget::Netboot));
        let leases = Arc::new(MemoryLeaseStore::new());
        let netboot = service::start(cfg, policy, leases, cancel)?;
        let _ = ready.send(());
        netboot.wait().await
    });
    let iface = lab.client_if.clone();
    let (ack, undi) = in_ns(&lab.client_ns, move || {
        let sock = client_socket(&iface, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
        let (_, ack) = dora(
            &sock,
            RequestBuilder::new(MessageType::Discover, mac(7), 70).pxe(0),
            RequestBuilder::new(MessageType::Request, mac(7), 70).pxe(0),
        );
        // Configure the leased address as a real client would, then fetch the boot file.
        let cidr = format!("{}/24", ack.yiaddr());
        sh(&["ip", "addr", "add", &cidr, "dev", &iface]);
        let sock = UdpSocket::bind(SocketAddrV4::new(ack.yiaddr(), 0)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        sock.send_to(
            &rrq(&file(&ack).expect("boot file"), &[("blksize", "1468")]),
            "10.77.0.1:69",
        )
        .expect("rrq");
        let mut buf = [0u8; 1600];
        let (n, _) = sock.recv_from(&mut buf).expect("tftp answer");
        (ack, buf[..n].to_vec())
    });
    assert_eq!(ack.yiaddr(), Ipv4Addr::new(10, 77, 0, 120));
    assert_eq!(
        &undi[..2],
        &[0, 6],
        "OACK for the boot file named in the ACK"
    );
}
