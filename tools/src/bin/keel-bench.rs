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
    /// WAL tier: three WAL nodes behind the quorum writer, against the disk's floor.
    Wal(bench::wal::WalBenchArgs),
    /// Brokers: Kafka produce and tail-consume on a three-zone cluster, against the disk's floor.
    Broker(bench::broker::BrokerBenchArgs),
    /// Consumer groups: offset commit latency, one commit at a time.
    Group(bench::group::GroupBenchArgs),
    /// WAL recovery: memory and time to recover a log with a long tail.
    Recovery(bench::recovery::RecoveryBenchArgs),
    /// Idempotence and transactions: produce throughput with idempotence off and on, transaction latency by size.
    Txn(bench::txn::TxnBenchArgs),
}

fn print(report: &(impl serde::Serialize + std::fmt::Display), json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Controller(args) => {
            let json = args.json;
            bench::controller::run(args).await.and_then(|report| print(&report, json))
        }
        Command::Wal(args) => {
            let json = args.json;
            bench::wal::run(args).await.and_then(|report| print(&report, json))
        }
        Command::Broker(args) => {
            let json = args.json;
            bench::broker::run(args).await.and_then(|report| print(&report, json))
        }
        Command::Group(args) => {
            let json = args.json;
            bench::group::run(args).await.and_then(|report| print(&report, json))
        }
        Command::Recovery(args) => {
            let json = args.json;
            bench::recovery::run(args).await.and_then(|report| print(&report, json))
        }
        Command::Txn(args) => {
            let json = args.json;
            bench::txn::run(args).await.and_then(|report| print(&report, json))
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
