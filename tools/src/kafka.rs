//! A small Kafka client over the `kafka-protocol` codec, for `keel-bench` and
//! the tests: one TCP connection per broker, requests pipelined (written in
//! call order, answers matched by correlation id), and the few calls the
//! benchmark needs. It keeps librdkafka's C build out of the default build.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, FetchRequest, FetchResponse, InitProducerIdRequest, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Versions this client speaks; every Keel broker supports them.
pub const PRODUCE_VERSION: i16 = 9;
pub const FETCH_VERSION: i16 = 12;
pub const METADATA_VERSION: i16 = 12;
pub const INIT_PRODUCER_ID_VERSION: i16 = 4;
pub const CREATE_TOPICS_VERSION: i16 = 7;
pub const LIST_OFFSETS_VERSION: i16 = 7;
pub const FIND_COORDINATOR_VERSION: i16 = 4;

/// Answers a frame larger than this are refused (a broken peer, not data).
const FRAME_BYTES_MAX: usize = 256 << 20;

type Pending = Arc<Mutex<HashMap<i32, oneshot::Sender<Bytes>>>>;

struct Writer {
    half: OwnedWriteHalf,
    next_correlation: i32,
}

/// One connection to one broker.
pub struct Connection {
    addr: String,
    writer: tokio::sync::Mutex<Writer>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    /// The task reading answers, held so that dropping the connection aborts it.
    _reader: tokio::task::JoinSet<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Connection {
    pub async fn connect(addr: &str) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (mut read, half) = stream.into_split();
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let mut reader = tokio::task::JoinSet::new();
        reader.spawn({
            let pending = pending.clone();
            let closed = closed.clone();
            async move {
                // Ends on EOF or a broken frame; dropping the pending senders
                // fails every waiting call.
                while let Ok(size) = read.read_i32().await {
                    let Ok(size) = usize::try_from(size) else { break };
                    if !(4..=FRAME_BYTES_MAX).contains(&size) {
                        break;
                    }
                    let mut frame = vec![0u8; size];
                    if read.read_exact(&mut frame).await.is_err() {
                        break;
                    }
                    let correlation = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                    let waiter = pending.lock().expect("pending lock").remove(&correlation);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(Bytes::from(frame));
                    }
                }
                closed.store(true, Ordering::Relaxed);
                pending.lock().expect("pending lock").clear();
            }
        });
        Ok(Connection {
            addr: addr.to_owned(),
            writer: tokio::sync::Mutex::new(Writer { half, next_correlation: 0 }),
            pending,
            closed,
            _reader: reader,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` at `version` and waits for its answer.
    pub async fn send<R: Request>(&self, version: i16, request: &R) -> anyhow::Result<R::Response> {
        self.submit(version, request).await?.wait().await
    }

    /// Writes `request` and returns once it is sent, with the answer to wait
    /// for: requests are on the wire in the order `submit` calls finished,
    /// which idempotent producers with several requests in flight rely on.
    pub async fn submit<R: Request>(&self, version: i16, request: &R) -> anyhow::Result<Answer<R>> {
        let receiver = self.write(version, request, true).await?.expect("an answered request has a receiver");
        Ok(Answer { receiver, version, addr: self.addr.clone(), request: std::marker::PhantomData })
    }

    /// Sends `request` and returns at once: for `acks=0` produces, which get no answer.
    pub async fn send_without_answer<R: Request>(&self, version: i16, request: &R) -> anyhow::Result<()> {
        self.write(version, request, false).await.map(|_| ())
    }

    async fn write<R: Request>(
        &self,
        version: i16,
        request: &R,
        answered: bool,
    ) -> anyhow::Result<Option<oneshot::Receiver<Bytes>>> {
        if self.closed.load(Ordering::Relaxed) {
            anyhow::bail!("the connection to {} is closed", self.addr);
        }
        let mut writer = self.writer.lock().await;
        let correlation = writer.next_correlation;
        writer.next_correlation = correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("keel-bench")));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        header.encode(&mut frame, R::header_version(version))?;
        request.encode(&mut frame, version)?;
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        let receiver = answered.then(|| {
            let (sender, receiver) = oneshot::channel();
            self.pending.lock().expect("pending lock").insert(correlation, sender);
            receiver
        });
        writer.half.write_all(&frame).await.with_context(|| format!("send to {}", self.addr))?;
        Ok(receiver)
    }
}

/// The answer to a submitted request.
#[derive(Debug)]
pub struct Answer<R> {
    receiver: oneshot::Receiver<Bytes>,
    version: i16,
    addr: String,
    request: std::marker::PhantomData<fn() -> R>,
}

impl<R: Request> Answer<R> {
    pub async fn wait(self) -> anyhow::Result<R::Response> {
        let mut frame = self.receiver.await.map_err(|_| anyhow::anyhow!("the connection to {} closed", self.addr))?;
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("unknown API key {}", R::KEY))?;
        ResponseHeader::decode(&mut frame, R::Response::header_version(self.version))?;
        R::Response::decode(&mut frame, self.version)
            .with_context(|| format!("decode the {api:?} v{} answer", self.version))
    }
}

/// A connection to the first of `addresses` that answers.
pub async fn connect_any(addresses: &[String]) -> anyhow::Result<Connection> {
    let mut last = None;
    for addr in addresses {
        match Connection::connect(addr).await {
            Ok(connection) => return Ok(connection),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no address to connect to"))).context("no broker answers")
}

/// A topic's partitions and who leads them, from `Metadata`.
#[derive(Clone, Debug)]
pub struct TopicLayout {
    /// Broker id -> Kafka address.
    pub brokers: HashMap<i32, String>,
    /// Partition index -> leader broker id (-1 when leaderless).
    pub leaders: Vec<i32>,
}

/// Asks `connection` for the layout of `topic`.
pub async fn topic_layout(connection: &Connection, topic: &str) -> anyhow::Result<TopicLayout> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.to_owned()))))]));
    let answer: MetadataResponse = connection.send(METADATA_VERSION, &request).await?;
    let brokers = answer.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
    let found = answer.topics.first().context("Metadata answered no topic")?;
    if found.error_code != 0 {
        anyhow::bail!("Metadata for {topic}: error {}", found.error_code);
    }
    let mut leaders = vec![-1; found.partitions.len()];
    for partition in &found.partitions {
        if let Some(slot) = leaders.get_mut(partition.partition_index as usize) {
            *slot = partition.leader_id.0;
        }
    }
    Ok(TopicLayout { brokers, leaders })
}

/// The layout of `topic` once every partition has a leader that serves it
/// (after a failover or a restart, leaders take a moment to take over),
/// asking the brokers of the comma-separated `bootstrap` in turn.
pub async fn ready_layout(bootstrap: &str, topic: &str, timeout: std::time::Duration) -> anyhow::Result<TopicLayout> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = String::new();
    for addr in bootstrap.split(',').cycle() {
        if std::time::Instant::now() >= deadline {
            break;
        }
        // A stopped broker accepts connections (the kernel does) but never answers.
        let attempt = async { serving(&Connection::connect(addr).await?, topic).await };
        match tokio::time::timeout(std::time::Duration::from_secs(2), attempt).await {
            Ok(Ok(layout)) => return Ok(layout),
            Ok(Err(error)) => last = format!("{addr}: {error:#}"),
            Err(_) => last = format!("{addr}: no answer within 2 s"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("{topic} has partitions without a serving leader after {timeout:?}: {last}")
}

async fn serving(connection: &Connection, topic: &str) -> anyhow::Result<TopicLayout> {
    let layout = topic_layout(connection, topic).await?;
    for (partition, leader) in layout.leaders.iter().enumerate() {
        let addr = layout.brokers.get(leader).with_context(|| format!("partition {partition} has no leader"))?;
        let leader = Connection::connect(addr).await?;
        // The latest offset: answered only by a leader that serves the partition.
        let (error, _) = list_offset(&leader, topic, partition as i32, -1).await?;
        anyhow::ensure!(error == 0, "partition {partition}: error {error}");
    }
    Ok(layout)
}

/// ListOffsets of one partition at `timestamp` (-1 latest, -2 earliest, -3
/// the newest record, else the first record at or after it): (error code,
/// offset).
pub async fn list_offset(
    connection: &Connection,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> anyhow::Result<(i16, i64)> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::ListOffsetsRequest;
    let request =
        ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    let answer = connection.send(LIST_OFFSETS_VERSION, &request).await?;
    let partition =
        answer.topics.first().and_then(|t| t.partitions.first()).context("ListOffsets answered no partition")?;
    Ok((partition.error_code, partition.offset))
}

/// Creates `topic` with `partitions` partitions; an existing topic is an error.
pub async fn create_topic(connection: &Connection, topic: &str, partitions: i32) -> anyhow::Result<()> {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let request = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
        .with_num_partitions(partitions)
        .with_replication_factor(-1)]);
    let answer = connection.send(CREATE_TOPICS_VERSION, &request).await?;
    let result = answer.topics.first().context("CreateTopics answered nothing")?;
    if result.error_code != 0 {
        anyhow::bail!("CreateTopics {topic}: error {} {:?}", result.error_code, result.error_message);
    }
    Ok(())
}

/// A producer id and epoch for an idempotent producer.
pub async fn init_producer_id(connection: &Connection) -> anyhow::Result<(i64, i16)> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(-1)
        .with_producer_id((-1).into());
    let answer = connection.send(INIT_PRODUCER_ID_VERSION, &request).await?;
    if answer.error_code != 0 {
        anyhow::bail!("InitProducerId: error {}", answer.error_code);
    }
    Ok((answer.producer_id.0, answer.producer_epoch))
}

/// One uncompressed record batch of `values` (keyless, create time `timestamp`),
/// idempotent when `producer` is given as (id, epoch, base sequence).
pub fn batch(values: &[Bytes], timestamp: i64, producer: Option<(i64, i16, i32)>) -> anyhow::Result<Bytes> {
    encode_batch(values, timestamp, producer, false)
}

/// `batch` as part of producer (id, epoch, base sequence)'s transaction.
pub fn transactional_batch(values: &[Bytes], timestamp: i64, producer: (i64, i16, i32)) -> anyhow::Result<Bytes> {
    encode_batch(values, timestamp, Some(producer), true)
}

fn encode_batch(
    values: &[Bytes],
    timestamp: i64,
    producer: Option<(i64, i16, i32)>,
    transactional: bool,
) -> anyhow::Result<Bytes> {
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // One batch needs offset - sequence equal for every record; a
            // non-idempotent batch then gets base sequence -1.
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp,
            key: None,
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut bytes = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut bytes,
        &records,
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )?;
    Ok(bytes.freeze())
}

/// A produce request carrying one batch for one partition.
pub fn produce_request(topic: &str, partition: i32, acks: i16, batch: Bytes) -> ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    ProduceRequest::default().with_transactional_id(None).with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(batch))]),
    ])
}

/// The single partition answer of a one-partition produce: (error code, base offset).
pub fn produce_result(answer: &ProduceResponse) -> anyhow::Result<(i16, i64)> {
    let partition = answer
        .responses
        .first()
        .and_then(|topic| topic.partition_responses.first())
        .context("Produce answered no partition")?;
    Ok((partition.error_code, partition.base_offset))
}

/// A fetch of one partition from `offset`.
pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32, max_bytes: i32) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(max_bytes)])])
}

/// The single partition answer of a one-partition fetch: (error code, high
/// watermark, record bytes).
pub fn fetch_result(answer: &FetchResponse) -> anyhow::Result<(i16, i64, Bytes)> {
    if answer.error_code != 0 {
        anyhow::bail!("Fetch: error {}", answer.error_code);
    }
    let partition =
        answer.responses.first().and_then(|topic| topic.partitions.first()).context("Fetch answered no partition")?;
    Ok((partition.error_code, partition.high_watermark, partition.records.clone().unwrap_or_default()))
}

/// The record batches in fetched bytes: (base offset, record count, whole
/// batch), stopping at a partial batch at the end (Kafka may cut one).
pub fn split_batches(mut records: &[u8]) -> Vec<(i64, i32, &[u8])> {
    let mut batches = Vec::new();
    while records.len() >= 61 {
        let base_offset = i64::from_be_bytes(records[0..8].try_into().expect("8 bytes"));
        let length = i32::from_be_bytes(records[8..12].try_into().expect("4 bytes"));
        let Some(total) = usize::try_from(length).ok().map(|length| length + 12) else { break };
        if total > records.len() {
            break;
        }
        let count = i32::from_be_bytes(records[57..61].try_into().expect("4 bytes"));
        batches.push((base_offset, count, &records[..total]));
        records = &records[total..];
    }
    batches
}

/// The coordinator of `group` as (broker id, host:port), asked of
/// `connection` until it has one (the offsets topic may be being created,
/// or its partition changing leader) or `timeout` passes.
pub async fn find_coordinator(
    connection: &Connection,
    group: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<(i32, String)> {
    find_coordinator_of(connection, 0, group, timeout).await
}

/// The coordinator of a transactional id, as `find_coordinator`.
pub async fn find_transaction_coordinator(
    connection: &Connection,
    transactional_id: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<(i32, String)> {
    find_coordinator_of(connection, 1, transactional_id, timeout).await
}

/// The coordinator of `key` (key type 0: a group, 1: a transactional id).
async fn find_coordinator_of(
    connection: &Connection,
    key_type: i8,
    group: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<(i32, String)> {
    use kafka_protocol::messages::FindCoordinatorRequest;
    let request = FindCoordinatorRequest::default()
        .with_key_type(key_type)
        .with_coordinator_keys(vec![StrBytes::from_string(group.to_owned())]);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let answer = connection.send(FIND_COORDINATOR_VERSION, &request).await?;
        let found = answer.coordinators.first().context("FindCoordinator answered nothing")?;
        if found.error_code == 0 {
            return Ok((found.node_id.0, format!("{}:{}", found.host, found.port)));
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{group} has no coordinator after {timeout:?} (error {}): its partition of the coordinators' topic has no leader",
            found.error_code
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
