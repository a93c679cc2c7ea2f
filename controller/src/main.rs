//! `ingot`: the controller binary. Parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use controller::cli::{CertsCommand, Cli, Command, NodeCommand, client, watch};
use controller::config::FileConfig;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ingot: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ingot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let config = FileConfig::load(args.config.as_deref())?
                .overlay(args.as_layer())
                .validate()?;
            controller::serve::run(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Node { api, command } => {
            let api = api.client()?;
            let out = match command {
                NodeCommand::List {
                    long,
                    provision_state,
                    json,
                } => client::node_list(&api, long, provision_state.as_deref(), json).await?,
                NodeCommand::Show { node, json } => client::node_show(&api, &node, json).await?,
                NodeCommand::Watch { node, interval } => {
                    return node_watch(&api, &node, interval).await;
                }
            };
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs {
            command: CertsCommand::Init { dir, ips, dns },
        } => {
            print!("{}", controller::cli::certs_init(&dir, &ips, &dns)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Image { store, command } => {
            print!("{}", controller::cli::image::run(store, command).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Secrets { store, command } => {
            print!("{}", controller::cli::secrets::run(store, command).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `ingot node watch`: draws on stdout, ends with the node's state (and error) as the
/// exit code says.
async fn node_watch(
    api: &client::ApiClient,
    node: &str,
    interval: f64,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal as _;
    let interval = std::time::Duration::try_from_secs_f64(interval.max(0.05))
        .map_err(|e| anyhow::anyhow!("--interval: {e}"))?;
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let end = watch::node_watch(api, node, interval, &mut stdout.lock(), tty).await?;
    if end.verdict == watch::Verdict::Succeeded {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "ingot: node {node} is {}: {}",
        end.state,
        end.last_error
            .as_deref()
            .unwrap_or("no last_error recorded")
    );
    Ok(ExitCode::FAILURE)
}

/// Logging to stderr, filtered by `INGOT_LOG` in `tracing_subscriber`'s `Targets` syntax
/// (`info`, `info,controller::netboot=debug`); unset or empty means `info`, and an invalid
/// filter is reported and replaced by `info`.
fn init_tracing() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let info = || Targets::new().with_default(LevelFilter::INFO);
    let raw = std::env::var("INGOT_LOG").unwrap_or_default();
    let (targets, bad) = match raw.trim() {
        "" => (info(), None),
        f => match f.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (info(), Some(format!("invalid INGOT_LOG {f:?}: {e}"))),
        },
    };
    // Colours only on a terminal: a log file or journal gets plain `key=value` text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        // The builder's own default is INFO; the targets decide.
        .with_max_level(LevelFilter::TRACE)
        .finish()
        .with(targets)
        .init();
    if let Some(bad) = bad {
        tracing::warn!("{bad}; logging at info");
    }
}
