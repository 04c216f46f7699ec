use clap::Parser;
use slc_eval::config::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(config) => slc_eval::run::execute(&config).await.map(|outcome| {
            println!("{}", outcome.summary_line());
            outcome.exit_code(config.allow_errors)
        }),
        Command::MakeRecognition(config) => slc_eval::run::make_recognition(&config).map(|path| {
            println!("wrote {}", path.display());
            std::process::ExitCode::SUCCESS
        }),
    };
    result.unwrap_or_else(|error| {
        eprintln!("slc-eval: {error}");
        std::process::ExitCode::FAILURE
    })
}
