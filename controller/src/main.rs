//! `ingot`: the controller binary. Parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use controller::cli::{Cli, Command, NodeCommand, client};
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = FileConfig::load(args.config.as_deref())?
                .overlay(args.as_layer())
                .validate()?;
            controller::serve::run(config).await
        }
        Command::Node { api, command } => {
            let api = client::ApiClient::new(&api.url)?;
            let out = match command {
                NodeCommand::List {
                    long,
                    provision_state,
                    json,
                } => client::node_list(&api, long, provision_state.as_deref(), json).await?,
                NodeCommand::Show { node, json } => client::node_show(&api, &node, json).await?,
            };
            print!("{out}");
            Ok(())
        }
        Command::Image { store, command } => {
            print!("{}", controller::cli::image::run(store, command).await?);
            Ok(())
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("INGOT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
