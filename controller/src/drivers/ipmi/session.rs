//! An IPMI 2.0 lanplus session over UDP: Get Channel Authentication Capabilities, Open
//! Session, RAKP 1-4, Set Session Privilege Level, then encrypted and authenticated
//! commands; each exchange has a per-attempt timeout and a retry count.
//!
//! Without a configured cipher suite the client proposes suite 17 first and falls back to
//! suite 3 when the BMC rejects the algorithms. Errors name the BMC address, never the
//! password.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::crypto::{CipherSuite, RakpParams, SessionKeys};
use super::wire::{self, Packet, Response};

/// IPMI privilege levels.
pub const PRIV_CALLBACK: u8 = 1;
pub const PRIV_USER: u8 = 2;
pub const PRIV_OPERATOR: u8 = 3;
pub const PRIV_ADMINISTRATOR: u8 = 4;

/// Network functions used here.
pub const NETFN_CHASSIS: u8 = 0x00;
pub const NETFN_APP: u8 = 0x06;

/// How to reach and log into one BMC.
#[derive(Clone)]
pub struct SessionConfig {
    pub host: String,
    pub port: u16,
    pub username: Vec<u8>,
    pub password: Vec<u8>,
    /// The BMC key (Kg); the password is used when unset.
    pub kg: Option<Vec<u8>>,
    pub privilege: u8,
    /// `None`: the best suite the BMC accepts (17, then 3).
    pub suite: Option<CipherSuite>,
    /// Time to wait for each reply before sending again.
    pub timeout: Duration,
    /// Attempts per exchange (at least 1).
    pub attempts: u32,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &String::from_utf8_lossy(&self.username))
            .field("password", &"******")
            .field("privilege", &self.privilege)
            .field("suite", &self.suite)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// What went wrong talking to a BMC. No variant carries the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpmiError {
    #[error("IPMI BMC {bmc} did not answer {what} within {timeout:?} ({attempts} attempts)")]
    Timeout {
        bmc: String,
        what: &'static str,
        timeout: Duration,
        attempts: u32,
    },
    #[error("cannot reach IPMI BMC {bmc}: {reason}")]
    Unreachable { bmc: String, reason: String },
    #[error(
        "IPMI authentication with BMC {bmc} failed for user '{user}': wrong username or password ({detail})"
    )]
    BadCredentials {
        bmc: String,
        user: String,
        detail: String,
    },
    #[error("IPMI BMC {bmc} refused the session: {text} (RMCP+ status {code:#04x})")]
    Rejected { bmc: String, code: u8, text: String },
    #[error("IPMI BMC {bmc} answered {what} with completion code {code:#04x} ({text})")]
    Completion {
        bmc: String,
        what: String,
        code: u8,
        text: &'static str,
    },
    #[error("IPMI BMC {bmc} sent an invalid reply to {what}: {detail}")]
    Protocol {
        bmc: String,
        what: String,
        detail: String,
    },
}

impl IpmiError {
    /// The completion code, when the BMC answered with one.
    pub fn completion_code(&self) -> Option<u8> {
        match self {
            Self::Completion { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// An established session.
#[derive(Debug)]
pub struct Session {
    link: Link,
    console_sid: u32,
    bmc_sid: u32,
    keys: SessionKeys,
    seq: u32,
    rq_seq: u8,
}

/// The socket and the retry policy.
#[derive(Debug)]
struct Link {
    sock: UdpSocket,
    bmc: String,
    timeout: Duration,
    attempts: u32,
}

impl Link {
    async fn connect(cfg: &SessionConfig) -> Result<Self, IpmiError> {
        let bmc = if cfg.host.contains(':') {
            format!("[{}]:{}", cfg.host, cfg.port)
        } else {
            format!("{}:{}", cfg.host, cfg.port)
        };
        let unreachable = |reason: String| IpmiError::Unreachable {
            bmc: bmc.clone(),
            reason,
        };
        let addr: SocketAddr = tokio::net::lookup_host((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| unreachable(format!("cannot resolve address: {e}")))?
            .next()
            .ok_or_else(|| unreachable("address resolves to nothing".to_owned()))?;
        let local: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let sock = UdpSocket::bind(local)
            .await
            .map_err(|e| unreachable(format!("cannot open a UDP socket: {e}")))?;
        sock.connect(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Self {
            sock,
            bmc,
            timeout: cfg.timeout,
            attempts: cfg.attempts.max(1),
        })
    }

    /// Sends `build()` and waits for a datagram `accept` takes; resends on timeout.
    async fn exchange<T>(
        &self,
        what: &'static str,
        mut build: impl FnMut() -> Vec<u8>,
        mut accept: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<T, IpmiError> {
        let mut buf = vec![0u8; 1024];
        for _ in 0..self.attempts {
            let packet = build();
            self.sock
                .send(&packet)
                .await
                .map_err(|e| self.io_error(e))?;
            let deadline = Instant::now() + self.timeout;
            loop {
                match tokio::time::timeout_at(deadline, self.sock.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(self.io_error(e)),
                    Ok(Ok(n)) => {
                        if let Some(v) = accept(&buf[..n]) {
                            return Ok(v);
                        }
                        // A stale or foreign datagram: keep waiting for ours.
                        tracing::debug!(bmc = %self.bmc, what, "ignoring unexpected IPMI datagram");
                    }
                }
            }
            tracing::debug!(bmc = %self.bmc, what, "IPMI request timed out, retrying");
        }
        Err(IpmiError::Timeout {
            bmc: self.bmc.clone(),
            what,
            timeout: self.timeout,
            attempts: self.attempts,
        })
    }

    fn io_error(&self, e: std::io::Error) -> IpmiError {
        let reason = if e.kind() == std::io::ErrorKind::ConnectionRefused {
            "connection refused (no BMC listening on that UDP port)".to_owned()
        } else {
            e.to_string()
        };
        IpmiError::Unreachable {
            bmc: self.bmc.clone(),
            reason,
        }
    }

    fn protocol(&self, what: &str, detail: impl Into<String>) -> IpmiError {
        IpmiError::Protocol {
            bmc: self.bmc.clone(),
            what: what.to_owned(),
            detail: detail.into(),
        }
    }

    /// Get Channel Authentication Capabilities over IPMI 1.5: checks the BMC answers and
    /// speaks IPMI 2.0.
    async fn probe(&self, privilege: u8) -> Result<(), IpmiError> {
        let what = "Get Channel Authentication Capabilities";
        let msg = wire::encode_request(NETFN_APP, 0x38, 0, &[0x8E, privilege]);
        let resp = self
            .exchange(
                what,
                || wire::encode_v15(&msg),
                |d| {
                    let p = wire::decode(d, None).ok()?;
                    let r = wire::decode_response(&p.payload).ok()?;
                    (r.cmd == 0x38).then_some(r)
                },
            )
            .await?;
        if resp.completion == 0 && resp.data.get(1).is_some_and(|b| b & 0x80 == 0) {
            return Err(self.protocol(what, "the BMC does not support IPMI 2.0 (lanplus)"));
        }
        Ok(())
    }

    async fn open_session(
        &self,
        cfg: &SessionConfig,
        suite: CipherSuite,
        console_sid: u32,
    ) -> Result<wire::OpenSessionResponse, IpmiError> {
        let tag = rand::random::<u8>();
        let req = wire::open_session_request(tag, cfg.privilege, console_sid, suite);
        let resp = self
            .exchange(
                "Open Session",
                || wire::encode_v20(wire::PAYLOAD_OPEN_SESSION_REQ, 0, 0, &req, None),
                |d| {
                    let p = wire::decode(d, None).ok()?;
                    if p.payload_type != wire::PAYLOAD_OPEN_SESSION_RESP {
                        return None;
                    }
                    let r = wire::parse_open_session_response(&p.payload).ok()?;
                    (r.tag == tag).then_some(r)
                },
            )
            .await?;
        Ok(resp)
    }
}

/// RMCP+ statuses that mean "not these algorithms": try the next suite.
fn is_algorithm_refusal(status: u8) -> bool {
    matches!(status, 0x03..=0x07 | 0x10 | 0x11)
}

impl Session {
    /// Logs into the BMC.
    pub async fn open(cfg: &SessionConfig) -> Result<Self, IpmiError> {
        let link = Link::connect(cfg).await?;
        link.probe(cfg.privilege).await?;
        let suites = match cfg.suite {
            Some(s) => vec![s],
            None => vec![CipherSuite::Suite17, CipherSuite::Suite3],
        };
        let console_sid = rand::random::<u32>() | 1;
        let mut last = None;
        for (i, suite) in suites.iter().copied().enumerate() {
            let resp = link.open_session(cfg, suite, console_sid).await?;
            if resp.status == 0 {
                if resp.console_sid != console_sid {
                    return Err(link.protocol("Open Session", "wrong console session id"));
                }
                tracing::debug!(bmc = %link.bmc, suite = suite.id(), "IPMI cipher suite accepted");
                return Self::authenticate(link, cfg, suite, console_sid, resp.bmc_sid).await;
            }
            let err = IpmiError::Rejected {
                bmc: link.bmc.clone(),
                code: resp.status,
                text: format!(
                    "{} for cipher suite {}",
                    wire::rmcp_status_text(resp.status),
                    suite.id()
                ),
            };
            if !is_algorithm_refusal(resp.status) || i + 1 == suites.len() {
                return Err(err);
            }
            tracing::debug!(bmc = %link.bmc, suite = suite.id(), status = resp.status, "cipher suite refused, trying the next one");
            last = Some(err);
        }
        Err(last.unwrap_or_else(|| link.protocol("Open Session", "no cipher suite to try")))
    }

    /// RAKP 1-4, then Set Session Privilege Level.
    async fn authenticate(
        link: Link,
        cfg: &SessionConfig,
        suite: CipherSuite,
        console_sid: u32,
        bmc_sid: u32,
    ) -> Result<Self, IpmiError> {
        let user = String::from_utf8_lossy(&cfg.username).into_owned();
        let bad_credentials = |detail: &str| IpmiError::BadCredentials {
            bmc: link.bmc.clone(),
            user: user.clone(),
            detail: detail.to_owned(),
        };
        let role = 0x10 | cfg.privilege; // name-only lookup
        let console_rand: [u8; 16] = rand::random();
        let tag = rand::random::<u8>();
        let rakp1 = wire::rakp1(tag, bmc_sid, &console_rand, role, &cfg.username);
        let r2 = link
            .exchange(
                "RAKP 1",
                || wire::encode_v20(wire::PAYLOAD_RAKP1, 0, 0, &rakp1, None),
                |d| {
                    let p = wire::decode(d, None).ok()?;
                    let r = wire::parse_rakp_reply(&p.payload).ok()?;
                    (p.payload_type == wire::PAYLOAD_RAKP2 && r.tag == tag).then_some(r)
                },
            )
            .await?;
        match r2.status {
            0 => {}
            0x0D | 0x0C => return Err(bad_credentials("the BMC does not know this user")),
            code => {
                return Err(IpmiError::Rejected {
                    bmc: link.bmc.clone(),
                    code,
                    text: wire::rmcp_status_text(code).to_owned(),
                });
            }
        }
        if r2.console_sid != console_sid || r2.rest.len() < 32 + suite.rakp_len() {
            return Err(link.protocol("RAKP 1", "malformed RAKP 2"));
        }
        let mut bmc_rand = [0u8; 16];
        bmc_rand.copy_from_slice(&r2.rest[..16]);
        let mut bmc_guid = [0u8; 16];
        bmc_guid.copy_from_slice(&r2.rest[16..32]);
        let params = RakpParams {
            suite,
            console_sid,
            bmc_sid,
            console_rand,
            bmc_rand,
            bmc_guid,
            role,
            username: &cfg.username,
        };
        let tag = tag.wrapping_add(1);
        if params.rakp2_code(&cfg.password) != r2.rest[32..32 + suite.rakp_len()] {
            // Tell the BMC so it can drop the half-open session; no reply is expected.
            let nak = wire::rakp3(tag, 0x0F, bmc_sid, &[]);
            let _ = link
                .sock
                .send(&wire::encode_v20(wire::PAYLOAD_RAKP3, 0, 0, &nak, None))
                .await;
            return Err(bad_credentials(
                "the BMC's RAKP 2 code does not match the password",
            ));
        }
        let code = params.rakp3_code(&cfg.password);
        let rakp3 = wire::rakp3(tag, 0, bmc_sid, &code);
        let r4 = link
            .exchange(
                "RAKP 3",
                || wire::encode_v20(wire::PAYLOAD_RAKP3, 0, 0, &rakp3, None),
                |d| {
                    let p = wire::decode(d, None).ok()?;
                    let r = wire::parse_rakp_reply(&p.payload).ok()?;
                    (p.payload_type == wire::PAYLOAD_RAKP4 && r.tag == tag).then_some(r)
                },
            )
            .await?;
        match r4.status {
            0 => {}
            0x0F => return Err(bad_credentials("the BMC rejected our RAKP 3 code")),
            code => {
                return Err(IpmiError::Rejected {
                    bmc: link.bmc.clone(),
                    code,
                    text: wire::rmcp_status_text(code).to_owned(),
                });
            }
        }
        let sik = params.sik(cfg.kg.as_deref().unwrap_or(&cfg.password));
        if r4.rest.get(..suite.icv_len()) != Some(&params.rakp4_icv(&sik)[..]) {
            return Err(link.protocol("RAKP 3", "RAKP 4 integrity check value does not match"));
        }
        let mut session = Session {
            link,
            console_sid,
            bmc_sid,
            keys: SessionKeys::derive(suite, &sik),
            seq: 0,
            rq_seq: 0,
        };
        // G2: ask for the privilege explicitly, or chassis control fails with 0xD4.
        let granted = session
            .command(
                NETFN_APP,
                0x3B,
                &[cfg.privilege],
                "Set Session Privilege Level",
            )
            .await?;
        if granted.first().map(|b| b & 0x0F) != Some(cfg.privilege) {
            return Err(IpmiError::Protocol {
                bmc: session.link.bmc.clone(),
                what: "Set Session Privilege Level".to_owned(),
                detail: format!("granted {granted:02x?}, asked {}", cfg.privilege),
            });
        }
        Ok(session)
    }

    /// The cipher suite in use.
    pub fn suite(&self) -> CipherSuite {
        self.keys.suite
    }

    /// Sends a command and returns the response data; a non-zero completion code is an error.
    pub async fn command(
        &mut self,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        what: &str,
    ) -> Result<Vec<u8>, IpmiError> {
        let resp = self.command_raw(netfn, cmd, data, what).await?;
        if resp.completion != 0 {
            return Err(IpmiError::Completion {
                bmc: self.link.bmc.clone(),
                what: what.to_owned(),
                code: resp.completion,
                text: wire::completion_text(resp.completion),
            });
        }
        Ok(resp.data)
    }

    /// Sends a command and returns the whole response, whatever its completion code.
    pub async fn command_raw(
        &mut self,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        what: &str,
    ) -> Result<Response, IpmiError> {
        self.rq_seq = (self.rq_seq + 1) & 0x3F;
        let rq_seq = self.rq_seq;
        let msg = wire::encode_request(netfn, cmd, rq_seq, data);
        let keys = self.keys.clone();
        let bmc_sid = self.bmc_sid;
        let console_sid = self.console_sid;
        let mut seq = self.seq;
        let what_static: &'static str = "an IPMI command";
        let result = self
            .link
            .exchange(
                what_static,
                || {
                    seq = seq.wrapping_add(1).max(1);
                    wire::encode_v20(
                        wire::PAYLOAD_IPMI,
                        bmc_sid,
                        seq,
                        &msg,
                        Some((&keys, rand::random())),
                    )
                },
                |d| {
                    let p: Packet = wire::decode(d, Some(&keys)).ok()?;
                    if p.payload_type != wire::PAYLOAD_IPMI || p.session_id != console_sid {
                        return None;
                    }
                    let r = wire::decode_response(&p.payload).ok()?;
                    (r.netfn == netfn + 1 && r.cmd == cmd && r.rq_seq == rq_seq).then_some(r)
                },
            )
            .await;
        self.seq = seq;
        result.map_err(|e| match e {
            IpmiError::Timeout {
                bmc,
                timeout,
                attempts,
                ..
            } => IpmiError::Protocol {
                bmc,
                what: what.to_owned(),
                detail: format!("no reply within {timeout:?} ({attempts} attempts)"),
            },
            other => other,
        })
    }

    /// Closes the session (best effort, one attempt).
    pub async fn close(mut self) {
        self.link.attempts = 1;
        self.link.timeout = self.link.timeout.min(Duration::from_millis(500));
        let sid = self.bmc_sid.to_le_bytes();
        if let Err(e) = self.command(NETFN_APP, 0x3C, &sid, "Close Session").await {
            tracing::debug!(bmc = %self.link.bmc, error = %e, "closing the IPMI session failed");
        }
    }
}
