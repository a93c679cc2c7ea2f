//! The conductor's RAID work: storing a node's `target_raid_config` once its RAID interface
//! accepts it (`PUT /v1/nodes/{node}/states/raid`), and the request check that refuses a
//! manual cleaning's `raid.create_configuration` without a target before anything boots.
//! The rules themselves live in `drivers::raid`.

use serde_json::Value;
use uuid::Uuid;

use super::task::TaskFlags;
use super::{Conductor, ConductorError, driver_bad_request};
use crate::drivers::raid::{self, Refusal};
use crate::drivers::resolve_step;
use crate::model::{JsonMap, Node};

impl Conductor {
    /// Stores the node's target RAID configuration (`{}` clears it) after its RAID
    /// interface accepted it, under the node's lock (409 while a task holds it), in any
    /// provision state (as Ironic). A RAID interface without RAID is a 404 (Ironic's
    /// `UnsupportedDriverExtension` on this call).
    pub async fn set_target_raid_config(
        &self,
        node: Uuid,
        target: JsonMap,
    ) -> Result<(), ConductorError> {
        self.check_running()?;
        let current = self.load(node).await?;
        let iface = self
            .drivers
            .raid_interface(&current)
            .map_err(driver_bad_request)?;
        raid::validate_for(&iface, &current.driver, &target).map_err(|r| match r {
            Refusal::Unsupported(m) => ConductorError::NotFound(m),
            Refusal::Invalid(m) => ConductorError::BadRequest(m),
        })?;
        let mut locked = self.reserve(node).await?;
        locked.target_raid_config = target;
        let saved = self.save(&mut locked, &TaskFlags::default()).await;
        self.release(node).await;
        saved?;
        tracing::info!(node = %node, raid_interface = %iface, "target RAID configuration set");
        Ok(())
    }

    /// A manual cleaning that asks for `raid.create_configuration` needs a target the
    /// `agent` RAID interface can build: refused here, before anything boots.
    pub(super) fn check_raid_clean_steps(
        &self,
        node: &Node,
        requested: &[Value],
    ) -> Result<(), ConductorError> {
        if !raid::uses_agent_raid(node) {
            return Ok(());
        }
        let drivers = self.drivers.resolve(node).map_err(driver_bad_request)?;
        let offered = drivers.deploy.clean_steps(node);
        for r in requested {
            let Ok(step) = resolve_step("Clean", &offered, r) else {
                // An unknown step fails the cleaning, as before.
                continue;
            };
            if raid::is_create(&step) {
                raid::with_plan(node, &step).map_err(|e| {
                    ConductorError::BadRequest(format!(
                        "Failed to validate clean steps for node {}: {e}",
                        node.uuid
                    ))
                })?;
            }
        }
        Ok(())
    }
}
