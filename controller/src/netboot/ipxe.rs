//! PURE rendering of the `/boot/ipxe` script that iPXE fetches after DHCP.
//!
//! No IO, no clock: the HTTP handler decides the [`BootPlan`] from the machine's state and
//! calls [`render`]. Nothing secret may ever appear in a script: it is served without
//! authentication and ends up on the kernel command line, readable by any local user.

use std::fmt::Write as _;

use super::Platform;

/// What the script tells iPXE to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootPlan {
    /// Unknown machine, or one that needs the agent: load the agent kernel and initramfs.
    Agent(AgentBoot),
    /// The machine is `active`: leave iPXE and boot from the local disk.
    LocalDisk {
        /// The client's firmware, when known (from DHCP option 93 or the `platform` query).
        /// When `None` the script asks iPXE's `${platform}` itself.
        platform: Option<Platform>,
    },
    /// Anything else: give control back to the firmware, which tries its next boot device.
    Exit,
}

/// Error building an [`AgentBoot`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootPlanError {
    #[error(
        "{field} must be a non-empty http:// or https:// URL without whitespace or quotes, got {value:?}"
    )]
    BadUrl { field: &'static str, value: String },
    #[error("the initrd URL {0:?} has no file name to pass as initrd=<name>")]
    NoInitrdName(String),
    #[error("CA fingerprint must be 64 hex digits (sha256), got {0:?}")]
    BadFingerprint(String),
    #[error("kernel argument {0:?} is empty, contains whitespace or quotes, or looks secret")]
    BadArgument(String),
}

/// The agent boot: kernel + initramfs + command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentBoot {
    kernel_url: String,
    initrd_url: String,
    initrd_name: String,
    controller_url: String,
    ca_sha256: Option<String>,
    console: String,
    extra_args: Vec<String>,
}

/// Words that must never appear in a kernel argument name: the command line is world-readable.
const SECRET_WORDS: [&str; 4] = ["password", "passwd", "secret", "token"];

fn check_url(field: &'static str, value: &str) -> Result<(), BootPlanError> {
    let ok = (value.starts_with("http://") || value.starts_with("https://"))
        && value.len() > "https://".len()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'');
    if ok {
        Ok(())
    } else {
        Err(BootPlanError::BadUrl {
            field,
            value: value.to_owned(),
        })
    }
}

pub fn check_arg(arg: &str) -> Result<(), BootPlanError> {
    let name = arg
        .split('=')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bad = arg.is_empty()
        || arg
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
        || SECRET_WORDS.iter().any(|w| name.contains(w));
    if bad {
        Err(BootPlanError::BadArgument(arg.to_owned()))
    } else {
        Ok(())
    }
}

impl AgentBoot {
    /// Build an agent boot plan.
    ///
    /// `controller_url` is what the agent calls back (`http://IP:PORT`, an IP literal since the
    /// initramfs has no DNS); `ca_sha256` is the hex SHA-256 of the controller's CA certificate
    /// when TLS is on. The initrd's file name is taken from the last path segment of
    /// `initrd_url` and repeated as `initrd=<name>` on the kernel line.
    pub fn new(
        kernel_url: &str,
        initrd_url: &str,
        controller_url: &str,
        ca_sha256: Option<&str>,
    ) -> Result<Self, BootPlanError> {
        check_url("kernel URL", kernel_url)?;
        check_url("initrd URL", initrd_url)?;
        check_url("controller URL", controller_url)?;
        let path = initrd_url.split(['?', '#']).next().unwrap_or_default();
        let initrd_name = path.rsplit('/').next().unwrap_or_default();
        if initrd_name.is_empty() || path.ends_with("//") || !path["https://".len()..].contains('/')
        {
            return Err(BootPlanError::NoInitrdName(initrd_url.to_owned()));
        }
        let ca_sha256 = match ca_sha256 {
            Some(hex) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
                Some(hex.to_ascii_lowercase())
            }
            Some(other) => return Err(BootPlanError::BadFingerprint(other.to_owned())),
            None => None,
        };
        Ok(AgentBoot {
            kernel_url: kernel_url.to_owned(),
            initrd_url: initrd_url.to_owned(),
            initrd_name: initrd_name.to_owned(),
            controller_url: controller_url.trim_end_matches('/').to_owned(),
            ca_sha256,
            console: "ttyS0,115200".to_owned(),
            extra_args: Vec::new(),
        })
    }

    /// Replace the serial console (`console=` value, default `ttyS0,115200`).
    pub fn with_console(mut self, console: &str) -> Result<Self, BootPlanError> {
        check_arg(console)?;
        self.console = console.to_owned();
        Ok(self)
    }

    /// Append extra kernel arguments (for example `panic=30`). Nothing secret is accepted.
    pub fn with_extra_args<I, S>(mut self, args: I) -> Result<Self, BootPlanError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for arg in args {
            let arg = arg.as_ref();
            check_arg(arg)?;
            self.extra_args.push(arg.to_owned());
        }
        Ok(self)
    }

    /// The name iPXE registers the initrd under, and that `initrd=` on the kernel line names.
    pub fn initrd_name(&self) -> &str {
        &self.initrd_name
    }
}

/// Render the iPXE script for `plan`.
pub fn render(plan: &BootPlan) -> String {
    let mut s = String::from("#!ipxe\n");
    match plan {
        BootPlan::Agent(a) => {
            s.push_str("echo ingot: booting the agent\n");
            // `initrd=<name>` is REQUIRED under UEFI with Debian's 2019 iPXE: it predates the
            // LoadFile2 initrd protocol, so the kernel's EFI stub loads the initrd by this name
            // from iPXE's virtual file system. Under BIOS it is harmless.
            let _ = write!(
                s,
                "kernel {} initrd={} console={} ingot.url={}",
                a.kernel_url, a.initrd_name, a.console, a.controller_url
            );
            if let Some(fp) = &a.ca_sha256 {
                let _ = write!(s, " ingot.ca=sha256:{fp}");
            }
            // Expanded by iPXE: the MAC of the NIC that booted, as the kernel's BOOTIF= expects.
            s.push_str(" BOOTIF=01-${mac:hexhyp}");
            for arg in &a.extra_args {
                s.push(' ');
                s.push_str(arg);
            }
            s.push('\n');
            // iPXE names the image after the URL's last path segment, which is `initrd_name`.
            let _ = writeln!(s, "initrd {}", a.initrd_url);
            s.push_str("boot\n");
        }
        BootPlan::LocalDisk { platform } => {
            s.push_str("echo ingot: booting from the local disk\n");
            match platform {
                // SeaBIOS: hand INT 13h drive 0x80 (the first disk) to the BIOS boot code.
                // `--no-describe` keeps iPXE from publishing an iBFT/aBFT for a SAN disk. If
                // that fails, `exit` lets the BIOS try its next boot device.
                Some(Platform::Bios) => {
                    s.push_str("sanboot --no-describe --drive 0x80 || exit\n");
                }
                // OVMF/UEFI: `sanboot --drive` is meaningless there; returning to the boot
                // manager makes it try the next boot option, which is the disk.
                Some(Platform::Efi) => s.push_str("exit\n"),
                None => {
                    s.push_str("iseq ${platform} efi && exit ||\n");
                    s.push_str("sanboot --no-describe --drive 0x80 || exit\n");
                }
            }
        }
        BootPlan::Exit => {
            s.push_str("echo ingot: nothing to boot here\n");
            s.push_str("exit\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> AgentBoot {
        AgentBoot::new(
            "http://10.0.0.1:8080/boot/vmlinuz",
            "http://10.0.0.1:8080/boot/initramfs.cpio.zst",
            "http://10.0.0.1:8080/",
            None,
        )
        .expect("valid plan")
    }

    #[test]
    fn agent_script_names_the_initrd_on_the_kernel_line() {
        let s = render(&BootPlan::Agent(agent()));
        let kernel = s
            .lines()
            .find(|l| l.starts_with("kernel "))
            .expect("kernel line");
        assert!(kernel.contains(" initrd=initramfs.cpio.zst "), "{kernel}");
        assert!(
            kernel.contains(" ingot.url=http://10.0.0.1:8080 "),
            "{kernel}"
        );
        assert!(kernel.contains(" console=ttyS0,115200 "), "{kernel}");
        assert!(kernel.ends_with(" BOOTIF=01-${mac:hexhyp}"), "{kernel}");
        assert!(!kernel.contains("ingot.ca"));
        assert!(s.starts_with("#!ipxe\n") && s.ends_with("boot\n"));
    }

    #[test]
    fn initrd_name_ignores_query() {
        let a = AgentBoot::new(
            "http://10.0.0.1/k",
            "http://10.0.0.1/boot/initrd.img?x=1",
            "http://10.0.0.1",
            None,
        )
        .expect("valid");
        assert_eq!(a.initrd_name(), "initrd.img");
    }

    #[test]
    fn rejects_bad_inputs() {
        let k = "http://10.0.0.1/k";
        let i = "http://10.0.0.1/i";
        let c = "http://10.0.0.1";
        assert!(matches!(
            AgentBoot::new("ftp://x/k", i, c, None),
            Err(BootPlanError::BadUrl { .. })
        ));
        assert!(matches!(
            AgentBoot::new("http://a b/k", i, c, None),
            Err(BootPlanError::BadUrl { .. })
        ));
        assert!(matches!(
            AgentBoot::new(k, "http://10.0.0.1/", c, None),
            Err(BootPlanError::NoInitrdName(_))
        ));
        assert!(matches!(
            AgentBoot::new(k, "http://10.0.0.1", c, None),
            Err(BootPlanError::NoInitrdName(_))
        ));
        assert!(matches!(
            AgentBoot::new(k, i, c, Some("abc")),
            Err(BootPlanError::BadFingerprint(_))
        ));
        let a = AgentBoot::new(k, i, c, None).expect("valid");
        assert!(a.clone().with_extra_args(["ingot.token=abc"]).is_err());
        assert!(a.clone().with_extra_args(["root_password=x"]).is_err());
        assert!(a.clone().with_extra_args(["a b"]).is_err());
        assert!(a.with_extra_args(["panic=30"]).is_ok());
    }
}
