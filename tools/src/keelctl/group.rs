//! `keelctl group list|describe|reset-offsets|delete`: consumer groups,
//! asked of the brokers over the Kafka protocol (the group coordinator is a
//! broker), as Kafka's `kafka-consumer-groups.sh` does.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use bytes::Buf;
use clap::{ArgGroup, Subcommand};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use keel_controller_client::{Image, MetadataClient, NodeState};
use serde::Serialize;

use super::print_json;
use crate::kafka::Connection;

const LIST_GROUPS_VERSION: i16 = 5;
const DESCRIBE_GROUPS_VERSION: i16 = 5;
const OFFSET_FETCH_VERSION: i16 = 8;
const OFFSET_COMMIT_VERSION: i16 = 8;
const DELETE_GROUPS_VERSION: i16 = 2;
const LIST_OFFSETS_VERSION: i16 = 7;

#[derive(Debug, Subcommand)]
pub(super) enum GroupCommand {
    /// Lists every consumer group, with its state.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Shows a group's members and assignment, and per partition its
    /// committed offset, end offset and lag.
    Describe {
        group: String,
        #[arg(long)]
        json: bool,
    },
    /// Moves an empty group's committed offsets: to replay history, or to
    /// skip a bad record. Shows the plan first; `--dry-run` stops there.
    #[command(group(ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_datetime", "to_offset", "shift_by"])))]
    ResetOffsets {
        group: String,
        /// TOPIC or TOPIC:P,P,... ; repeatable.
        #[arg(long = "topic", required = true)]
        topics: Vec<String>,
        /// To each partition's first offset.
        #[arg(long)]
        to_earliest: bool,
        /// To each partition's end (skip everything there is).
        #[arg(long)]
        to_latest: bool,
        /// To the first record at or after this time: RFC 3339
        /// (2026-11-27T10:00:00Z) or milliseconds since the epoch.
        #[arg(long)]
        to_datetime: Option<String>,
        /// To this offset (kept within each partition's first and end offset).
        #[arg(long)]
        to_offset: Option<i64>,
        /// Moves each committed offset by N (negative: back), kept within the partition.
        #[arg(long, allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Deletes an empty group and its committed offsets.
    Delete { group: String },
}

#[derive(Debug, Serialize)]
struct ListedGroup {
    group: String,
    state: String,
    protocol_type: String,
    group_type: String,
}

#[derive(Debug, Serialize)]
struct Member {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    host: String,
    assignment: Vec<TopicPartition>,
}

#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct TopicPartition {
    topic: String,
    partition: i32,
}

#[derive(Debug, Serialize)]
struct PartitionOffsets {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    end: Option<i64>,
    lag: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Described {
    group: String,
    state: String,
    protocol_type: String,
    protocol: String,
    coordinator: i32,
    members: Vec<Member>,
    offsets: Vec<PartitionOffsets>,
}

#[derive(Debug, Serialize)]
struct PlannedReset {
    topic: String,
    partition: i32,
    current: Option<i64>,
    new: i64,
}

pub(super) async fn run(client: &MetadataClient, command: GroupCommand) -> anyhow::Result<()> {
    let image = client.read_image().await?;
    let cluster = Cluster::new(&image)?;
    match command {
        GroupCommand::List { json } => list(&cluster, json).await,
        GroupCommand::Describe { group, json } => {
            let described = describe(&cluster, &group).await?;
            if json {
                return print_json(&described);
            }
            print_described(&described);
            Ok(())
        }
        GroupCommand::ResetOffsets {
            group,
            topics,
            to_earliest,
            to_latest,
            to_datetime,
            to_offset,
            shift_by,
            dry_run,
            json,
        } => {
            let target = match (to_earliest, to_latest, to_datetime, to_offset, shift_by) {
                (true, ..) => Target::Earliest,
                (_, true, ..) => Target::Latest,
                (_, _, Some(datetime), ..) => Target::Time(parse_datetime(&datetime)?),
                (_, _, _, Some(offset), _) => Target::Offset(offset),
                (_, _, _, _, Some(shift)) => Target::Shift(shift),
                _ => unreachable!("clap requires one"),
            };
            reset(&cluster, &group, &topics, target, dry_run, json).await
        }
        GroupCommand::Delete { group } => delete(&cluster, &group).await,
    }
}

/// The brokers and topics, from the controller's image.
struct Cluster {
    brokers: BTreeMap<i32, String>,
    /// Topic name -> leader broker id per partition (-1: none).
    topics: BTreeMap<String, Vec<i32>>,
}

impl Cluster {
    fn new(image: &Image) -> anyhow::Result<Cluster> {
        let brokers: BTreeMap<i32, String> = image
            .brokers
            .values()
            .filter(|node| node.state == NodeState::Active)
            .filter_map(|node| Some((node.id.0 as i32, node.inter_broker_address()?.to_owned())))
            .collect();
        anyhow::ensure!(
            !brokers.is_empty(),
            "no broker is running: groups live on brokers (see `keelctl cluster status`)"
        );
        let topics = image
            .topics
            .values()
            .map(|topic| {
                (topic.name.clone(), topic.partitions.iter().map(|p| p.leader.map_or(-1, |id| id.0 as i32)).collect())
            })
            .collect();
        Ok(Cluster { brokers, topics })
    }

    async fn any_broker(&self) -> anyhow::Result<Connection> {
        crate::kafka::connect_any(&self.brokers.values().cloned().collect::<Vec<_>>()).await
    }

    /// A connection to `group`'s coordinator, and its id.
    async fn coordinator(&self, group: &str) -> anyhow::Result<(Connection, i32)> {
        let broker = self.any_broker().await?;
        let (id, addr) = crate::kafka::find_coordinator(&broker, group, std::time::Duration::from_secs(10)).await?;
        Ok((Connection::connect(&addr).await?, id))
    }

    /// Offsets of `partitions` at `timestamp` (-1 end, -2 first, else
    /// the first record at or after it; -1 when there is none), from each leader.
    async fn offsets_at(
        &self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
        let mut by_leader: BTreeMap<i32, Vec<&TopicPartition>> = BTreeMap::new();
        for tp in partitions {
            let leader = self.topics.get(&tp.topic).and_then(|l| l.get(tp.partition as usize)).copied().unwrap_or(-1);
            by_leader.entry(leader).or_default().push(tp);
        }
        let mut found = BTreeMap::new();
        for (leader, wanted) in by_leader {
            let addr = self
                .brokers
                .get(&leader)
                .with_context(|| format!("{} has no leader now; try again", wanted[0].topic))?;
            let connection = Connection::connect(addr).await?;
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for tp in &wanted {
                topics.entry(&tp.topic).or_default().push(tp.partition);
            }
            let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(
                topics
                    .into_iter()
                    .map(|(topic, indexes)| {
                        ListOffsetsTopic::default().with_name(name(topic)).with_partitions(
                            indexes
                                .into_iter()
                                .map(|i| {
                                    ListOffsetsPartition::default().with_partition_index(i).with_timestamp(timestamp)
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            );
            let answer = connection.send(LIST_OFFSETS_VERSION, &request).await?;
            for topic in answer.topics {
                for p in topic.partitions {
                    if p.error_code != 0 {
                        anyhow::bail!("{}[{}]: {}", topic.name.0, p.partition_index, error_name(p.error_code));
                    }
                    found.insert(
                        TopicPartition { topic: topic.name.0.to_string(), partition: p.partition_index },
                        p.offset,
                    );
                }
            }
        }
        Ok(found)
    }
}

async fn list(cluster: &Cluster, json: bool) -> anyhow::Result<()> {
    let mut groups = Vec::new();
    for (id, addr) in &cluster.brokers {
        let connection = Connection::connect(addr).await.with_context(|| format!("broker {id}"))?;
        let answer = connection.send(LIST_GROUPS_VERSION, &ListGroupsRequest::default()).await?;
        anyhow::ensure!(answer.error_code == 0, "broker {id}: ListGroups: {}", error_name(answer.error_code));
        groups.extend(answer.groups.into_iter().map(|g| ListedGroup {
            group: g.group_id.0.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            group_type: g.group_type.to_string(),
        }));
    }
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    if json {
        return print_json(&groups);
    }
    println!("{:<32} {:<20} {:<10} TYPE", "GROUP", "STATE", "PROTOCOL");
    for g in groups {
        println!("{:<32} {:<20} {:<10} {}", g.group, g.state, g.protocol_type, g.group_type);
    }
    Ok(())
}

async fn describe(cluster: &Cluster, group: &str) -> anyhow::Result<Described> {
    let (coordinator, coordinator_id) = cluster.coordinator(group).await?;
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
    let answer = coordinator.send(DESCRIBE_GROUPS_VERSION, &request).await?;
    let found = answer.groups.into_iter().next().context("DescribeGroups answered nothing")?;
    anyhow::ensure!(found.error_code == 0, "DescribeGroups {group}: {}", error_name(found.error_code));
    let members: Vec<Member> = found
        .members
        .iter()
        .map(|m| Member {
            member_id: m.member_id.to_string(),
            instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: decode_assignment(&m.member_assignment),
        })
        .collect();
    let committed = committed_offsets(&coordinator, group).await?;
    let mut partitions: BTreeSet<TopicPartition> = committed.keys().cloned().collect();
    partitions.extend(members.iter().flat_map(|m| m.assignment.iter().cloned()));
    let partitions: Vec<TopicPartition> =
        partitions.into_iter().filter(|tp| cluster.topics.contains_key(&tp.topic)).collect();
    let ends = cluster.offsets_at(&partitions, -1).await.unwrap_or_default();
    let offsets = partitions
        .into_iter()
        .map(|tp| {
            let committed = committed.get(&tp).copied();
            let end = ends.get(&tp).copied();
            let lag = end.map(|end| (end - committed.unwrap_or(0)).max(0));
            PartitionOffsets { topic: tp.topic, partition: tp.partition, committed, end, lag }
        })
        .collect();
    Ok(Described {
        group: group.to_owned(),
        state: found.group_state.to_string(),
        protocol_type: found.protocol_type.to_string(),
        protocol: found.protocol_data.to_string(),
        coordinator: coordinator_id,
        members,
        offsets,
    })
}

fn print_described(d: &Described) {
    println!(
        "group {}  state {}  protocol {} {}  coordinator broker {}",
        d.group, d.state, d.protocol_type, d.protocol, d.coordinator
    );
    println!();
    println!("{:<40} {:<16} {:<24} ASSIGNMENT", "MEMBER", "INSTANCE", "CLIENT");
    for m in &d.members {
        let assignment: Vec<String> = m.assignment.iter().map(|tp| format!("{}[{}]", tp.topic, tp.partition)).collect();
        println!(
            "{:<40} {:<16} {:<24} {}",
            m.member_id,
            m.instance_id.as_deref().unwrap_or("-"),
            m.client_id,
            assignment.join(",")
        );
    }
    println!();
    println!("{:<32} {:>9} {:>12} {:>12} {:>10}", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG");
    let show = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
    for o in &d.offsets {
        println!(
            "{:<32} {:>9} {:>12} {:>12} {:>10}",
            o.topic,
            o.partition,
            show(o.committed),
            show(o.end),
            show(o.lag)
        );
    }
}

/// Every committed offset of `group`.
async fn committed_offsets(coordinator: &Connection, group: &str) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
    let request =
        OffsetFetchRequest::default().with_groups(vec![offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_topics(None)]);
    let answer = coordinator.send(OFFSET_FETCH_VERSION, &request).await?;
    let found = answer.groups.into_iter().next().context("OffsetFetch answered nothing")?;
    anyhow::ensure!(found.error_code == 0, "OffsetFetch {group}: {}", error_name(found.error_code));
    Ok(found
        .topics
        .into_iter()
        .flat_map(|t| {
            let topic = t.name.0.to_string();
            t.partitions.into_iter().filter(|p| p.committed_offset >= 0).map(move |p| {
                (TopicPartition { topic: topic.clone(), partition: p.partition_index }, p.committed_offset)
            })
        })
        .collect())
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Earliest,
    Latest,
    Time(i64),
    Offset(i64),
    Shift(i64),
}

async fn reset(
    cluster: &Cluster,
    group: &str,
    topic_specs: &[String],
    target: Target,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let (coordinator, _) = cluster.coordinator(group).await?;
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
    let described = coordinator.send(DESCRIBE_GROUPS_VERSION, &request).await?;
    if let Some(found) = described.groups.first() {
        if found.error_code == 0 && !found.members.is_empty() {
            anyhow::bail!(
                "NON_EMPTY_GROUP: group {group} has {} live members ({}); stop its consumers first, then reset",
                found.members.len(),
                found.group_state
            );
        }
    }
    let mut partitions = Vec::new();
    for spec in topic_specs {
        let (topic, wanted) = match spec.split_once(':') {
            Some((topic, list)) => {
                let indexes: Result<Vec<i32>, _> = list.split(',').map(|p| p.trim().parse::<i32>()).collect();
                (topic, Some(indexes.with_context(|| format!("{spec:?}: partitions must be numbers, as topic:0,1,2"))?))
            }
            None => (spec.as_str(), None),
        };
        let leaders = cluster.topics.get(topic).with_context(|| format!("topic {topic} does not exist"))?;
        let count = leaders.len() as i32;
        for index in wanted.unwrap_or_else(|| (0..count).collect()) {
            anyhow::ensure!((0..count).contains(&index), "topic {topic} has no partition {index} (it has {count})");
            partitions.push(TopicPartition { topic: topic.to_owned(), partition: index });
        }
    }
    let committed = committed_offsets(&coordinator, group).await?;
    let earliest = cluster.offsets_at(&partitions, -2).await?;
    let latest = cluster.offsets_at(&partitions, -1).await?;
    let at_time = match target {
        Target::Time(ms) => Some(cluster.offsets_at(&partitions, ms).await?),
        _ => None,
    };
    let plan: Vec<PlannedReset> = partitions
        .iter()
        .map(|tp| {
            let (first, end) = (earliest[tp], latest[tp]);
            let current = committed.get(tp).copied();
            let new = match target {
                Target::Earliest => first,
                Target::Latest => end,
                Target::Time(_) => match at_time.as_ref().and_then(|found| found.get(tp)).copied() {
                    Some(offset) if offset >= 0 => offset,
                    _ => end, // no record at or after that time
                },
                Target::Offset(offset) => offset,
                Target::Shift(by) => current.unwrap_or(end).saturating_add(by),
            };
            PlannedReset { topic: tp.topic.clone(), partition: tp.partition, current, new: new.clamp(first, end) }
        })
        .collect();
    if json {
        print_json(&plan)?;
    } else {
        println!("{:<32} {:>9} {:>12} {:>12}", "TOPIC", "PARTITION", "CURRENT", "NEW");
        for p in &plan {
            let current = p.current.map_or("-".to_owned(), |c| c.to_string());
            println!("{:<32} {:>9} {:>12} {:>12}", p.topic, p.partition, current, p.new);
        }
    }
    if dry_run {
        eprintln!("dry run: nothing changed");
        return Ok(());
    }
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for p in &plan {
        topics.entry(&p.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(p.partition)
                .with_committed_offset(p.new)
                .with_committed_leader_epoch(-1),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetCommitRequestTopic::default().with_name(name(topic)).with_partitions(partitions)
                })
                .collect(),
        );
    let answer = coordinator.send(OFFSET_COMMIT_VERSION, &request).await?;
    let mut failed = Vec::new();
    for topic in &answer.topics {
        for p in topic.partitions.iter().filter(|p| p.error_code != 0) {
            failed.push(format!("{}[{}]: {}", topic.name.0, p.partition_index, error_name(p.error_code)));
        }
    }
    if failed.iter().any(|f| f.contains("UnknownMemberId") || f.contains("IllegalGeneration")) {
        anyhow::bail!(
            "NON_EMPTY_GROUP: group {group} got members while resetting; nothing was reset where it says so: {}",
            failed.join(", ")
        );
    }
    anyhow::ensure!(failed.is_empty(), "some offsets were not reset: {}", failed.join(", "));
    eprintln!("reset {} partitions of group {group}", plan.len());
    Ok(())
}

async fn delete(cluster: &Cluster, group: &str) -> anyhow::Result<()> {
    let (coordinator, _) = cluster.coordinator(group).await?;
    let request =
        DeleteGroupsRequest::default().with_groups_names(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
    let answer = coordinator.send(DELETE_GROUPS_VERSION, &request).await?;
    let result = answer.results.first().context("DeleteGroups answered nothing")?;
    match result.error_code {
        0 => {
            println!("deleted group {group} and its committed offsets");
            Ok(())
        }
        code if code == ResponseError::NonEmptyGroup.code() => {
            anyhow::bail!("NON_EMPTY_GROUP: group {group} has live members; stop its consumers first")
        }
        code => anyhow::bail!("DeleteGroups {group}: {}", error_name(code)),
    }
}

/// RFC 3339 (UTC, `Z`) or milliseconds since the epoch.
fn parse_datetime(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let time = humantime_serde::re::humantime::parse_rfc3339_weak(text)
        .with_context(|| format!("{text:?} is not a time: use 2026-11-27T10:00:00Z or milliseconds since the epoch"))?;
    Ok(time.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64)
}

/// The partitions of a classic consumer-protocol assignment.
fn decode_assignment(bytes: &bytes::Bytes) -> Vec<TopicPartition> {
    let mut body = bytes.clone();
    if body.len() < 2 {
        return Vec::new();
    }
    let version = body.get_i16();
    let Ok(assignment) = ConsumerProtocolAssignment::decode(&mut body, version.clamp(0, 3)) else { return Vec::new() };
    assignment
        .assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| TopicPartition { topic: t.topic.0.to_string(), partition: *p }))
        .collect()
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(error) => format!("{error:?} ({code})"),
        None => format!("error {code}"),
    }
}
