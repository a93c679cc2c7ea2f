//! PURE: the Debian 12 image recipe: disk layout, packages, the files written into the
//! image, and the recipe hash that decides whether a cached image is still good.
//!
//! Any change to this file or to the build steps changes [`recipe_hash`] (their text is
//! hashed), so the next `cargo xtask image debian` rebuilds.

use sha2::{Digest, Sha256};

/// Debian release.
pub const SUITE: &str = "bookworm";
/// Output name under `target/images/`.
pub const NAME: &str = "debian-12";
/// Whole disk, bytes (the raw image's virtual size; fits the lab's 2 GiB disks with room for
/// the config drive partition the agent appends).
pub const DISK_BYTES: u64 = 1536 << 20;
/// File-system label of the root partition (fstab, kernel `root=`, grub `search`).
pub const ROOT_LABEL: &str = "ingot-root";
/// File-system label of the EFI system partition.
pub const ESP_LABEL: &str = "INGOT-ESP";
/// Mirror used when the host's apt sources name none.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// GPT layout for `sfdisk`: BIOS boot (grub core.img), ESP, root to the end.
pub const SFDISK_SCRIPT: &str = "label: gpt
unit: sectors
first-lba: 2048
start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=\"bios-boot\"
start=4096, size=126976, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"esp\"
start=131072, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root\"
";
/// Partition numbers in [`SFDISK_SCRIPT`].
pub const PART_ESP: u32 = 2;
pub const PART_ROOT: u32 = 3;

/// Installed on top of `debootstrap --variant=minbase`, without recommends.
pub const PACKAGES: &[&str] = &[
    // Debian's generic kernel: virtio and NVMe, and also the NICs and storage controllers of
    // real servers and of the lab's SeaBIOS VMs (e1000), which the cloud kernel lacks.
    // Module classes no server needs are never unpacked ([`dpkg_excludes`]).
    "linux-image-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "dbus",
    // cloud-init (ConfigDrive datasource) and what it drives.
    "cloud-init",
    "sudo",
    "openssh-server",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "netbase",
    "procps",
    "e2fsprogs",
    // initramfs-tools compresses with it (faster to unpack under emulation than gzip).
    "zstd",
    // Software RAID: its initramfs hook assembles md arrays (degraded ones too, after a
    // wait) before the root file system is looked for, so the image boots from the arrays
    // Ingot builds (`target_raid_config`), as Ironic requires of its images.
    "mdadm",
    // Boot loaders for both firmwares (the -bin packages never rewrite grub.cfg).
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "grub2-common",
];

/// Module directories (under `/lib/modules/KVER/kernel/`) dpkg never unpacks: graphics,
/// sound, cameras and TV, radios, sensors. About 170 MiB of the kernel's 390.
pub const PRUNE_MODULES: &[&str] = &[
    "drivers/gpu",
    "drivers/media",
    "sound",
    "drivers/net/wireless",
    "net/wireless",
    "net/mac80211",
    "net/bluetooth",
    "drivers/bluetooth",
    "drivers/infiniband",
    "drivers/iio",
    "drivers/staging",
    "drivers/comedi",
];

/// Modules built into the removable EFI loader (so it needs nothing before the root fs).
pub const GRUB_EFI_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "search",
    "search_label",
    "search_fs_uuid",
    "normal",
    "configfile",
    "linux",
    "gzio",
    "echo",
    "test",
    "serial",
    "terminal",
    "efi_gop",
    "all_video",
];

/// Kernel command line of the image.
pub fn kernel_cmdline() -> String {
    format!("root=LABEL={ROOT_LABEL} ro console=tty0 console=ttyS0,115200n8")
}

/// `/boot/grub/grub.cfg`, shared by the BIOS and the EFI loader. It boots the `/vmlinuz` and
/// `/initrd.img` symlinks the kernel package keeps up to date, so a kernel upgrade needs no
/// grub.cfg change.
pub fn grub_cfg() -> String {
    format!(
        "# Written by cargo xtask image debian.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
set default=0
search --no-floppy --label --set=root {ROOT_LABEL}
menuentry 'Debian GNU/Linux 12' {{
    echo 'grub: loading linux'
    linux /vmlinuz {cmdline}
    initrd /initrd.img
}}
",
        cmdline = kernel_cmdline()
    )
}

/// Embedded config of the EFI loader: find the root fs, then read its grub.cfg.
pub fn grub_efi_early_cfg() -> String {
    format!("search --no-floppy --label --set=root {ROOT_LABEL}\nset prefix=($root)/boot/grub\n")
}

/// `/etc/fstab`.
pub fn fstab() -> String {
    format!(
        "# Written by cargo xtask image debian.
LABEL={ROOT_LABEL}  /          ext4  errors=remount-ro  0 1
LABEL={ESP_LABEL}   /boot/efi  vfat  umask=0077,nofail  0 2
"
    )
}

/// `/etc/dpkg/dpkg.cfg.d/ingot-minimal`: what dpkg leaves out of every package, now and on
/// later upgrades (documentation, translations, [`PRUNE_MODULES`]).
pub fn dpkg_excludes() -> String {
    let mut s = String::from(
        "# Written by cargo xtask image debian.\n\
         path-exclude=/usr/share/doc/*\n\
         path-include=/usr/share/doc/*/copyright\n\
         path-exclude=/usr/share/man/*\n\
         path-exclude=/usr/share/info/*\n\
         path-exclude=/usr/share/locale/*\n\
         path-include=/usr/share/locale/locale.alias\n",
    );
    for dir in PRUNE_MODULES {
        for root in ["/lib", "/usr/lib"] {
            s.push_str(&format!("path-exclude={root}/modules/*/kernel/{dir}/*\n"));
        }
    }
    s
}

/// Files written into the image before the packages are installed: (path, mode, content).
pub fn files() -> Vec<(&'static str, u32, String)> {
    vec![
        ("/etc/dpkg/dpkg.cfg.d/ingot-minimal", 0o644, dpkg_excludes()),
        ("/etc/fstab", 0o644, fstab()),
        ("/etc/hostname", 0o644, "debian\n".into()),
        (
            "/etc/hosts",
            0o644,
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n".into(),
        ),
        // Keeps /vmlinuz and /initrd.img pointing at the newest kernel.
        (
            "/etc/kernel-img.conf",
            0o644,
            "do_symlinks = yes\ndo_bootloader = no\n".into(),
        ),
        (
            "/etc/cloud/cloud.cfg.d/95_ingot.cfg",
            0o644,
            "# Written by cargo xtask image debian: the config drive Ingot's agent writes.\n\
             datasource_list: [ConfigDrive, NoCloud, None]\n\
             # No locales package: keep C.UTF-8.\n\
             locale: false\n"
                .into(),
        ),
        // sshd never starts without host keys, even when cloud-init cannot run.
        (
            "/etc/systemd/system/ssh.service.d/ingot.conf",
            0o644,
            "[Unit]\nAfter=cloud-init.service\n\n[Service]\nExecStartPre=\n\
             ExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n"
                .into(),
        ),
        (
            "/etc/network/interfaces",
            0o644,
            "# cloud-init writes the machine's interfaces into interfaces.d.\n\
             source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n"
                .into(),
        ),
        // initramfs-tools: every storage driver the cloud kernel has, zstd-compressed.
        (
            "/etc/initramfs-tools/conf.d/ingot",
            0o644,
            "MODULES=most\nCOMPRESS=zstd\n".into(),
        ),
    ]
}

/// Paths removed before the image is sealed (host keys and machine identity are made at
/// first boot by cloud-init and systemd).
pub const REMOVE: &[&str] = &[
    "/etc/ssh/ssh_host_*",
    "/var/lib/dbus/machine-id",
    "/var/lib/apt/lists/*",
    "/var/cache/debconf/*-old",
    "/var/log/*.log",
    "/var/log/apt/*",
    "/var/cache/apt/archives/*.deb",
    "/var/cache/apt/*.bin",
    "/tmp/*",
    "/var/tmp/*",
    "/var/lib/cloud/*",
];

/// Hex sha256 of everything that shapes the image: this file's text, the build steps'
/// (`image.rs`) and the mirror.
pub fn recipe_hash(mirror: &str) -> String {
    let mut h = Sha256::new();
    h.update(include_str!("recipe.rs").as_bytes());
    h.update(include_str!("../image.rs").as_bytes());
    h.update(b"\0");
    h.update(mirror.as_bytes());
    hex::encode(h.finalize())
}

/// PURE: the Debian mirror an apt configuration uses: the first `deb` URI of the main
/// archive (not `-security`) in deb822 `.sources` or one-line `sources.list` text.
pub fn mirror_from_sources(texts: &[String]) -> Option<String> {
    for text in texts {
        for line in text.lines().map(str::trim) {
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            };
            if let Some(u) = uri
                && u.starts_with("http")
                && !u.contains("security")
                && u.trim_end_matches('/').ends_with("/debian")
            {
                return Some(u.trim_end_matches('/').to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822_and_one_line() {
        let deb822 = "Types: deb\n# comment\nURIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.example/debian/\n"
            .to_owned();
        assert_eq!(
            mirror_from_sources(&[deb822]).as_deref(),
            Some("http://mirror.example/debian")
        );
        let one = "deb [arch=amd64] http://ftp.de.debian.org/debian bookworm main\n".to_owned();
        assert_eq!(
            mirror_from_sources(&["# nothing\n".into(), one]).as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
        assert_eq!(
            mirror_from_sources(&["deb https://x/ubuntu jammy main".into()]),
            None
        );
    }

    #[test]
    fn boot_config_finds_root_by_label_on_the_serial_console() {
        let g = grub_cfg();
        assert!(g.contains("search --no-floppy --label --set=root ingot-root"));
        assert!(g.contains("root=LABEL=ingot-root"));
        assert!(g.contains("console=ttyS0,115200n8"));
        assert!(fstab().contains("LABEL=ingot-root"));
        assert!(
            files()
                .iter()
                .any(|(p, _, c)| p.starts_with("/etc/cloud") && c.contains("ConfigDrive"))
        );
        assert_eq!(recipe_hash("a"), recipe_hash("a"));
        assert_ne!(recipe_hash("a"), recipe_hash("b"));
    }
}
