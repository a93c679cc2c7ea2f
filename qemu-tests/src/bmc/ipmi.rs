//! One `ipmi_sim` per lab machine, in the lab namespace on the machine's BMC address, port
//! 623, user [`USERNAME`](super::USERNAME)/[`PASSWORD`](super::PASSWORD) (administrator).
//! Every chassis request (power on/off/cycle/reset/soft, status, boot device) runs
//! `lab-chassis <power.sock> get|set ...`, which the machine's power manager answers.
//!
//! ipmi_sim passes only the boot device to its chassis program, not the persistent or
//! EFI bits, so a boot device set over IPMI is persistent, and Get System Boot Options
//! reports the flags as invalid (the device itself is right).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{PASSWORD, USERNAME, add_bmc_address, bound, chassis_binary};
use crate::netns::Lab;
use crate::power::Machine;
use crate::vm::VmSpec;

/// The IPMI port every lab BMC listens on (each has its own address).
pub const PORT: u16 = 623;
/// The port of an in-band BMC's `serial ... codec VM` socket (on the BMC's address), which
/// the machine's QEMU connects its KCS interface to.
pub const VM_PORT: u16 = 9002;

/// A lab machine behind its own `ipmi_sim`; both stopped on drop.
#[derive(Debug)]
pub struct IpmiBmc {
    sim: Option<Child>,
    address: String,
    dir: PathBuf,
    machine: Machine,
}

impl IpmiBmc {
    /// Creates the machine (powered off) in `<dir>/<name>` and starts its BMC.
    pub fn start(lab: &mut Lab, spec: VmSpec, dir: &Path) -> anyhow::Result<IpmiBmc> {
        Self::start_with(lab, spec, dir, false)
    }

    /// As [`IpmiBmc::start`], and the BMC is also the machine's own, in-band: QEMU's KCS
    /// system interface (`isa-ipmi-kcs` on `ipmi-bmc-extern`) is wired to the same
    /// `ipmi_sim` through its `serial ... codec VM` socket, so what the machine's agent sets
    /// through `/dev/ipmi0` (a user, a password) is what the LAN side accepts. The BMC's LAN
    /// address is configured in its LAN parameters (`ipmitool lan set 1 ipaddr`), as a site
    /// does, so the agent reads it in-band.
    pub fn start_in_band(lab: &mut Lab, spec: VmSpec, dir: &Path) -> anyhow::Result<IpmiBmc> {
        Self::start_with(lab, spec, dir, true)
    }

    fn start_with(
        lab: &mut Lab,
        mut spec: VmSpec,
        dir: &Path,
        in_band: bool,
    ) -> anyhow::Result<IpmiBmc> {
        let chassis = chassis_binary()?;
        let address = add_bmc_address(lab)?;
        let vm_serial = if in_band {
            spec.extra_args.extend([
                "-chardev".to_owned(),
                format!("socket,id=ipmi0,host={address},port={VM_PORT},reconnect=2"),
                "-device".to_owned(),
                "ipmi-bmc-extern,chardev=ipmi0,id=bmc0".to_owned(),
                "-device".to_owned(),
                "isa-ipmi-kcs,bmc=bmc0".to_owned(),
            ]);
            format!("\x20 serial 15 {address} {VM_PORT} codec VM\n")
        } else {
            String::new()
        };
        let machine = Machine::create(lab, spec, dir)?;
        let bmc_dir = machine.dir().join("ipmi");
        std::fs::create_dir_all(bmc_dir.join("state")).context("creating the BMC dir")?;
        let guid = machine.spec().smbios_uuid.replace('-', "");
        let conf = bmc_dir.join("lan.conf");
        std::fs::write(
            &conf,
            format!(
                "name \"{name}\"\n\
                 set_working_mc 0x20\n\
                 \x20 startlan 1\n\
                 \x20   addr {address} {PORT}\n\
                 \x20   priv_limit admin\n\
                 \x20   allowed_auths_callback none md5 straight\n\
                 \x20   allowed_auths_user none md5 straight\n\
                 \x20   allowed_auths_operator none md5 straight\n\
                 \x20   allowed_auths_admin none md5 straight\n\
                 \x20   guid {guid}\n\
                 \x20 endlan\n\
                 \x20 chassis_control \"{chassis} {socket}\"\n\
                 {vm_serial}\
                 \x20 user 2 true \"{USERNAME}\" \"{PASSWORD}\" admin 10 none md5 straight\n",
                name = machine.spec().name,
                chassis = chassis.display(),
                socket = machine.socket_path().display(),
            ),
        )
        .context("writing lan.conf")?;
        let emu = bmc_dir.join("bmc.emu");
        std::fs::write(
            &emu,
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             mc_enable 0x20\n",
        )
        .context("writing bmc.emu")?;
        let log = std::fs::File::create(bmc_dir.join("ipmi_sim.log"))?;
        let child = lab
            .command("ipmi_sim")
            .arg("-n")
            .arg("-c")
            .arg(&conf)
            .arg("-f")
            .arg(&emu)
            .arg("-s")
            .arg(bmc_dir.join("state"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting ipmi_sim (Debian package openipmi)")?;
        let pid = child.id();
        let mut bmc = IpmiBmc {
            sim: Some(child),
            address,
            dir: bmc_dir,
            machine,
        };
        let t0 = Instant::now();
        while !bound(pid, "udp", &bmc.address, PORT) {
            if let Some(Ok(Some(status))) = bmc.sim.as_mut().map(Child::try_wait) {
                bail!(
                    "ipmi_sim exited ({status}): {}",
                    std::fs::read_to_string(bmc.dir.join("ipmi_sim.log")).unwrap_or_default()
                );
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("ipmi_sim did not listen on {}:{PORT}", bmc.address);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if in_band {
            bmc.ipmitool(lab, &["lan", "set", "1", "ipaddr", &bmc.address.clone()])
                .context("setting the in-band BMC's LAN address")?;
        }
        Ok(bmc)
    }

    /// Runs `ipmitool ARGS` against this BMC over its LAN side (lanplus, as the lab's
    /// administrator) inside the lab; returns its stdout.
    pub fn ipmitool(&self, lab: &Lab, args: &[&str]) -> anyhow::Result<String> {
        let out = lab
            .command("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", &self.address])
            .args(["-U", USERNAME, "-P", PASSWORD])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running ipmitool in the lab (Debian package ipmitool)")?;
        if !out.status.success() {
            bail!(
                "ipmitool {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `driver_info` an operator gives `baremetal node create --driver ipmi`.
    pub fn driver_info(&self) -> Value {
        json!({
            "ipmi_address": self.address,
            "ipmi_port": PORT,
            "ipmi_username": USERNAME,
            "ipmi_password": PASSWORD,
        })
    }

    /// The BMC's address inside the lab namespace.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The machine behind the BMC: serial log, disk, power events.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// ipmi_sim's output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ipmi_sim.log")).unwrap_or_default()
    }
}

impl Drop for IpmiBmc {
    fn drop(&mut self) {
        if let Some(mut c) = self.sim.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
