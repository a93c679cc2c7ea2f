//! `ingot serve`: opens the store, starts the conductor and serves the API until SIGTERM or
//! Ctrl-C, then shuts down cleanly (in-flight requests finish, the conductor stops taking
//! work and waits for running tasks).

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::info;

use crate::api::{self, ApiSettings, ApiState};
use crate::conductor::{Conductor, ConductorConfig};
use crate::config::Config;
use crate::drivers::DriverRegistry;
use crate::store::{Store, sql::SqlStore};

/// Runs the controller until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect(&config.database)
            .await
            .with_context(|| format!("opening store {}", redact_url(&config.database)))?,
    );
    let conductor = Conductor::new(
        store.clone(),
        DriverRegistry::builtin(),
        ConductorConfig {
            name: config.conductor_name.clone(),
            max_concurrent_deploys: config.max_concurrent_deploys,
            max_concurrent_cleanings: config.max_concurrent_cleanings,
            power_sync_interval: config.power_sync_interval,
            callback_timeout: config.callback_timeout,
            ..ConductorConfig::default()
        },
    );
    conductor.start().await.context("starting conductor")?;
    let settings = ApiSettings {
        provision_body_limit: config.max_body_bytes,
        default_host: config.api_listen.to_string(),
        ..ApiSettings::default()
    };
    let app = api::router(ApiState::new(store, conductor.clone(), settings));
    let listener = TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("binding API address {}", config.api_listen))?;
    info!(
        api = %config.api_listen,
        database = %redact_url(&config.database),
        startup_ms = started.elapsed().as_millis() as u64,
        "ingot serving"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving API")?;
    info!("shutting down");
    conductor.shutdown().await;
    Ok(())
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
