//! `slc-reasoner`: `serve` runs the cloud reasoner, `openapi` prints its OpenAPI document.

use anyhow::Context;
use clap::{Parser, Subcommand};
use slc_reasoner::ServeConfig;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "slc-reasoner", version, about = "The SLC cloud reasoner")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve `/v1/reason`, `/v1/identities`, health, metrics and the API docs.
    Serve(Box<ServeConfig>),
    /// Print the OpenAPI document (the committed `openapi/reasoner.json`).
    Openapi,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Openapi => {
            print!("{}", slc_reasoner::openapi::spec_json());
            Ok(())
        }
        Command::Serve(config) => {
            let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
            if config.log_json {
                tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .json()
                    .init();
            } else {
                tracing_subscriber::fmt().with_env_filter(filter).init();
            }
            config.check_exposure().map_err(anyhow::Error::msg)?;
            let state = slc_reasoner::build_state(&config).await?;
            let listener = tokio::net::TcpListener::bind(config.bind)
                .await
                .with_context(|| format!("could not bind {}", config.bind))?;
            tracing::info!(
                address = %listener.local_addr()?,
                model = %config.llm_model,
                upstream = %config.llm_base_url,
                "slc-reasoner listening"
            );
            slc_reasoner::run(listener, state, shutdown_signal()).await?;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
