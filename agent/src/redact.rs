//! What the agent may print about a URL or a command: never a signed image URL's query
//! string (its signature and expiry: whoever reads the console, a serial log or a node's
//! `last_error` could fetch the image with it until it expires), never userinfo, never a
//! config drive (user data and keys).
//!
//! Pure; every log line and error message that names an image URL or a command goes through
//! here.

use proto::protocol::Command;

/// What stands in for a removed query string or config drive.
pub const REDACTED: &str = "REDACTED";

/// `url` without its query string and fragment (each replaced by [`REDACTED`] when present)
/// and without userinfo: `https://h/images/x.raw.zst?expires=1&sig=ab` ->
/// `https://h/images/x.raw.zst?REDACTED`. Works on any text: what is not a URL keeps
/// everything before the first `?` or `#`.
pub fn url(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let (base, rest) = url.split_at(cut);
    let base = match base.split_once("://") {
        Some((scheme, after)) => {
            let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{REDACTED}@{host}{path}"),
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if rest.is_empty() {
        base
    } else {
        format!("{base}?{REDACTED}")
    }
}

/// Removes the query string, fragment and userinfo from the URL a `reqwest` error carries
/// (its `Display` prints it: `error sending request for url (...)`).
pub fn reqwest_error(mut e: reqwest::Error) -> reqwest::Error {
    if let Some(u) = e.url_mut() {
        if u.query().is_some() {
            u.set_query(Some(REDACTED));
        }
        if u.fragment().is_some() {
            u.set_fragment(None);
        }
        if !u.username().is_empty() || u.password().is_some() {
            let _ = u.set_username(REDACTED);
            let _ = u.set_password(None);
        }
    }
    e
}

/// A command as JSON for the log: a deploy's image URL through [`url`] and its config drive
/// replaced by [`REDACTED`].
pub fn command(command: &Command) -> String {
    let shown = match command {
        Command::Deploy(d) => {
            let mut d = d.clone();
            d.image_url = url(&d.image_url);
            let mut v = serde_json::to_value(Command::Deploy(d)).unwrap_or_default();
            if v.get("configdrive").is_some_and(|c| !c.is_null()) {
                v["configdrive"] = serde_json::Value::String(REDACTED.to_owned());
            }
            v
        }
        other => serde_json::to_value(other).unwrap_or_default(),
    };
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::protocol::{ConfigDrive, DeployCommand};

    #[test]
    fn urls_lose_query_fragment_and_userinfo() {
        let table = [
            (
                "https://172.31.250.1:8443/images/debian.raw.zst?node=1&expires=99&sig=abcdef",
                "https://172.31.250.1:8443/images/debian.raw.zst?REDACTED",
            ),
            (
                "http://10.0.0.1/i.zst#frag",
                "http://10.0.0.1/i.zst?REDACTED",
            ),
            (
                "http://user:pw@10.0.0.1/i.zst?sig=1",
                "http://REDACTED@10.0.0.1/i.zst?REDACTED",
            ),
            ("http://10.0.0.1/i.zst", "http://10.0.0.1/i.zst"),
            ("http://10.0.0.1", "http://10.0.0.1"),
            ("not a url?sig=1", "not a url?REDACTED"),
            ("", ""),
        ];
        for (input, want) in table {
            assert_eq!(url(input), want, "{input}");
        }
    }

    /// The image fetcher's errors, as the deploy reports them (`error_chain`), for a refused
    /// connection and for a refusing server: the signature is in neither.
    #[tokio::test]
    async fn fetch_errors_lose_the_signature() {
        use crate::image::fetch::{FetchOptions, fetch};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let opts = FetchOptions {
            max_retries: 0,
            ..FetchOptions::default()
        };
        // Port 9 on the loopback: nothing listens, the connection is refused at once.
        let refused = "http://127.0.0.1:9/images/x.raw.zst?expires=99&sig=5ec2e7";
        let e = fetch(refused, &opts, |_| {}, |_| true)
            .await
            .expect_err("nothing listens on port 9");
        let text = crate::error_chain(&e);
        assert!(
            !text.contains("5ec2e7") && !text.contains("expires"),
            "{text}"
        );
        assert!(text.contains("/images/x.raw.zst?REDACTED"), "{text}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((mut c, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let _ = c
                    .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let signed = format!("http://127.0.0.1:{port}/images/x.raw.zst?expires=99&sig=5ec2e7");
        let e = fetch(&signed, &opts, |_| {}, |_| true)
            .await
            .expect_err("the server answers 403");
        let text = crate::error_chain(&e);
        assert!(text.contains("403"), "{text}");
        assert!(
            !text.contains("5ec2e7") && !text.contains("expires"),
            "{text}"
        );
    }

    #[test]
    fn commands_lose_the_signature_and_the_config_drive() {
        let c = Command::Deploy(Box::new(DeployCommand {
            image_url: "https://h:8443/images/a.raw.zst?sig=5ec2e7".into(),
            checksum: "sha256:00".into(),
            root_device_hints: Default::default(),
            configdrive: Some(ConfigDrive::Parts {
                meta_data: serde_json::json!({"public_keys": {"k": "ssh-ed25519 AAAAsecretkey"}}),
                user_data: Some("#cloud-config\npassword: hunter2\n".into()),
                network_data: None,
                vendor_data: None,
            }),
            min_disk_bytes: None,
            software_raid: None,
        }));
        let text = command(&c);
        for secret in ["5ec2e7", "AAAAsecretkey", "hunter2"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains("https://h:8443/images/a.raw.zst?REDACTED"),
            "{text}"
        );
        assert!(text.contains("\"configdrive\":\"REDACTED\""), "{text}");
        assert_eq!(command(&Command::Reboot), r#"{"command":"reboot"}"#);
    }
}
