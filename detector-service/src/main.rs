//! `slc-detector`: parses the config and hands over to the library.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use slc_detector::config::{Cli, Command, ServeConfig};
use slc_detector::embedding::CosineAdapterChooser;
use slc_detector::engine_models::{EngineLoader, bank_chooser};
use slc_detector::registry::RegistryOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi => {
            print!("{}", slc_detector::openapi::openapi_json());
            Ok(())
        }
        Command::Serve(config) => serve(*config).await,
        // The engine tools are synchronous: they own the model on this thread.
        Command::Generate(args) => print_json(&slc_detector::cli::generate::run(&args)?),
        Command::MakeCheckpoint(args) => {
            print_json(&slc_detector::cli::make_checkpoint::run(&args)?)
        }
        Command::MetaTrain(args) => print_json(&slc_detector::cli::meta_train::run(&args)?),
        Command::Embed(args) => print_json(&slc_detector::cli::embed::run(&args)?),
        Command::BenchEngine(args) => print_json(&slc_detector::cli::bench::run(&args)?),
        Command::BenchAccuracy(args) => print_json(&slc_detector::cli::bench_accuracy::run(&args)?),
        Command::BenchLoad(args) => print_json(&slc_detector::cli::bench_load::run(&args)?),
        Command::DeviceInfo => print_json(&serde_json::json!({
            "cuda_available": slc_detector::cuda_available()
        })),
        Command::HashKey(args) => hash_key(&args),
        Command::Tokenize(args) => {
            println!(
                "{}",
                serde_json::to_string(&slc_detector::cli::tokenize::run(&args)?)?
            );
            Ok(())
        }
        Command::Check(args) => {
            let report = slc_detector::cli::check::run(&args);
            print_json(&report)?;
            for problem in &report.findings.problems {
                eprintln!("problem: {problem}");
            }
            if !report.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::BenchGrammar(args) => print_json(&slc_detector::cli::bench_grammar::run(&args)?),
    }
}

fn hash_key(args: &slc_detector::config::HashKeyArgs) -> anyhow::Result<()> {
    use slc_detector::tenants::{TenantId, keys};
    if args.tenant != keys::OPERATOR_MARK {
        TenantId::parse(&args.tenant).map_err(anyhow::Error::msg)?;
    }
    let key = if args.generate {
        let key = format!("slc_{}", uuid::Uuid::new_v4().simple());
        println!("{key}");
        key
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim().to_string()
    };
    anyhow::ensure!(!key.is_empty(), "no key on stdin");
    println!("{}", keys::keys_file_line(&args.tenant, &key));
    Ok(())
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    init_tracing(config.log_json);
    config.check_exposure().map_err(anyhow::Error::msg)?;
    if config.torch_threads > 0 {
        tch::set_num_threads(config.torch_threads);
    }
    // The chooser needs only the dictionary; the workers load the adapters themselves.
    let chooser = match &config.adapter_bank {
        Some(bank) => bank_chooser(bank, config.adapter_top_k)
            .with_context(|| format!("reading the adapter bank {}", bank.display()))?,
        None => CosineAdapterChooser::default(),
    };
    let loader = Arc::new(EngineLoader {
        options: config.engine_options(),
    });
    let state = slc_detector::build_state(
        &config,
        loader,
        Arc::new(chooser),
        RegistryOptions::default(),
    )
    .await
    .context("starting slc-detector")?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    tracing::info!(address = %listener.local_addr()?, "slc-detector listening");
    let registry = state.registry.clone();
    slc_detector::run(listener, state, shutdown_signal()).await?;
    registry.close().await;
    Ok(())
}

fn print_json(output: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(output)?);
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
