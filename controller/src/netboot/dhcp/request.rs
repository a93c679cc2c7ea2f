//! A builder for client-side DHCP requests, shaped like the ones firmware sends (PXE ROM,
//! EDK2, iPXE, UEFI HTTP boot). Used by the policy tests, the network-namespace tests, and
//! anything that needs to play a booting machine.

use std::net::Ipv4Addr;

use dhcproto::Encodable;
use dhcproto::v4::{
    Architecture, DhcpOption, Flags, Message, MessageType, OptionCode, UnknownOption,
};
use uuid::Uuid;

use super::client::{OPT_IPXE_ENCAP, encode_client_uuid};
use crate::netboot::MacAddr;

/// Builds one client request.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    msg: Message,
}

impl RequestBuilder {
    /// A request of `kind` from `mac` with transaction id `xid`.
    pub fn new(kind: MessageType, mac: MacAddr, xid: u32) -> Self {
        let mut msg = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac.0,
        );
        msg.opts_mut().insert(DhcpOption::MessageType(kind));
        RequestBuilder { msg }
    }

    /// A PXE firmware: option 60 `PXEClient:Arch:<arch>:UNDI:003000` plus option 93.
    pub fn pxe(mut self, arch: u16) -> Self {
        let vc = format!("PXEClient:Arch:{arch:05}:UNDI:003000");
        self.msg
            .opts_mut()
            .insert(DhcpOption::ClassIdentifier(vc.into_bytes()));
        self.msg
            .opts_mut()
            .insert(DhcpOption::ClientSystemArchitecture(Architecture(arch)));
        self
    }

    /// A UEFI HTTP boot client: option 60 `HTTPClient:Arch:<arch>:UNDI:003000` plus option 93.
    pub fn http_client(mut self, arch: u16) -> Self {
        let vc = format!("HTTPClient:Arch:{arch:05}:UNDI:003000");
        self.msg
            .opts_mut()
            .insert(DhcpOption::ClassIdentifier(vc.into_bytes()));
        self.msg
            .opts_mut()
            .insert(DhcpOption::ClientSystemArchitecture(Architecture(arch)));
        self
    }

    /// Mark as iPXE: user class `iPXE` and an option 175 block, as iPXE sends them.
    pub fn ipxe(mut self) -> Self {
        self.msg
            .opts_mut()
            .insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        // 175: a few iPXE feature flags (16 = PXE extensions, 19 = HTTP, 24 = bzImage).
        self.msg
            .opts_mut()
            .insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::Unknown(OPT_IPXE_ENCAP),
                vec![16, 1, 1, 19, 1, 1, 24, 1, 1],
            )));
        self
    }

    /// Option 97 carrying `uuid` (first three fields little-endian).
    pub fn uuid(mut self, uuid: Uuid) -> Self {
        self.msg
            .opts_mut()
            .insert(DhcpOption::ClientMachineIdentifier(encode_client_uuid(
                uuid,
            )));
        self
    }

    /// Option 50.
    pub fn requested(mut self, ip: Ipv4Addr) -> Self {
        self.msg
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(ip));
        self
    }

    /// Option 54.
    pub fn server_id(mut self, ip: Ipv4Addr) -> Self {
        self.msg.opts_mut().insert(DhcpOption::ServerIdentifier(ip));
        self
    }

    /// ciaddr (a client that already has an address).
    pub fn ciaddr(mut self, ip: Ipv4Addr) -> Self {
        self.msg.set_ciaddr(ip);
        self
    }

    /// giaddr (as a relay agent would set it).
    pub fn giaddr(mut self, ip: Ipv4Addr) -> Self {
        self.msg.set_giaddr(ip);
        self
    }

    /// Set the broadcast flag.
    pub fn broadcast(mut self) -> Self {
        self.msg.set_flags(Flags::default().set_broadcast());
        self
    }

    /// The message.
    pub fn build(self) -> Message {
        self.msg
    }

    /// The message on the wire.
    pub fn bytes(self) -> Vec<u8> {
        // Encoding a message built only through this builder cannot fail: every option has
        // a valid length and there is no overload.
        self.msg.to_vec().unwrap_or_default()
    }
}
