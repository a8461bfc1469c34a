//! `keel-broker`: parses flags, loads the config, starts logging and the
//! broker, and stops it on SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use keel_broker::config::ConfigToml;
use keel_common::logging::LogFormat;
use tokio_util::sync::CancellationToken;

/// Requests claiming huge arrays must not abort the broker: see `large_alloc`.
#[global_allocator]
static ALLOCATOR: keel_broker::large_alloc::LargeAllocReserves = keel_broker::large_alloc::LargeAllocReserves;

/// A Keel broker: the Kafka-protocol server.
///
/// Settings come from flags, then KEEL_BROKER_* environment variables, then the
/// --config file, then defaults.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML config file.
    #[arg(long, env = "KEEL_BROKER_CONFIG")]
    config: Option<PathBuf>,
    /// human or json.
    #[arg(long, env = "KEEL_LOG_FORMAT", default_value = "human")]
    log_format: LogFormat,
    /// Print a complete, commented example config (zone a of deploy/config) and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Check the config (file, environment, flags): print the effective one
    /// (secrets hidden) and exit 0, or say what is wrong and exit 2.
    #[arg(long)]
    check_config: bool,
    #[command(flatten)]
    overrides: ConfigToml,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", include_str!("../../../deploy/config/broker-a.toml"));
        return ExitCode::SUCCESS;
    }
    if args.check_config {
        return keel_common::config::check(effective(&args.config, args.overrides));
    }
    keel_common::service::main(args.log_format, "broker", || run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = effective(&args.config, args.overrides)?;
    tracing::info!(?config, "effective config");
    keel_proto::auth::set_token(config.cluster_token.as_ref().map(|token| token.0.as_str()))?;
    let registry = prometheus::Registry::new();
    let cancel = CancellationToken::new();
    let node = keel_broker::node::start(config, &registry, cancel.clone()).await?;
    let stopped = keel_common::service::until_stopped("broker", &cancel).await;
    if stopped.is_ok() {
        // SIGTERM: hand the partitions over before going, so clients see
        // only retriable errors and nothing waits for a session to expire.
        node.drain().await;
    }
    node.shutdown(Duration::from_secs(5)).await;
    stopped
}

/// The config in effect: flags and environment over the file over defaults.
fn effective(file: &Option<PathBuf>, overrides: ConfigToml) -> anyhow::Result<keel_broker::config::BrokerConfig> {
    let file = match file {
        Some(path) => keel_common::config::load_toml(path)?,
        None => ConfigToml::default(),
    };
    overrides.or(file).validate()
}
