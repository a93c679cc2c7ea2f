//! `ingot`: the controller binary. Parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use controller::cli::{CertsCommand, Cli, Command, NodeCommand, client, watch};
use controller::config::{FileConfig, LogFormat};

fn main() -> ExitCode {
    // One rustls crypto provider for every client and listener of the process (reqwest is
    // built without one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // `ingot serve` reads its config before anything logs, for `log_format`; a config that
    // cannot be read fails the same way again in `run`, with its message.
    let format = match &cli.command {
        Command::Serve(args) => FileConfig::load(args.config.as_deref())
            .map(|f| f.overlay(args.as_layer()).log_format.unwrap_or_default())
            .unwrap_or_default(),
        _ => LogFormat::Text,
    };
    init_tracing(format);
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
        Command::Completions { shell } => {
            controller::cli::docs::completions(shell, &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpages { dir } => {
            let n = controller::cli::docs::manpages(&dir)?;
            println!("{n} man pages in {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
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
        Command::Server { api, command } => {
            let api = api.client()?;
            let outcome = controller::cli::server::run(&api, command).await?;
            print!("{}", outcome.output);
            Ok(if outcome.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
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
fn init_tracing(format: LogFormat) {
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
    match format {
        LogFormat::Text => {
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
        }
        // One JSON object per line: timestamp, level, target, the event's fields, and the
        // spans it is in (a node task's `node`) with theirs.
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(true)
            .with_max_level(LevelFilter::TRACE)
            .finish()
            .with(targets)
            .init(),
    }
    if let Some(bad) = bad {
        tracing::warn!("{bad}; logging at info");
    }
}
