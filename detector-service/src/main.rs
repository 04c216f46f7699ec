use clap::{Parser, Subcommand};

/// The SLC edge service and its tools.
#[derive(Debug, Parser)]
#[command(name = "slc-detector", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One completion from the local model, printed as JSON.
    Generate(slc_detector::cli::generate::GenerateArgs),
    /// Write a random-weight checkpoint with the real Qwen2.5-VL-3B shapes.
    MakeCheckpoint(slc_detector::cli::make_checkpoint::MakeCheckpointArgs),
    /// Time the engine on fixed inputs (driven by scripts/bench_engine.py).
    BenchEngine(slc_detector::cli::bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Generate(args)) => {
            let output = slc_detector::cli::generate::run(&args)?;
            println!("{}", serde_json::to_string(&output)?);
        }
        Some(Command::MakeCheckpoint(args)) => {
            let output = slc_detector::cli::make_checkpoint::run(&args)?;
            println!("{}", serde_json::to_string(&output)?);
        }
        Some(Command::BenchEngine(args)) => {
            let output = slc_detector::cli::bench::run(&args)?;
            println!("{}", serde_json::to_string(&output)?);
        }
        None => println!("{{\"cuda_available\": {}}}", slc_detector::cuda_available()),
    }
    Ok(())
}
