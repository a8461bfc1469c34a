//! The deterministic rules by which commands change the image.
//!
//! `check` answers whether a command would apply, without changing anything;
//! the controller leader calls it before proposing so that a bad request costs
//! no log entry. `apply` checks again (the image may have moved since) and then
//! changes the image. Both are pure: same image and command, same result, on
//! every controller and every watcher.

use std::collections::BTreeMap;

use crate::command::{Command, Outcome, PRODUCER_ID_BLOCK_SIZE};
use crate::error::MetaError;
use crate::ids::{
    Epoch, LeaderEpoch, LogEpoch, LogId, NodeId, NodeKind, ObjectId, Offset, ProducerId, Seq, StreamId, TopicId,
    Version,
};
use crate::image::{
    DeletedObject, EnsembleMember, Image, NodeRecord, NodeState, ObjectRecord, Partition, Reservation, Topic, WalLog,
    WalLogState,
};
use crate::topic_rules::{collision_key, validate_partition_count, validate_topic_config, validate_topic_name};

impl Image {
    /// Checks that `command` would apply to this image.
    pub fn check(&self, command: &Command) -> Result<(), MetaError> {
        match command {
            Command::RegisterNode { zone, internal_addr, .. } => {
                if zone.is_empty() || internal_addr.is_empty() {
                    return Err(MetaError::InvalidRequest {
                        reason: "a node registers with a zone and an address".into(),
                    });
                }
                Ok(())
            }
            Command::FenceNode { kind, id, .. } => self.node(*kind, *id).map(|_| ()),
            Command::CreateTopic { name, configs, leaders, .. } => {
                validate_topic_name(name)?;
                validate_partition_count(leaders.len() as i64)?;
                let key = collision_key(name);
                if let Some(existing) = self.topics.keys().find(|existing| collision_key(existing) == key) {
                    if existing == name {
                        return Err(MetaError::TopicAlreadyExists { name: name.clone() });
                    }
                    return Err(MetaError::InvalidTopicName {
                        name: name.clone(),
                        reason: format!("it collides with topic {existing:?} ('.' and '_' count as the same)"),
                    });
                }
                configs.iter().try_for_each(|(key, value)| validate_topic_config(key, value))
            }
            Command::DeleteTopic { name } => {
                self.topic(name)?;
                internal_unchanged(name, "deleted")
            }
            Command::CreatePartitions { name, leaders } => {
                let topic = self.topic(name)?;
                internal_unchanged(name, "given more partitions")?;
                if leaders.is_empty() {
                    return Err(MetaError::InvalidPartitions {
                        count: topic.partitions.len() as i64,
                        reason: format!("topic {name:?} already has {} partitions", topic.partitions.len()),
                    });
                }
                validate_partition_count((topic.partitions.len() + leaders.len()) as i64)
            }
            Command::AlterConfigs { name, set, delete } => {
                self.topic(name)?;
                set.iter().try_for_each(|(key, value)| validate_topic_config(key, value))?;
                for key in delete {
                    if crate::topic_configs::topic_config(key).is_none() {
                        return Err(MetaError::UnknownConfig { key: key.clone() });
                    }
                }
                Ok(())
            }
            Command::AlterScramCredentials { upsert, delete } => {
                let invalid = |reason: String| Err(MetaError::InvalidScramCredential { reason });
                for credential in upsert {
                    let length = credential.mechanism.key_len();
                    if credential.user.is_empty() {
                        return invalid("the user name is empty".into());
                    }
                    if !crate::image::SCRAM_ITERATIONS.contains(&credential.iterations) {
                        return invalid(format!(
                            "{} iterations: at least {} and at most {}",
                            credential.iterations,
                            crate::image::SCRAM_ITERATIONS.start(),
                            crate::image::SCRAM_ITERATIONS.end()
                        ));
                    }
                    if credential.salt.is_empty()
                        || credential.stored_key.len() != length
                        || credential.server_key.len() != length
                    {
                        return invalid(format!("{}'s salt or keys have the wrong length", credential.user));
                    }
                }
                if delete.iter().any(|(user, _)| user.is_empty()) {
                    return invalid("the user name is empty".into());
                }
                Ok(())
            }
            Command::AllocateProducerIds { broker, broker_epoch } => {
                self.check_active(NodeKind::Broker, *broker, *broker_epoch)
            }
            Command::OpenLog { owner, owner_epoch, ensemble, ack_quorum } => {
                self.check_active(NodeKind::Broker, *owner, *owner_epoch)?;
                self.check_ensemble(ensemble, *ack_quorum)
            }
            Command::RecoverLog { log, epoch, recoverer, recoverer_epoch } => {
                self.check_active(NodeKind::Broker, *recoverer, *recoverer_epoch)?;
                let wal_log = self.open_log(*log)?;
                if !self.orphaned(wal_log) {
                    return Err(MetaError::LogStillWritten { log: *log, owner: wal_log.owner });
                }
                if epoch.0 != wal_log.epoch.0 + 1 {
                    return Err(MetaError::LogEpochMismatch { log: *log, epoch: *epoch, current: wal_log.epoch });
                }
                Ok(())
            }
            Command::SealLog { log, epoch, sealed_seq, sender, sender_epoch, .. } => {
                self.check_active(NodeKind::Broker, *sender, *sender_epoch)?;
                let wal_log = self.open_log(*log)?;
                if *epoch != wal_log.epoch {
                    return Err(MetaError::LogEpochMismatch { log: *log, epoch: *epoch, current: wal_log.epoch });
                }
                let allowed = match &wal_log.state {
                    WalLogState::Open => *sender == wal_log.owner && *sender_epoch == wal_log.owner_epoch,
                    WalLogState::Recovering { recoverer } => sender == recoverer,
                    WalLogState::Sealed { .. } => false,
                };
                if !allowed {
                    return Err(MetaError::InvalidRequest {
                        reason: format!("broker {sender} neither owns nor recovers WAL log {log}"),
                    });
                }
                if *sealed_seq < wal_log.trim_seq {
                    return Err(MetaError::InvalidRequest {
                        reason: format!("sealed seq {sealed_seq} is below the trim point {}", wal_log.trim_seq),
                    });
                }
                Ok(())
            }
            Command::ReserveObjects { broker, broker_epoch, count, .. } => {
                self.check_active(NodeKind::Broker, *broker, *broker_epoch)?;
                if *count == 0 || *count > 1000 {
                    return Err(MetaError::InvalidRequest { reason: format!("cannot reserve {count} object ids") });
                }
                Ok(())
            }
            Command::CommitUpload { broker, broker_epoch, log, log_epoch, trim_seq, objects, now_ms } => {
                self.check_active(NodeKind::Broker, *broker, *broker_epoch)?;
                self.check_commit_upload((*broker, *broker_epoch), *log, *log_epoch, *trim_seq, objects, *now_ms)
            }
            Command::CompactRanges { stream, object, replaced, now_ms, sender, sender_epoch } => {
                self.check_active(NodeKind::Broker, *sender, *sender_epoch)?;
                self.check_compaction(*stream, object, replaced, *now_ms, *sender)
            }
            Command::DeleteObjects { objects, sender, sender_epoch, .. } => {
                self.check_active(NodeKind::Broker, *sender, *sender_epoch)?;
                for id in objects {
                    let object = self.objects.get(id).ok_or_else(|| MetaError::InvalidRequest {
                        reason: format!("{id} is not in the object index"),
                    })?;
                    if !self.object_unreferenced(object) {
                        return Err(MetaError::InvalidRequest { reason: format!("{id} still holds readable records") });
                    }
                }
                Ok(())
            }
            Command::PurgeObjects { deleted, reservations, grace_ms, now_ms, sender, sender_epoch } => {
                self.check_active(NodeKind::Broker, *sender, *sender_epoch)?;
                for id in deleted {
                    match self.deleted_objects.get(id) {
                        Some(object) if object.deleted_at_ms + grace_ms <= *now_ms => {}
                        _ => {
                            return Err(MetaError::InvalidRequest {
                                reason: format!("{id} is not a deleted object past its grace period"),
                            })
                        }
                    }
                }
                for id in reservations {
                    if self.reservations.get(id).is_none_or(|r| r.deadline_ms > *now_ms) {
                        return Err(MetaError::InvalidRequest {
                            reason: format!("{id} is not an expired reservation"),
                        });
                    }
                }
                Ok(())
            }
            Command::ForgetLogs { logs, sender, sender_epoch } => {
                self.check_active(NodeKind::Broker, *sender, *sender_epoch)?;
                for log in logs {
                    let wal_log = self.wal_logs.get(log).ok_or(MetaError::UnknownLog { log: *log })?;
                    match &wal_log.state {
                        WalLogState::Sealed { sealed_seq, .. } if wal_log.trim_seq >= *sealed_seq => {}
                        _ => {
                            return Err(MetaError::InvalidRequest {
                                reason: format!("WAL log {log} is not sealed and uploaded to its sealed seq"),
                            })
                        }
                    }
                }
                Ok(())
            }
            Command::AssignLeader { topic, partition, leader, leader_epoch } => {
                let found =
                    self.topic_by_id(*topic).ok_or_else(|| MetaError::UnknownTopic { name: topic.to_string() })?;
                let current =
                    found.partitions.get(*partition as usize).ok_or_else(|| MetaError::InvalidPartitions {
                        count: i64::from(*partition),
                        reason: format!("topic {:?} has {} partitions", found.name, found.partitions.len()),
                    })?;
                if let Some(existing) = current.leader {
                    return Err(MetaError::InvalidRequest {
                        reason: format!("partition {partition} of {:?} is led by broker {existing}", found.name),
                    });
                }
                if !self.handover_ready(current) {
                    return Err(MetaError::InvalidRequest {
                        reason: format!(
                            "partition {partition} of {:?}: the logs of its previous leader are not sealed and uploaded yet",
                            found.name
                        ),
                    });
                }
                if leader_epoch.0 != current.leader_epoch.0 + 1 {
                    return Err(MetaError::InvalidRequest {
                        reason: format!("leader epoch {leader_epoch} does not follow {}", current.leader_epoch),
                    });
                }
                let broker = self.node(NodeKind::Broker, *leader)?;
                if broker.state != NodeState::Active {
                    return Err(MetaError::Fenced { kind: NodeKind::Broker, node: *leader, epoch: broker.epoch });
                }
                Ok(())
            }
            Command::DrainBroker { id, epoch } => self.check_active(NodeKind::Broker, *id, *epoch),
            Command::ClosePartition { topic, partition, leader_epoch, end_offset, sender, sender_epoch } => {
                self.check_active(NodeKind::Broker, *sender, *sender_epoch)?;
                let (name, led) = self.led_partition(*topic, *partition, *leader_epoch, *sender)?;
                if *end_offset != led.uploaded_end {
                    return Err(MetaError::InvalidRequest {
                        reason: format!(
                            "partition {partition} of {name:?} is uploaded to {}, not to its end {end_offset}",
                            led.uploaded_end
                        ),
                    });
                }
                Ok(())
            }
            Command::MovePartition { topic, partition, leader_epoch, to } => {
                let found =
                    self.topic_by_id(*topic).ok_or_else(|| MetaError::UnknownTopic { name: topic.to_string() })?;
                let leader = found.partitions.get(*partition as usize).and_then(|p| p.leader).ok_or_else(|| {
                    MetaError::InvalidRequest {
                        reason: format!("partition {partition} of {:?} has no leader", found.name),
                    }
                })?;
                self.led_partition(*topic, *partition, *leader_epoch, leader)?;
                let target = self.node(NodeKind::Broker, *to)?;
                if target.state != NodeState::Active || target.draining || *to == leader {
                    return Err(MetaError::InvalidRequest {
                        reason: format!("broker {to} cannot take partition {partition} of {:?}", found.name),
                    });
                }
                Ok(())
            }
            Command::AdvanceStartOffset { topic, partition, leader_epoch, start_offset, sender, sender_epoch } => {
                self.check_active(NodeKind::Broker, *sender, *sender_epoch)?;
                self.led_partition(*topic, *partition, *leader_epoch, *sender)?;
                if start_offset.0 < 0 {
                    return Err(MetaError::InvalidRequest {
                        reason: format!("start offset {start_offset} is negative"),
                    });
                }
                Ok(())
            }
        }
    }

    /// Chooses an ensemble for a new WAL log (DESIGN §5): with three or more
    /// zones holding active WAL nodes, one node in each of three zones and an
    /// ack quorum of 2; with two zones, one node in each and an ack quorum of 2.
    /// In each zone the node in the fewest unsealed logs is taken (lowest id on
    /// ties), and the three least loaded zones when there are more.
    pub fn choose_ensemble(&self) -> Result<(Vec<EnsembleMember>, u32), MetaError> {
        let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
        for log in self.wal_logs.values().filter(|log| !matches!(log.state, WalLogState::Sealed { .. })) {
            for member in &log.ensemble {
                *load.entry(member.node).or_default() += 1;
            }
        }
        let mut best_per_zone: BTreeMap<&str, (usize, NodeId, &NodeRecord)> = BTreeMap::new();
        for node in self.wal_nodes.values().filter(|node| node.state == NodeState::Active) {
            let candidate = (load.get(&node.id).copied().unwrap_or(0), node.id, node);
            let best = best_per_zone.entry(node.zone.as_str()).or_insert(candidate);
            if (candidate.0, candidate.1) < (best.0, best.1) {
                *best = candidate;
            }
        }
        if best_per_zone.len() < 2 {
            return Err(MetaError::NoEnsemble { zones: best_per_zone.len() });
        }
        let mut zones: Vec<(usize, NodeId, &NodeRecord)> = best_per_zone.into_values().collect();
        zones.sort_by_key(|(load, id, _)| (*load, *id));
        let ensemble: Vec<EnsembleMember> = zones
            .into_iter()
            .take(3)
            .map(|(_, _, node)| EnsembleMember {
                node: node.id,
                zone: node.zone.clone(),
                incarnation: node.incarnation.clone(),
            })
            .collect();
        Ok((ensemble, 2))
    }

    /// Looks up a WAL log that is not sealed.
    pub fn open_log(&self, log: LogId) -> Result<&WalLog, MetaError> {
        let wal_log = self.wal_logs.get(&log).ok_or(MetaError::UnknownLog { log })?;
        if matches!(wal_log.state, WalLogState::Sealed { .. }) {
            return Err(MetaError::LogSealed { log });
        }
        Ok(wal_log)
    }

    /// An ensemble is active WAL nodes at their current incarnation, one per
    /// zone, with an ack quorum of at least 2 (DESIGN §3: an entry is durable
    /// in two zones).
    fn check_ensemble(&self, ensemble: &[EnsembleMember], ack_quorum: u32) -> Result<(), MetaError> {
        let invalid = |reason: String| MetaError::InvalidRequest { reason };
        if ack_quorum < 2 || ack_quorum as usize > ensemble.len() {
            return Err(invalid(format!(
                "ack quorum {ack_quorum} for an ensemble of {}: at least 2, in two zones",
                ensemble.len()
            )));
        }
        let mut zones = std::collections::BTreeSet::new();
        for member in ensemble {
            let node = self.node(NodeKind::Wal, member.node)?;
            if node.state != NodeState::Active || node.incarnation != member.incarnation || node.zone != member.zone {
                return Err(invalid(format!("WAL node {} is not active at that incarnation and zone", member.node)));
            }
            if !zones.insert(member.zone.as_str()) {
                return Err(invalid(format!("two ensemble members in zone {}", member.zone)));
            }
        }
        Ok(())
    }

    /// Applies `command` at `version` (its Raft log index). On error the image
    /// is unchanged except for its version; a version that does not follow the
    /// image's own changes nothing at all.
    pub fn apply(&mut self, version: Version, command: &Command) -> Result<Outcome, MetaError> {
        if version <= self.version {
            return Err(MetaError::VersionNotAfter { version, current: self.version });
        }
        self.version = version;
        self.check(command)?;
        let outcome = match command {
            Command::RegisterNode { kind, id, zone, internal_addr, kafka_listeners, incarnation } => {
                let epoch = Epoch(version.0);
                let record = NodeRecord {
                    kind: *kind,
                    id: *id,
                    zone: zone.clone(),
                    internal_addr: internal_addr.clone(),
                    kafka_listeners: kafka_listeners.clone(),
                    incarnation: incarnation.clone(),
                    epoch,
                    state: NodeState::Active,
                    draining: false,
                };
                // A broker that registers again holds no leaderships (DESIGN §5).
                if self.nodes_mut(*kind).insert(*id, record).is_some() && *kind == NodeKind::Broker {
                    self.release_partitions(*id);
                }
                Outcome::Registered { epoch }
            }
            Command::FenceNode { kind, id, epoch } => {
                let node = self.nodes_mut(*kind).get_mut(id).expect("checked: node is registered");
                let applied = node.epoch == *epoch && node.state == NodeState::Active;
                if applied {
                    node.state = NodeState::Fenced;
                    if *kind == NodeKind::Broker {
                        self.release_partitions(*id);
                    }
                }
                Outcome::Fenced { applied }
            }
            Command::CreateTopic { id, name, configs, owner, description, leaders } => {
                let partitions = self.new_partitions(leaders);
                let topic = Topic {
                    id: *id,
                    name: name.clone(),
                    configs: configs.clone(),
                    owner: owner.clone(),
                    description: description.clone(),
                    partitions,
                };
                self.topics.insert(name.clone(), topic);
                Outcome::TopicCreated { id: *id }
            }
            Command::DeleteTopic { name } => {
                let topic = self.topics.remove(name).expect("checked: topic exists");
                Outcome::TopicDeleted { id: topic.id }
            }
            Command::CreatePartitions { name, leaders } => {
                let mut partitions = self.new_partitions(leaders);
                let topic = self.topics.get_mut(name).expect("checked: topic exists");
                topic.partitions.append(&mut partitions);
                Outcome::PartitionsCreated { count: leaders.len() }
            }
            Command::AlterConfigs { name, set, delete } => {
                let topic = self.topics.get_mut(name).expect("checked: topic exists");
                for key in delete {
                    topic.configs.remove(key);
                }
                topic.configs.extend(set.iter().map(|(key, value)| (key.clone(), value.clone())));
                Outcome::ConfigsAltered
            }
            Command::AlterScramCredentials { upsert, delete } => {
                for (user, mechanism) in delete {
                    if let Some(credentials) = self.scram_credentials.get_mut(user) {
                        credentials.remove(mechanism);
                        if credentials.is_empty() {
                            self.scram_credentials.remove(user);
                        }
                    }
                }
                for credential in upsert {
                    self.scram_credentials
                        .entry(credential.user.clone())
                        .or_default()
                        .insert(credential.mechanism, credential.clone());
                }
                Outcome::ScramCredentialsAltered
            }
            Command::AllocateProducerIds { .. } => {
                let first = self.next_producer_id;
                self.next_producer_id = ProducerId(first.0 + i64::from(PRODUCER_ID_BLOCK_SIZE));
                Outcome::ProducerIds { first, count: PRODUCER_ID_BLOCK_SIZE }
            }
            Command::OpenLog { owner, owner_epoch, ensemble, ack_quorum } => {
                let log = LogId(self.last_log_id.0 + 1);
                self.last_log_id = log;
                let epoch = LogEpoch(1);
                let wal_log = WalLog {
                    id: log,
                    owner: *owner,
                    owner_epoch: *owner_epoch,
                    epoch,
                    ensemble: ensemble.clone(),
                    ack_quorum: *ack_quorum,
                    state: WalLogState::Open,
                    trim_seq: crate::ids::Seq(0),
                };
                self.wal_logs.insert(log, wal_log);
                Outcome::LogOpened { log, epoch }
            }
            Command::RecoverLog { log, epoch, recoverer, .. } => {
                let wal_log = self.wal_logs.get_mut(log).expect("checked: log exists");
                assert!(*epoch > wal_log.epoch, "log epochs only move forward");
                wal_log.epoch = *epoch;
                wal_log.state = WalLogState::Recovering { recoverer: *recoverer };
                Outcome::LogRecovering { log: *log, epoch: *epoch }
            }
            Command::SealLog { log, sealed_seq, stream_ends, .. } => {
                let wal_log = self.wal_logs.get_mut(log).expect("checked: log exists");
                wal_log.state = WalLogState::Sealed { sealed_seq: *sealed_seq, stream_ends: stream_ends.clone() };
                Outcome::LogSealed { log: *log, sealed_seq: *sealed_seq }
            }
            Command::ReserveObjects { broker, count, deadline_ms, .. } => {
                let first = ObjectId(self.last_object_id.0 + 1);
                for id in first.0..first.0 + u64::from(*count) {
                    self.reservations.insert(ObjectId(id), Reservation { broker: *broker, deadline_ms: *deadline_ms });
                }
                self.last_object_id = ObjectId(first.0 + u64::from(*count) - 1);
                Outcome::ObjectsReserved { first, count: *count }
            }
            Command::CommitUpload { log, trim_seq, objects, .. } => {
                for object in objects {
                    self.reservations.remove(&object.id);
                    for range in &object.ranges {
                        // A deleted topic's range (checked) moves nothing.
                        if let Some(partition) = self.partition_of_stream_mut(range.stream) {
                            partition.uploaded_end = range.end;
                        }
                    }
                    self.objects.insert(object.id, object.clone());
                }
                let wal_log = self.wal_logs.get_mut(log).expect("checked: log exists");
                wal_log.trim_seq = wal_log.trim_seq.max(*trim_seq);
                Outcome::UploadCommitted { objects: objects.len(), trim_seq: *trim_seq }
            }
            Command::CompactRanges { stream, object, replaced, .. } => {
                for id in replaced {
                    let old = self.objects.get_mut(id).expect("checked: replaced objects exist");
                    old.ranges.retain(|range| range.stream != *stream);
                }
                self.reservations.remove(&object.id);
                self.objects.insert(object.id, object.clone());
                Outcome::RangesCompacted { replaced: replaced.len() }
            }
            Command::DeleteObjects { objects, now_ms, .. } => {
                for id in objects {
                    let object = self.objects.remove(id).expect("checked: object exists");
                    self.deleted_objects.insert(*id, DeletedObject { key: object.key, deleted_at_ms: *now_ms });
                }
                Outcome::ObjectsDeleted { count: objects.len() }
            }
            Command::PurgeObjects { deleted, reservations, .. } => {
                for id in deleted {
                    self.deleted_objects.remove(id);
                }
                for id in reservations {
                    self.reservations.remove(id);
                }
                Outcome::ObjectsDeleted { count: deleted.len() + reservations.len() }
            }
            Command::ForgetLogs { logs, .. } => {
                for log in logs {
                    self.wal_logs.remove(log);
                }
                Outcome::LogsForgotten { count: logs.len() }
            }
            Command::AssignLeader { topic, partition, leader, leader_epoch } => {
                let name = self.topic_by_id(*topic).expect("checked: topic exists").name.clone();
                let topic = self.topics.get_mut(&name).expect("checked: topic exists");
                let assigned = &mut topic.partitions[*partition as usize];
                assigned.leader = Some(*leader);
                assigned.leader_epoch = *leader_epoch;
                assigned.moving_to = None;
                Outcome::LeaderAssigned { leader: *leader, leader_epoch: *leader_epoch }
            }
            Command::DrainBroker { id, .. } => {
                self.brokers.get_mut(id).expect("checked: broker is registered").draining = true;
                Outcome::Draining
            }
            Command::ClosePartition { topic, partition, sender, .. } => {
                let name = self.topic_by_id(*topic).expect("checked: topic exists").name.clone();
                let topic = self.topics.get_mut(&name).expect("checked: topic exists");
                let closed = &mut topic.partitions[*partition as usize];
                closed.leader = None;
                closed.previous_leader = Some(*sender);
                Outcome::PartitionClosed
            }
            Command::MovePartition { topic, partition, to, .. } => {
                let name = self.topic_by_id(*topic).expect("checked: topic exists").name.clone();
                let topic = self.topics.get_mut(&name).expect("checked: topic exists");
                topic.partitions[*partition as usize].moving_to = Some(*to);
                Outcome::PartitionMoving
            }
            Command::AdvanceStartOffset { topic, partition, start_offset, .. } => {
                let name = self.topic_by_id(*topic).expect("checked: topic exists").name.clone();
                let topic = self.topics.get_mut(&name).expect("checked: topic exists");
                let led = &mut topic.partitions[*partition as usize];
                led.start_offset = led.start_offset.max(*start_offset);
                Outcome::StartOffset { start_offset: led.start_offset }
            }
        };
        Ok(outcome)
    }

    /// `CompactRanges`' conditions besides the sender's epoch.
    fn check_compaction(
        &self,
        stream: StreamId,
        object: &ObjectRecord,
        replaced: &[ObjectId],
        now_ms: i64,
        sender: NodeId,
    ) -> Result<(), MetaError> {
        let invalid = |reason: String| Err(MetaError::InvalidRequest { reason });
        match self.reservations.get(&object.id) {
            Some(reservation) if reservation.broker == sender && reservation.deadline_ms > now_ms => {}
            _ => return invalid(format!("{} is not an unexpired reservation of broker {sender}", object.id)),
        }
        let [new] = object.ranges.as_slice() else {
            return invalid(format!("a compacted object holds one range, not {}", object.ranges.len()));
        };
        if new.stream != stream || replaced.is_empty() {
            return invalid("the compacted range is of another stream, or replaces nothing".into());
        }
        let mut old = Vec::new();
        for id in replaced {
            let found = self
                .objects
                .get(id)
                .ok_or_else(|| MetaError::InvalidRequest { reason: format!("{id} is not in the object index") })?;
            let mut ranges = found.ranges.iter().filter(|range| range.stream == stream);
            match (ranges.next(), ranges.next()) {
                (Some(range), None) => old.push(range),
                _ => return invalid(format!("{id} does not hold exactly one range of stream {stream}")),
            }
        }
        old.sort_by_key(|range| range.start);
        let contiguous = old.windows(2).all(|pair| pair[0].end == pair[1].start);
        if !contiguous || old[0].start != new.start || old[old.len() - 1].end != new.end {
            return invalid(format!(
                "the replaced ranges do not make up {}..{} of stream {stream}",
                new.start, new.end
            ));
        }
        Ok(())
    }

    /// `CommitUpload`'s conditions besides the sender's epoch.
    fn check_commit_upload(
        &self,
        (broker, broker_epoch): (NodeId, Epoch),
        log: LogId,
        log_epoch: LogEpoch,
        trim_seq: Seq,
        objects: &[ObjectRecord],
        now_ms: i64,
    ) -> Result<(), MetaError> {
        let invalid = |reason: String| Err(MetaError::InvalidRequest { reason });
        let wal_log = self.wal_logs.get(&log).ok_or(MetaError::UnknownLog { log })?;
        // The owner uploads its log under the registration that opened it; a
        // sealed log whose owner is gone is uploaded by whoever recovered it
        // (the owner too, registered again).
        let owned = wal_log.owner == broker && wal_log.owner_epoch == broker_epoch;
        let recovered = matches!(wal_log.state, WalLogState::Sealed { .. }) && self.orphaned(wal_log);
        if !(owned || recovered) {
            return invalid(format!("WAL log {log} is not broker {broker}'s at epoch {broker_epoch}"));
        }
        if wal_log.epoch != log_epoch {
            return Err(MetaError::LogEpochMismatch { log, epoch: log_epoch, current: wal_log.epoch });
        }
        if trim_seq < wal_log.trim_seq {
            return invalid(format!("trim point {trim_seq} is below the log's {}", wal_log.trim_seq));
        }
        if let WalLogState::Sealed { sealed_seq, .. } = &wal_log.state {
            if trim_seq > *sealed_seq {
                return invalid(format!("trim point {trim_seq} is past the sealed seq {sealed_seq}"));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut next: BTreeMap<StreamId, Offset> = BTreeMap::new();
        for object in objects {
            match self.reservations.get(&object.id) {
                Some(reservation) if reservation.broker == broker && reservation.deadline_ms > now_ms => {}
                Some(_) => return invalid(format!("{} is expired or not broker {broker}'s", object.id)),
                None => return invalid(format!("{} is not reserved", object.id)),
            }
            if !ids.insert(object.id) || object.key.is_empty() {
                return invalid(format!("{} is listed twice or has no key", object.id));
            }
            for range in &object.ranges {
                let expected = match next.get(&range.stream) {
                    Some(end) => *end,
                    None => match self.partition_of_stream(range.stream) {
                        Some((_, _, partition)) => partition.uploaded_end,
                        // Its topic was deleted while the object was built:
                        // the range is garbage, collected with the object.
                        None if range.stream < self.next_stream_id => continue,
                        None => return invalid(format!("stream {} is no partition's", range.stream)),
                    },
                };
                if range.start != expected || range.end <= range.start {
                    return invalid(format!(
                        "range {}..{} of stream {} does not start at its uploaded end {expected}",
                        range.start, range.end, range.stream
                    ));
                }
                next.insert(range.stream, range.end);
            }
        }
        Ok(())
    }

    /// A partition that `sender` leads at `leader_epoch`, with its topic's name.
    fn led_partition(
        &self,
        topic: TopicId,
        partition: u32,
        leader_epoch: LeaderEpoch,
        sender: NodeId,
    ) -> Result<(&str, &Partition), MetaError> {
        let found = self.topic_by_id(topic).ok_or_else(|| MetaError::UnknownTopic { name: topic.to_string() })?;
        let led = found.partitions.get(partition as usize).ok_or_else(|| MetaError::InvalidPartitions {
            count: i64::from(partition),
            reason: format!("topic {:?} has {} partitions", found.name, found.partitions.len()),
        })?;
        if led.leader != Some(sender) || led.leader_epoch != leader_epoch {
            return Err(MetaError::NotPartitionLeader {
                topic: found.name.clone(),
                partition,
                broker: sender,
                leader_epoch,
            });
        }
        Ok((&found.name, led))
    }

    /// Looks up a registered node.
    pub fn node(&self, kind: NodeKind, id: NodeId) -> Result<&NodeRecord, MetaError> {
        self.nodes(kind).get(&id).ok_or(MetaError::UnknownNode { kind, node: id })
    }

    /// Checks that a node is registered at exactly `epoch` and not fenced.
    pub fn check_active(&self, kind: NodeKind, id: NodeId, epoch: Epoch) -> Result<(), MetaError> {
        let node = self.node(kind, id)?;
        if node.epoch != epoch {
            return Err(MetaError::StaleEpoch { kind, node: id, epoch, current: node.epoch });
        }
        if node.state == NodeState::Fenced {
            return Err(MetaError::Fenced { kind, node: id, epoch });
        }
        Ok(())
    }

    /// Looks up a topic by name.
    pub fn topic(&self, name: &str) -> Result<&Topic, MetaError> {
        self.topics.get(name).ok_or_else(|| MetaError::UnknownTopic { name: name.to_owned() })
    }

    fn new_partitions(&mut self, leaders: &[Option<NodeId>]) -> Vec<Partition> {
        leaders
            .iter()
            .map(|leader| {
                let stream_id = self.next_stream_id;
                self.next_stream_id = StreamId(stream_id.0 + 1);
                // The proposer chose from its image; a broker fenced or
                // draining since then gets nothing: the partition starts
                // leaderless and is assigned like any other.
                let leader = leader
                    .filter(|id| self.brokers.get(id).is_some_and(|b| b.state == NodeState::Active && !b.draining));
                Partition {
                    leader,
                    leader_epoch: LeaderEpoch(0),
                    stream_id,
                    start_offset: Offset(0),
                    uploaded_end: Offset(0),
                    previous_leader: None,
                    moving_to: None,
                }
            })
            .collect()
    }
}

/// Builds the configs map of a request, refusing duplicate keys.
pub fn configs_from_pairs(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, MetaError> {
    let mut configs = BTreeMap::new();
    for (key, value) in pairs {
        if configs.insert(key.clone(), value).is_some() {
            return Err(MetaError::InvalidRequest { reason: format!("config {key:?} is given twice") });
        }
    }
    Ok(configs)
}

#[cfg(test)]
mod tests;

/// Refuses a change that would move groups to other partitions of an
/// internal topic, or drop them all.
fn internal_unchanged(name: &str, change: &str) -> Result<(), MetaError> {
    if crate::topic_rules::is_internal_topic(name) {
        return Err(MetaError::InvalidRequest {
            reason: format!("{name} is an internal topic (committed offsets and groups); it cannot be {change}"),
        });
    }
    Ok(())
}
