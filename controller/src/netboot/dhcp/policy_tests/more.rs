//! Policy tables, continued: off and proxy modes, client identification, malformed packets.

use super::*;

#[test]
fn off_mode_drops_everything() {
    let c = cfg(DhcpMode::Off);
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Discover, MAC, 1).pxe(0),
        &free_ctx(),
    );
    assert_eq!(d, Decision::drop(DropReason::ModeOff));
}

#[test]
fn proxy_mode() {
    let c = cfg(DhcpMode::Proxy);
    let uuid = Uuid::parse_str("1ab0c0de-0000-4000-8000-000000000001").expect("uuid");
    let none = LeaseContext::default();
    let client_ip = Ipv4Addr::new(10, 9, 0, 150);

    // Port 67, EDK2: bare offer, option 60 PXEClient and 97 echoed, no address, no file.
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Discover, MAC, 3)
            .pxe(7)
            .uuid(uuid),
        &none,
    );
    let (m, dest) = reply_of(&d);
    assert_eq!(msg_type(m), Some(MessageType::Offer));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(vendor(m).as_deref(), Some(&b"PXEClient"[..]));
    assert!(
        matches!(m.opts().get(OptionCode::ClientMachineIdentifier), Some(DhcpOption::ClientMachineIdentifier(v)) if client::decode_client_uuid(v) == Some(uuid))
    );
    assert_eq!(file(m), None);
    assert!(!m.opts().contains(OptionCode::AddressLeaseTime));
    assert_eq!(dest, BCAST68);
    assert_eq!(d.lease_op, None);

    // Port 67, iPXE: the script URL right away, option 60 still PXEClient, no 175.176.
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Discover, MAC, 3)
            .pxe(0)
            .ipxe(),
        &none,
    );
    let (m, _) = reply_of(&d);
    assert_eq!(
        file(m).as_deref(),
        Some("http://10.9.0.1:8080/boot/ipxe?mac=52:54:00:00:00:01&platform=pcbios")
    );
    assert_eq!(vendor(m).as_deref(), Some(&b"PXEClient"[..]));
    assert_eq!(ipxe_encap(m), None);

    // Port 67: REQUESTs belong to the site server; non-PXE clients are not ours.
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Request, MAC, 3)
            .pxe(0)
            .requested(client_ip),
        &none,
    );
    assert_eq!(d, Decision::drop(DropReason::NotForProxy));
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Discover, MAC, 3),
        &none,
    );
    assert_eq!(d, Decision::drop(DropReason::NotPxeClient));
    let d = run_at(
        &c,
        RequestBuilder::new(MessageType::Discover, MAC, 3).pxe(0),
        CLIENT68,
        67,
        BootTarget::AddressOnly,
        &none,
    );
    assert_eq!(d, Decision::drop(DropReason::NothingToBoot));

    // Port 4011 from 4011 (EDK2) and from 68 (iPXE): unicast ACK to the source port.
    for (src_port, req, want_file) in [
        (
            4011,
            RequestBuilder::new(MessageType::Request, MAC, 4)
                .pxe(7)
                .uuid(uuid)
                .ciaddr(client_ip),
            "snponly.efi",
        ),
        (
            68,
            RequestBuilder::new(MessageType::Request, MAC, 4)
                .pxe(7)
                .ipxe()
                .ciaddr(client_ip),
            "http://10.9.0.1:8080/boot/ipxe?mac=52:54:00:00:00:01&platform=efi",
        ),
    ] {
        let src = SocketAddrV4::new(client_ip, src_port);
        let d = run_at(&c, req, src, PXE_PORT, BootTarget::Netboot, &none);
        let (m, dest) = reply_of(&d);
        assert_eq!(msg_type(m), Some(MessageType::Ack), "from {src_port}");
        assert_eq!(dest, Destination::Unicast(src), "from {src_port}");
        assert_eq!(file(m).as_deref(), Some(want_file), "from {src_port}");
        assert_eq!(
            vendor(m).as_deref(),
            Some(&b"PXEClient"[..]),
            "from {src_port}"
        );
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.siaddr(), SERVER);
    }
    // HTTP boot clients get their own class echoed, in proxy mode too.
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Discover, MAC, 3).http_client(16),
        &none,
    );
    let (m, _) = reply_of(&d);
    assert_eq!(vendor(m).as_deref(), Some(&b"HTTPClient"[..]));
    assert_eq!(
        file(m).as_deref(),
        Some("http://10.9.0.1:8080/boot/ipxe.efi")
    );
}

#[test]
fn option_97_is_decoded_with_little_endian_fields() {
    // The lab capture: 1ab0c0de-0000-4000-8000-...01 is sent as 00 de c0 b0 1a 00 00 00 40 80 00 ... 01.
    let mut raw = vec![
        0u8, 0xde, 0xc0, 0xb0, 0x1a, 0x00, 0x00, 0x00, 0x40, 0x80, 0x00,
    ];
    raw.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
    let uuid = client::decode_client_uuid(&raw).expect("decodes");
    assert_eq!(uuid.to_string(), "1ab0c0de-0000-4000-8000-000000000001");
    assert_eq!(client::encode_client_uuid(uuid), raw);
    assert_eq!(client::decode_client_uuid(&raw[..16]), None, "too short");
    let mut wrong_type = raw.clone();
    wrong_type[0] = 1;
    assert_eq!(client::decode_client_uuid(&wrong_type), None);
    assert_eq!(
        client::decode_client_uuid(&[0u8; 17]),
        None,
        "nil is absent"
    );
}

#[test]
fn user_class_in_rfc3004_form_marks_ipxe() {
    let mut msg = RequestBuilder::new(MessageType::Discover, MAC, 1)
        .pxe(0)
        .build();
    msg.opts_mut().insert(DhcpOption::UserClass(vec![
        3, b'f', b'o', b'o', 4, b'i', b'P', b'X', b'E',
    ]));
    assert!(ClientInfo::from_message(&msg).expect("valid").is_ipxe);
    msg.opts_mut()
        .insert(DhcpOption::UserClass(vec![9, b'i', b'P']));
    assert!(!ClientInfo::from_message(&msg).expect("valid").is_ipxe);
}

fn with_options(opts: &[u8]) -> Vec<u8> {
    let mut b = RequestBuilder::new(MessageType::Discover, MAC, 1).bytes();
    b.truncate(240);
    b.extend_from_slice(&[53, 1, 1]);
    b.extend_from_slice(opts);
    b.push(255);
    b
}

#[test]
fn malformed_packets_are_dropped_with_a_reason() {
    let good = RequestBuilder::new(MessageType::Discover, MAC, 1)
        .pxe(0)
        .bytes();
    let mut bad_magic = good.clone();
    bad_magic[236] = 0;
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty", vec![], DropReason::TooShort),
        (
            "truncated header",
            good[..200].to_vec(),
            DropReason::TooShort,
        ),
        ("bad magic", bad_magic, DropReason::BadMagic),
        (
            "option 94 of 2 bytes",
            with_options(&[94, 2, 1, 2]),
            DropReason::BadOption,
        ),
        (
            "option 80 with data",
            with_options(&[80, 1, 0]),
            DropReason::BadOption,
        ),
        (
            "option 151 empty",
            with_options(&[151, 0]),
            DropReason::BadOption,
        ),
        (
            "option 81 short",
            with_options(&[81, 1, 0]),
            DropReason::BadOption,
        ),
        (
            "option 94 split in two",
            with_options(&[94, 3, 1, 2, 3, 94, 3, 1, 2, 3]),
            DropReason::BadOption,
        ),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(client::parse(&bytes).err(), Some(want), "{name}");
    }
    let info = |bytes: Vec<u8>| client::parse(&bytes).and_then(|m| ClientInfo::from_message(&m));
    let mut reply = good.clone();
    reply[0] = 2;
    assert_eq!(info(reply).err(), Some(DropReason::NotBootRequest));
    let mut token_ring = good.clone();
    token_ring[1] = 6;
    assert_eq!(info(token_ring).err(), Some(DropReason::NotEthernet));
    let mut long_hw = good.clone();
    long_hw[2] = 16;
    assert_eq!(info(long_hw).err(), Some(DropReason::NotEthernet));
    let mut zero_mac = good.clone();
    zero_mac[28..34].fill(0);
    assert_eq!(info(zero_mac).err(), Some(DropReason::NoClientMac));
    let mut multicast = good.clone();
    multicast[28] = 0x01;
    assert_eq!(info(multicast).err(), Some(DropReason::NoClientMac));
    let mut bootp = good.clone();
    bootp.truncate(240);
    bootp.push(255);
    assert_eq!(info(bootp).err(), Some(DropReason::NoMessageType));
    // A well-formed OFFER sent to a server is not something to answer.
    let c = cfg(DhcpMode::Full);
    let d = run(
        &c,
        RequestBuilder::new(MessageType::Offer, MAC, 1),
        &free_ctx(),
    );
    assert_eq!(d, Decision::drop(DropReason::UnsupportedMessageType));
    // Option 93 of one byte: dhcproto stops reading options there; not a panic.
    assert!(info(with_options(&[93, 1, 0])).is_ok());
}

proptest! {
    #[test]
    fn parsing_random_bytes_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..400), op in 0u8..4) {
        let mut b = RequestBuilder::new(MessageType::Discover, MAC, 1).bytes();
        b.truncate(240);
        b[0] = op;
        b.extend_from_slice(&tail);
        if let Ok(m) = client::parse(&b) {
            if let Ok(info) = ClientInfo::from_message(&m) {
                let c = cfg(DhcpMode::Full);
                let inc = Incoming { msg: &m, info: &info, src: CLIENT68, local_port: 67 };
                let d = decide(&c, &inc, BootTarget::Netboot, &free_ctx(), now());
                if let Outcome::Reply { message, .. } = d.outcome {
                    prop_assert!(encode_reply(&message).is_ok());
                }
            }
        }
    }

    #[test]
    fn options_made_of_known_codes_never_panic(opts in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..8)), 0..20)) {
        let mut raw = Vec::new();
        for (code, data) in &opts {
            raw.push(*code);
            raw.push(u8::try_from(data.len()).unwrap_or(0));
            raw.extend_from_slice(data);
        }
        let b = with_options(&raw);
        let _ = client::parse(&b).and_then(|m| ClientInfo::from_message(&m));
    }
}
