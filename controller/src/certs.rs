//! `ingot certs init`: a private CA and a server certificate for the provisioning listener,
//! so a lab needs no other tool.
//!
//! Files written under the directory (never overwritten; keys 0600):
//! `ca.pem`, `ca.key`, `server.pem` (the server certificate followed by the CA, the chain
//! the listener sends) and `server.key`. The CA's fingerprint, `sha256:HEX` of the CA
//! certificate's DER, is what the agent pins (`ingot.ca=`).
//!
//! Keys are ECDSA P-256 (rcgen on `ring`, the provider the workspace uses): the agent speaks
//! TLS through rustls. iPXE (RSA only) never talks TLS to us: `/boot/*` stays plain HTTP.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

/// What `init` wrote.
#[derive(Debug, Clone)]
pub struct Issued {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// `sha256:HEX` of the CA certificate's DER.
    pub ca_fingerprint: String,
}

/// PURE: `sha256:HEX` of a certificate's DER, the form of `ingot.ca=`.
pub fn fingerprint(der: &[u8]) -> String {
    let d = Sha256::digest(der);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The fingerprint of the first certificate of a PEM file (the CA of `ca.pem`).
pub fn pem_file_fingerprint(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading certificate {}", path.display()))?;
    let der = pem_first_der(&text)
        .with_context(|| format!("no PEM certificate in {}", path.display()))?;
    Ok(fingerprint(&der))
}

/// PURE: the DER of the first `CERTIFICATE` block of a PEM text.
pub fn pem_first_der(text: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(text.as_bytes())
        .ok()
        .map(|c| c.as_ref().to_vec())
}

/// Creates a CA and a server certificate for `ips` and `dns` names under `dir`.
///
/// Refuses to overwrite any of the four files (a CA that machines pin must not change
/// behind the operator's back).
pub fn init(dir: &Path, ips: &[IpAddr], dns: &[String]) -> anyhow::Result<Issued> {
    if ips.is_empty() && dns.is_empty() {
        anyhow::bail!("the server certificate needs at least one --ip or --dns name");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let issued = Issued {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        ca_fingerprint: String::new(),
    };
    for p in [
        &issued.ca_cert,
        &issued.ca_key,
        &issued.server_cert,
        &issued.server_key,
    ] {
        if p.exists() {
            anyhow::bail!("{} exists; not overwriting it", p.display());
        }
    }

    let year = chrono::Utc::now().year();
    let not_before = rcgen::date_time_ymd(year - 1, 1, 1);

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = name("Ingot provisioning CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = rcgen::date_time_ymd(year + 20, 1, 1);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;

    let server_key = KeyPair::generate().context("generating the server key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("Ingot provisioning listener");
    params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    for d in dns {
        let n = d
            .clone()
            .try_into()
            .with_context(|| format!("DNS name {d:?}"))?;
        params.subject_alt_names.push(SanType::DnsName(n));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = rcgen::date_time_ymd(year + 5, 1, 1);
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .context("signing the server certificate")?;

    write_new(&issued.ca_key, ca_key.serialize_pem().as_bytes(), 0o600)?;
    write_new(
        &issued.server_key,
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_new(&issued.ca_cert, ca_cert.pem().as_bytes(), 0o644)?;
    let chain = format!("{}{}", server_cert.pem(), ca_cert.pem());
    write_new(&issued.server_cert, chain.as_bytes(), 0o644)?;
    Ok(Issued {
        ca_fingerprint: fingerprint(ca_cert.der()),
        ..issued
    })
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Creates `path` with `mode` (never replacing a file) and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The `[tls]` lines for the config file (printed by `ingot certs init`).
pub fn config_lines(issued: &Issued) -> String {
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        issued.server_cert.display(),
        issued.server_key.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem() {
        let pem = "x\n-----BEGIN CERTIFICATE-----\naGVs\nbG8=\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_first_der(pem).as_deref(), Some(&b"hello"[..]));
        assert_eq!(pem_first_der("nothing"), None);
    }

    #[test]
    fn fingerprint_is_sha256_of_der() {
        // sha256("abc")
        assert_eq!(
            fingerprint(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
