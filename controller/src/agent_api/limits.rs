//! PURE: the bounds on lookups, checked before any store work: how many MACs one lookup may
//! name, and how many lookups one source address may make per window (for known and unknown
//! machines alike; discovery's own rate limit on new nodes comes on top).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proto::protocol::LookupRequest;

/// Most distinct MACs one lookup may name (its list, boot MAC and inventory together).
pub const MAX_LOOKUP_MACS: usize = 32;

/// Lookups one source address may make per [`LOOKUP_WINDOW`].
pub const LOOKUPS_PER_WINDOW: u32 = 300;

/// The window of [`LOOKUPS_PER_WINDOW`].
pub const LOOKUP_WINDOW: Duration = Duration::from_secs(60);

/// Source addresses tracked at once; past this, expired windows are dropped, and a new
/// address that still finds no room is refused until one expires.
const MAX_SOURCES: usize = 65_536;

/// Checks the MACs of a lookup; the error says what is wrong. The raw lists are counted
/// before anything is compared, so a huge list costs nothing.
pub fn check_macs(req: &LookupRequest) -> Result<(), String> {
    if req.macs.len() > MAX_LOOKUP_MACS || req.inventory.interfaces.len() > MAX_LOOKUP_MACS {
        return Err(format!(
            "a lookup names at most {MAX_LOOKUP_MACS} MACs (got {} and {} interfaces)",
            req.macs.len(),
            req.inventory.interfaces.len()
        ));
    }
    let distinct = crate::discovery::lookup_macs(req).len();
    if distinct > MAX_LOOKUP_MACS {
        return Err(format!(
            "a lookup names at most {MAX_LOOKUP_MACS} MACs (got {distinct})"
        ));
    }
    Ok(())
}

/// A fixed-window counter per source address.
#[derive(Debug)]
pub struct SourceLimiter {
    per_window: u32,
    window: Duration,
    sources: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Default for SourceLimiter {
    fn default() -> Self {
        Self::new(LOOKUPS_PER_WINDOW, LOOKUP_WINDOW)
    }
}

impl SourceLimiter {
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            sources: Mutex::default(),
        }
    }

    /// Counts a request from `source` at `now`; `Err(retry_after)` when it is over the limit.
    pub fn check_at(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            let window = self.window;
            sources.retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
            if sources.len() >= MAX_SOURCES {
                return Err(self.window);
            }
        }
        let entry = sources.entry(source).or_insert((now, 0));
        let elapsed = now.saturating_duration_since(entry.0);
        if elapsed >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_window {
            return Err(self
                .window
                .saturating_sub(now.saturating_duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }

    pub fn check(&self, source: IpAddr) -> Result<(), Duration> {
        self.check_at(source, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use proto::{Disk, Interface, Inventory, PROTOCOL_VERSION};

    use super::*;

    fn req(macs: usize, interfaces: usize) -> LookupRequest {
        let mac = |i: usize| format!("52:54:00:00:{:02x}:{:02x}", i / 256, i % 256);
        LookupRequest {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "x".into(),
            macs: (0..macs).map(mac).collect(),
            boot_mac: None,
            system_uuid: None,
            system_serial: None,
            inventory: Inventory {
                interfaces: (0..interfaces)
                    .map(|i| Interface {
                        name: format!("enp{i}s0f0np0"),
                        mac_address: mac(i),
                        ipv4_address: Some("192.0.2.10".into()),
                        ipv6_address: Some("fe80::5054:ff:fe12:3456".into()),
                        has_carrier: true,
                        speed_mbps: Some(100_000),
                        vendor: Some("0x15b3".into()),
                        product: Some("0x101d".into()),
                        driver: Some("mlx5_core".into()),
                        pci_address: Some("0000:c1:00.0".into()),
                        addresses: vec![
                            "192.0.2.10/24".into(),
                            "fe80::5054:ff:fe12:3456/64".into(),
                        ],
                        lldp: Some(proto::LldpNeighbor {
                            chassis_id: "00:1c:73:aa:bb:cc".into(),
                            chassis_id_subtype: 4,
                            port_id: format!("Ethernet{i}/1"),
                            port_id_subtype: 5,
                            ttl: 120,
                            port_description: Some(format!("to rack 7 node {i} port 1")),
                            system_name: Some("leaf-07.rack7.dc1.example.net".into()),
                            system_description: Some("x".repeat(200)),
                            management_addresses: vec!["10.0.0.7".into(), "fd00::7".into()],
                            port_vlan_id: Some(100),
                            vlans: (0..16)
                                .map(|v| proto::LldpVlan {
                                    id: 100 + v,
                                    name: format!("tenant-vlan-{v:04}"),
                                })
                                .collect(),
                        }),
                    })
                    .collect(),
                ..Default::default()
            },
            steps: Vec::new(),
        }
    }

    #[test]
    fn mac_counts() {
        // (macs listed, inventory interfaces, accepted)
        for (macs, interfaces, ok) in [
            (1, 1, true),
            (32, 32, true),
            (33, 0, false),
            (0, 33, false),
            (40_000, 0, false),
        ] {
            assert_eq!(
                check_macs(&req(macs, interfaces)).is_ok(),
                ok,
                "{macs} {interfaces}"
            );
        }
        // 20 listed and 20 other interfaces: 40 distinct.
        let mut r = req(20, 0);
        r.inventory = req(0, 40).inventory;
        r.inventory.interfaces.drain(..20);
        assert!(check_macs(&r).is_err());
        r.boot_mac = Some("52:54:00:00:00:05".into());
        r.inventory.interfaces.truncate(12);
        assert!(check_macs(&r).is_ok(), "32 distinct");
    }

    #[test]
    fn largest_honest_lookup_fits() {
        let mut r = req(32, 32);
        r.inventory.cpu.flags = (0..200).map(|i| format!("flag_{i:03}")).collect();
        r.inventory.disks = (0..1024)
            .map(|i| Disk {
                name: format!(
                    "/dev/disk/by-path/pci-0000:c1:00.0-sas-exp0x500304801f3f7f3f-phy{i}-lun-0"
                ),
                model: Some("HUH721212AL5200 SAS 12TB".into()),
                vendor: Some("HGST".into()),
                size: 12_000_138_625_024,
                rotational: true,
                serial: Some(format!("8DGZ{i:06}XXXXXXXX")),
                wwn: Some(format!("0x5000cca2{i:08x}")),
                hctl: Some(format!("1:0:{i}:0")),
                by_path: Some(format!(
                    "/dev/disk/by-path/pci-0000:c1:00.0-sas-exp0x500304801f3f7f3f-phy{i}-lun-0"
                )),
                logical_sector_size: 4096,
                physical_sector_size: 4096,
                transport: Some("sas".into()),
                read_only: false,
                removable: false,
            })
            .collect();
        let size = serde_json::to_vec(&r).expect("json").len();
        assert!(
            size < crate::agent_api::AGENT_BODY_LIMIT * 3 / 4,
            "{size} bytes"
        );
        assert!(
            size > 256 * 1024,
            "the figure in AGENT_BODY_LIMIT's doc: {size} bytes"
        );
    }

    #[test]
    fn the_301st_lookup_in_a_window_waits() {
        let limiter = SourceLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.7".parse().expect("ip");
        let b: IpAddr = "192.0.2.8".parse().expect("ip");
        for i in 0..300 {
            assert!(
                limiter.check_at(a, t0 + Duration::from_millis(i)).is_ok(),
                "{i}"
            );
        }
        let wait = limiter
            .check_at(a, t0 + Duration::from_secs(20))
            .expect_err("301st");
        assert_eq!(wait, Duration::from_secs(40));
        assert!(
            limiter.check_at(b, t0 + Duration::from_secs(20)).is_ok(),
            "another source"
        );
        assert!(
            limiter.check_at(a, t0 + Duration::from_secs(60)).is_ok(),
            "next window"
        );
    }
}
