//! RMCP+ cipher suites 3 and 17: RAKP key-exchange codes, session keys, packet integrity
//! and AES-CBC-128 confidentiality (IPMI 2.0 sections 13.28-13.32).
//!
//! Pure functions over byte slices; the session code calls them, and the tests check them
//! against values computed independently.

use aes::Aes128;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// The cipher suites this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    Suite3,
    /// RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Suite17,
}

impl CipherSuite {
    pub fn id(self) -> u8 {
        match self {
            Self::Suite3 => 3,
            Self::Suite17 => 17,
        }
    }

    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            3 => Some(Self::Suite3),
            17 => Some(Self::Suite17),
            _ => None,
        }
    }

    /// Authentication algorithm number in Open Session (1 = RAKP-HMAC-SHA1, 3 = SHA256).
    pub fn auth_alg(self) -> u8 {
        match self {
            Self::Suite3 => 0x01,
            Self::Suite17 => 0x03,
        }
    }

    /// Integrity algorithm number (1 = HMAC-SHA1-96, 4 = HMAC-SHA256-128).
    pub fn integrity_alg(self) -> u8 {
        match self {
            Self::Suite3 => 0x01,
            Self::Suite17 => 0x04,
        }
    }

    /// Confidentiality algorithm number (1 = AES-CBC-128) for both suites.
    pub fn confidentiality_alg(self) -> u8 {
        0x01
    }

    /// Length of the RAKP 2/3 key exchange code (the full HMAC).
    pub fn rakp_len(self) -> usize {
        match self {
            Self::Suite3 => 20,
            Self::Suite17 => 32,
        }
    }

    /// Length of the RAKP 4 integrity check value and of each packet's AuthCode.
    pub fn icv_len(self) -> usize {
        match self {
            Self::Suite3 => 12,
            Self::Suite17 => 16,
        }
    }

    /// The full HMAC of `parts` under `key` with this suite's hash.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Self::Suite3 => hmac_with::<Hmac<Sha1>>(key, parts),
            Self::Suite17 => hmac_with::<Hmac<Sha256>>(key, parts),
        }
    }
}

fn hmac_with<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// What both sides know after RAKP 1 and 2; every code of the exchange is an HMAC over
/// some of these fields.
#[derive(Debug, Clone)]
pub struct RakpParams<'a> {
    pub suite: CipherSuite,
    /// The remote console's (our) session id.
    pub console_sid: u32,
    /// The BMC's session id.
    pub bmc_sid: u32,
    pub console_rand: [u8; 16],
    pub bmc_rand: [u8; 16],
    pub bmc_guid: [u8; 16],
    /// The whole requested-role byte of RAKP 1 (privilege level + name-only lookup bit).
    pub role: u8,
    pub username: &'a [u8],
}

impl RakpParams<'_> {
    fn role_and_name(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(2 + self.username.len());
        v.push(self.role);
        // Usernames are at most 16 bytes (checked when driver_info is parsed).
        v.push(self.username.len() as u8);
        v.extend_from_slice(self.username);
        v
    }

    /// The code the BMC sends in RAKP 2 (key: the user password).
    pub fn rakp2_code(&self, password: &[u8]) -> Vec<u8> {
        self.suite.hmac(
            password,
            &[
                &self.console_sid.to_le_bytes(),
                &self.bmc_sid.to_le_bytes(),
                &self.console_rand,
                &self.bmc_rand,
                &self.bmc_guid,
                &self.role_and_name(),
            ],
        )
    }

    /// The code we send in RAKP 3 (key: the user password).
    pub fn rakp3_code(&self, password: &[u8]) -> Vec<u8> {
        self.suite.hmac(
            password,
            &[
                &self.bmc_rand,
                &self.console_sid.to_le_bytes(),
                &self.role_and_name(),
            ],
        )
    }

    /// The session integrity key; `kg` is the BMC key, or the password when none is set.
    pub fn sik(&self, kg: &[u8]) -> Vec<u8> {
        self.suite.hmac(
            kg,
            &[&self.console_rand, &self.bmc_rand, &self.role_and_name()],
        )
    }

    /// The integrity check value the BMC sends in RAKP 4 (key: SIK), truncated.
    pub fn rakp4_icv(&self, sik: &[u8]) -> Vec<u8> {
        let mut v = self.suite.hmac(
            sik,
            &[
                &self.console_rand,
                &self.bmc_sid.to_le_bytes(),
                &self.bmc_guid,
            ],
        );
        v.truncate(self.suite.icv_len());
        v
    }
}

/// Keys of an established session.
#[derive(Clone)]
pub struct SessionKeys {
    pub suite: CipherSuite,
    /// Integrity key K1 = HMAC_SIK(0x01 * 20).
    pub k1: Vec<u8>,
    /// AES key: the first 16 bytes of K2 = HMAC_SIK(0x02 * 20).
    pub aes_key: [u8; 16],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    pub fn derive(suite: CipherSuite, sik: &[u8]) -> Self {
        let k1 = suite.hmac(sik, &[&[0x01; 20]]);
        let k2 = suite.hmac(sik, &[&[0x02; 20]]);
        let mut aes_key = [0u8; 16];
        aes_key.copy_from_slice(&k2[..16]);
        Self { suite, k1, aes_key }
    }

    /// The AuthCode over a packet's session part (auth type byte through next header).
    pub fn auth_code(&self, data: &[u8]) -> Vec<u8> {
        let mut v = self.suite.hmac(&self.k1, &[data]);
        v.truncate(self.suite.icv_len());
        v
    }

    /// Encrypts a payload: IV, then AES-CBC of data + pad 1,2,3.. + pad length.
    pub fn encrypt(&self, iv: [u8; 16], data: &[u8]) -> Vec<u8> {
        aes_cbc_encrypt(&self.aes_key, iv, data)
    }

    /// Decrypts an encrypted payload (IV first) and strips the confidentiality trailer.
    pub fn decrypt(&self, payload: &[u8]) -> Option<Vec<u8>> {
        aes_cbc_decrypt(&self.aes_key, payload)
    }
}

/// AES-CBC-128 as IPMI uses it: `iv || E(data || 01 02 .. n || n)`.
pub fn aes_cbc_encrypt(key: &[u8; 16], iv: [u8; 16], data: &[u8]) -> Vec<u8> {
    let cipher = Aes128::new(key.into());
    let pad = (16 - (data.len() + 1) % 16) % 16;
    let mut plain = data.to_vec();
    plain.extend((1..=pad).map(|i| i as u8));
    plain.push(pad as u8);
    let mut out = iv.to_vec();
    let mut prev = iv;
    for chunk in plain.chunks(16) {
        let mut block = [0u8; 16];
        for (i, b) in block.iter_mut().enumerate() {
            *b = chunk[i] ^ prev[i];
        }
        cipher.encrypt_block((&mut block).into());
        out.extend_from_slice(&block);
        prev = block;
    }
    out
}

/// The inverse of [`aes_cbc_encrypt`]; `None` when the length or the padding is wrong.
pub fn aes_cbc_decrypt(key: &[u8; 16], payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() < 32 || !payload.len().is_multiple_of(16) {
        return None;
    }
    let cipher = Aes128::new(key.into());
    let mut prev = [0u8; 16];
    prev.copy_from_slice(&payload[..16]);
    let mut plain = Vec::with_capacity(payload.len() - 16);
    for chunk in payload[16..].chunks(16) {
        let mut block = [0u8; 16];
        block.copy_from_slice(chunk);
        let saved = block;
        cipher.decrypt_block((&mut block).into());
        for i in 0..16 {
            block[i] ^= prev[i];
        }
        plain.extend_from_slice(&block);
        prev = saved;
    }
    let pad = usize::from(*plain.last()?);
    if pad > 15 || pad + 1 > plain.len() {
        return None;
    }
    let body_len = plain.len() - pad - 1;
    // The pad bytes must read 1, 2, 3, ...
    if plain[body_len..plain.len() - 1]
        .iter()
        .enumerate()
        .any(|(i, b)| usize::from(*b) != i + 1)
    {
        return None;
    }
    plain.truncate(body_len);
    Some(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_cbc_round_trips_with_ipmi_padding() {
        let key = [7u8; 16];
        for len in [0usize, 1, 14, 15, 16, 17, 40] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let enc = aes_cbc_encrypt(&key, [9u8; 16], &data);
            assert_eq!(enc.len() % 16, 0);
            assert_eq!(aes_cbc_decrypt(&key, &enc), Some(data));
        }
        let mut enc = aes_cbc_encrypt(&key, [9u8; 16], b"hello");
        let last = enc.len() - 1;
        enc[last] ^= 0x55;
        assert_eq!(aes_cbc_decrypt(&key, &enc), None);
    }
}
