//! PURE: does a string look like one OpenSSH public key line (`TYPE BASE64 [COMMENT]`, as
//! in `id_ed25519.pub` and `authorized_keys`)? Checked before it goes into a config drive,
//! so a private key, a fingerprint or a pasted file of several keys is refused with a
//! reason.

use base64::Engine as _;

/// Longest key line accepted (an RSA-16384 key is about 2.8 KiB).
pub const MAX_KEY_LEN: usize = 8 * 1024;

/// Key types cloud-init installs and current OpenSSH accepts.
const KEY_TYPES: [&str; 8] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
];

/// The key, trimmed, or why it is not one OpenSSH public key.
pub fn check_public_key(raw: &str) -> Result<String, String> {
    let key = raw.trim();
    if key.is_empty() {
        return Err("the key is empty".to_owned());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!("the key is longer than {MAX_KEY_LEN} bytes"));
    }
    if key.contains("PRIVATE KEY") {
        return Err("this is a private key; give the public one (the .pub file)".to_owned());
    }
    if key.chars().any(char::is_control) {
        return Err("one key per entry, on one line without control characters".to_owned());
    }
    let mut parts = key.splitn(3, ' ');
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default();
    if !KEY_TYPES.contains(&kind) {
        return Err(format!(
            "{kind:?} is not an OpenSSH public key type ({})",
            KEY_TYPES.join(", ")
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| format!("the {kind} key's data is not base64"))?;
    // The blob starts with the key type again, as an SSH string (u32 length, bytes).
    let inner = bytes
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|len| bytes.get(4..4 + len));
    if inner != Some(kind.as_bytes()) || bytes.len() < 4 + kind.len() + 16 {
        return Err(format!("the {kind} key's data is not a {kind} public key"));
    }
    Ok(key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ssh-keygen -t ed25519` output (a throwaway key).
    pub const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ user@host";

    fn blob_of(kind: &str, body: &[u8]) -> String {
        let mut b = (kind.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind.as_bytes());
        b.extend_from_slice(body);
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn public_keys_table() {
        let rsa = format!("ssh-rsa {} me@laptop", blob_of("ssh-rsa", &[7u8; 300]));
        let wrong_inner = format!("ssh-rsa {}", blob_of("ssh-ed25519", &[7u8; 40]));
        let short = format!("ssh-ed25519 {}", blob_of("ssh-ed25519", &[1u8; 2]));
        let rows: [(&str, Result<(), &str>); 11] = [
            (ED25519, Ok(())),
            (&rsa, Ok(())),
            (
                "  ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n",
                Ok(()),
            ),
            ("", Err("empty")),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", Err("private key")),
            (
                "ssh-ed25519 AAAA x\nssh-ed25519 AAAA y",
                Err("one key per entry"),
            ),
            ("SHA256:abcdef", Err("not an OpenSSH public key type")),
            ("ssh-ed25519 not*base64", Err("not base64")),
            (&wrong_inner, Err("not a ssh-rsa public key")),
            (&short, Err("not a ssh-ed25519 public key")),
            (&"a".repeat(MAX_KEY_LEN + 1), Err("longer than")),
        ];
        for (key, want) in rows {
            match (check_public_key(key), want) {
                (Ok(k), Ok(())) => assert_eq!(k, key.trim()),
                (Err(e), Err(w)) => assert!(e.contains(w), "{key:?}: {e}"),
                (got, _) => panic!("{key:?}: {got:?}"),
            }
        }
    }
}
