//! Every call to a machine's power and management interfaces, timed: [`Measured`] wraps the
//! interfaces [`super::DriverRegistry::resolve`] hands out and tells a [`CallObserver`] (the
//! metrics) how long each call took and how it failed. The wrapped interface is unchanged
//! otherwise: same name, same validation, same answers.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    BootDevice, BootMode, DriverError, ManagementInterface, PowerInterface, PowerState, PowerTarget,
};
use crate::model::Node;

/// Hears about every BMC call. Must return at once.
pub trait CallObserver: Send + Sync + fmt::Debug {
    /// `interface` is the interface's name (`ipmitool`, `redfish`, `qemu`, `fake`, ...),
    /// `call` the method (`get_power_state`, `set_boot_device`, ...).
    fn driver_call(
        &self,
        interface: &'static str,
        call: &'static str,
        took: Duration,
        error: Option<&DriverError>,
    );
}

/// A short, bounded name for how a driver call failed (a metric label).
pub fn error_class(e: &DriverError) -> &'static str {
    match e {
        DriverError::Unsupported(_) => "unsupported",
        DriverError::InvalidParameter(_) => "invalid_parameter",
        DriverError::Timeout { .. } => "timeout",
        DriverError::Failed(_) => "failed",
    }
}

/// An interface of type `T` whose calls are reported to an observer.
#[derive(Debug)]
pub struct Measured<T: ?Sized> {
    inner: Arc<T>,
    observer: Arc<dyn CallObserver>,
}

impl<T: ?Sized> Measured<T> {
    pub fn new(inner: Arc<T>, observer: Arc<dyn CallObserver>) -> Self {
        Self { inner, observer }
    }

    async fn timed<R>(
        &self,
        interface: &'static str,
        call: &'static str,
        work: impl Future<Output = Result<R, DriverError>>,
    ) -> Result<R, DriverError> {
        let started = Instant::now();
        let result = work.await;
        self.observer
            .driver_call(interface, call, started.elapsed(), result.as_ref().err());
        result
    }
}

#[async_trait]
impl PowerInterface for Measured<dyn PowerInterface> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn validate(&self, node: &Node) -> Result<(), DriverError> {
        self.inner.validate(node)
    }

    async fn get_power_state(&self, node: &Node) -> Result<Option<PowerState>, DriverError> {
        self.timed(
            self.name(),
            "get_power_state",
            self.inner.get_power_state(node),
        )
        .await
    }

    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerTarget,
        timeout: Option<Duration>,
    ) -> Result<(), DriverError> {
        self.timed(
            self.name(),
            "set_power_state",
            self.inner.set_power_state(node, target, timeout),
        )
        .await
    }

    fn supported_power_targets(&self) -> Vec<PowerTarget> {
        self.inner.supported_power_targets()
    }
}

#[async_trait]
impl ManagementInterface for Measured<dyn ManagementInterface> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn validate(&self, node: &Node) -> Result<(), DriverError> {
        self.inner.validate(node)
    }

    fn supported_boot_devices(&self, node: &Node) -> Vec<BootDevice> {
        self.inner.supported_boot_devices(node)
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        self.timed(
            self.name(),
            "set_boot_device",
            self.inner.set_boot_device(node, device, persistent),
        )
        .await
    }

    async fn get_boot_device(
        &self,
        node: &Node,
    ) -> Result<(Option<BootDevice>, bool), DriverError> {
        self.timed(
            self.name(),
            "get_boot_device",
            self.inner.get_boot_device(node),
        )
        .await
    }

    async fn get_boot_mode(&self, node: &Node) -> Result<Option<BootMode>, DriverError> {
        self.timed(self.name(), "get_boot_mode", self.inner.get_boot_mode(node))
            .await
    }

    async fn set_boot_mode(&self, node: &Node, mode: BootMode) -> Result<(), DriverError> {
        self.timed(
            self.name(),
            "set_boot_mode",
            self.inner.set_boot_mode(node, mode),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::fake::FakeHardware;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Calls(Mutex<Vec<(&'static str, &'static str, Option<&'static str>)>>);

    impl CallObserver for Calls {
        fn driver_call(
            &self,
            interface: &'static str,
            call: &'static str,
            _took: Duration,
            error: Option<&DriverError>,
        ) {
            self.0
                .lock()
                .expect("lock")
                .push((interface, call, error.map(error_class)));
        }
    }

    #[tokio::test]
    async fn every_call_is_reported_with_its_outcome() {
        let hw = FakeHardware::new();
        let calls = Arc::new(Calls::default());
        let node = Node::new(uuid::Uuid::new_v4(), "fake-hardware", chrono::Utc::now());
        let as_power: Arc<dyn PowerInterface> = hw.clone();
        let as_mgmt: Arc<dyn ManagementInterface> = hw.clone();
        let power = Measured::new(as_power.clone(), calls.clone());
        let mgmt = Measured::new(as_mgmt, calls.clone());
        assert_eq!(power.name(), as_power.name());
        power
            .set_power_state(&node, PowerTarget::On, None)
            .await
            .expect("power on");
        power.get_power_state(&node).await.expect("state");
        mgmt.set_boot_device(&node, BootDevice::Pxe, false)
            .await
            .expect("boot device");
        // An unsupported change fails and is reported as such.
        let refused = mgmt.set_boot_mode(&node, BootMode::Uefi).await;
        let seen = calls.0.lock().expect("lock").clone();
        let name = as_power.name();
        assert_eq!(seen[0], (name, "set_power_state", None));
        assert_eq!(seen[1], (name, "get_power_state", None));
        assert_eq!(seen[2].1, "set_boot_device");
        assert_eq!(seen[3].1, "set_boot_mode");
        assert_eq!(seen[3].2, refused.err().as_ref().map(error_class));
    }
}
