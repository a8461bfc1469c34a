//! The Kafka request frame without its socket: reading a request's header,
//! decoding its body and encoding an answer, with the APIs and versions
//! this broker speaks (`versions.rs`). The codec is the `kafka-protocol`
//! crate's; this is the only module of the core that names Kafka request
//! and response types (the rest of the edge is `keel-broker`'s `kafka/`).

pub mod versions;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

pub use versions::SUPPORTED;

/// Why a connection is closed instead of answered, as Kafka does for
/// requests it cannot read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} v{version} is not supported (supported: v{min}-v{max})")]
    UnsupportedVersion { api: ApiKey, version: i16, min: i16, max: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed { api: ApiKey, version: i16, reason: String },
    #[error("request shorter than its header")]
    Short,
    /// A broker bug: an answer that this version of the API cannot carry.
    #[error("BUG: the answer to {api:?} v{version} cannot be encoded: {reason}")]
    Encode { api: ApiKey, version: i16, reason: String },
}

/// A decoded request header and the rest of the frame.
#[derive(Debug)]
pub struct Request {
    pub api: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// Reads a request frame's header.
pub fn parse(mut frame: Bytes) -> Result<Request, Unreadable> {
    if frame.len() < 4 {
        return Err(Unreadable::Short);
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| Unreadable::UnknownApi(key))?;
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|error| Unreadable::Malformed { api, version, reason: error.to_string() })?;
    Ok(Request { api, version, header, body: frame })
}

/// Decodes a request body of `api` at `version`.
pub fn decode<T: Decodable>(api: ApiKey, version: i16, mut body: Bytes) -> Result<T, Unreadable> {
    T::decode(&mut body, version).map_err(|error| Unreadable::Malformed { api, version, reason: error.to_string() })
}

/// A response frame: length, header, body.
pub fn encode<T: Encodable + HeaderVersion>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &T,
) -> Result<BytesMut, Unreadable> {
    let failed = |reason: String| Unreadable::Encode { api, version, reason };
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, T::header_version(version))
        .map_err(|error| failed(error.to_string()))?;
    response.encode(&mut out, version).map_err(|error| failed(error.to_string()))?;
    let length = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&length.to_be_bytes());
    Ok(out)
}
