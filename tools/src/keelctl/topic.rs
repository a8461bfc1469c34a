//! `keelctl topic create|list|describe|alter-config|delete`.

use std::collections::HashMap;

use clap::Subcommand;
use keel_controller_client::{pb, MetadataClient, Outcome, Topic};
use serde::Serialize;

use super::print_json;

#[derive(Debug, Subcommand)]
pub(super) enum TopicCommand {
    /// Creates a topic.
    Create {
        name: String,
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        /// A topic config as key=value; repeatable.
        #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        #[arg(long, default_value = "")]
        owner: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Lists topics.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Shows a topic's configs and partitions.
    Describe {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Sets or removes topic configs.
    AlterConfig {
        name: String,
        /// key=value to set; repeatable.
        #[arg(long, value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Key to reset to its default; repeatable.
        #[arg(long)]
        delete: Vec<String>,
    },
    /// Grows a topic to a new total partition count.
    AddPartitions {
        name: String,
        #[arg(long)]
        total: i32,
    },
    /// Deletes a topic.
    Delete { name: String },
}

fn parse_key_value(text: &str) -> anyhow::Result<(String, String)> {
    let (key, value) = text.split_once('=').ok_or_else(|| anyhow::anyhow!("{text:?} is not key=value"))?;
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

fn unique(pairs: Vec<(String, String)>) -> anyhow::Result<HashMap<String, String>> {
    Ok(keel_controller_client::configs_from_pairs(pairs)?.into_iter().collect())
}

#[derive(Debug, Serialize)]
struct TopicSummary<'a> {
    name: &'a str,
    id: String,
    partitions: usize,
    owner: &'a str,
}

pub(super) async fn run(client: &MetadataClient, command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create { name, partitions, configs, owner, description } => {
            let request = pb::CreateTopicRequest {
                name: name.clone(),
                partitions,
                configs: unique(configs)?,
                owner,
                description,
            };
            let (version, outcome) = client.create_topic(request).await?;
            if let Outcome::TopicCreated { id } = outcome {
                println!("created topic {name} ({id}) with {partitions} partitions at metadata version {}", version.0);
            }
        }
        TopicCommand::List { json } => {
            let image = client.read_image().await?;
            let topics: Vec<TopicSummary<'_>> = image
                .topics
                .values()
                .map(|t| TopicSummary {
                    name: &t.name,
                    id: t.id.to_string(),
                    partitions: t.partitions.len(),
                    owner: &t.owner,
                })
                .collect();
            if json {
                return print_json(&topics);
            }
            println!("{:<40} {:>10}  {:<36}  OWNER", "TOPIC", "PARTITIONS", "ID");
            for t in &topics {
                println!("{:<40} {:>10}  {:<36}  {}", t.name, t.partitions, t.id, t.owner);
            }
        }
        TopicCommand::Describe { name, json } => {
            let image = client.read_image().await?;
            let topic = image.topic(&name)?;
            if json {
                return print_json(topic);
            }
            print_topic(&image, topic);
        }
        TopicCommand::AlterConfig { name, set, delete } => {
            let request = pb::AlterConfigsRequest { name: name.clone(), set: unique(set)?, delete };
            let (version, _) = client.alter_configs(request).await?;
            println!("altered configs of topic {name} at metadata version {}", version.0);
        }
        TopicCommand::AddPartitions { name, total } => {
            let (version, _) = client.create_partitions(&name, total).await?;
            println!("topic {name} now has {total} partitions (metadata version {})", version.0);
        }
        TopicCommand::Delete { name } => {
            let (version, _) = client.delete_topic(&name).await?;
            println!("deleted topic {name} at metadata version {}", version.0);
        }
    }
    Ok(())
}

fn print_topic(image: &keel_controller_client::Image, topic: &Topic) {
    println!("topic {}  id {}  partitions {}", topic.name, topic.id, topic.partitions.len());
    if !topic.owner.is_empty() {
        println!("owner {}", topic.owner);
    }
    if !topic.description.is_empty() {
        println!("description {}", topic.description);
    }
    if topic.configs.is_empty() {
        println!("configs: all defaults");
    }
    for (key, value) in &topic.configs {
        println!("config {key}={value}");
    }
    // Start offset: readers see nothing below it (retention, DeleteRecords).
    // Uploaded: offsets below it are in the object store, in that many objects.
    println!(
        "{:>9}  {:>7}  {:>12}  {:>8}  {:>12}  {:>12}  {:>7}",
        "PARTITION", "LEADER", "LEADER EPOCH", "STREAM", "START", "UPLOADED", "OBJECTS"
    );
    for (index, partition) in topic.partitions.iter().enumerate() {
        let leader = partition.leader.map_or("none".to_owned(), |leader| leader.to_string());
        let objects = image.object_ranges_from(partition.stream_id, partition.start_offset).len();
        println!(
            "{:>9}  {:>7}  {:>12}  {:>8}  {:>12}  {:>12}  {:>7}",
            index,
            leader,
            partition.leader_epoch.0,
            partition.stream_id.0,
            partition.start_offset.0,
            partition.uploaded_end.0,
            objects
        );
    }
}
