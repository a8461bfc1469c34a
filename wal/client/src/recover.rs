//! The I/O of a recovery: drives `Recovery` against the log's WAL nodes.
//!
//! It fences every member at the recovery's epoch (all at once, each within a
//! timeout, and no longer than a short grace once a quorum confirmed), reads
//! from each member that confirmed the fence, and once the
//! plan is decided copies the missing entries from the member that holds
//! them all to the members that need them, at the recovery's epoch, waiting
//! for each to be fsynced. Reads and copies go a few MiB at a time, so a
//! recovery's memory does not grow with the tail it recovers. The caller
//! then commits `SealLog` with the result; this module does not talk to
//! the controller.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use keel_controller_client::StreamId;
use keel_proto::wal as pb;

use crate::ids::{LogEpoch, LogId, Offset, Seq};
use crate::recovery::{Recovery, RecoveryError};
use crate::writer::{Target, REQUEST_BYTES_MAX};

/// How long one member may take to answer a fence or a read.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the last members may take to confirm a fence once enough did.
const FENCE_GRACE: Duration = Duration::from_millis(300);
/// Bytes asked for per read.
const READ_BYTES: u64 = 4 << 20;

/// What a finished recovery found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub sealed_seq: Seq,
    pub stream_ends: BTreeMap<StreamId, Offset>,
    /// How many entries follow the trim point up to `sealed_seq`.
    pub entries: u64,
}

/// Why a recovery could not finish.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("only {fenced} of the {needed} members needed confirmed the fence")]
    NotEnoughFenced { fenced: usize, needed: usize },
    #[error("only {read} of the {needed} members needed could be read after the fence")]
    NotEnoughRead { read: usize, needed: usize },
    /// A member is fenced at a newer epoch: another recoverer took the log
    /// over since this one began, and finishes it.
    #[error("a newer recovery took the log over: {0}")]
    Overtaken(String),
    #[error("a member refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error("member {member} is unreachable: {error}")]
    Unreachable { member: usize, error: MemberError },
}

/// Why one member's call failed.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error(transparent)]
    Call(#[from] tonic::Status),
    #[error("refused: {0}")]
    Refused(String),
    #[error("fenced at a newer epoch: {0}")]
    Newer(String),
    #[error("node {node} answers as incarnation {answered}, not the log's {recorded}")]
    OtherIncarnation { node: keel_controller_client::NodeId, answered: String, recorded: String },
    #[error("the append stream ended early")]
    StreamEnded,
}

/// Recovers `log` at `epoch` (already committed by the controller's
/// `RecoverLog`) from `targets`, keeping what follows `trim`.
pub async fn recover(
    log: LogId,
    epoch: LogEpoch,
    targets: &[Target],
    ack_quorum: usize,
    trim: Seq,
) -> Result<Recovered, RecoverError> {
    let mut recovery = Recovery::new(log, epoch, targets.iter().map(|t| t.member.clone()).collect(), ack_quorum, trim);
    // Every member is fenced at once. Once enough confirmed (the fence
    // quorum, and an ack quorum to read from), the others get FENCE_GRACE
    // more: a member whose zone drops packets would otherwise hold the
    // recovery for the whole call timeout.
    let mut fences: futures::stream::FuturesUnordered<_> = targets
        .iter()
        .enumerate()
        .map(|(member, target)| async move { (member, fence(target, log, epoch).await) })
        .collect();
    let enough = recovery.fences_needed().max(ack_quorum);
    let mut fenced = 0;
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let next = match grace {
            Some(deadline) => tokio::time::timeout_at(deadline, fences.next()).await.ok().flatten(),
            None => fences.next().await,
        };
        let Some((member, result)) = next else { break };
        match result {
            Ok(last_seq) => {
                recovery.on_fenced(member, last_seq);
                fenced += 1;
                if fenced >= enough && grace.is_none() {
                    grace = Some(tokio::time::Instant::now() + FENCE_GRACE);
                }
            }
            Err(MemberError::Newer(message)) => return Err(RecoverError::Overtaken(message)),
            Err(error) => tracing::warn!(%log, member, %error, "member did not confirm the fence"),
        }
    }
    if !fences.is_empty() {
        tracing::info!(%log, fenced, unanswered = fences.len(), "recovering without the members that did not answer in time");
    }
    if fenced < recovery.fences_needed() {
        return Err(RecoverError::NotEnoughFenced { fenced, needed: recovery.fences_needed() });
    }
    let mut read = 0;
    for (member, from, to) in recovery.reads_to_make() {
        let mut copy = |entries: Vec<Bytes>| recovery.on_entries(member, entries);
        match read_range(&targets[member], log, epoch, from, to, &mut copy).await {
            Ok(()) => {
                recovery.on_read_complete(member);
                read += 1;
            }
            Err(ReadError::Recovery(error)) => return Err(error.into()),
            Err(ReadError::Member(MemberError::Newer(message))) => return Err(RecoverError::Overtaken(message)),
            Err(ReadError::Member(error)) => {
                tracing::warn!(%log, member, %error, "could not read from a fenced member")
            }
        }
    }
    let plan = recovery.plan()?.ok_or(RecoverError::NotEnoughRead { read, needed: ack_quorum })?;
    for (member, missing) in &plan.repairs {
        if !missing.is_empty() {
            repair(&recovery, &targets[plan.source], *member, &targets[*member], missing.clone()).await?;
        }
    }
    Ok(Recovered { sealed_seq: plan.sealed_seq, stream_ends: plan.stream_ends, entries: plan.entries })
}

async fn client(addr: &str) -> Result<pb::wal_client::WalClient<keel_proto::auth::Channel>, MemberError> {
    let channel = keel_proto::transport::endpoint(addr)?.timeout(CALL_TIMEOUT).connect().await?;
    Ok(pb::wal_client::WalClient::new(keel_proto::auth::channel(channel))
        .max_decoding_message_size(crate::entry::ENTRY_BYTES_MAX + READ_BYTES as usize))
}

/// Fences one member. A node answering under another incarnation than the
/// ensemble recorded lost its disk: it is not that member, and its fence and
/// its (empty) log do not count.
async fn fence(target: &Target, log: LogId, epoch: LogEpoch) -> Result<Seq, MemberError> {
    let request = pb::FenceRequest { log: log.0, epoch: epoch.0 };
    let reply = client(&target.addr).await?.fence(request).await?.into_inner();
    if reply.incarnation != target.member.incarnation {
        return Err(MemberError::OtherIncarnation {
            node: target.member.node,
            answered: reply.incarnation,
            recorded: target.member.incarnation.clone(),
        });
    }
    match pb::ErrorCode::try_from(reply.code) {
        Ok(pb::ErrorCode::Ok) => Ok(Seq(reply.last_seq)),
        Ok(pb::ErrorCode::StaleEpoch) => Err(MemberError::Newer(reply.message)),
        _ => Err(MemberError::Refused(reply.message)),
    }
}

/// Why reading a member's entries stopped.
enum ReadError {
    Member(MemberError),
    Recovery(RecoveryError),
}

impl From<MemberError> for ReadError {
    fn from(error: MemberError) -> ReadError {
        ReadError::Member(error)
    }
}

/// Reads the entries `from..=to` of one member (fewer if it holds fewer),
/// a reply at a time, handing each reply's entries to `take`.
async fn read_range(
    target: &Target,
    log: LogId,
    epoch: LogEpoch,
    from: Seq,
    to: Seq,
    take: &mut impl FnMut(Vec<Bytes>) -> Result<(), RecoveryError>,
) -> Result<(), ReadError> {
    let mut wal = client(&target.addr).await?;
    let mut next = from;
    while next <= to {
        let entries = read_once(&mut wal, target, log, epoch, next, to).await?;
        if entries.is_empty() {
            break;
        }
        next = Seq(next.0 + entries.len() as u64);
        take(entries).map_err(ReadError::Recovery)?;
    }
    Ok(())
}

/// One read: the entries the member holds from `from` (none past `to`),
/// up to `READ_BYTES`.
async fn read_once(
    wal: &mut pb::wal_client::WalClient<keel_proto::auth::Channel>,
    target: &Target,
    log: LogId,
    epoch: LogEpoch,
    from: Seq,
    to: Seq,
) -> Result<Vec<Bytes>, MemberError> {
    let request =
        pb::ReadRequest { log: log.0, from_seq: from.0, max_bytes: READ_BYTES, recovery_epoch: epoch.0, sealed_seq: 0 };
    let reply = wal.read(request).await?.into_inner();
    if reply.code == pb::ErrorCode::StaleEpoch as i32 {
        return Err(MemberError::Newer(reply.message));
    }
    if reply.code != pb::ErrorCode::Ok as i32 {
        return Err(MemberError::Refused(reply.message));
    }
    if reply.incarnation != target.member.incarnation {
        return Err(MemberError::OtherIncarnation {
            node: target.member.node,
            answered: reply.incarnation,
            recorded: target.member.incarnation.clone(),
        });
    }
    let mut entries = reply.entries;
    entries.truncate(usize::try_from(to.0.saturating_sub(from.0) + 1).unwrap_or(usize::MAX));
    Ok(entries)
}

/// Copies the entries `missing` from `source` to member `member`, at the
/// recovery's epoch, a read's worth at a time, waiting until each piece is
/// fsynced. Each entry copied must be the one the recovery read there.
async fn repair(
    recovery: &Recovery,
    source: &Target,
    member: usize,
    target: &Target,
    missing: std::ops::RangeInclusive<Seq>,
) -> Result<(), RecoverError> {
    let unreachable = |error: MemberError| RecoverError::Unreachable { member, error };
    let (log, epoch) = (recovery.log(), recovery.epoch());
    let source_failed = |error: MemberError| match error {
        MemberError::Newer(message) => RecoverError::Overtaken(message),
        error => RecoverError::Refused(format!("the repair source cannot be read: {error}")),
    };
    let mut from = client(&source.addr).await.map_err(source_failed)?;
    let (requests, stream) = tokio::sync::mpsc::channel::<pb::AppendRequest>(2);
    let mut to = client(&target.addr).await.map_err(unreachable)?;
    let mut replies = to
        .append(tokio_stream::wrappers::ReceiverStream::new(stream))
        .await
        .map_err(|e| unreachable(e.into()))?
        .into_inner();
    let (first, last) = (*missing.start(), *missing.end());
    let mut next = first;
    while next <= last {
        let piece = read_once(&mut from, source, log, epoch, next, last).await.map_err(source_failed)?;
        if piece.is_empty() {
            return Err(RecoverError::Refused(format!("the repair source no longer holds {next}")));
        }
        for (i, bytes) in piece.iter().enumerate() {
            let seq = Seq(next.0 + i as u64);
            if !recovery.matches(seq, bytes) {
                return Err(RecoveryError::Conflict { seq }.into());
            }
        }
        next = Seq(next.0 + piece.len() as u64);
        let batches = batches(piece, epoch);
        let count = batches.len();
        for batch in batches {
            requests.send(batch).await.map_err(|_| unreachable(MemberError::StreamEnded))?;
        }
        for _ in 0..count {
            let reply = replies
                .message()
                .await
                .map_err(|e| unreachable(e.into()))?
                .ok_or_else(|| unreachable(MemberError::StreamEnded))?;
            if reply.code != pb::ErrorCode::Ok as i32 {
                return Err(RecoverError::Refused(reply.message));
            }
        }
    }
    tracing::debug!(%log, member, entries = next.0 - first.0, "repaired a member");
    Ok(())
}

/// Splits entries into append requests of at most `REQUEST_BYTES_MAX`.
fn batches(entries: Vec<Bytes>, epoch: LogEpoch) -> Vec<pb::AppendRequest> {
    let mut requests: Vec<pb::AppendRequest> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let len = entry.len();
        match requests.last_mut() {
            Some(request) if bytes + len <= REQUEST_BYTES_MAX => request.entries.push(entry),
            _ => {
                requests.push(pb::AppendRequest { epoch: epoch.0, entries: vec![entry] });
                bytes = 0;
            }
        }
        bytes += len;
    }
    requests
}
