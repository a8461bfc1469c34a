//! `keelctl` subcommands. Read commands print a human table, or JSON with
//! `--json`; every command exits non-zero with a one-line reason on failure.

mod broker;
mod cluster;
mod config;
mod controller;
mod dev;
mod group;
mod topic;
mod user;
mod wal;

use clap::{Parser, Subcommand};
use keel_controller_client::{ClientOptions, MetadataClient};

/// The Keel admin CLI.
#[derive(Debug, Parser)]
#[command(name = "keelctl", version)]
pub struct Cli {
    /// Controller gRPC addresses, comma-separated.
    #[arg(long, global = true, env = "KEEL_CONTROLLERS", value_delimiter = ',', default_value = dev::DEFAULT_CONTROLLERS)]
    controllers: Vec<String>,
    /// The cluster's token (its processes' cluster_token). Default: the
    /// local dev cluster's, from its data directory (KEEL_DEV_DIR).
    #[arg(long, global = true, env = "KEEL_CLUSTER_TOKEN", hide_env_values = true)]
    cluster_token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole cluster: controllers, registered nodes per zone, leases.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Brokers: hand a broker's partitions to the others.
    Broker {
        #[command(subcommand)]
        command: broker::BrokerCommand,
    },
    /// WAL nodes: their logs and disk use.
    Wal {
        #[command(subcommand)]
        command: wal::WalCommand,
    },
    /// Topics: create, list, describe, alter configs, delete.
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// Consumer groups: list, describe (lag), reset offsets (replay), delete.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// SCRAM credentials of the users SASL listeners authenticate: set, list, delete.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// The controller quorum's membership.
    Controller {
        #[command(subcommand)]
        command: controller::ControllerCommand,
    },
    /// Config files: check one as its binary would read it, or print a
    /// complete example.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Runs a whole local cluster on loopback until Ctrl-C.
    Dev(dev::DevArgs),
    /// Zone failures on this machine: three zones in network namespaces, a
    /// nemesis, and a checker of what clients saw.
    Chaos {
        #[command(subcommand)]
        command: crate::chaos::ChaosCommand,
    },
    /// Prints a completion script for a shell, for example
    /// `keelctl completions bash > /etc/bash_completion.d/keelctl`.
    Completions { shell: clap_complete::Shell },
}

/// Runs one `keelctl` invocation.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(args) => return dev::run(args).await,
        Command::Config { command } => return config::run(command),
        Command::Chaos { command } => return crate::chaos::run(command).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "keelctl", &mut std::io::stdout());
            return Ok(());
        }
        _ => {}
    }
    let token = cli.cluster_token.or_else(dev_cluster_token);
    keel_proto::auth::set_token(token.as_deref()).map_err(|error| anyhow::anyhow!("cluster token: {error}"))?;
    let client = MetadataClient::new(cli.controllers, ClientOptions::default())?;
    match cli.command {
        Command::Cluster { command } => cluster::run(&client, command).await,
        Command::Broker { command } => broker::run(&client, command).await,
        Command::Topic { command } => topic::run(&client, command).await,
        Command::Wal { command } => wal::run(&client, command).await,
        Command::Controller { command } => controller::run(&client, command).await,
        Command::Group { command } => group::run(&client, command).await,
        Command::User { command } => user::run(&client, command).await,
        Command::Dev(_) | Command::Config { .. } | Command::Chaos { .. } | Command::Completions { .. } => {
            unreachable!("handled above")
        }
    }
}

/// The token of the local dev cluster, if there is one.
fn dev_cluster_token() -> Option<String> {
    let dir = std::env::var_os("KEEL_DEV_DIR").map_or_else(|| std::path::PathBuf::from(dev::DEFAULT_DIR), Into::into);
    let token = std::fs::read_to_string(dir.join(crate::launcher::TOKEN_FILE)).ok()?;
    Some(token.trim().to_owned())
}

/// Prints `value` as pretty JSON.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
