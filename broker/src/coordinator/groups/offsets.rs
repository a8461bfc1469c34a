//! Committed offsets at the coordinator: OffsetCommit (checked, written,
//! applied once durable, in the order they were accepted), offsets
//! committed in a transaction (TxnOffsetCommit: written as the producer's
//! transactional records, applied at the commit marker), OffsetFetch,
//! OffsetDelete and DeleteGroups.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use keel_broker_core::groups::records::{self, Key, OffsetValue};
use keel_broker_core::groups::{Entry, Group, Kind, METADATA_BYTES_MAX};
use keel_broker_core::partition::Verification;
use keel_controller_client::{Image, ProducerId};

use super::Groups;

/// One partition's offset commit, with the error it got (if any).
#[derive(Clone, Debug)]
pub struct Commit {
    pub topic: String,
    pub partition: i32,
    pub value: OffsetValue,
    pub error: Option<ResponseError>,
}

impl Commit {
    /// One partition's commit, checked as Kafka checks it: a known
    /// partition and metadata within `offset.metadata.max.bytes`. The offset
    /// itself is not checked, as in Kafka: tools seed and copy group offsets
    /// beyond a partition's end, or on an empty one.
    pub fn checked(
        image: &Image,
        topic: &str,
        partition: i32,
        offset: i64,
        leader_epoch: i32,
        metadata: Option<&str>,
        now_ms: i64,
    ) -> Commit {
        let known = image
            .topics
            .get(topic)
            .is_some_and(|record| partition >= 0 && (partition as usize) < record.partitions.len());
        let metadata = metadata.unwrap_or_default().to_owned();
        let error = if !known {
            Some(ResponseError::UnknownTopicOrPartition)
        } else if metadata.len() > METADATA_BYTES_MAX {
            Some(ResponseError::OffsetMetadataTooLarge)
        } else {
            None
        };
        let value = OffsetValue { offset, leader_epoch, metadata, commit_timestamp: now_ms };
        Commit { topic: topic.to_owned(), partition, value, error }
    }

    pub fn key(&self) -> (String, i32) {
        (self.topic.clone(), self.partition)
    }
}

/// Who commits: a group member (its generation or member epoch), or an
/// admin or a consumer without group management (generation -1).
#[derive(Clone, Debug)]
pub struct Committer {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
}

/// A topic's committed offsets by partition (`None`: nothing committed),
/// or UNSTABLE_OFFSET_COMMIT.
pub type TopicOffsets = (String, Vec<(i32, Result<Option<OffsetValue>, ResponseError>)>);

/// The `__consumer_offsets` records of a group's accepted commits.
fn offset_records(group: &str, commits: &[Commit]) -> Vec<Entry> {
    commits
        .iter()
        .filter(|c| c.error.is_none())
        .map(|c| {
            let key = Key::Offset { group: group.to_owned(), topic: c.topic.clone(), partition: c.partition };
            (records::encode_key(&key), Some(records::encode_offset(&c.value)))
        })
        .collect()
}

/// Kafka's checks of a commit from `committer` against the group's members.
fn check_committer(group: &Group, committer: &Committer) -> Result<(), ResponseError> {
    match &group.kind {
        Kind::Classic(classic) => {
            classic.check_commit(&committer.member_id, committer.instance_id.as_deref(), committer.generation)
        }
        Kind::Consumer(consumer) => consumer.check_commit(&committer.member_id, committer.generation),
    }
}

impl Groups {
    /// OffsetCommit: the commits without an error are checked against the
    /// group, written, and applied once durable. Each commit's `error` says
    /// what it got.
    pub async fn commit_offsets(&self, group_id: &str, committer: &Committer, commits: &mut [Commit]) {
        // Checked and appended under the groups' lock: commits reach the log in
        // the order they were accepted.
        let appended = (|| {
            let mut locked = self.lock(group_id)?;
            let partition = locked.partition;
            let exists = locked.state().groups.contains_key(group_id);
            if !exists && committer.generation >= 0 {
                return Err(ResponseError::IllegalGeneration);
            }
            let group = locked.state().group_or_new(group_id, &self.settings);
            check_committer(group, committer)?;
            if let Kind::Classic(classic) = &group.kind {
                if let Some(owned) = classic.owned_partitions(&committer.member_id) {
                    for commit in commits.iter_mut().filter(|c| c.error.is_none()) {
                        if !owned.contains(&commit.key()) {
                            commit.error = Some(ResponseError::IllegalGeneration);
                        }
                    }
                }
            }
            let writes = offset_records(group_id, commits);
            if writes.is_empty() {
                return Ok(None);
            }
            group.commits_appended += 1;
            Ok(Some((self.append(partition, writes), group.commits_appended)))
        })();
        let (written, sequence) = match appended {
            Err(error) => {
                for commit in commits.iter_mut() {
                    commit.error = commit.error.or(Some(error));
                }
                return;
            }
            Ok(None) => return,
            Ok(Some(appended)) => appended,
        };
        let started = Instant::now();
        let result = self.written(written).await;
        self.runtime.cluster().metrics.offset_commit_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                if let Ok(mut locked) = self.lock(group_id) {
                    let group = locked.state().group_or_new(group_id, &self.settings);
                    for commit in commits.iter().filter(|c| c.error.is_none()) {
                        group.commit_durable(commit.key(), commit.value.clone(), sequence);
                    }
                }
            }
            Err(error) => {
                for commit in commits.iter_mut().filter(|c| c.error.is_none()) {
                    commit.error = Some(error);
                }
            }
        }
    }

    /// Offsets committed in producer (id, epoch)'s transaction, whose
    /// coordinator confirmed the group's partition (verification `token`):
    /// written as the producer's transactional records; they become the
    /// group's offsets when the commit marker lands (`txn_ended`).
    pub async fn commit_txn_offsets(
        &self,
        group_id: &str,
        producer: (ProducerId, i16),
        token: u64,
        committer: &Committer,
        commits: &[Commit],
    ) -> Result<(), ResponseError> {
        let appended = (|| {
            let mut locked = self.lock(group_id)?;
            let partition = locked.partition;
            if committer.generation >= 0 || !committer.member_id.is_empty() {
                // KIP-447: a zombie member of an older generation is refused.
                let group = locked.state().groups.get(group_id).ok_or(ResponseError::IllegalGeneration)?;
                check_committer(group, committer)?;
            }
            let writes = offset_records(group_id, commits);
            if writes.is_empty() {
                return Ok(None);
            }
            // Its place among the group's commits (a plain commit after it wins).
            let group = locked.state().group_or_new(group_id, &self.settings);
            group.commits_appended += 1;
            let sequence = group.commits_appended;
            let ticket = self.runtime.append(partition, writes, Some(producer), Verification::Confirmed(token));
            Ok(Some((partition, ticket, sequence)))
        })()?;
        let Some((partition, ticket, sequence)) = appended else { return Ok(()) };
        self.runtime.written(ticket, partition).await?;
        let offsets = commits.iter().filter(|c| c.error.is_none()).map(|c| (c.key(), c.value.clone())).collect();
        let mut shards = self.runtime.shards();
        if let Some(shard) = shards.get_mut(&partition).filter(|shard| shard.loaded) {
            let group = shard.state.group_or_new(group_id, &self.settings);
            group.txn_offsets_written(producer.0, offsets, sequence);
        }
        Ok(())
    }

    /// A group's committed offsets for `wanted` (topic, partitions; `None`:
    /// all). A consumer-protocol member asking (member id, epoch) is checked.
    /// With `require_stable` (KIP-447), a partition with an offset committed
    /// in a transaction still open is UNSTABLE_OFFSET_COMMIT, which the
    /// client retries.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
        member: Option<(String, i32)>,
        require_stable: bool,
    ) -> Result<Vec<TopicOffsets>, ResponseError> {
        let mut locked = self.lock(group_id)?;
        let Some(group) = locked.state().groups.get(group_id) else {
            return Ok(wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partitions)| (topic, partitions.into_iter().map(|p| (p, Ok(None))).collect()))
                .collect());
        };
        if let (Some((member_id, epoch)), Kind::Consumer(consumer)) = (member, &group.kind) {
            consumer.check_commit(&member_id, epoch)?;
        }
        let wanted = wanted.unwrap_or_else(|| {
            let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (topic, partition) in group.offsets.keys() {
                all.entry(topic.clone()).or_default().push(*partition);
            }
            all.into_iter().collect()
        });
        Ok(wanted
            .into_iter()
            .map(|(topic, partitions)| {
                let found = partitions
                    .into_iter()
                    .map(|p| {
                        let key = (topic.clone(), p);
                        if require_stable && group.has_pending(&key) {
                            return (p, Err(ResponseError::UnstableOffsetCommit));
                        }
                        (p, Ok(group.offsets.get(&key).cloned()))
                    })
                    .collect();
                (topic, found)
            })
            .collect())
    }

    /// OffsetDelete: deletes the group's offsets of `topics` (name,
    /// partitions), except those of topics its members subscribe to
    /// (GROUP_SUBSCRIBED_TO_TOPIC); returns each partition's error.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        topics: &[(String, Vec<i32>)],
    ) -> Result<Vec<Vec<Option<ResponseError>>>, ResponseError> {
        let subscribed = {
            let mut locked = self.lock(group_id)?;
            let group = locked.state().groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
            if let Kind::Classic(classic) = &group.kind {
                if !classic.is_empty() && classic.protocol_type.as_deref() != Some("consumer") {
                    return Err(ResponseError::NonEmptyGroup);
                }
            }
            subscribed_topics(group)
        };
        let mut tombstones = Vec::new();
        let errors = topics
            .iter()
            .map(|(topic, partitions)| {
                let busy = subscribed.contains(topic.as_str());
                partitions
                    .iter()
                    .map(|&partition| {
                        if busy {
                            return Some(ResponseError::GroupSubscribedToTopic);
                        }
                        let key = Key::Offset { group: group_id.to_owned(), topic: topic.clone(), partition };
                        tombstones.push((records::encode_key(&key), None));
                        None
                    })
                    .collect()
            })
            .collect();
        if !tombstones.is_empty() {
            self.append_locked(group_id, tombstones).await?;
            if let Ok(mut locked) = self.lock(group_id) {
                if let Some(group) = locked.state().groups.get_mut(group_id) {
                    for (topic, partitions) in topics.iter().filter(|(t, _)| !subscribed.contains(t.as_str())) {
                        for partition in partitions {
                            group.offsets.remove(&(topic.clone(), *partition));
                        }
                    }
                }
            }
        }
        Ok(errors)
    }

    /// DeleteGroups for one group: only an empty group, with its offsets.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), ResponseError> {
        let tombstones = {
            let mut locked = self.lock(group_id)?;
            let group = locked.state().groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
            if !group.is_empty() {
                return Err(ResponseError::NonEmptyGroup);
            }
            group.tombstones(group_id)
        };
        self.append_locked(group_id, tombstones).await?;
        if let Ok(mut locked) = self.lock(group_id) {
            let groups = &mut locked.state().groups;
            if groups.get(group_id).is_some_and(Group::is_empty) {
                groups.remove(group_id);
            }
        }
        tracing::info!(group = %group_id, "deleted the group");
        Ok(())
    }
}

/// The topics a group's members subscribe to.
fn subscribed_topics(group: &Group) -> BTreeSet<String> {
    match &group.kind {
        Kind::Consumer(consumer) => consumer.members.values().flat_map(|m| m.subscribed.iter().cloned()).collect(),
        Kind::Classic(classic) => classic.subscribed_topics(),
    }
}
