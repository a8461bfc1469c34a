//! Commands: the only way metadata changes. Each one is a Raft log entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{
    Epoch, LeaderEpoch, LogEpoch, LogId, NodeId, NodeKind, ObjectId, Offset, ProducerId, Seq, StreamId, TopicId,
};
use crate::image::{EnsembleMember, ObjectRecord, ScramCredential, ScramMechanism};

/// A change to the metadata image.
///
/// Commands carry every choice made by the proposer (topic ids, partition
/// leaders), so applying one is deterministic on every replica and watcher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Registers a broker or WAL node and gives it a new epoch (the version
    /// at which this command applies).
    RegisterNode {
        kind: NodeKind,
        id: NodeId,
        zone: String,
        internal_addr: String,
        kafka_listeners: Vec<String>,
        incarnation: String,
    },
    /// Fences a node whose session expired. Applies only if `epoch` is still
    /// the node's current one, so a late fence never hits a fresh registration.
    FenceNode {
        kind: NodeKind,
        id: NodeId,
        epoch: Epoch,
    },
    CreateTopic {
        id: TopicId,
        name: String,
        configs: BTreeMap<String, String>,
        owner: String,
        description: String,
        /// One entry per partition: the broker chosen to lead it.
        leaders: Vec<Option<NodeId>>,
    },
    DeleteTopic {
        name: String,
    },
    /// Grows a topic to `leaders.len()` more partitions.
    CreatePartitions {
        name: String,
        leaders: Vec<Option<NodeId>>,
    },
    AlterConfigs {
        name: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    /// Sets and removes SCRAM credentials (KIP-554); removing one that does
    /// not exist changes nothing.
    AlterScramCredentials {
        upsert: Vec<ScramCredential>,
        delete: Vec<(String, ScramMechanism)>,
    },
    /// Hands a block of producer ids to an active broker.
    AllocateProducerIds {
        broker: NodeId,
        broker_epoch: Epoch,
    },
    /// Records a new WAL log of `owner` before its first append; it gets the
    /// next log id and epoch 1.
    OpenLog {
        owner: NodeId,
        owner_epoch: Epoch,
        ensemble: Vec<EnsembleMember>,
        ack_quorum: u32,
    },
    /// Starts a recovery of `log` by `recoverer`: compare-and-set from the
    /// log's current epoch to `epoch`, which must be exactly one more.
    RecoverLog {
        log: LogId,
        epoch: LogEpoch,
        recoverer: NodeId,
        recoverer_epoch: Epoch,
    },
    /// Closes `log` for good at `sealed_seq`, if its epoch is still `epoch`.
    /// Sent by the recoverer that holds that epoch, or by the owner sealing
    /// its own open log.
    SealLog {
        log: LogId,
        epoch: LogEpoch,
        sealed_seq: Seq,
        /// Per stream, the end offset the log reaches. A list, not a map:
        /// serde cannot decode integer map keys inside an internally tagged enum.
        stream_ends: Vec<(StreamId, Offset)>,
        sender: NodeId,
        sender_epoch: Epoch,
    },
    /// Reserves `count` object ids for `broker`'s uploads, valid until
    /// `deadline_ms` (set by the controller leader from its clock).
    ReserveObjects {
        broker: NodeId,
        broker_epoch: Epoch,
        count: u32,
        deadline_ms: i64,
    },
    /// Commits uploaded objects and the WAL trim point they make possible
    /// (DESIGN §3.4). Accepted only if the log is `broker`'s and still at
    /// `log_epoch`, every object id is `broker`'s reservation unexpired at
    /// `now_ms` (the controller leader's clock), and each stream's ranges
    /// start exactly at its uploaded end and follow one another.
    CommitUpload {
        broker: NodeId,
        broker_epoch: Epoch,
        log: LogId,
        log_epoch: LogEpoch,
        trim_seq: Seq,
        objects: Vec<ObjectRecord>,
        now_ms: i64,
    },
    /// The compactor's swap: `object` (the sender's unexpired reservation)
    /// holds one range of `stream`, exactly the ranges of that stream in the
    /// `replaced` objects, which lose those ranges in the same step.
    CompactRanges {
        stream: StreamId,
        object: ObjectRecord,
        replaced: Vec<ObjectId>,
        now_ms: i64,
        sender: NodeId,
        sender_epoch: Epoch,
    },
    /// Takes objects out of the index once nothing readable is left in them
    /// (retention, DeleteRecords, deleted topics); their bytes go after a
    /// grace period (`PurgeObjects`).
    DeleteObjects {
        objects: Vec<ObjectId>,
        now_ms: i64,
        sender: NodeId,
        sender_epoch: Epoch,
    },
    /// Forgets deleted objects whose bytes a broker removed from the store,
    /// and expired reservations (whose keys it removed too, in case they were
    /// written and never committed). Each must be past `grace_ms` / expired at `now_ms`.
    PurgeObjects {
        deleted: Vec<ObjectId>,
        reservations: Vec<ObjectId>,
        grace_ms: i64,
        now_ms: i64,
        sender: NodeId,
        sender_epoch: Epoch,
    },
    /// Forgets WAL logs that are done: sealed, and uploaded (trimmed) to
    /// their sealed seq. Nothing reads them any more, and WAL nodes trim
    /// whatever they still hold of a log the metadata no longer lists.
    ForgetLogs {
        logs: Vec<LogId>,
        sender: NodeId,
        sender_epoch: Epoch,
    },
    /// Gives a partition that has no leader (created while no broker was
    /// live, or released by a fenced or re-registered broker) to `leader`, at
    /// `leader_epoch`, which must be the current one + 1. Refused until the
    /// previous leader's orphaned logs are sealed and uploaded
    /// (`Image::handover_ready`), so the new leader starts at the stream's end.
    AssignLeader {
        topic: TopicId,
        partition: u32,
        leader: NodeId,
        leader_epoch: LeaderEpoch,
    },
    /// Marks an active broker as draining: it gets no new partitions, and it
    /// hands the ones it leads over (`ClosePartition`). A new registration
    /// of the broker ends it.
    DrainBroker {
        id: NodeId,
        epoch: Epoch,
    },
    /// The leader hands a partition back (drain, balancer; DESIGN §5): it
    /// takes no more writes for it and everything it appended is uploaded
    /// (`end_offset` is the stream's uploaded end), so the next leader starts
    /// there. The partition is leaderless after it, `sender` its previous leader.
    ClosePartition {
        topic: TopicId,
        partition: u32,
        leader_epoch: LeaderEpoch,
        end_offset: Offset,
        sender: NodeId,
        sender_epoch: Epoch,
    },
    /// The balancer asks the leader of a partition to hand it to `to`: the
    /// leader closes it (`ClosePartition`), then it is assigned to `to`.
    MovePartition {
        topic: TopicId,
        partition: u32,
        leader_epoch: LeaderEpoch,
        to: NodeId,
    },
    /// Moves a partition's start offset forward (Kafka's log start offset):
    /// records below it are deleted for readers. Sent by the partition's
    /// leader at its current leader epoch, which checked that the offset is
    /// not past its high watermark; an offset at or below the current start
    /// changes nothing.
    AdvanceStartOffset {
        topic: TopicId,
        partition: u32,
        leader_epoch: LeaderEpoch,
        start_offset: Offset,
        sender: NodeId,
        sender_epoch: Epoch,
    },
}

/// What an applied command produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    Registered {
        epoch: Epoch,
    },
    Fenced {
        applied: bool,
    },
    TopicCreated {
        id: TopicId,
    },
    TopicDeleted {
        id: TopicId,
    },
    PartitionsCreated {
        count: usize,
    },
    ConfigsAltered,
    ScramCredentialsAltered,
    ProducerIds {
        first: ProducerId,
        count: u32,
    },
    LogOpened {
        log: LogId,
        epoch: LogEpoch,
    },
    LogRecovering {
        log: LogId,
        epoch: LogEpoch,
    },
    LogSealed {
        log: LogId,
        sealed_seq: Seq,
    },
    LeaderAssigned {
        leader: NodeId,
        leader_epoch: LeaderEpoch,
    },
    ObjectsDeleted {
        count: usize,
    },
    LogsForgotten {
        count: usize,
    },
    RangesCompacted {
        replaced: usize,
    },
    ObjectsReserved {
        first: ObjectId,
        count: u32,
    },
    UploadCommitted {
        objects: usize,
        trim_seq: Seq,
    },
    Draining,
    PartitionClosed,
    PartitionMoving,
    /// The partition's start offset after the command (never lower than before).
    StartOffset {
        start_offset: Offset,
    },
}

/// The number of producer ids in one block, as Kafka's controller hands out.
pub const PRODUCER_ID_BLOCK_SIZE: u32 = 1000;
