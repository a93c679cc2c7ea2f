//! The DHCP socket loop: receive, parse, ask the [`BootPolicy`], read leases, call the pure
//! policy, apply its lease change, send.
//!
//! One UDP socket per (interface, port), made with socket2: SO_BINDTODEVICE so replies leave
//! on the provisioning interface and requests from other interfaces are never seen,
//! SO_BROADCAST for 255.255.255.255 replies, SO_REUSEADDR. Port 67 always; port 4011 too in
//! proxy mode. Raw sockets are not needed: clients without an address get broadcasts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context as _;
use dhcproto::v4::MessageType;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::batch::{Overlay, Want};
use super::client::{self, ClientInfo, DropReason};
use super::leases::{LeaseContext, LeaseOp, LeaseStore};
use super::policy::{self, Decision, Destination, Incoming, Outcome, PXE_PORT, SERVER_PORT};
use super::{BootPolicy, DhcpConfig, DhcpMode};

/// Packet and outcome counters, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct DhcpCounters {
    received: AtomicU64,
    received_pxe_port: AtomicU64,
    replied: AtomicU64,
    handled: AtomicU64,
    send_errors: AtomicU64,
    /// Replies built, by DHCP message type.
    offers: AtomicU64,
    acks: AtomicU64,
    naks: AtomicU64,
    dropped: Mutex<BTreeMap<DropReason, u64>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub received: u64,
    /// Of `received`, how many came in on the proxyDHCP port 4011.
    pub received_pxe_port: u64,
    pub replied: u64,
    /// Processed without a reply by protocol (RELEASE, DECLINE).
    pub handled: u64,
    pub send_errors: u64,
    /// Of the replies, how many were OFFERs, ACKs and NAKs.
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    pub dropped: BTreeMap<DropReason, u64>,
}

impl CounterSnapshot {
    /// Drops for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or(0)
    }
}

impl DhcpCounters {
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            received: self.received.load(Ordering::Relaxed),
            received_pxe_port: self.received_pxe_port.load(Ordering::Relaxed),
            replied: self.replied.load(Ordering::Relaxed),
            handled: self.handled.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            offers: self.offers.load(Ordering::Relaxed),
            acks: self.acks.load(Ordering::Relaxed),
            naks: self.naks.load(Ordering::Relaxed),
            dropped: self
                .dropped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn count_drop(&self, reason: DropReason) {
        *self
            .dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }
}

/// A bound DHCP socket, not yet registered with tokio (so it can be made on a thread that
/// entered another network namespace and handed over).
#[derive(Debug)]
pub struct DhcpSocket {
    pub interface: String,
    pub port: u16,
    socket: StdUdpSocket,
}

/// The receive buffer each DHCP socket asks for: a rack powered on at once sends its
/// DISCOVERs within milliseconds, each costing the kernel about 2 KiB of buffer, and the
/// default (`net.core.rmem_default`, about 208 KiB) holds only ~160 of them, so the rest are
/// dropped before we read them (`cargo xtask bench dhcp` measures it).
pub const RECV_BUFFER: usize = 8 << 20;

/// Asks for [`RECV_BUFFER`]: `SO_RCVBUFFORCE` with `CAP_NET_ADMIN`, else `SO_RCVBUF`, which
/// the kernel caps at `net.core.rmem_max` (the package raises it, `packaging/sysctl.conf`).
fn grow_receive_buffer(socket: &Socket, interface: &str) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &RECV_BUFFER).is_err() {
        let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    }
    // The kernel reports twice what it grants (the doubling covers its bookkeeping).
    let got = socket.recv_buffer_size().unwrap_or(0) / 2;
    if got < RECV_BUFFER / 2 {
        tracing::warn!(
            %interface,
            receive_buffer = got,
            "dhcp socket receive buffer is small: a PXE storm will lose requests; raise \
             net.core.rmem_max (the Debian package sets it) or grant CAP_NET_ADMIN"
        );
    } else {
        tracing::debug!(%interface, receive_buffer = got, "dhcp socket receive buffer");
    }
}

fn bind_one(interface: &str, port: u16) -> anyhow::Result<DhcpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .context("creating dhcp socket")?;
    socket
        .set_reuse_address(true)
        .context("setting SO_REUSEADDR")?;
    socket.set_broadcast(true).context("setting SO_BROADCAST")?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .with_context(|| format!("binding dhcp socket to interface {interface}"))?;
    socket.set_nonblocking(true).context("setting O_NONBLOCK")?;
    grow_receive_buffer(&socket, interface);
    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding dhcp socket to {addr} on {interface}"))?;
    Ok(DhcpSocket {
        interface: interface.to_owned(),
        port,
        socket: socket.into(),
    })
}

/// Bind the sockets `mode` needs on each of `interfaces`: none when off, port 67 in full
/// mode, ports 67 and 4011 in proxy mode.
pub fn bind_sockets(mode: DhcpMode, interfaces: &[String]) -> anyhow::Result<Vec<DhcpSocket>> {
    let ports: &[u16] = match mode {
        DhcpMode::Off => &[],
        DhcpMode::Full => &[SERVER_PORT],
        DhcpMode::Proxy => &[SERVER_PORT, PXE_PORT],
    };
    let mut out = Vec::new();
    for iface in interfaces {
        for port in ports {
            out.push(bind_one(iface, *port)?);
        }
    }
    Ok(out)
}

/// The DHCP server: configuration, the two traits it needs, and its counters.
pub struct DhcpServer {
    cfg: Arc<DhcpConfig>,
    policy: Arc<dyn BootPolicy>,
    leases: Arc<dyn LeaseStore>,
    counters: Arc<DhcpCounters>,
    /// Serializes lease read-decide-write so two DISCOVERs never get the same address.
    lease_lock: tokio::sync::Mutex<()>,
    /// Where the search for a never-used address starts: just after the last one found.
    free_hint: AtomicU32,
}

impl std::fmt::Debug for DhcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhcpServer")
            .field("cfg", &self.cfg)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// The most datagrams the server decides together: what one socket had queued, up to this.
pub const MAX_BATCH: usize = 256;

/// One datagram as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub bytes: Vec<u8>,
    pub src: SocketAddrV4,
}

/// A reply ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireReply {
    pub bytes: Vec<u8>,
    pub dest: SocketAddrV4,
}

impl DhcpServer {
    pub fn new(
        cfg: DhcpConfig,
        policy: Arc<dyn BootPolicy>,
        leases: Arc<dyn LeaseStore>,
    ) -> anyhow::Result<Self> {
        cfg.validate().context("invalid dhcp configuration")?;
        Ok(DhcpServer {
            cfg: Arc::new(cfg),
            policy,
            leases,
            counters: Arc::new(DhcpCounters::default()),
            lease_lock: tokio::sync::Mutex::new(()),
            free_hint: AtomicU32::new(0),
        })
    }

    pub fn counters(&self) -> Arc<DhcpCounters> {
        Arc::clone(&self.counters)
    }

    /// The pool's free and total addresses at `now` (reservations excluded from both);
    /// `None` without a pool (proxy mode).
    pub async fn pool_addresses(
        &self,
        now: SystemTime,
    ) -> Result<Option<(u64, u64)>, super::leases::LeaseStoreError> {
        let Some(pool) = &self.cfg.pool else {
            return Ok(None);
        };
        let reserved: std::collections::BTreeSet<Ipv4Addr> = self
            .cfg
            .reservations
            .values()
            .copied()
            .filter(|ip| (pool.start..=pool.end).contains(ip))
            .collect();
        let span = u64::from(u32::from(pool.end)).saturating_sub(u64::from(u32::from(pool.start)));
        let total = (span + 1).saturating_sub(reserved.len() as u64);
        let free = self
            .leases
            .count_free(pool.start, pool.end, &reserved, now)
            .await?;
        Ok(Some((free, total)))
    }

    /// Handle one datagram: [`Self::handle_batch`] of one.
    pub async fn handle_packet(
        &self,
        bytes: &[u8],
        src: SocketAddrV4,
        local_port: u16,
        now: SystemTime,
    ) -> Option<WireReply> {
        let batch = [Datagram {
            bytes: bytes.to_vec(),
            src,
        }];
        self.handle_batch(&batch, local_port, now)
            .await
            .pop()
            .flatten()
    }

    /// Handle the datagrams one socket had queued: everything but the socket. Decides them
    /// in order against one read of the store (`batch::Overlay`), writes their lease
    /// changes in one transaction, and returns each one's reply (in order): a change the
    /// store refused drops its reply, so no address is promised that the store did not
    /// record.
    pub async fn handle_batch(
        &self,
        batch: &[Datagram],
        local_port: u16,
        now: SystemTime,
    ) -> Vec<Option<WireReply>> {
        let counters = &self.counters;
        counters
            .received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if local_port == PXE_PORT {
            counters
                .received_pxe_port
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        let mut packets = Vec::with_capacity(batch.len());
        for (i, d) in batch.iter().enumerate() {
            match client::parse(&d.bytes).and_then(|m| ClientInfo::from_message(&m).map(|c| (m, c)))
            {
                Ok((msg, info)) => packets.push((i, msg, info)),
                Err(reason) => {
                    tracing::debug!(src = %d.src, len = d.bytes.len(), reason = reason.as_str(), "dhcp packet dropped");
                    counters.count_drop(reason);
                }
            }
        }
        let mut replies = vec![None; batch.len()];
        if packets.is_empty() {
            return replies;
        }
        let span = tracing::debug_span!("dhcp_batch", packets = packets.len(), local_port);
        async {
            let clients: Vec<_> = packets.iter().map(|(_, _, c)| (c.mac, c.uuid)).collect();
            let targets = self.policy.lookup_many(&clients).await;
            let _guard = self.lease_lock.lock().await;
            let incoming: Vec<Incoming<'_>> = packets
                .iter()
                .map(|(i, msg, info)| Incoming {
                    msg,
                    info,
                    src: batch[*i].src,
                    local_port,
                })
                .collect();
            let wants: Vec<Want> = incoming
                .iter()
                .map(|inc| Want {
                    mac: inc.info.mac,
                    lookups: policy::lease_lookups(&self.cfg, inc),
                })
                .collect();
            let pool = self.cfg.pool.as_ref();
            let reserved: BTreeSet<Ipv4Addr> = self.cfg.reservations.values().copied().collect();
            let hint = Ipv4Addr::from(self.free_hint.load(Ordering::Relaxed));
            let overlay = Overlay::read(self.leases.as_ref(), &wants, pool, &reserved, hint)
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "lease store read failed"))
                .ok();
            // Each packet's decision, and the index of its lease change in `ops`.
            let mut decided = Vec::with_capacity(incoming.len());
            let mut ops = Vec::new();
            for ((inc, want), target) in incoming.iter().zip(&wants).zip(&targets) {
                let decision = match &overlay {
                    Some(o) => {
                        let ctx = o.context(want, pool, &reserved, now);
                        let d = policy::decide(&self.cfg, inc, *target, &ctx, now);
                        if let (Some(free), Some(LeaseOp::Offer { ip, .. })) = (ctx.free, &d.lease_op)
                            && free == *ip
                        {
                            // The next search starts after the address just handed out.
                            let next = u32::from(free).checked_add(1).unwrap_or(0);
                            self.free_hint.store(next, Ordering::Relaxed);
                        }
                        d
                    }
                    None if !want.lookups.needed => {
                        policy::decide(&self.cfg, inc, *target, &LeaseContext::default(), now)
                    }
                    None => Decision {
                        outcome: Outcome::Drop(DropReason::StoreError),
                        lease_op: None,
                    },
                };
                let op_index = match (&decision.lease_op, &overlay) {
                    (Some(op), Some(o)) => match o.apply(op, now) {
                        Ok(()) => {
                            ops.push(op.clone());
                            Some(Ok(ops.len() - 1))
                        }
                        Err(e) => Some(Err(e)),
                    },
                    _ => None,
                };
                decided.push((decision, op_index));
            }
            let written = if ops.is_empty() {
                Ok(Vec::new())
            } else {
                self.leases.apply_all(&ops, now).await
            };
            if let Err(e) = &written {
                tracing::warn!(error = %e, writes = ops.len(), "lease store write failed");
            }
            for ((inc, (decision, op_index)), (i, _, _)) in
                incoming.iter().zip(decided).zip(&packets)
            {
                let stored = match op_index {
                    None => Ok(()),
                    Some(Err(e)) => Err(e.to_string()),
                    Some(Ok(k)) => match &written {
                        Ok(results) => match results.get(k) {
                            Some(Ok(())) => Ok(()),
                            Some(Err(e)) => Err(e.to_string()),
                            None => Err("no result for the write".to_owned()),
                        },
                        Err(e) => Err(e.to_string()),
                    },
                };
                let span = tracing::debug_span!("dhcp", mac = %inc.info.mac, xid = inc.info.xid, kind = ?inc.info.msg_type);
                replies[*i] = span.in_scope(|| match stored {
                    // Never promise an address the store did not record.
                    Err(e) => {
                        tracing::warn!(error = %e, op = ?decision.lease_op, "lease store write failed");
                        counters.count_drop(DropReason::StoreError);
                        None
                    }
                    Ok(()) => self.reply(inc, decision),
                });
            }
        }
        .instrument(span)
        .await;
        replies
    }

    /// The wire reply for one decided packet (counting it), or `None`.
    fn reply(&self, inc: &Incoming<'_>, decision: Decision) -> Option<WireReply> {
        let info = inc.info;
        match decision.outcome {
            Outcome::Reply { message, dest } => {
                let bytes = match policy::encode_reply(&message) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "encoding reply failed");
                        self.counters.count_drop(DropReason::EncodeFailed);
                        return None;
                    }
                };
                let dest = match dest {
                    Destination::Broadcast { port } => SocketAddrV4::new(Ipv4Addr::BROADCAST, port),
                    Destination::Unicast(a) => a,
                };
                let counter = match message.opts().msg_type() {
                    Some(MessageType::Offer) => Some(&self.counters.offers),
                    Some(MessageType::Ack) => Some(&self.counters.acks),
                    Some(MessageType::Nak) => Some(&self.counters.naks),
                    _ => None,
                };
                if let Some(c) = counter {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(reply = ?message.opts().msg_type(), yiaddr = %message.yiaddr(), %dest, uuid = ?info.uuid, arch = ?info.arch, ipxe = info.is_ipxe, "dhcp reply");
                Some(WireReply { bytes, dest })
            }
            Outcome::Handled => {
                self.counters.handled.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("dhcp handled");
                None
            }
            Outcome::Drop(reason) => {
                tracing::debug!(reason = reason.as_str(), "dhcp dropped");
                self.counters.count_drop(reason);
                None
            }
        }
    }

    async fn serve_socket(
        &self,
        socket: DhcpSocket,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let DhcpSocket {
            interface,
            port,
            socket,
        } = socket;
        let socket = UdpSocket::from_std(socket).context("registering dhcp socket with tokio")?;
        tracing::info!(%interface, port, mode = ?self.cfg.mode, "dhcp listening");
        // Large enough for any DHCP packet (the maximum UDP payload on Ethernet plus slack).
        let mut buf = vec![0u8; 4096];
        loop {
            let (len, src) = tokio::select! {
                r = socket.recv_from(&mut buf) => match r {
                    Ok(v) => v,
                    Err(e) => {
                        // ICMP errors from earlier sends surface here; keep serving.
                        tracing::debug!(%interface, port, error = %e, "dhcp recv error");
                        continue;
                    }
                },
                () = cancel.cancelled() => {
                    tracing::info!(%interface, port, "dhcp stopped");
                    return Ok(());
                }
            };
            let mut batch = Vec::new();
            if let SocketAddr::V4(src) = src {
                batch.push(Datagram {
                    bytes: buf[..len].to_vec(),
                    src,
                });
            }
            // What else is queued already goes into the same batch.
            while batch.len() < MAX_BATCH {
                match socket.try_recv_from(&mut buf) {
                    Ok((len, SocketAddr::V4(src))) => batch.push(Datagram {
                        bytes: buf[..len].to_vec(),
                        src,
                    }),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::debug!(%interface, port, error = %e, "dhcp recv error");
                        break;
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let replies = self.handle_batch(&batch, port, SystemTime::now()).await;
            for reply in replies.into_iter().flatten() {
                match socket.send_to(&reply.bytes, reply.dest).await {
                    Ok(_) => {
                        self.counters.replied.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%interface, dest = %reply.dest, error = %e, "dhcp send failed");
                    }
                }
            }
        }
    }

    /// Serve `sockets` until `cancel` fires. Each socket gets its own receive loop; lease
    /// decisions are serialized across them.
    pub async fn run(
        self: Arc<Self>,
        sockets: Vec<DhcpSocket>,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for s in sockets {
            let this = Arc::clone(&self);
            let cancel = cancel.clone();
            tasks.spawn(async move { this.serve_socket(s, cancel).await });
        }
        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            let r = joined.context("dhcp socket task panicked").and_then(|r| r);
            if let Err(e) = r {
                cancel.cancel();
                result = Err(e);
            }
        }
        result
    }
}
