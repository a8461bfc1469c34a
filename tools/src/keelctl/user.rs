//! `keelctl user set|list|delete`: SCRAM credentials (KIP-554), through a
//! broker's own PLAINTEXT listener, as `kafka-configs.sh --entity-type
//! users` does. The password is read from standard input or a file, never
//! from the command line (where `ps` and the shell's history would show it);
//! only its salted form (PBKDF2 with a random salt, aws-lc-rs) leaves this
//! process, and the brokers keep only keys derived from that.

use std::num::NonZeroU32;
use std::path::PathBuf;

use anyhow::Context;
use aws_lc_rs::{pbkdf2, rand};
use clap::Subcommand;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::*;
use keel_controller_client::{MetadataClient, NodeState, ScramMechanism};
use serde::Serialize;

use super::print_json;
use crate::kafka::Connection;

const DESCRIBE_VERSION: i16 = 0;
const ALTER_VERSION: i16 = 0;

#[derive(Debug, Subcommand)]
pub(super) enum UserCommand {
    /// Sets NAME's SCRAM credential. The password is the first line of
    /// standard input, or of --password-file.
    Set {
        name: String,
        /// SCRAM-SHA-512 or SCRAM-SHA-256.
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
        /// PBKDF2 iterations, 4096 to 16384.
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Lists the users with credentials: their mechanisms and iterations.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Removes NAME's credential for one mechanism, or for both.
    Delete {
        name: String,
        #[arg(long)]
        mechanism: Option<String>,
    },
}

pub(super) async fn run(client: &MetadataClient, command: UserCommand) -> anyhow::Result<()> {
    let image = client.read_image().await?;
    let addresses: Vec<String> = image
        .brokers
        .values()
        .filter(|node| node.state == NodeState::Active)
        .filter_map(|node| node.inter_broker_address().map(str::to_owned))
        .collect();
    anyhow::ensure!(!addresses.is_empty(), "no broker is running (see `keelctl cluster status`)");
    let broker = crate::kafka::connect_any(&addresses).await?;
    match command {
        UserCommand::Set { name, mechanism, iterations, password_file } => {
            let mechanism = mechanism_named(&mechanism)?;
            let password = read_password(password_file.as_ref())?;
            let mut salt = vec![0u8; 32];
            rand::fill(&mut salt).map_err(|_| anyhow::anyhow!("no randomness for a salt"))?;
            let algorithm = match mechanism {
                ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
                ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
            };
            let rounds = NonZeroU32::new(iterations).context("iterations must be at least 1")?;
            let mut salted = vec![0u8; mechanism.key_len()];
            pbkdf2::derive(algorithm, rounds, &salt, password.as_bytes(), &mut salted);
            let upsertion = ScramCredentialUpsertion::default()
                .with_name(name.clone().into())
                .with_mechanism(mechanism.kafka_type())
                .with_iterations(iterations as i32)
                .with_salt(salt.into())
                .with_salted_password(salted.into());
            let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion]);
            alter(&broker, &request).await?;
            println!("set {name}'s {} credential ({iterations} iterations)", mechanism.name());
        }
        UserCommand::List { json } => {
            let request = DescribeUserScramCredentialsRequest::default().with_users(None);
            let answer: DescribeUserScramCredentialsResponse = broker.send(DESCRIBE_VERSION, &request).await?;
            anyhow::ensure!(answer.error_code == 0, "DescribeUserScramCredentials: error {}", answer.error_code);
            let users: Vec<User> = answer
                .results
                .iter()
                .map(|result| User {
                    name: result.user.to_string(),
                    credentials: result
                        .credential_infos
                        .iter()
                        .map(|info| Credential {
                            mechanism: ScramMechanism::from_kafka_type(info.mechanism)
                                .map_or_else(|| format!("mechanism {}", info.mechanism), |m| m.name().to_owned()),
                            iterations: info.iterations,
                        })
                        .collect(),
                })
                .collect();
            if json {
                return print_json(&users);
            }
            println!("{:<32} {:<16} ITERATIONS", "USER", "MECHANISM");
            for user in &users {
                for credential in &user.credentials {
                    println!("{:<32} {:<16} {}", user.name, credential.mechanism, credential.iterations);
                }
            }
        }
        UserCommand::Delete { name, mechanism } => {
            let mechanisms = match mechanism {
                Some(mechanism) => vec![mechanism_named(&mechanism)?],
                None => {
                    // Both, or those the user has: a missing one is no error here.
                    let request = DescribeUserScramCredentialsRequest::default()
                        .with_users(Some(vec![UserName::default().with_name(name.clone().into())]));
                    let answer: DescribeUserScramCredentialsResponse = broker.send(DESCRIBE_VERSION, &request).await?;
                    let result = answer.results.first().context("DescribeUserScramCredentials answered no user")?;
                    anyhow::ensure!(
                        result.error_code == 0,
                        "{name}: {}",
                        message(result.error_code, &result.error_message)
                    );
                    result
                        .credential_infos
                        .iter()
                        .filter_map(|i| ScramMechanism::from_kafka_type(i.mechanism))
                        .collect()
                }
            };
            let deletions = mechanisms
                .iter()
                .map(|m| {
                    ScramCredentialDeletion::default().with_name(name.clone().into()).with_mechanism(m.kafka_type())
                })
                .collect();
            alter(&broker, &AlterUserScramCredentialsRequest::default().with_deletions(deletions)).await?;
            let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
            println!("removed {name}'s {} credential", names.join(" and "));
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct User {
    name: String,
    credentials: Vec<Credential>,
}

#[derive(Debug, Serialize)]
struct Credential {
    mechanism: String,
    iterations: i32,
}

async fn alter(broker: &Connection, request: &AlterUserScramCredentialsRequest) -> anyhow::Result<()> {
    let answer: AlterUserScramCredentialsResponse = broker.send(ALTER_VERSION, request).await?;
    for result in &answer.results {
        anyhow::ensure!(
            result.error_code == 0,
            "{}: {}",
            result.user.as_str(),
            message(result.error_code, &result.error_message)
        );
    }
    Ok(())
}

fn message(code: i16, message: &Option<kafka_protocol::protocol::StrBytes>) -> String {
    let name = kafka_protocol::error::ResponseError::try_from_code(code)
        .map_or_else(|| format!("error {code}"), |e| format!("{e:?}"));
    match message {
        Some(message) => format!("{name}: {}", message.as_str()),
        None => name,
    }
}

fn mechanism_named(name: &str) -> anyhow::Result<ScramMechanism> {
    ScramMechanism::from_name(name)
        .ok_or_else(|| anyhow::anyhow!("unknown mechanism {name:?}: use SCRAM-SHA-512 or SCRAM-SHA-256"))
}

/// The first line of `file`, or of standard input; never empty.
fn read_password(file: Option<&PathBuf>) -> anyhow::Result<String> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("read the password from standard input")?;
            line
        }
    };
    let password = text.lines().next().unwrap_or_default().to_owned();
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    Ok(password)
}
