//! Reading from WAL nodes: one lazy gRPC channel per node address (its
//! calls carry the cluster token), the members of a log with their current
//! addresses, and the two reads the broker makes: a partition's batches
//! from an offset (fetches of what is not uploaded yet) and whole entries
//! from a seq (uploads). Members in this broker's zone are asked first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use keel_broker_core::partition::LogRange;
use keel_controller_client::{Image, Offset, Seq, StreamId, WalLog};
use keel_proto::wal as wal_pb;
use keel_wal_client::entry::Entry;
use keel_wal_client::quorum::Member;
use keel_wal_client::writer::Target;

use crate::error::BrokerError;

/// How long one WAL read may take before the next member is tried.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Channels to the WAL nodes, by address.
#[derive(Debug)]
pub struct WalNodes {
    /// This broker's zone: its members are read first.
    zone: String,
    channels: Mutex<HashMap<String, tonic::transport::Channel>>,
}

/// The ensemble of `log` with each member's current address.
pub fn targets(image: &Image, log: &WalLog) -> Result<Vec<Target>, BrokerError> {
    log.ensemble
        .iter()
        .map(|member| {
            let node = image
                .wal_nodes
                .get(&member.node)
                .ok_or_else(|| BrokerError::MetadataBehind { what: format!("WAL node {}", member.node) })?;
            Ok(Target {
                member: Member {
                    node: member.node,
                    zone: member.zone.clone(),
                    incarnation: member.incarnation.clone(),
                },
                addr: node.internal_addr.clone(),
            })
        })
        .collect()
}

impl WalNodes {
    pub fn new(zone: String) -> WalNodes {
        WalNodes { zone, channels: Mutex::default() }
    }

    /// A channel to the WAL node at `addr` (its calls carry the cluster token).
    pub fn channel(&self, addr: &str) -> Result<keel_proto::auth::Channel, BrokerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(keel_proto::auth::channel(channel.clone()));
        }
        let channel = keel_proto::transport::endpoint(addr)
            .map_err(|error| BrokerError::MetadataBehind { what: format!("a usable address for {addr}: {error}") })?
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(keel_proto::auth::channel(channel))
    }

    /// The members of `log`, those in this broker's zone first.
    fn members(&self, image: &Image, log: &WalLog) -> Result<Vec<Target>, BrokerError> {
        let mut members = targets(image, log)?;
        members.sort_by_key(|target| target.member.zone != self.zone);
        Ok(members)
    }

    /// A partition's batches from offset `from` in the log `range` names, up
    /// to `max_bytes` and never past its sealed seq (0: the writer's
    /// acknowledged end).
    pub async fn read_stream(
        &self,
        image: &Image,
        range: LogRange,
        stream: StreamId,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Vec<wal_pb::StreamBatch>, BrokerError> {
        let log = range.log;
        let record = image.wal_logs.get(&log).ok_or(BrokerError::MetadataBehind { what: format!("{log}") })?;
        let request = wal_pb::ReadStreamRequest {
            log: log.0,
            stream: stream.0,
            from_offset: from.0,
            max_bytes: max_bytes as u64,
            sealed_seq: range.sealed_seq.0,
        };
        let mut last_error = String::from("the log has no members");
        for target in self.members(image, record)? {
            let mut wal = wal_pb::wal_client::WalClient::new(self.channel(&target.addr)?)
                .max_decoding_message_size(keel_wal_client::entry::ENTRY_BYTES_MAX + max_bytes);
            match tokio::time::timeout(READ_TIMEOUT, wal.read_stream(request)).await {
                Ok(Ok(reply)) => {
                    let reply = reply.into_inner();
                    if reply.code == wal_pb::ErrorCode::Ok as i32 {
                        return Ok(reply.batches);
                    }
                    last_error = format!("{}: {}", target.addr, reply.message);
                }
                Ok(Err(status)) => last_error = format!("{}: {status}", target.addr),
                Err(_) => last_error = format!("{}: no answer within {READ_TIMEOUT:?}", target.addr),
            }
        }
        Err(BrokerError::WalUnavailable { log, reason: last_error })
    }

    /// Whole entries of `log` after `after`, up to `end` (its sealed seq, or
    /// the last seq its writer had acknowledged, passed as the readers'
    /// bound), about `budget` bytes.
    ///
    /// Every entry up to `end` is on an ack quorum, but not on every member:
    /// one that lagged (cut off, or just restarted) answers with less. So a
    /// read that stops short of both `end` and the budget goes on to the next
    /// member, and the longest read wins. No entry at all from any member is
    /// an error, never "nothing to upload".
    pub async fn read_entries(
        &self,
        image: &Image,
        log: &WalLog,
        after: Seq,
        end: Seq,
        budget: u64,
    ) -> Result<Vec<Entry>, BrokerError> {
        let mut best: Vec<Entry> = Vec::new();
        let mut reasons = Vec::new();
        for target in self.members(image, log)? {
            match self.read_entries_from(&target.addr, log, after, end, budget).await {
                Ok(entries) => {
                    let bytes: u64 = entries.iter().map(|entry| entry.bytes.len() as u64).sum();
                    let reached = entries.last().map_or(after, |entry| entry.header.seq);
                    if reached >= end || bytes >= budget {
                        return Ok(entries);
                    }
                    reasons.push(format!("{}: only through {reached}", target.addr));
                    if entries.len() > best.len() {
                        best = entries;
                    }
                }
                Err(error) => reasons.push(format!("{}: {error}", target.addr)),
            }
        }
        if best.is_empty() {
            let reason = format!("no member served entries after {after} (up to {end}): {}", reasons.join("; "));
            return Err(BrokerError::WalUnavailable { log: log.id, reason });
        }
        Ok(best)
    }

    async fn read_entries_from(
        &self,
        addr: &str,
        log: &WalLog,
        after: Seq,
        end: Seq,
        budget: u64,
    ) -> Result<Vec<Entry>, BrokerError> {
        /// Bytes asked of a WAL node per read.
        const READ_BYTES: u64 = 8 << 20;
        let unavailable = |reason: String| BrokerError::WalUnavailable { log: log.id, reason };
        let mut wal = wal_pb::wal_client::WalClient::new(self.channel(addr)?)
            .max_decoding_message_size(keel_wal_client::entry::ENTRY_BYTES_MAX + READ_BYTES as usize);
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        let mut next = after.next();
        while next <= end && bytes < budget {
            let request = wal_pb::ReadRequest {
                log: log.id.0,
                from_seq: next.0,
                max_bytes: READ_BYTES.min(budget - bytes),
                recovery_epoch: 0,
                sealed_seq: end.0,
            };
            let reply = match tokio::time::timeout(READ_TIMEOUT, wal.read(request)).await {
                Ok(reply) => reply.map_err(|status| unavailable(status.to_string()))?.into_inner(),
                Err(_) => return Err(unavailable(format!("no answer within {READ_TIMEOUT:?}"))),
            };
            if reply.code != wal_pb::ErrorCode::Ok as i32 {
                return Err(unavailable(format!("read refused: {}", reply.message)));
            }
            if reply.entries.is_empty() {
                break;
            }
            for raw in reply.entries {
                let entry = Entry::decode(raw)
                    .map_err(|error| BrokerError::Damaged { reason: format!("an entry served by {addr}: {error}") })?;
                if entry.header.seq != next {
                    return Err(unavailable(format!("asked for {next}, got {}", entry.header.seq)));
                }
                if next > end {
                    break;
                }
                bytes += entry.bytes.len() as u64;
                entries.push(entry);
                next = next.next();
            }
        }
        Ok(entries)
    }
}
