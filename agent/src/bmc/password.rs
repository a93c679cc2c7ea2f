//! The password of the BMC user the agent enrols: 16 characters of `[A-Za-z0-9]` from the
//! kernel's random generator, at least one upper-case letter, one lower-case letter and one
//! digit. Sixteen fits IPMI 1.5's password field and the letters-and-digits rules of BMC
//! password policies; 62^16 is about 95 bits.
//!
//! [`Password`] has no `Display`, and its `Debug` prints `REDACTED`: the only way to the
//! characters is [`Password::expose`], called where the password goes into an IPMI request
//! or into the result sent to the controller.

use std::io;

/// Password length in characters (and bytes).
pub const LEN: usize = 16;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Random bytes at or above this are dropped, so each character is uniform: 248 = 4 * 62.
const UNIFORM_BELOW: u8 = 248;

/// A BMC password; see the module doc.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(REDACTED)")
    }
}

impl Password {
    /// A new password from the kernel's random generator (getrandom(2), which waits for the
    /// kernel's CRNG to be ready).
    pub fn generate() -> io::Result<Password> {
        Password::generate_with(&mut kernel_random)
    }

    /// A new password from the random bytes `fill` gives. Fails when 64 draws gave none
    /// that meets the policy (a broken source; a working one needs about 1.1 draws).
    pub fn generate_with(
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> io::Result<Password> {
        for _ in 0..64 {
            let mut buf = [0u8; 64];
            fill(&mut buf)?;
            let s: String = buf
                .iter()
                .filter(|&&b| b < UNIFORM_BELOW)
                .take(LEN)
                .map(|&b| char::from(ALPHABET[usize::from(b % 62)]))
                .collect();
            if let Some(p) = Password::parse(&s) {
                return Ok(p);
            }
        }
        Err(io::Error::other(
            "the random generator gave no usable password in 64 draws",
        ))
    }

    /// `s` as a password when it meets the policy (16 of `[A-Za-z0-9]`, each class once).
    pub fn parse(s: &str) -> Option<Password> {
        let ok = s.len() == LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric())
            && s.bytes().any(|b| b.is_ascii_uppercase())
            && s.bytes().any(|b| b.is_ascii_lowercase())
            && s.bytes().any(|b| b.is_ascii_digit());
        ok.then(|| Password(s.to_owned()))
    }

    /// The characters, for an IPMI request or the result document only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Fills `buf` from getrandom(2) (flags 0: blocks until the CRNG is initialised, which
/// kernels since 5.4 reach within about a second by jitter entropy even without RDRAND).
fn kernel_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, writable and alive for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n.unsigned_abs();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_passwords_meet_the_policy_and_differ() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let p = Password::generate().expect("getrandom");
            assert!(Password::parse(p.expose()).is_some(), "{}", p.expose());
            seen.insert(p.expose().to_owned());
        }
        assert_eq!(seen.len(), 200);
    }

    #[test]
    fn bytes_map_to_the_alphabet_and_biased_bytes_are_dropped() {
        // 0 -> 'A', 26 -> 'a', 52 -> '0', 61 -> '9', 62 -> 'A' again; 248..=255 skipped.
        let mut fill = |b: &mut [u8]| {
            let pattern = [0u8, 255, 26, 248, 52, 61, 62, 1];
            for (i, x) in b.iter_mut().enumerate() {
                *x = pattern[i % pattern.len()];
            }
            Ok(())
        };
        let p = Password::generate_with(&mut fill).expect("password");
        assert_eq!(p.expose(), "Aa09ABAa09ABAa09");
    }

    #[test]
    fn draws_missing_a_class_are_drawn_again() {
        // First draw: letters only; second: a mix.
        let mut calls = 0;
        let mut fill = |b: &mut [u8]| {
            calls += 1;
            for (i, x) in b.iter_mut().enumerate() {
                *x = if calls == 1 { 3 } else { (i * 7 % 62) as u8 };
            }
            Ok(())
        };
        let p = Password::generate_with(&mut fill).expect("password");
        assert_eq!(calls, 2);
        assert!(Password::parse(p.expose()).is_some());
    }

    #[test]
    fn a_stuck_or_failing_source_is_an_error() {
        let mut zeros = |b: &mut [u8]| {
            b.fill(0);
            Ok(())
        };
        assert!(Password::generate_with(&mut zeros).is_err());
        let mut broken = |_: &mut [u8]| Err(io::Error::other("no entropy"));
        assert!(Password::generate_with(&mut broken).is_err());
    }

    #[test]
    fn the_policy() {
        let table = [
            ("Abcdefgh12345678", true),
            ("abcdefgh12345678", false),
            ("ABCDEFGH12345678", false),
            ("Abcdefghijklmnop", false),
            ("Abcdefgh1234567", false),
            ("Abcdefgh123456789", false),
            ("Abcdefgh1234567!", false),
            ("Abcdefgh 1234567", false),
        ];
        for (s, ok) in table {
            assert_eq!(Password::parse(s).is_some(), ok, "{s}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let p = Password::parse("Abcdefgh12345678").expect("valid");
        assert_eq!(format!("{p:?}"), "Password(REDACTED)");
        assert_eq!(format!("{:?}", Some(&p)), "Some(Password(REDACTED))");
    }
}
