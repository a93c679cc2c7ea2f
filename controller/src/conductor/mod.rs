//! The conductor: carries out what the lifecycle machine decides.
//!
//! The HTTP layer calls [`Conductor`] methods. A request is validated against the machine,
//! the node is locked (`store.reserve_node`), the transient state and its target are
//! persisted (so the next GET shows them), and the rest runs in a background task that
//! executes the machine's [`Action`](crate::machine::Action)s through the drivers, feeds the
//! results back as events, records every transition in node history, and releases the lock
//! at the end (also on failure or panic).
//!
//! Deploys and cleanings are capped per conductor ([`ConductorConfig`]); a request over the
//! cap queues on a semaphore while the node shows its transient state. Wait states arm a
//! timer that fails the node when the agent does not report back in time; every sign of
//! life from the agent (lookup, heartbeat, event) starts that timeout again.

mod allocation;
pub mod clock;
mod deploy_plan;
mod periodic;
mod presence;
mod raid;
pub mod ring;
mod server;
mod slots;
mod steps;
mod takeover;
mod task;
#[cfg(test)]
mod tests;
mod timers;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Notify;

pub use slots::QueueDepth;
use slots::WorkSlots;
use tokio::task::AbortHandle;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::drivers::{
    BootDevice, DriverError, DriverRegistry, InterfaceValidation, PowerTarget, resolve_step,
};
use crate::machine::{self, Event, NodeView, Rejected, Verb};
use crate::model::Node;
use crate::store::{Store, StoreError};

/// How long an operator request waits for a node lock held by a finishing task.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Tuning of one conductor.
#[derive(Debug, Clone)]
pub struct ConductorConfig {
    /// Host name shown in `reservation` and in `GET /v1/drivers` `hosts`.
    pub name: String,
    pub max_concurrent_deploys: usize,
    pub max_concurrent_cleanings: usize,
    /// How long a wait state (`wait call-back`, `clean wait`, `inspect wait`, `rescue wait`,
    /// `service wait`) waits for the agent before the node fails.
    pub callback_timeout: Duration,
    /// Overrides `callback_timeout` for `inspect wait` (Ironic's `inspect_wait_timeout`).
    pub inspect_wait_timeout: Option<Duration>,
    /// Interval of the power-state sync; zero disables it.
    pub power_sync_interval: Duration,
    /// How long `shutdown` waits for running tasks.
    pub shutdown_timeout: Duration,
    /// Where provision-state changes are published (webhooks).
    pub events: Arc<dyn crate::events::NodeEvents>,
    /// `conductor_group` this conductor serves (Ironic's; shown in `/v1/conductors`).
    pub conductor_group: String,
    /// How often the conductor writes its heartbeat into the `conductors` table.
    pub heartbeat_interval: Duration,
    /// A conductor whose heartbeat is older than this is offline.
    pub heartbeat_timeout: Duration,
    /// Listen addresses shown in `/v1/conductors` (operator API, provisioning side).
    pub listen: Vec<String>,
    /// Where wait-state timers read the time and sleep ([`clock::SystemClock`]; tests
    /// drive a [`clock::ManualClock`]).
    pub clock: Arc<dyn clock::Clock>,
}

impl Default for ConductorConfig {
    fn default() -> Self {
        Self {
            name: "localhost".to_owned(),
            max_concurrent_deploys: 16,
            max_concurrent_cleanings: 16,
            callback_timeout: Duration::from_secs(1800),
            inspect_wait_timeout: None,
            power_sync_interval: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            events: Arc::new(crate::events::NoEvents),
            conductor_group: String::new(),
            heartbeat_interval: Duration::from_secs(3),
            heartbeat_timeout: Duration::from_secs(10),
            listen: Vec::new(),
            clock: Arc::new(clock::SystemClock),
        }
    }
}

/// A provision request, the body of `PUT /v1/nodes/{ident}/states/provision`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionRequest {
    pub verb: Verb,
    pub configdrive: Option<Value>,
    pub clean_steps: Option<Vec<Value>>,
    pub deploy_steps: Option<Vec<Value>>,
    pub service_steps: Option<Vec<Value>>,
    pub disable_ramdisk: Option<bool>,
    pub rescue_password: Option<String>,
}

impl ProvisionRequest {
    /// A request with only a verb.
    pub fn new(verb: Verb) -> Self {
        Self {
            verb,
            configdrive: None,
            clean_steps: None,
            deploy_steps: None,
            service_steps: None,
            disable_ramdisk: None,
            rescue_password: None,
        }
    }
}

/// Errors the HTTP layer maps to status codes.
#[derive(Debug, thiserror::Error)]
pub enum ConductorError {
    /// 404; the message is Ironic's faultstring.
    #[error("{0}")]
    NotFound(String),
    /// 400: the verb is not valid in the node's state (Ironic's faultstring).
    #[error("{0}")]
    InvalidTransition(String),
    /// 409: another task holds the node.
    #[error(
        "Node {node} is locked by host {holder}, please retry after the current operation is completed."
    )]
    Locked { node: Uuid, holder: String },
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 403: the node is protected.
    #[error("{0}")]
    Forbidden(String),
    /// 503: the conductor is shutting down.
    #[error("The conductor {0} is shutting down")]
    ShuttingDown(String),
    /// 500.
    #[error("conductor store access failed")]
    Store(#[source] StoreError),
    /// 500: a driver failed on a synchronous call.
    #[error("{0}")]
    Driver(#[source] DriverError),
}

impl From<StoreError> for ConductorError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Locked { uuid, holder } => Self::Locked { node: uuid, holder },
            StoreError::NotFound { ident, .. } => {
                Self::NotFound(format!("Node {ident} could not be found."))
            }
            other => Self::Store(other),
        }
    }
}

impl From<Rejected> for ConductorError {
    fn from(err: Rejected) -> Self {
        match err {
            Rejected::InvalidState { .. } => Self::InvalidTransition(err.to_string()),
            Rejected::Protected { .. } => Self::Forbidden(err.to_string()),
            Rejected::Maintenance { .. } | Rejected::UnexpectedEvent { .. } => {
                Self::BadRequest(err.to_string())
            }
        }
    }
}

/// Counts running background tasks so `shutdown` can wait for them.
#[derive(Debug, Default)]
struct TaskCounter {
    running: AtomicUsize,
    idle: Notify,
}

/// Held by every background task; wakes `shutdown` when the last one ends.
struct TaskToken(Arc<TaskCounter>);

impl Drop for TaskToken {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// An armed wait timer: the node's `provision_updated_at` when it entered the wait, the
/// wait's phase (its timeout), when it runs out (moved on by every sign of life from the
/// agent; the timer task sleeps until then and looks again) and the timer task.
#[derive(Debug)]
struct WaitTimer {
    marker: Option<DateTime<Utc>>,
    phase: machine::Phase,
    deadline: tokio::time::Instant,
    /// Wall time of the last sign of life heard here (or of arming): a later one recorded
    /// by another replica (`AgentHub::last_seen`) also moves the deadline on.
    heard_here: DateTime<Utc>,
    handle: AbortHandle,
}

/// Armed wait timers by node.
type WaitTimers = HashMap<Uuid, WaitTimer>;

/// The conductor. Share it as `Arc<Conductor>`.
#[derive(Debug)]
pub struct Conductor {
    me: Weak<Conductor>,
    store: Arc<dyn Store>,
    drivers: DriverRegistry,
    config: ConductorConfig,
    deploy_slots: WorkSlots,
    clean_slots: WorkSlots,
    tasks: Arc<TaskCounter>,
    shutting_down: AtomicBool,
    /// Armed wait-state timers by node, with the `provision_updated_at` they were armed at.
    wait_timers: Mutex<WaitTimers>,
    /// Periodic tasks started by `start`.
    periodic: Mutex<Vec<AbortHandle>>,
    /// Live conductors by conductor group, as last read from the `conductors` table
    /// (`presence`); empty until registered.
    live: Mutex<HashMap<String, Vec<String>>>,
    /// Replicas already seen offline (their nodes taken over once, `takeover`).
    dead_seen: Mutex<std::collections::HashSet<String>>,
    /// Heartbeats since start (every `TAKEOVER_SWEEP_EVERY`th one sweeps for waits of
    /// offline replicas that no takeover pass adopted).
    beats: std::sync::atomic::AtomicU64,
    /// The runtime the conductor was made on: its tasks run there even when an operator API
    /// request on the API's own runtime starts them (`serve` keeps the two apart).
    runtime: Option<tokio::runtime::Handle>,
}

impl Conductor {
    pub fn new(
        store: Arc<dyn Store>,
        drivers: DriverRegistry,
        config: ConductorConfig,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            store,
            drivers,
            deploy_slots: WorkSlots::new(config.max_concurrent_deploys),
            clean_slots: WorkSlots::new(config.max_concurrent_cleanings),
            config,
            tasks: Arc::default(),
            shutting_down: AtomicBool::new(false),
            wait_timers: Mutex::default(),
            periodic: Mutex::default(),
            live: Mutex::default(),
            dead_seen: Mutex::default(),
            beats: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The live conductor that owns `node` (`ring`: among those of its conductor group);
    /// this conductor before it read the table, `None` when the group has none.
    pub fn owner_of(&self, node: &Node) -> Option<String> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.is_empty() {
            return Some(self.config.name.clone());
        }
        let group = live.get(&node.conductor_group)?;
        ring::owner(node.uuid, group).map(str::to_owned)
    }

    /// Whether this conductor owns `node`.
    pub fn owns(&self, node: &Node) -> bool {
        self.owner_of(node).as_deref() == Some(self.config.name.as_str())
    }

    /// Deploys and cleanings running and waiting for a slot now.
    pub fn queue_depth(&self) -> QueueDepth {
        QueueDepth {
            deploy_running: self.deploy_slots.running(),
            deploy_waiting: self.deploy_slots.waiting(),
            clean_running: self.clean_slots.running(),
            clean_waiting: self.clean_slots.waiting(),
        }
    }

    pub fn registry(&self) -> &DriverRegistry {
        &self.drivers
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &ConductorConfig {
        &self.config
    }

    fn arc(&self) -> Arc<Self> {
        // `self` is only reachable through the Arc built in `new`.
        self.me
            .upgrade()
            .expect("conductor is alive while its methods run")
    }

    fn check_running(&self) -> Result<(), ConductorError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(ConductorError::ShuttingDown(self.config.name.clone()));
        }
        Ok(())
    }

    /// Runs `work` every `interval` (the first time one interval from now) until
    /// `shutdown`, which aborts every such task.
    fn every<F, Fut>(self: &Arc<Self>, interval: Duration, work: F)
    where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let this = self.clone();
        let handle = self.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                work(this.clone()).await;
            }
        });
        self.periodic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    /// Spawns a tracked background task.
    fn spawn<F>(&self, fut: F) -> AbortHandle
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.running.fetch_add(1, Ordering::AcqRel);
        let token = TaskToken(self.tasks.clone());
        let task = async move {
            let _token = token;
            fut.await;
        };
        match &self.runtime {
            Some(rt) => rt.spawn(task).abort_handle(),
            None => tokio::spawn(task).abort_handle(),
        }
    }

    async fn load(&self, uuid: Uuid) -> Result<Node, ConductorError> {
        self.store
            .get_node_by_uuid(uuid)
            .await?
            .ok_or_else(|| ConductorError::NotFound(format!("Node {uuid} could not be found.")))
    }

    /// Starts a provision verb: validates it, locks the node, persists the transient state
    /// and its target, and runs the rest in the background.
    pub async fn provision(&self, node: Uuid, req: ProvisionRequest) -> Result<(), ConductorError> {
        self.check_running()?;
        let current = self.load(node).await?;
        let view = NodeView::from_node(&current).map_err(|e| ConductorError::BadRequest(e.0))?;
        machine::step(&view, &Event::Verb(req.verb), Utc::now())?;
        self.check_request(&current, &req)?;
        let this = self.arc();
        // Usually nobody holds the node: its first transition takes the lock in the same
        // transaction (one write instead of two). Else the lock is waited for as before.
        let first = this.begin_verb_unlocked(current, &req).await;
        self.start_task(node, first, |reserved| this.begin_verb(reserved, &req))
            .await
    }

    /// Starts a node's task whose first transition tried to take the lock in its own
    /// transaction (`first`): on `Locked`/`Stale` the lock is waited for and `locked` makes
    /// the transition under it. The rest of the task runs in the background.
    async fn start_task<F, Fut>(
        &self,
        node: Uuid,
        first: Result<task::Run, ConductorError>,
        locked: F,
    ) -> Result<(), ConductorError>
    where
        F: FnOnce(Node) -> Fut,
        Fut: Future<Output = Result<task::Run, ConductorError>>,
    {
        let run = match first {
            Ok(run) => run,
            Err(ConductorError::Store(StoreError::Locked { .. } | StoreError::Stale { .. })) => {
                let reserved = self.reserve(node).await?;
                match locked(reserved).await {
                    Ok(run) => run,
                    Err(err) => {
                        self.release(node).await;
                        return Err(err);
                    }
                }
            }
            Err(err) => return Err(err),
        };
        let this = self.arc();
        let span = tracing::info_span!("node_task", node = %node);
        self.spawn(async move { this.run_guarded(node, run).await }.instrument(span));
        Ok(())
    }

    /// `service_steps` of a `service`: required, and each must be one the drivers offer.
    fn check_service_steps(
        &self,
        node: &Node,
        steps: Option<&[Value]>,
    ) -> Result<(), ConductorError> {
        let steps = steps.filter(|s| !s.is_empty()).ok_or_else(|| {
            ConductorError::BadRequest(
                "\"service_steps\" is required when setting target provision state to service"
                    .to_owned(),
            )
        })?;
        let drivers = self.drivers.resolve(node).map_err(driver_bad_request)?;
        let offered = drivers.deploy.service_steps(node);
        for requested in steps {
            resolve_step("Service", &offered, requested)
                .and_then(|step| drivers.deploy.validate_service_step(node, &step))
                .map_err(|e| {
                    ConductorError::BadRequest(format!(
                        "Failed to validate service steps for node {}: {e}",
                        node.uuid
                    ))
                })?;
        }
        Ok(())
    }

    /// Request checks that need no lock (Ironic's API-side validation).
    fn check_request(&self, node: &Node, req: &ProvisionRequest) -> Result<(), ConductorError> {
        if req.configdrive.is_some() && !matches!(req.verb, Verb::Deploy | Verb::Rebuild) {
            return Err(ConductorError::BadRequest(
                "Adding a config drive is only supported when setting provision state to \
                 active or rebuild"
                    .to_owned(),
            ));
        }
        if req.clean_steps.is_some() && !matches!(req.verb, Verb::Clean) {
            return Err(ConductorError::BadRequest(
                "\"clean_steps\" is only valid when setting target provision state to clean"
                    .to_owned(),
            ));
        }
        if req.disable_ramdisk == Some(true) && matches!(req.verb, Verb::Clean | Verb::Service) {
            // Every step these drivers offer runs in the agent: without the ramdisk none could.
            let drivers = self.drivers.resolve(node).map_err(driver_bad_request)?;
            if drivers.deploy.needs_ramdisk() {
                return Err(ConductorError::BadRequest(format!(
                    "\"disable_ramdisk\" cannot be used with node {}: its {} steps run in the agent ramdisk",
                    node.uuid, req.verb
                )));
            }
        }
        if req.verb == Verb::Service {
            self.check_service_steps(node, req.service_steps.as_deref())?;
        }
        if let (Verb::Clean, Some(steps)) = (req.verb, &req.clean_steps) {
            self.check_raid_clean_steps(node, steps)?;
        }
        match req.verb {
            Verb::Clean if req.clean_steps.is_none() => Err(ConductorError::BadRequest(
                "\"clean_steps\" is required when setting target provision state to clean"
                    .to_owned(),
            )),
            Verb::Rescue if req.rescue_password.as_deref().is_none_or(str::is_empty) => {
                Err(ConductorError::BadRequest(
                    "A non-empty \"rescue_password\" is required when setting target provision \
                     state to rescue"
                        .to_owned(),
                ))
            }
            Verb::Deploy | Verb::Rebuild => {
                let drivers = self.drivers.resolve(node).map_err(driver_bad_request)?;
                drivers.power.validate(node).map_err(driver_bad_request)?;
                drivers.deploy.validate(node).map_err(|e| {
                    ConductorError::BadRequest(format!(
                        "Failed to validate deploy or power info for node {}. Error: {e}",
                        node.uuid
                    ))
                })
            }
            _ => Ok(()),
        }
    }

    /// Changes the power state: sets `target_power_state` now, completes in the background.
    pub async fn set_power(
        &self,
        node: Uuid,
        target: PowerTarget,
        timeout: Option<Duration>,
    ) -> Result<(), ConductorError> {
        self.check_running()?;
        let current = self.load(node).await?;
        let drivers = self.drivers.resolve(&current).map_err(driver_bad_request)?;
        if !drivers.power.supported_power_targets().contains(&target) {
            return Err(ConductorError::BadRequest(format!(
                "The requested power state {target} is not supported by the {} power interface \
                 of node {node}",
                drivers.power.name()
            )));
        }
        drivers
            .power
            .validate(&current)
            .map_err(driver_bad_request)?;
        let mut locked = self.reserve(node).await?;
        locked.target_power_state = Some(target.as_str().to_owned());
        if let Err(err) = self.save(&mut locked, &task::TaskFlags::default()).await {
            self.release(node).await;
            return Err(err.into());
        }
        let this = self.arc();
        self.spawn(async move { this.run_power(locked, target, timeout).await });
        Ok(())
    }

    /// Sets the boot device (synchronously, under the node lock).
    pub async fn set_boot_device(
        &self,
        node: Uuid,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), ConductorError> {
        self.check_running()?;
        let current = self.load(node).await?;
        let drivers = self.drivers.resolve(&current).map_err(driver_bad_request)?;
        if !drivers
            .management
            .supported_boot_devices(&current)
            .contains(&device)
        {
            return Err(ConductorError::BadRequest(format!(
                "Invalid boot device {device} specified."
            )));
        }
        let mut locked = self.reserve(node).await?;
        let result = async {
            drivers
                .management
                .set_boot_device(&locked, device, persistent)
                .await
                .map_err(driver_bad_request)?;
            locked.boot_device = Some(device.as_str().to_owned());
            locked.boot_device_persistent = persistent;
            self.save(&mut locked, &task::TaskFlags::default()).await?;
            Ok(())
        }
        .await;
        self.release(node).await;
        result
    }

    /// The current boot device and whether it is persistent.
    pub async fn get_boot_device(
        &self,
        node: Uuid,
    ) -> Result<(Option<BootDevice>, bool), ConductorError> {
        let current = self.load(node).await?;
        let drivers = self.drivers.resolve(&current).map_err(driver_bad_request)?;
        drivers
            .management
            .get_boot_device(&current)
            .await
            .map_err(ConductorError::Driver)
    }

    pub async fn supported_boot_devices(
        &self,
        node: Uuid,
    ) -> Result<Vec<BootDevice>, ConductorError> {
        let current = self.load(node).await?;
        let drivers = self.drivers.resolve(&current).map_err(driver_bad_request)?;
        Ok(drivers.management.supported_boot_devices(&current))
    }

    /// Per-interface validation, as `GET /v1/nodes/{ident}/validate`.
    pub async fn validate(
        &self,
        node: Uuid,
    ) -> Result<BTreeMap<String, InterfaceValidation>, ConductorError> {
        let current = self.load(node).await?;
        self.drivers.validate(&current).map_err(driver_bad_request)
    }

    /// The agent finished the work a node waits for (`Ok`), or failed it (`Err(reason)`).
    /// Called by the agent API; the node must be in a wait state.
    pub async fn agent_finished(
        &self,
        node: Uuid,
        result: Result<(), String>,
    ) -> Result<(), ConductorError> {
        self.check_running()?;
        let current = self.load(node).await?;
        self.agent_finished_on(current, result).await
    }

    /// [`Self::agent_finished`] on the node as the caller just read it (the agent API reads
    /// it to see the wait): a copy gone stale meanwhile only costs the slow path.
    pub async fn agent_finished_on(
        &self,
        current: Node,
        result: Result<(), String>,
    ) -> Result<(), ConductorError> {
        self.check_running()?;
        let node = current.uuid;
        let event = |n: &Node| match &result {
            Ok(()) => Event::AgentCallback,
            Err(reason) => Event::Failed(agent_step_error(n, reason)),
        };
        let this = self.arc();
        // As `provision`: an unlocked node is locked by the transition's own transaction;
        // when the conductor task that handed out the command still holds it, wait.
        let on_current = event(&current);
        let first = this.begin_event_unlocked(current, on_current).await;
        self.start_task(node, first, |reserved| {
            let on_reserved = event(&reserved);
            this.begin_event(reserved, on_reserved)
        })
        .await
    }

    /// Stops taking work and waits (bounded) for running tasks.
    /// Tests: stops the periodic work (the heartbeat among it) as a SIGKILL would, leaving
    /// the `conductors` row to go stale.
    #[cfg(test)]
    pub(crate) fn stop_periodic(&self) {
        for handle in self
            .periodic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            handle.abort();
        }
    }

    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        for handle in self
            .periodic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            handle.abort();
        }
        for (_, timer) in self
            .wait_timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            timer.handle.abort();
        }
        let wait = async {
            loop {
                let idle = self.tasks.idle.notified();
                if self.tasks.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(self.config.shutdown_timeout, wait)
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.tasks.running.load(Ordering::Acquire),
                "conductor shutdown timed out with tasks still running"
            );
        }
        self.unregister().await;
    }

    /// Releases the node lock, logging (not failing) on a store error.
    /// Takes the node's lock for an operator request. A lock held by a task that is just
    /// finishing (its final state already saved, the release a moment later) is waited for
    /// briefly, as Ironic retries `NodeLocked`; a lock still held after [`LOCK_WAIT`] is a
    /// conflict (HTTP 409).
    async fn reserve(&self, node: Uuid) -> Result<Node, ConductorError> {
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            match self.store.reserve_node(node, &self.config.name).await {
                Err(StoreError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                other => return Ok(other?),
            }
        }
    }

    async fn release(&self, node: Uuid) {
        if let Err(err) = self.store.release_node(node, &self.config.name).await {
            tracing::error!(node = %node, error = %err, "releasing node lock failed");
        }
    }
}

/// PURE: an agent's failure as the node's `last_error`, naming the step it ran (as Ironic:
/// "Agent returned error for clean step {...} on node ...") when one is recorded.
fn agent_step_error(node: &Node, reason: &str) -> String {
    let running = [
        ("clean", &node.clean_step),
        ("service", &node.service_step),
        ("deploy", &node.deploy_step),
    ]
    .into_iter()
    .find_map(|(kind, step)| step.as_ref().map(|s| (kind, s)));
    match running {
        Some((kind, step)) => {
            let field = |k: &str| {
                step.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            };
            format!(
                "Agent returned error for {kind} step {{'interface': '{}', 'step': '{}'}} on node {}: {reason}",
                field("interface"),
                field("step"),
                node.uuid
            )
        }
        None => reason.to_owned(),
    }
}

fn driver_bad_request(err: DriverError) -> ConductorError {
    ConductorError::BadRequest(err.to_string())
}
