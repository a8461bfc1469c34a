//! `keel-bench`: Keel's benchmarks. See `keel-bench --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keel_tools::bench;

/// Load generators and latency recorders for Keel.
#[derive(Debug, Parser)]
#[command(name = "keel-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Controller quorum: commit latency, commits/s, re-election after kill -9.
    Controller(bench::controller::ControllerBenchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Controller(args) => {
            let json = args.json;
            bench::controller::run(args).await.and_then(|report| {
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    println!("{report}");
                }
                Ok(())
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keel-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
