//! Hardware inventory reported by the agent.
//!
//! Field names follow Ironic's inventory format (`interfaces`, `cpu`, `memory`,
//! `disks`, `system_vendor`, `boot`, `bmc_address`) wherever Ironic has one, so
//! that Ironic tooling can read it; our extra fields sit beside them. Sizes are
//! bytes unless a field name says otherwise.

use serde::{Deserialize, Serialize};

/// Everything the agent knows about the machine it runs on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// Network interfaces (physical ones; `lo` and virtual devices are left out).
    pub interfaces: Vec<Interface>,
    /// Processor summary.
    pub cpu: Cpu,
    /// Memory sizes.
    pub memory: Memory,
    /// Block devices that can hold an image.
    pub disks: Vec<Disk>,
    /// SMBIOS type 1 (system) and type 0 (firmware).
    pub system_vendor: SystemVendor,
    /// Boot mode of the current boot.
    pub boot: Boot,
    /// BMC IPv4 address when readable in-band.
    #[serde(default)]
    pub bmc_address: Option<String>,
    /// SMBIOS type 2 (baseboard). Extra field.
    #[serde(default)]
    pub baseboard: Option<Baseboard>,
    /// SMBIOS type 3 (chassis). Extra field.
    #[serde(default)]
    pub chassis: Option<Chassis>,
    /// Kernel host name at the time of the report. Extra field.
    #[serde(default)]
    pub hostname: Option<String>,
    /// PCI devices (IPA's `pci-devices` collector fields, plus ours).
    #[serde(default)]
    pub pci_devices: Vec<PciDevice>,
    /// NUMA topology (IPA's `numa-topology` collector shape), when the kernel shows one.
    #[serde(default)]
    pub numa_topology: Option<NumaTopology>,
}

/// A PCI function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    /// `0000:00:03.0` (IPA field).
    pub bus: String,
    /// Four hex digits, no `0x` (IPA field).
    pub vendor_id: String,
    /// Four hex digits, no `0x` (IPA field).
    pub product_id: String,
    /// Six hex digits: class, subclass, programming interface (IPA field).
    #[serde(default)]
    pub class: Option<String>,
    /// Two hex digits (IPA field).
    #[serde(default)]
    pub revision: Option<String>,
    /// What the class says it is: `nic`, `gpu`, `storage`, `bridge`, `usb`, `other`.
    /// Extra field.
    #[serde(default)]
    pub kind: String,
    /// Bound kernel driver. Extra field.
    #[serde(default)]
    pub driver: Option<String>,
    /// NUMA node the device is attached to. Extra field.
    #[serde(default)]
    pub numa_node: Option<u32>,
}

/// NUMA topology, in the shape of IPA's `numa_topology`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaTopology {
    pub ram: Vec<NumaRam>,
    pub cpus: Vec<NumaCpu>,
    pub nics: Vec<NumaNic>,
}

/// Memory of one NUMA node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaRam {
    pub numa_node: u32,
    pub size_kb: u64,
}

/// One physical core of a NUMA node, with its hyper-threads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaCpu {
    /// The core's lowest CPU number.
    pub cpu: u32,
    pub numa_node: u32,
    pub thread_siblings: Vec<u32>,
}

/// A network interface and its NUMA node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNic {
    pub name: String,
    pub numa_node: u32,
}

/// A network interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    /// Kernel name, e.g. `eth0`.
    pub name: String,
    /// MAC address, lowercase, colon separated.
    pub mac_address: String,
    /// First IPv4 address, without prefix (Ironic field).
    #[serde(default)]
    pub ipv4_address: Option<String>,
    /// First global IPv6 address, without prefix (Ironic field).
    #[serde(default)]
    pub ipv6_address: Option<String>,
    /// Whether the link has a carrier.
    pub has_carrier: bool,
    /// Link speed in Mbit/s when known.
    #[serde(default)]
    pub speed_mbps: Option<u32>,
    /// PCI vendor id, e.g. `0x8086` (Ironic field).
    #[serde(default)]
    pub vendor: Option<String>,
    /// PCI device id (Ironic field).
    #[serde(default)]
    pub product: Option<String>,
    /// Kernel driver name. Extra field.
    #[serde(default)]
    pub driver: Option<String>,
    /// PCI address, e.g. `0000:00:03.0`. Extra field.
    #[serde(default)]
    pub pci_address: Option<String>,
    /// All addresses with prefix length, e.g. `192.0.2.5/24`. Extra field.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The switch port this NIC is cabled to, from the first LLDP frame heard on it during
    /// inspection. Extra field (IPA reports raw TLVs; this is them parsed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lldp: Option<LldpNeighbor>,
}

/// What an LLDP frame says about the switch port at the other end of a cable (IEEE
/// 802.1AB). Identifiers of the MAC subtype are written `aa:bb:cc:dd:ee:ff`, network
/// addresses as IP text, everything else as text with control characters dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LldpNeighbor {
    /// Chassis ID (TLV 1), rendered by its subtype.
    pub chassis_id: String,
    /// Chassis ID subtype: 4 is a MAC address (what Ironic's `switch_id` takes).
    pub chassis_id_subtype: u8,
    /// Port ID (TLV 2), rendered by its subtype.
    pub port_id: String,
    /// Port ID subtype: 3 MAC address, 5 interface name, 7 locally assigned.
    pub port_id_subtype: u8,
    /// Time to live in seconds (TLV 3).
    pub ttl: u16,
    /// Port description (TLV 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_description: Option<String>,
    /// System name (TLV 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_name: Option<String>,
    /// System description (TLV 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_description: Option<String>,
    /// Management addresses (TLV 8), IPv4 and IPv6 only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub management_addresses: Vec<String>,
    /// The port's native VLAN (IEEE 802.1 Port VLAN ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_vlan_id: Option<u16>,
    /// VLANs the port carries (IEEE 802.1 VLAN Name TLVs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<LldpVlan>,
}

/// One VLAN an LLDP frame names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LldpVlan {
    /// VLAN ID.
    pub id: u16,
    /// VLAN name.
    pub name: String,
}

/// Processor summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// Model name from `/proc/cpuinfo`.
    pub model_name: String,
    /// Nominal frequency in MHz as text (Ironic keeps it a string).
    #[serde(default)]
    pub frequency: Option<String>,
    /// Logical processors.
    pub count: u32,
    /// Physical packages.
    pub socket_count: u32,
    /// Architecture, e.g. `x86_64`.
    pub architecture: String,
    /// CPU flags.
    #[serde(default)]
    pub flags: Vec<String>,
}

/// Memory sizes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Memory the kernel sees, in bytes.
    pub total: u64,
    /// Installed memory from SMBIOS type 17, in MiB (Ironic field).
    #[serde(default)]
    pub physical_mb: Option<u64>,
}

/// A block device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// Device path, e.g. `/dev/sda`.
    pub name: String,
    /// Model string.
    #[serde(default)]
    pub model: Option<String>,
    /// Vendor string.
    #[serde(default)]
    pub vendor: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Spinning disk.
    pub rotational: bool,
    /// Serial number, read from the place the driver keeps it.
    #[serde(default)]
    pub serial: Option<String>,
    /// World wide name, e.g. `0x5000c500a1b2c3d4` or an NVMe `eui.` id.
    #[serde(default)]
    pub wwn: Option<String>,
    /// SCSI address `host:channel:target:lun`.
    #[serde(default)]
    pub hctl: Option<String>,
    /// `/dev/disk/by-path/...` link name.
    #[serde(default)]
    pub by_path: Option<String>,
    /// Logical sector size in bytes. Extra field.
    pub logical_sector_size: u32,
    /// Physical sector size in bytes. Extra field.
    pub physical_sector_size: u32,
    /// Transport: `nvme`, `sata`, `sas`, `virtio`, `usb`, `scsi`, ... Extra field.
    #[serde(default)]
    pub transport: Option<String>,
    /// The kernel refuses writes. Extra field.
    pub read_only: bool,
    /// Removable media. Extra field.
    pub removable: bool,
}

impl Disk {
    /// Whether the disk is virtual media (a BMC's emulated CD or USB stick), told by its
    /// driver and transport, never by a word in the model string: an optical drive (the `sr`
    /// driver, `/dev/srN`) on any transport, or a removable disk on USB. A wipe passes over
    /// it and the controller does not expect it to be wiped.
    pub fn is_virtual_media(&self) -> bool {
        let optical = self
            .name
            .strip_prefix("/dev/sr")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        optical || (self.removable && self.transport.as_deref() == Some("usb"))
    }
}

/// SMBIOS system information (type 1) plus firmware (type 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemVendor {
    /// Product name.
    #[serde(default)]
    pub product_name: Option<String>,
    /// Serial number.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// Manufacturer.
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// SMBIOS system UUID, lowercase. Extra field.
    #[serde(default)]
    pub uuid: Option<String>,
    /// SKU number. Extra field.
    #[serde(default)]
    pub sku: Option<String>,
    /// Firmware (BIOS) information.
    #[serde(default)]
    pub firmware: Option<Firmware>,
}

/// SMBIOS type 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Firmware {
    /// Firmware vendor.
    #[serde(default)]
    pub vendor: Option<String>,
    /// Firmware version.
    #[serde(default)]
    pub version: Option<String>,
    /// Release date as written by the firmware.
    #[serde(default)]
    pub build_date: Option<String>,
}

/// SMBIOS type 2.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseboard {
    /// Manufacturer.
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// Product.
    #[serde(default)]
    pub product: Option<String>,
    /// Version.
    #[serde(default)]
    pub version: Option<String>,
    /// Serial number.
    #[serde(default)]
    pub serial_number: Option<String>,
}

/// SMBIOS type 3.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Chassis {
    /// Manufacturer.
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// Chassis type code as defined by SMBIOS (e.g. 1 = other, 23 = rack mount).
    #[serde(default)]
    pub chassis_type: Option<u8>,
    /// Serial number.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// Asset tag.
    #[serde(default)]
    pub asset_tag: Option<String>,
}

/// How the machine booted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// Legacy BIOS.
    #[default]
    Bios,
    /// UEFI.
    Uefi,
}

/// Boot information.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Boot {
    /// Boot mode of the current boot (Ironic field).
    pub current_boot_mode: BootMode,
    /// MAC of the interface we PXE booted from, when known (Ironic field).
    #[serde(default)]
    pub pxe_interface: Option<String>,
    /// Secure Boot state when booted by UEFI. Extra field.
    #[serde(default)]
    pub secure_boot: Option<bool>,
}
