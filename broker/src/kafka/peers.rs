//! Asking other brokers over the Kafka protocol, as a client would: what
//! the coordinators ask of their peers (`coordinator::Peers`): the end
//! offsets of partitions they lead, a transaction's markers for the
//! partitions they lead, and a transaction coordinator's word on a
//! partition (AddPartitionsToTxn v4, KIP-890). One connection per peer,
//! reused; every exchange has a deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, BrokerId, ListOffsetsRequest, ListOffsetsResponse,
    ProducerId, RequestHeader, ResponseHeader, TopicName, TransactionalId, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use keel_controller_client::Offset;

use crate::coordinator::peers::{Marker, PartitionResults, Peers, Verify};

const LIST_OFFSETS_VERSION: i16 = 4;
const WRITE_TXN_MARKERS_VERSION: i16 = 1;
const ADD_PARTITIONS_VERIFY_VERSION: i16 = 4;
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections to other brokers by address.
#[derive(Debug, Default)]
pub struct KafkaPeers {
    connections: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<TcpStream>>>>>,
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// A partition's error code as a result.
fn result_of(code: i16) -> Result<(), ResponseError> {
    match code {
        0 => Ok(()),
        code => Err(ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError)),
    }
}

/// Partitions grouped by topic, in order.
fn by_topic(partitions: &[(String, i32)]) -> BTreeMap<&str, Vec<i32>> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in partitions {
        topics.entry(topic).or_default().push(*index);
    }
    topics
}

#[async_trait]
impl Peers for KafkaPeers {
    async fn end_offsets(
        &self,
        addr: &str,
        partitions: &[(String, i32)],
    ) -> anyhow::Result<HashMap<(String, i32), Offset>> {
        self.list_offsets(addr, partitions).await
    }

    async fn write_marker(&self, addr: &str, marker: &Marker) -> anyhow::Result<PartitionResults> {
        let request = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(marker.producer_id.0))
            .with_producer_epoch(marker.producer_epoch)
            .with_transaction_result(marker.commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(
                by_topic(&marker.partitions)
                    .into_iter()
                    .map(|(t, indexes)| {
                        WritableTxnMarkerTopic::default().with_name(name(t)).with_partition_indexes(indexes)
                    })
                    .collect(),
            )]);
        let response: WriteTxnMarkersResponse =
            self.call(addr, ApiKey::WriteTxnMarkers, WRITE_TXN_MARKERS_VERSION, &request).await?;
        Ok(response
            .markers
            .iter()
            .flat_map(|m| &m.topics)
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|p| ((topic.name.0.to_string(), p.partition_index), result_of(p.error_code)))
            })
            .collect())
    }

    async fn verify(&self, addr: &str, verify: &Verify) -> anyhow::Result<PartitionResults> {
        let transaction = AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(verify.transactional_id.clone())))
            .with_producer_id(ProducerId(verify.producer_id.0))
            .with_producer_epoch(verify.producer_epoch)
            .with_verify_only(true)
            .with_topics(
                by_topic(&verify.partitions)
                    .into_iter()
                    .map(|(t, p)| AddPartitionsToTxnTopic::default().with_name(name(t)).with_partitions(p))
                    .collect(),
            );
        let request = AddPartitionsToTxnRequest::default().with_transactions(vec![transaction]);
        let response: AddPartitionsToTxnResponse =
            self.call(addr, ApiKey::AddPartitionsToTxn, ADD_PARTITIONS_VERIFY_VERSION, &request).await?;
        anyhow::ensure!(response.error_code == 0, "the coordinator answered error {}", response.error_code);
        Ok(response
            .results_by_transaction
            .iter()
            .flat_map(|result| &result.topic_results)
            .flat_map(|topic| {
                topic
                    .results_by_partition
                    .iter()
                    .map(|p| ((topic.name.0.to_string(), p.partition_index), result_of(p.partition_error_code)))
            })
            .collect())
    }
}

impl KafkaPeers {
    async fn list_offsets(
        &self,
        addr: &str,
        wanted: &[(String, i32)],
    ) -> anyhow::Result<HashMap<(String, i32), Offset>> {
        let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(
            by_topic(wanted)
                .into_iter()
                .map(|(topic, indexes)| {
                    ListOffsetsTopic::default().with_name(name(topic)).with_partitions(
                        indexes
                            .into_iter()
                            .map(|i| ListOffsetsPartition::default().with_partition_index(i).with_timestamp(-1))
                            .collect(),
                    )
                })
                .collect(),
        );
        let response: ListOffsetsResponse =
            self.call(addr, ApiKey::ListOffsets, LIST_OFFSETS_VERSION, &request).await?;
        let mut ends = HashMap::new();
        for topic in response.topics {
            for partition in topic.partitions.into_iter().filter(|p| p.error_code == 0) {
                ends.insert((topic.name.0.to_string(), partition.partition_index), Offset(partition.offset));
            }
        }
        Ok(ends)
    }

    /// Sends `request` to the broker at `addr` and decodes its answer.
    async fn call<R: Encodable + HeaderVersion, A: Decodable + HeaderVersion>(
        &self,
        addr: &str,
        api: ApiKey,
        version: i16,
        request: &R,
    ) -> anyhow::Result<A> {
        let mut body = self.round_trip(addr, api, version, request).await?;
        ResponseHeader::decode(&mut body, A::header_version(version))?;
        A::decode(&mut body, version)
    }

    /// Sends one request on the peer's connection (made if needed) and
    /// returns the response frame; a failed connection is dropped.
    async fn round_trip<R: Encodable + HeaderVersion>(
        &self,
        addr: &str,
        api: ApiKey,
        version: i16,
        request: &R,
    ) -> anyhow::Result<Bytes> {
        let slot = {
            let mut connections = self.connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            connections.entry(addr.to_owned()).or_default().clone()
        };
        let mut connection = slot.lock().await;
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("keel-broker")))
            .encode(&mut frame, R::header_version(version))?;
        request.encode(&mut frame, version)?;
        let length = (frame.len() - 4) as i32;
        frame[0..4].copy_from_slice(&length.to_be_bytes());
        let exchange = async {
            if connection.is_none() {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                *connection = Some(stream);
            }
            let stream = connection.as_mut().expect("connected above");
            stream.write_all(&frame).await?;
            let length = stream.read_i32().await?;
            anyhow::ensure!((0..64 << 20).contains(&length), "a response of {length} bytes");
            let mut body = vec![0u8; length as usize];
            stream.read_exact(&mut body).await?;
            anyhow::Ok(Bytes::from(body))
        };
        match tokio::time::timeout(PEER_TIMEOUT, exchange).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(error)) => {
                *connection = None;
                Err(error)
            }
            Err(_) => {
                *connection = None;
                anyhow::bail!("no answer within {PEER_TIMEOUT:?}")
            }
        }
    }
}
