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
        let chassis = chassis_binary()?;
        let machine = Machine::create(lab, spec, dir)?;
        let address = add_bmc_address(lab)?;
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
        Ok(bmc)
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
