//! SSH into a lab machine from inside its network namespace: a throwaway key pair for the
//! test, one remote command, and a wait until a login shows what cloud-init wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A test's SSH key pair.
#[derive(Debug, Clone)]
pub struct SshKey {
    /// The private key file.
    pub private: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA... comment`).
    pub public: String,
}

impl SshKey {
    /// Generates an ed25519 key pair without a passphrase in `dir` (`id_ed25519`).
    pub fn generate(dir: &Path, comment: &str) -> anyhow::Result<SshKey> {
        let private = dir.join("id_ed25519");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(&private)
            .stdin(Stdio::null())
            .status()
            .context("running ssh-keygen (openssh-client)")?;
        if !st.success() {
            bail!("ssh-keygen failed");
        }
        let public = std::fs::read_to_string(dir.join("id_ed25519.pub"))?;
        Ok(SshKey {
            private,
            public: public.trim().to_owned(),
        })
    }

    /// Runs `remote` as `user@ip` from inside namespace `netns`; its stdout, if the login
    /// worked and the command succeeded.
    pub fn run(&self, netns: &str, user: &str, ip: &str, remote: &str) -> anyhow::Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", netns, "ssh", "-i"])
            .arg(&self.private)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "LogLevel=ERROR",
                &format!("{user}@{ip}"),
                remote,
            ])
            .stdin(Stdio::null())
            .output()
            .context("running ssh")?;
        if !out.status.success() {
            bail!("ssh: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Polls `remote` over SSH every 3 s until its output contains `want`; fails after
    /// `timeout` with the last error, or at once when `alive` says the machine is gone.
    #[allow(clippy::too_many_arguments)]
    pub fn wait_for(
        &self,
        netns: &str,
        user: &str,
        ip: &str,
        remote: &str,
        want: &str,
        timeout: Duration,
        alive: &dyn Fn() -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if !alive() {
                bail!("the machine at {ip} stopped before SSH worked");
            }
            let last = match self.run(netns, user, ip, remote) {
                Ok(out) if out.contains(want) => return Ok(out),
                Ok(out) => format!("logged in, {want:?} not there yet: {out}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "no SSH login to {user}@{ip} showing {want:?} after {timeout:?}; last: {last}"
                );
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }
}
