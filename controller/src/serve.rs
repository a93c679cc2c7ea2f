//! `ingot serve`: opens the store, starts the conductor and serves the API (over HTTPS with
//! `[tls]`; plus, when configured, the provisioning-side HTTP listener with the boot and
//! agent endpoints, and DHCP/TFTP/RA) until SIGTERM or Ctrl-C, then shuts down cleanly
//! (in-flight requests finish, the conductor stops taking work and waits for running tasks).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::agent_api::{self, AgentApiState};
use crate::api::auth::{AuthStrategy, HtpasswdUsers};
use crate::api::{self, ApiSettings, ApiState};
use crate::boot_http::{self, BootHttpConfig, BootHttpState, StoreBootPolicy, StoreLeaseStore};
use crate::conductor::{Conductor, ConductorConfig};
use crate::config::{AuthConfig, Config};
use crate::discovery::Discovery;
use crate::drivers::DriverRegistry;
use crate::drivers::qemu::QemuSettings;
use crate::events::Fanout;
use crate::hub::{AgentHub, HubOptions};
use crate::images::{self, ImageStore, resolve::LocalImages, signing::UrlSigner};
use crate::instance::{self, InstanceLock};
use crate::live::{LiveEvents, store::Watched};
use crate::metrics::Metrics;
use crate::netboot::{self, service::NetbootConfig};
use crate::store::{Store, sql::SqlStore};
use crate::supervise::FatalTasks;
use crate::webhooks::Webhooks;

/// How long a signed image URL outlives the callback timeout.
pub const IMAGE_URL_MARGIN: std::time::Duration = std::time::Duration::from_secs(3600);

/// Everything `ingot serve` runs, built but not yet listening (tests bind the routers
/// themselves).
#[derive(Debug)]
pub struct Services {
    /// The lock that keeps a second `ingot serve` off this SQLite database (held while
    /// this value lives).
    pub instance_lock: Option<InstanceLock>,
    pub store: Arc<dyn Store>,
    pub conductor: Arc<Conductor>,
    pub hub: Arc<AgentHub>,
    pub discovery: Arc<Discovery>,
    /// The operator (Ironic) API.
    pub api: Router,
    /// With `[tls]`: the server config the API is served with (`crate::tls::listener`), the
    /// same certificate as the provisioning side's HTTPS.
    pub api_tls: Option<Arc<rustls::ServerConfig>>,
    /// The images `ingot image import` stored (served under `/images/`).
    pub images: Arc<ImageStore>,
    /// The provisioning-side router: `/boot/*`, `/agent/v1/*` and `/images/*` (with `[tls]`:
    /// `/boot/*` only, the others refused). Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()`.
    pub boot: Router,
    /// With `[tls]`: the agent API and images router and the server config to serve it with
    /// (`crate::tls::listener`).
    pub https: Option<(Router, Arc<rustls::ServerConfig>)>,
    /// The `[[webhooks]]` delivery tasks (none configured: an empty set).
    pub webhooks: Arc<Webhooks>,
    /// The `/metrics` families.
    pub metrics: Arc<Metrics>,
    /// The web console's live node events (closed at shutdown, ending open streams).
    pub live: Arc<LiveEvents>,
}

/// The HTTPS side of the provisioning listener, when `[tls]` is set.
struct HttpsSide {
    server: Arc<rustls::ServerConfig>,
    ca_sha256: String,
    url: String,
}

/// HEX of the SHA-256 of the last certificate of `cert_file`'s chain (the CA that `ingot
/// certs init` appends; the server certificate itself when it is alone).
fn chain_ca_sha256(cert_file: &std::path::Path) -> anyhow::Result<String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .with_context(|| format!("reading certificates from {}", cert_file.display()))?;
    let last = chain
        .last()
        .with_context(|| format!("no certificate in {}", cert_file.display()))?;
    let fp = crate::certs::fingerprint(last.as_ref());
    Ok(fp.trim_start_matches("sha256:").to_owned())
}

/// `/agent/v1/*` and `/images/*` on the plain listener when TLS is on: 403 naming the
/// HTTPS URL.
fn plain_refusals(https_url: &str) -> Router {
    use axum::http::StatusCode;
    use axum::routing::any;
    let msg = format!(
        "this listener is plain HTTP; the agent API and images are served at {https_url}\n"
    );
    let refuse = move || {
        let msg = msg.clone();
        async move { (StatusCode::FORBIDDEN, msg) }
    };
    Router::new()
        .route("/agent/v1/{*rest}", any(refuse.clone()))
        .route("/images/{*rest}", any(refuse))
}

/// Opens the store, starts the conductor and builds the routers.
pub async fn build(config: &Config) -> anyhow::Result<Services> {
    build_with_clock(config, Arc::new(crate::conductor::clock::SystemClock)).await
}

/// [`build`] with the conductor's wait timers on `clock` (tests pass a manual one).
pub async fn build_with_clock(
    config: &Config,
    clock: Arc<dyn crate::conductor::clock::Clock>,
) -> anyhow::Result<Services> {
    // Read before anything starts: a bad user file must stop the server at once.
    let auth = match &config.auth {
        AuthConfig::NoAuth => AuthStrategy::NoAuth,
        AuthConfig::HttpBasic(file) => {
            let users = HtpasswdUsers::load(file)?;
            info!(users = users.len(), file = %file.display(), "API authentication: http_basic");
            AuthStrategy::HttpBasic(Arc::new(users))
        }
    };
    let instance_lock = lock_instance(config)?;
    // After the state dir exists (0700): the image store, and the key that signs its URLs.
    let images = Arc::new(ImageStore::new(&config.state_dir));
    // Stored images go only to the node being deployed: its deploy command carries a URL
    // signed for it, valid for the callback timeout (the agent's boot) plus an hour of
    // writing and resuming (the default: 1800 s + 3600 s = 90 min).
    let signer =
        Arc::new(UrlSigner::load_or_create(&config.state_dir).context("loading image URL key")?);
    let base_url = config
        .netboot
        .http_base
        .clone()
        .or_else(|| config.boot_http_listen.map(|a| format!("http://{a}")))
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    // The agent fetches images where it talks to the controller: the provisioning side's
    // HTTPS listener with `[tls]`, else the boot listener.
    let https_url = config
        .tls
        .as_ref()
        .and_then(|t| t.provisioning_listen)
        .map(|listen| format!("https://{listen}"));
    // After the state dir exists (0700): the key file of the BMC secrets at rest.
    let secrets = crate::secrets::SecretBox::open_or_create(
        &config.state_dir.join(crate::secrets::KEY_FILE),
    )?;
    let sql_store = Arc::new(
        SqlStore::connect(&config.database)
            .await
            .with_context(|| format!("opening store {}", redact_url(&config.database)))?
            .with_secrets(Arc::new(secrets)),
    );
    // Agent sessions and commands live in the database, so any replica answers any agent.
    let hub = AgentHub::with_options(
        sql_store.clone(),
        HubOptions {
            fast_track: config.fast_track,
            images: Some(Arc::new(LocalImages {
                store: images.clone(),
                base_url: https_url.clone().unwrap_or_else(|| base_url.clone()),
                signer: signer.clone(),
                url_ttl: config.callback_timeout + IMAGE_URL_MARGIN,
            })),
            // Other replicas queue commands too: a long-poll looks at the store each second.
            poll_every: sql_store.is_shared().then_some(HUB_POLL_SHARED),
            record_seen: sql_store.is_shared(),
        },
    );
    let sql: Arc<dyn Store> = sql_store;
    let mut drivers = hardware_types(config, &hub)?;
    // Every saved node change also goes to the web console's event streams.
    let live = Arc::new(LiveEvents::default());
    let store: Arc<dyn Store> = Arc::new(Watched::new(sql, live.clone()));
    let webhooks = Arc::new(Webhooks::start(&config.webhooks).context("starting webhooks")?);
    let metrics = Arc::new(Metrics::new());
    metrics.attach_webhooks(webhooks.stats());
    metrics.attach_hub(hub.clone());
    drivers.observe(metrics.clone());
    let events = Arc::new(Fanout(vec![webhooks.clone(), metrics.clone()]));
    let conductor = Conductor::new(
        store.clone(),
        drivers,
        ConductorConfig {
            events,
            name: config.conductor_name.clone(),
            max_concurrent_deploys: config.max_concurrent_deploys,
            max_concurrent_cleanings: config.max_concurrent_cleanings,
            power_sync_interval: config.power_sync_interval,
            callback_timeout: config.callback_timeout,
            conductor_group: config.conductor_group.clone(),
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            listen: listen_addresses(config, https_url.as_deref().unwrap_or(&base_url)),
            clock,
            ..ConductorConfig::default()
        },
    );
    metrics.attach_conductor(&conductor);
    conductor.start().await.context("starting conductor")?;
    let api_tls = match &config.tls {
        Some(t) => Some(api_server_config(t, config.api_listen)?),
        None => {
            warn_cleartext_passwords(config);
            None
        }
    };
    let settings = ApiSettings {
        provision_body_limit: config.max_body_bytes,
        // Links in answers (paging `next`, node links) carry the scheme clients came with.
        public_scheme: if api_tls.is_some() { "https" } else { "http" }.to_owned(),
        default_host: config.api_listen.to_string(),
        auth,
        policies: config.users.clone(),
        metrics: metrics.clone(),
        metrics_public: config.metrics_public,
        flavors: config.flavors.clone(),
        images: Some(images.as_ref().clone()),
        live: live.clone(),
        ..ApiSettings::default()
    };
    let api = api::router(ApiState::new(store.clone(), conductor.clone(), settings));
    let discovery = Arc::new(Discovery::new(config.discovery.clone()));
    // With `[tls]`, the API is HTTPS, the agent and the images are on the provisioning
    // side's HTTPS listener, and the iPXE script tells the agent which CA to pin.
    let https = match (&config.tls, &api_tls, &https_url) {
        (Some(t), Some(server), Some(url)) => Some(HttpsSide {
            server: server.clone(),
            ca_sha256: chain_ca_sha256(&t.cert_file)?,
            url: url.clone(),
        }),
        _ => None,
    };
    let boot = boot_http::router(BootHttpState {
        store: store.clone(),
        discovery: discovery.clone(),
        config: Arc::new(BootHttpConfig {
            base_url,
            kernel: config.agent_kernel.clone(),
            initramfs: config.agent_initramfs.clone(),
            console: None,
            extra_args: config.agent_kernel_args.clone(),
            agent_url: https.as_ref().map(|h| h.url.clone()),
            ca_sha256: https.as_ref().map(|h| h.ca_sha256.clone()),
        }),
        fast_track: hub.fast_track_enabled(),
        replicas: boot_http::Replicas {
            me: config.conductor_name.clone(),
            heartbeat_timeout: config.heartbeat_timeout,
        },
    });
    let agent_side = agent_api::router(AgentApiState {
        store: store.clone(),
        conductor: conductor.clone(),
        hub: hub.clone(),
        discovery: discovery.clone(),
        heartbeat_timeout: config.agent_heartbeat_timeout,
        lookup_limit: Arc::default(),
        metrics: metrics.clone(),
    })
    .merge(images::http::router(images.clone(), signer, store.clone()));
    let (boot, https) = match https {
        // Nothing secret on plain HTTP: the agent API and images are refused there.
        Some(h) => (
            boot.merge(plain_refusals(&h.url)),
            Some((agent_side, h.server)),
        ),
        None => (boot.merge(agent_side), None),
    };
    Ok(Services {
        instance_lock,
        store,
        conductor,
        hub,
        discovery,
        images,
        api,
        api_tls,
        boot,
        https,
        webhooks,
        metrics,
        live,
    })
}

/// The rustls config of `[tls]` (also used by the provisioning side's HTTPS); warns when
/// the certificate does not name the API's address, which every client dialling that
/// address would refuse (a client that uses a DNS name of the certificate is fine).
fn api_server_config(
    tls: &crate::config::TlsConfig,
    api_listen: SocketAddr,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let server =
        crate::tls::server_config(&tls.cert_file, &tls.key_file).context("[tls] certificate")?;
    let ip = api_listen.ip();
    if !ip.is_unspecified() && !crate::tls::certificate_names(&tls.cert_file, ip)? {
        tracing::warn!(
            cert_file = %tls.cert_file.display(),
            %api_listen,
            "the [tls] certificate does not name the API's address: clients dialling it will \
             refuse the certificate (ingot certs init --ip {ip} issues one that does)"
        );
    }
    Ok(server)
}

/// http_basic on plain HTTP sends every password in clear: fine on the loopback, worth a
/// warning anywhere else.
fn warn_cleartext_passwords(config: &Config) {
    if matches!(config.auth, AuthConfig::HttpBasic(_)) && !config.api_listen.ip().is_loopback() {
        tracing::warn!(
            api_listen = %config.api_listen,
            "auth_strategy = \"http_basic\" without [tls]: passwords cross the network in \
             clear; set [tls] (ingot certs init) to serve the API over HTTPS"
        );
    }
}

/// Creates the state dir (0700) and, for SQLite, locks the database (one `ingot serve` per
/// file) and creates it 0600, before anything reads or writes it.
fn lock_instance(config: &Config) -> anyhow::Result<Option<InstanceLock>> {
    instance::create_state_dir(&config.state_dir)?;
    let Some(db) = instance::sqlite_file(&config.database)? else {
        return Ok(None);
    };
    if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
        instance::create_private_dir(parent)?;
    }
    let lock = InstanceLock::acquire(&db)?;
    instance::create_private_db(&db)?;
    Ok(Some(lock))
}

/// The addresses `/v1/conductors` shows: the operator API's and the provisioning side's.
/// What a conductor registers as its listen addresses, with `url AGENT_URL`: the URL its
/// agents talk to, which the other replicas' iPXE scripts hand out too
/// (`boot_http::replica_urls`).
fn listen_addresses(config: &Config, agent_url: &str) -> Vec<String> {
    let mut out = vec![format!("api {}", config.api_listen)];
    if let Some(a) = config.boot_http_listen {
        out.push(format!("boot {a}"));
    }
    if let Some(a) = config.tls.as_ref().and_then(|t| t.provisioning_listen) {
        out.push(format!("agent {a}"));
    }
    out.push(format!("{} {agent_url}", crate::boot_http::URL_KIND));
    out
}

/// The registry of `enabled_hardware_types` (with `[qemu] allowed_dir` resolved).
fn hardware_types(config: &Config, hub: &Arc<AgentHub>) -> anyhow::Result<DriverRegistry> {
    let qemu = config
        .qemu_allowed_dir
        .as_deref()
        .filter(|_| config.enabled_hardware_types.iter().any(|t| t == "qemu"))
        .map(QemuSettings::new)
        .transpose()?;
    DriverRegistry::with_types(hub.clone(), &config.enabled_hardware_types, qemu)
        .map_err(anyhow::Error::msg)
}

/// Runs the controller until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let services = build(&config).await?;
    let conductor = services.conductor.clone();
    // The operator API runs on a runtime of its own: a burst of heavy operator requests
    // (16 MiB bodies to parse, large documents to patch and render) can then keep only the
    // API's threads busy, never the ones that answer agents, run the conductor and DHCP.
    let api_runtime = ApiRuntime::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(API_WORKER_THREADS)
            .thread_name("ingot-api")
            .enable_all()
            .build()
            .context("starting the operator API's runtime")?,
    );
    let listener = {
        let _in_api_runtime = api_runtime.handle.enter();
        let std_listener = std::net::TcpListener::bind(config.api_listen)
            .with_context(|| format!("binding API address {}", config.api_listen))?;
        std_listener
            .set_nonblocking(true)
            .context("API socket non-blocking")?;
        TcpListener::from_std(std_listener).context("API socket")?
    };
    let cancel = CancellationToken::new();
    // Fatal tasks (crate::supervise): a failure stops everything and exits non-zero.
    let mut background = FatalTasks::new(cancel.clone());
    if let Some(addr) = config.boot_http_listen {
        let boot_listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding provisioning HTTP address {addr}"))?;
        let app = services
            .boot
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        let c = cancel.clone();
        background.spawn("provisioning HTTP", async move {
            axum::serve(boot_listener, app)
                .with_graceful_shutdown(async move { c.cancelled().await })
                .await
                .context("serving provisioning HTTP")
        });
        info!(boot_http = %addr, tls = config.tls.is_some(), "provisioning HTTP listening");
    }
    let https_listen = config.tls.as_ref().and_then(|t| t.provisioning_listen);
    if let (Some((router, server)), Some(listen)) = (services.https.clone(), https_listen) {
        let tcp = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding provisioning HTTPS address {listen}"))?;
        let listener = crate::tls::listener(tcp, server)
            .with_context(|| format!("provisioning HTTPS on {listen}"))?;
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        let c = cancel.clone();
        background.spawn("provisioning HTTPS", async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { c.cancelled().await })
                .await
                .context("serving provisioning HTTPS")
        });
        info!(https = %listen, "provisioning HTTPS (agent API, images) listening");
    }
    let netboot_on = config.netboot.mode.as_deref().is_some_and(|m| m != "off");
    if netboot_on {
        let cfg = NetbootConfig::try_from(config.netboot.clone()).context("[netboot]")?;
        let policy = Arc::new(StoreBootPolicy {
            store: services.store.clone(),
            discovery: services.discovery.clone(),
            fast_track: services.hub.fast_track_enabled(),
        });
        let netboot = netboot::service::start(
            cfg,
            policy,
            Arc::new(StoreLeaseStore::new(services.store.clone())),
            cancel.clone(),
        )
        .context("starting netboot services")?;
        if let Some(counters) = netboot.dhcp_counters.clone() {
            services.metrics.attach_dhcp(counters);
        }
        if let Some(server) = netboot.dhcp.clone() {
            services.metrics.attach_dhcp_server(server);
        }
        if let Some(counters) = netboot.tftp_counters.clone() {
            services.metrics.attach_tftp(counters);
        }
        background.spawn("netboot (DHCP, TFTP)", async move { netboot.wait().await });
    }
    let scheme = if services.api_tls.is_some() {
        "https"
    } else {
        "http"
    };
    info!(
        api = %format!("{scheme}://{}", config.api_listen),
        database = %redact_url(&config.database),
        startup_ms = started.elapsed().as_millis() as u64,
        "ingot serving"
    );
    let c = cancel.clone();
    let api = services.api.clone();
    let api_tls = services.api_tls.clone();
    let api_listen = config.api_listen;
    let served = api_runtime.handle.spawn(async move {
        let stop = async move { c.cancelled().await };
        match api_tls {
            Some(server) => {
                // On the API runtime: the handshake tasks run there too.
                let listener = crate::tls::listener(listener, server)
                    .with_context(|| format!("API HTTPS on {api_listen}"))?;
                axum::serve(listener, api)
                    .with_graceful_shutdown(stop)
                    .await
            }
            None => {
                axum::serve(listener, api)
                    .with_graceful_shutdown(stop)
                    .await
            }
        }
        .context("serving API")
    });
    tokio::select! {
        () = shutdown_signal() => {},
        () = cancel.cancelled() => {},
    }
    cancel.cancel();
    // Open console streams would hold the API's graceful shutdown until they end.
    services.live.close();
    let served = served.await;
    info!("shutting down");
    let failed = background.finish().await;
    conductor.shutdown().await;
    services.webhooks.stop();
    drop(api_runtime);
    served.context("the operator API's task")??;
    failed.context("a fatal service failed")
}

/// Worker threads of the operator API's runtime.
/// How often an agent's long-poll re-reads the store for commands other replicas queued.
const HUB_POLL_SHARED: std::time::Duration = std::time::Duration::from_secs(1);

const API_WORKER_THREADS: usize = 2;

/// The operator API's runtime, shut down without waiting when dropped (also on an early
/// error return): a runtime cannot be dropped the blocking way inside another one, and tasks
/// still on it (a request cut short) are to be dropped, not waited for.
struct ApiRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl ApiRuntime {
    fn new(runtime: tokio::runtime::Runtime) -> Self {
        Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        }
    }
}

impl Drop for ApiRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Hides the password of a database URL in logs and errors.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((creds, host)) = rest.rsplit_once('@')
        && let Some((user, _)) = creds.split_once(':')
    {
        return format!("{scheme}://{user}:******@{host}");
    }
    url.to_owned()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://ingot:secret@db:5432/ingot"),
            "postgres://ingot:******@db:5432/ingot"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/ingot/ingot.db"),
            "sqlite:///var/lib/ingot/ingot.db"
        );
    }
}
