//! `ListOffsets`: earliest (-2), latest (-1), the record with the largest
//! timestamp (-3) and the first record at or after a timestamp, as Kafka
//! answers them: batches are scanned by their max timestamp, and the one
//! that holds the answer is opened (decompressed, read only) to find the
//! record and its own timestamp.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use keel_broker_core::batch;
use keel_broker_core::partition::range_of;
use keel_controller_client::Offset;

use crate::broker::Broker;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// KIP-1005: the earliest offset still held locally; everything is, here.
const EARLIEST_LOCAL: i64 = -4;
/// Bytes scanned per read while looking up a timestamp.
const SCAN_BYTES: usize = 1 << 20;

pub(super) async fn handle(broker: &Arc<Broker>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let image = broker.cluster.image();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic_request in &request.topics {
        let topic = image.topics.get(topic_request.name.0.as_str());
        let mut partitions = Vec::with_capacity(topic_request.partitions.len());
        for wanted in &topic_request.partitions {
            let answer = ListOffsetsPartitionResponse::default().with_partition_index(wanted.partition_index);
            let found = match topic {
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(topic) => {
                    let read_committed = version >= 2 && request.isolation_level == 1;
                    let (index, epoch) = (wanted.partition_index, wanted.current_leader_epoch);
                    lookup(broker, topic, index, epoch, wanted.timestamp, read_committed).await
                }
            };
            partitions.push(match found {
                Ok((timestamp, offset, epoch)) => answer
                    .with_timestamp(timestamp)
                    .with_offset(offset)
                    // Leader epochs are answered from v4 on.
                    .with_leader_epoch(if version >= 4 { epoch } else { -1 }),
                Err(error) => {
                    broker.count_error("ListOffsets", error);
                    answer.with_error_code(error.code()).with_timestamp(-1).with_offset(-1)
                }
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default().with_name(topic_request.name.clone()).with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (timestamp, offset, leader epoch) for one partition.
async fn lookup(
    broker: &Arc<Broker>,
    topic: &keel_controller_client::Topic,
    index: i32,
    current_leader_epoch: i32,
    timestamp: i64,
    read_committed: bool,
) -> Result<(i64, i64, i32), ResponseError> {
    let view = broker.partitions.read_view(topic, index, current_leader_epoch)?;
    // A read_committed consumer's end is the last stable offset.
    let high_watermark = if read_committed { view.last_stable } else { view.high_watermark };
    let (stream, log_start) = (view.stream, view.log_start);
    let epoch = view.leader_epoch.0;
    match timestamp {
        LATEST => return Ok((-1, high_watermark.0, epoch)),
        EARLIEST | EARLIEST_LOCAL => return Ok((-1, log_start.0, epoch)),
        t if t < MAX_TIMESTAMP => return Err(ResponseError::InvalidRequest),
        _ => {}
    }
    // Scan the batches in offset order, from the first uploaded range whose
    // times can hold the answer.
    let facts = broker.partitions.storage.stream_index.get(&broker.cluster.image());
    let mut offset = match facts.stream(stream) {
        Some(facts) if timestamp == MAX_TIMESTAMP => facts.newest_start(log_start),
        Some(facts) => facts.search_start(log_start, timestamp),
        None => log_start,
    };
    let mut best: Option<(i64, bytes::Bytes)> = None;
    while offset < high_watermark {
        let range = range_of(&view.ranges, offset);
        let read = broker.partitions.read_batches(stream, range, offset, high_watermark, SCAN_BYTES).await;
        let batches = read.map_err(|error| {
            tracing::warn!(topic = %topic.name, partition = index, %offset, "WAL read failed: {error}");
            ResponseError::KafkaStorageError
        })?;
        let Some(last) = batches.last() else { break };
        let next = batch::end_offset(last);
        for bytes in batches {
            let max = batch::max_timestamp(&bytes);
            if timestamp == MAX_TIMESTAMP {
                if best.as_ref().is_none_or(|(t, _)| max > *t) {
                    best = Some((max, bytes));
                }
            } else if max >= timestamp {
                // The batch straddling the start offset may hold the time
                // only below it: then the answer is further on.
                if let Some((found, offset)) = open(topic, index, &bytes, log_start, Some(timestamp))? {
                    return Ok((found, offset.0, epoch));
                }
            }
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    match best {
        Some((_, bytes)) => match open(topic, index, &bytes, log_start, None)? {
            Some((found, offset)) => Ok((found, offset.0, epoch)),
            None => Ok((-1, -1, epoch)),
        },
        // Kafka answers "no such record" with offset -1 and no error.
        None => Ok((-1, -1, epoch)),
    }
}

/// The (timestamp, offset) of the answer inside the batch that should hold
/// it, from offset `from` on.
fn open(
    topic: &keel_controller_client::Topic,
    index: i32,
    bytes: &[u8],
    from: Offset,
    timestamp: Option<i64>,
) -> Result<Option<(i64, Offset)>, ResponseError> {
    match batch::first_record_at(bytes, from, timestamp) {
        Ok(found) => Ok(found),
        Err(error) => {
            tracing::error!(topic = %topic.name, partition = index, offset = %batch::base_offset(bytes), %error, "a stored batch cannot be read");
            Err(ResponseError::KafkaStorageError)
        }
    }
}
