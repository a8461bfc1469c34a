//! The Kafka edge: the listener (`server.rs`), the dispatch of each request
//! to its handler (`request.rs`), one handler file per API, and the Kafka
//! protocol spoken to other brokers (`peers.rs`, which implements the
//! coordinators' `Peers`).
//!
//! A handler only translates: it reads the request's fields (per version),
//! calls the layer below in Keel's words, and builds the response with the
//! fields its version carries. The wire codec is the `kafka-protocol`
//! crate's; frame headers and the supported versions are the core's `wire`.
//! Nothing below this layer names a Kafka request or response type.

pub mod admin;
pub mod authorized;
pub mod delete_records;
pub mod describe_topic_partitions;
pub mod fetch;
pub mod groups;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod peers;
pub mod produce;
pub mod request;
pub mod sasl;
pub mod scram;
pub mod server;
pub mod tls;
pub mod txn;

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;
use keel_controller_client::{Image, Topic, TopicId};

/// The topic a Produce or Fetch names: by id from v13 on (the id is nil
/// before), by name before.
pub fn find_topic<'a>(image: &'a Image, name: &str, id: uuid::Uuid) -> Option<&'a Topic> {
    if id.is_nil() {
        image.topics.get(name)
    } else {
        image.topic_by_id(TopicId(id))
    }
}

fn text(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// A response's error code: 0 for none.
fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

/// Who sent a request, as DescribeGroups shows members: the client id and
/// Kafka's form of the host (`/127.0.0.1`).
#[derive(Debug)]
pub struct Client {
    pub id: String,
    pub host: String,
}

impl Client {
    pub fn of(header: &kafka_protocol::messages::RequestHeader, peer: std::net::SocketAddr) -> Client {
        Client { id: header.client_id.as_deref().unwrap_or_default().to_string(), host: format!("/{}", peer.ip()) }
    }
}
