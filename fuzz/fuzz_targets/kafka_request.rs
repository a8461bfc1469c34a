//! Kafka request frames as a client (or anyone) sends them: reading the
//! header and decoding the body of every API the broker serves must never
//! panic, whatever the bytes.

#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use keel_broker_core::wire::parse;
use libfuzzer_sys::fuzz_target;

fn decode<T: Decodable>(body: &Bytes, version: i16) {
    let _ = T::decode(&mut body.clone(), version);
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = parse(Bytes::copy_from_slice(data)) else { return };
    let (body, version) = (&request.body, request.version);
    if !keel_broker_core::wire::SUPPORTED
        .iter()
        .any(|(api, min, max)| *api == request.api && (*min..=*max).contains(&version))
    {
        return;
    }
    match request.api {
        ApiKey::Produce => decode::<ProduceRequest>(body, version),
        ApiKey::Fetch => decode::<FetchRequest>(body, version),
        ApiKey::ListOffsets => decode::<ListOffsetsRequest>(body, version),
        ApiKey::Metadata => decode::<MetadataRequest>(body, version),
        ApiKey::ApiVersions => decode::<ApiVersionsRequest>(body, version),
        ApiKey::CreateTopics => decode::<CreateTopicsRequest>(body, version),
        ApiKey::DeleteTopics => decode::<DeleteTopicsRequest>(body, version),
        ApiKey::InitProducerId => decode::<InitProducerIdRequest>(body, version),
        ApiKey::DescribeConfigs => decode::<DescribeConfigsRequest>(body, version),
        ApiKey::CreatePartitions => decode::<CreatePartitionsRequest>(body, version),
        ApiKey::IncrementalAlterConfigs => decode::<IncrementalAlterConfigsRequest>(body, version),
        ApiKey::DescribeCluster => decode::<DescribeClusterRequest>(body, version),
        _ => {}
    }
});
