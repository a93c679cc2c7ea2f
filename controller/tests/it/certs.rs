//! `ingot certs init` as a process: the CA and server certificate verify with `openssl
//! verify`, the server certificate names the listener's addresses, the keys are 0600, the
//! printed fingerprint is the SHA-256 of the CA certificate's DER (what `ingot.ca=` pins),
//! and a second run refuses to replace the CA.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use sha2::{Digest, Sha256};

const INGOT: &str = env!("CARGO_BIN_EXE_ingot");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

#[test]
fn certs_init_makes_a_ca_and_server_certificate_openssl_accepts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tls");
    let d = dir.to_str().expect("utf-8");
    let init = || {
        Command::new(INGOT)
            .args(["certs", "init", "--dir", d, "--ip", "127.0.0.1"])
            .args(["--ip", "172.31.250.1", "--dns", "ingot.lab"])
            .output()
            .expect("run ingot")
    };
    let out = init();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);

    for key in ["ca.key", "server.key"] {
        let mode = std::fs::metadata(dir.join(key))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let ca = dir.join("ca.pem");
    let server = dir.join("server.pem");
    let (ca_s, server_s) = (ca.to_str().expect("utf-8"), server.to_str().expect("utf-8"));

    let v = openssl(&["verify", "-CAfile", ca_s, "-purpose", "sslserver", server_s]);
    assert!(v.status.success(), "{}{}", text(&v.stdout), text(&v.stderr));
    assert!(text(&v.stdout).contains(": OK"), "{}", text(&v.stdout));
    let chk = openssl(&[
        "x509",
        "-in",
        server_s,
        "-noout",
        "-checkip",
        "172.31.250.1",
    ]);
    assert!(
        text(&chk.stdout).contains("does match"),
        "{}",
        text(&chk.stdout)
    );
    let chk = openssl(&["x509", "-in", server_s, "-noout", "-checkip", "10.9.9.9"]);
    assert!(
        text(&chk.stdout).contains("NOT match"),
        "{}",
        text(&chk.stdout)
    );
    let chk = openssl(&["x509", "-in", server_s, "-noout", "-checkhost", "ingot.lab"]);
    assert!(
        text(&chk.stdout).contains("does match"),
        "{}",
        text(&chk.stdout)
    );
    // The key matches the certificate.
    let cert_pub = openssl(&["x509", "-in", server_s, "-noout", "-pubkey"]);
    let key_pub = openssl(&[
        "pkey",
        "-in",
        dir.join("server.key").to_str().expect("utf-8"),
        "-pubout",
    ]);
    assert!(key_pub.status.success(), "{}", text(&key_pub.stderr));
    assert_eq!(cert_pub.stdout, key_pub.stdout);

    // The printed fingerprint is sha256 over the CA certificate's DER.
    let der = openssl(&["x509", "-in", ca_s, "-outform", "DER"]);
    assert!(der.status.success());
    let hex: String = Sha256::digest(&der.stdout)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        stdout.contains(&format!("CA fingerprint: sha256:{hex}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("[tls]\ncert_file = \"{}\"", server.display())),
        "{stdout}"
    );
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");

    // A second run does not replace the CA machines pin.
    let before = std::fs::read(&ca).expect("ca");
    let again = init();
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("not overwriting"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read(&ca).expect("ca"), before);
}
