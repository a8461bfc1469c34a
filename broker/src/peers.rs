//! Asking other brokers over the Kafka protocol, as a client would: the
//! end offsets of partitions they lead (an offset commit beyond a
//! partition's end is refused), and the transaction coordinator's calls
//! (markers to partition leaders, KIP-890's check from a leader to a
//! coordinator). One connection per peer, reused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListOffsetsRequest, ListOffsetsResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::broker::Broker;

const LIST_OFFSETS_VERSION: i16 = 4;
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections to other brokers by address.
#[derive(Debug, Default)]
pub struct Peers {
    connections: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<TcpStream>>>>>,
}

/// The high watermarks of `partitions` (topic, index) that this broker or
/// the others can tell now; a partition whose leader does not answer is
/// left out.
pub async fn end_offsets(broker: &Broker, partitions: &[(String, i32)]) -> HashMap<(String, i32), i64> {
    let image = broker.image();
    let mut ends = HashMap::new();
    let mut remote: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    for (name, index) in partitions {
        let Some(topic) = image.topics.get(name) else { continue };
        if broker.led(topic, *index).is_some() {
            if let Ok(view) = broker.read_view(topic, *index, -1) {
                ends.insert((name.clone(), *index), view.high_watermark);
            }
            continue;
        }
        let leader = topic.partitions.get(*index as usize).and_then(|p| p.leader);
        let Some(node) = leader.and_then(|id| image.brokers.get(&id)) else { continue };
        if let Some(addr) = node.kafka_listeners.first() {
            remote.entry(addr.clone()).or_default().push((name.clone(), *index));
        }
    }
    for (addr, wanted) in remote {
        match broker.peers.list_offsets(&addr, &wanted).await {
            Ok(found) => ends.extend(found),
            Err(error) => tracing::debug!(%addr, "cannot ask a broker for end offsets: {error:#}"),
        }
    }
    ends
}

impl Peers {
    async fn list_offsets(&self, addr: &str, wanted: &[(String, i32)]) -> anyhow::Result<HashMap<(String, i32), i64>> {
        let mut by_topic: HashMap<&str, Vec<i32>> = HashMap::new();
        for (topic, index) in wanted {
            by_topic.entry(topic).or_default().push(*index);
        }
        let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(
            by_topic
                .into_iter()
                .map(|(topic, indexes)| {
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_partitions(
                            indexes
                                .into_iter()
                                .map(|i| ListOffsetsPartition::default().with_partition_index(i).with_timestamp(-1))
                                .collect(),
                        )
                })
                .collect(),
        );
        let body = self.round_trip(addr, ApiKey::ListOffsets, LIST_OFFSETS_VERSION, &request).await?;
        let mut body = body;
        ResponseHeader::decode(&mut body, ListOffsetsResponse::header_version(LIST_OFFSETS_VERSION))?;
        let response = ListOffsetsResponse::decode(&mut body, LIST_OFFSETS_VERSION)?;
        let mut ends = HashMap::new();
        for topic in response.topics {
            for partition in topic.partitions.into_iter().filter(|p| p.error_code == 0) {
                ends.insert((topic.name.0.to_string(), partition.partition_index), partition.offset);
            }
        }
        Ok(ends)
    }

    /// Sends `request` to the broker at `addr` and decodes its answer.
    pub async fn call<R: Encodable + HeaderVersion, A: Decodable + HeaderVersion>(
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
