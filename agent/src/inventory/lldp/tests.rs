use super::*;

/// A frame lldpd 1.0.16 (Debian 12) sent on a lab bridge: chassis and port ID of the MAC
/// subtype, system name and description, two management addresses, the port description,
/// two IEEE 802.3 TLVs.
const LLDPD: &[u8] = include_bytes!("lldpd-1.0.16.frame");

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let len = value.len();
    let mut v = vec![
        (kind << 1) | u8::try_from(len >> 8).expect("len"),
        (len & 0xff) as u8,
    ];
    v.extend_from_slice(value);
    v
}

fn frame(tlvs: &[Vec<u8>]) -> Vec<u8> {
    let mut f = NEAREST_BRIDGE.to_vec();
    f.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
    f.extend_from_slice(&ETHERTYPE_LLDP.to_be_bytes());
    for t in tlvs {
        f.extend_from_slice(t);
    }
    f
}

fn mandatory() -> Vec<Vec<u8>> {
    vec![
        tlv(1, &[4, 0x00, 0x1c, 0x73, 0xaa, 0xbb, 0xcc]),
        tlv(2, b"\x05Ethernet12"),
        tlv(3, &[0, 120]),
    ]
}

#[test]
fn lldpd_frame() {
    let n = parse_frame(LLDPD).expect("parses");
    assert_eq!(n.chassis_id, "d2:78:a4:80:77:ac");
    assert_eq!(n.chassis_id_subtype, 4);
    assert_eq!(n.port_id, "d2:78:a4:80:77:ac");
    assert_eq!(n.port_id_subtype, 3);
    // tx-interval 1 s times tx-hold 4.
    assert_eq!(n.ttl, 4);
    assert_eq!(n.system_name.as_deref(), Some("vm"));
    assert_eq!(n.port_description.as_deref(), Some("br0"));
    assert!(
        n.system_description
            .as_deref()
            .is_some_and(|d| d.starts_with("Debian GNU/Linux 12"))
    );
    assert_eq!(
        n.management_addresses,
        ["172.31.99.1", "fe80::d078:a4ff:fe80:77ac"]
    );
    assert_eq!(n.port_vlan_id, None);
    assert!(n.vlans.is_empty());
}

#[test]
fn a_switch_with_vlans_and_a_tag() {
    let mut tlvs = mandatory();
    tlvs.push(tlv(5, b"leaf-07.rack3"));
    tlvs.push(tlv(4, b"Ethernet12 to node\x07"));
    tlvs.push(tlv(8, &[5, 1, 10, 0, 0, 7, 2, 0, 0, 0, 1, 0]));
    tlvs.push(tlv(127, &[0x00, 0x80, 0xc2, 1, 0, 100]));
    tlvs.push(tlv(
        127,
        &[0x00, 0x80, 0xc2, 3, 0, 100, 4, b'p', b'r', b'o', b'v'],
    ));
    tlvs.push(tlv(
        127,
        &[
            0x00, 0x80, 0xc2, 3, 0x10, 200, 7, b't', b'e', b'n', b'a', b'n', b't', b'1',
        ],
    ));
    tlvs.push(tlv(127, &[0x00, 0x12, 0x0f, 1, 3, 0, 0, 0, 0]));
    tlvs.push(tlv(0, &[]));
    let plain = frame(&tlvs);
    let n = parse_frame(&plain).expect("parses");
    assert_eq!(n.chassis_id, "00:1c:73:aa:bb:cc");
    assert_eq!(n.port_id, "Ethernet12");
    assert_eq!(n.port_id_subtype, 5);
    assert_eq!(n.system_name.as_deref(), Some("leaf-07.rack3"));
    assert_eq!(n.port_description.as_deref(), Some("Ethernet12 to node"));
    assert_eq!(n.management_addresses, ["10.0.0.7"]);
    assert_eq!(n.port_vlan_id, Some(100));
    assert_eq!(
        n.vlans,
        [
            LldpVlan {
                id: 100,
                name: "prov".into()
            },
            LldpVlan {
                id: 200,
                name: "tenant1".into()
            },
        ]
    );
    // The same frame behind an 802.1Q tag.
    let mut tagged = plain[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    tagged.extend_from_slice(&plain[12..]);
    assert_eq!(parse_frame(&tagged), Ok(n));
}

#[test]
fn ids_by_subtype() {
    let rows: [(u8, &[u8], Option<&str>); 9] = [
        (4, &[1, 2, 3, 4, 5, 6], Some("01:02:03:04:05:06")),
        (4, &[1, 2, 3], None),
        (5, &[1, 192, 0, 2, 1], Some("192.0.2.1")),
        // An unknown family is text: control characters dropped, bad UTF-8 replaced.
        (5, &[9, 192, 0, 2, 1], Some("\u{fffd}")),
        (7, b"sw 1\n", Some("sw 1")),
        (6, b"", None),
        (7, b"\x00\x01\n", None),
        (4, &[2, 0, 0, 0], None),
        (1, &[0xff, b'a'], Some("\u{fffd}a")),
    ];
    for (sub, id, want) in rows {
        assert_eq!(
            render_id(sub, 4, 5, id).as_deref(),
            want,
            "subtype {sub} {id:?}"
        );
    }
}

#[test]
fn refusals() {
    let ok = frame(&mandatory());
    assert!(parse_frame(&ok).is_ok());
    assert_eq!(parse_frame(&ok[..13]), Err(LldpError::Size(13)));
    assert_eq!(
        parse_frame(&vec![0; MAX_FRAME + 1]),
        Err(LldpError::Size(MAX_FRAME + 1))
    );
    let mut ip = ok.clone();
    ip[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(parse_frame(&ip), Err(LldpError::NotLldp(0x0800)));
    // Cut inside the TTL's value.
    assert!(matches!(
        parse_frame(&ok[..ok.len() - 1]),
        Err(LldpError::Truncated { kind: 3, .. })
    ));
    // Port ID before chassis ID, a missing TTL, End first, an empty frame body.
    let m = mandatory();
    for tlvs in [
        vec![m[1].clone(), m[0].clone(), m[2].clone()],
        vec![m[0].clone(), m[1].clone()],
        vec![tlv(0, &[])],
        vec![],
    ] {
        assert_eq!(parse_frame(&frame(&tlvs)), Err(LldpError::MissingMandatory));
    }
    let bad_ttl = frame(&[m[0].clone(), m[1].clone(), tlv(3, &[0])]);
    assert_eq!(parse_frame(&bad_ttl), Err(LldpError::Malformed("TTL")));
    let empty_chassis = frame(&[tlv(1, &[]), m[1].clone(), m[2].clone()]);
    assert_eq!(
        parse_frame(&empty_chassis),
        Err(LldpError::Malformed("chassis ID"))
    );
}

#[test]
fn bounded() {
    let mut tlvs = mandatory();
    tlvs.push(tlv(5, &[b'x'; 511]));
    for i in 0..100u8 {
        tlvs.push(tlv(8, &[5, 1, 10, 0, 1, i, 2, 0, 0, 0, 1, 0]));
    }
    let f = frame(&tlvs);
    // Too long for one frame: the payload alone is over 1500 bytes.
    assert!(parse_frame(&f).is_err());
    let n = parse_lldpdu(&f[14..]).expect("the PDU parses");
    assert_eq!(n.system_name.map(|s| s.chars().count()), Some(MAX_TEXT));
    assert_eq!(n.management_addresses.len(), MAX_ADDRESSES);
    let mut vlans = mandatory();
    for i in 0..100u16 {
        let [hi, lo] = (i + 1).to_be_bytes();
        vlans.push(tlv(127, &[0x00, 0x80, 0xc2, 3, hi, lo, 1, b'v']));
    }
    let n = parse_lldpdu(&vlans.concat()).expect("parses");
    assert_eq!(n.vlans.len(), MAX_VLANS);
    let mut long = vec![0x00, 0x80, 0xc2, 3, 0, 5, 40];
    long.extend_from_slice(&[b'n'; 40]);
    let mut tlvs = mandatory();
    tlvs.push(tlv(127, &long));
    let n = parse_lldpdu(&tlvs.concat()).expect("parses");
    assert_eq!(n.vlans[0].name.len(), MAX_VLAN_NAME);
    // A VLAN name longer than its TLV is skipped, not read past.
    let mut short = mandatory();
    short.push(tlv(127, &[0x00, 0x80, 0xc2, 3, 0, 5, 9, b'a']));
    assert!(
        parse_lldpdu(&short.concat())
            .expect("parses")
            .vlans
            .is_empty()
    );
}

#[test]
fn a_closed_socket_or_missing_nic_is_no_neighbour() {
    let heard = listen(
        &["ingot-no-such-nic0".to_owned()],
        Duration::from_millis(50),
    );
    assert!(heard.is_empty());
}
