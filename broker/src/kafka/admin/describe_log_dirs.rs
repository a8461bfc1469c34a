//! `DescribeLogDirs`: the sizes of the partitions this broker leads, for
//! UIs and `kafka-log-dirs`. A broker keeps no log on disk: its one "log
//! directory" is the object store, and a partition's size is the bytes of
//! its objects from its start offset (what is not uploaded yet, at most
//! `upload_bytes` per log, is not counted). Disk totals are unknown (-1).

use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use crate::broker::Broker;
use crate::kafka::text;

/// The name this broker's one log directory is reported under.
const LOG_DIR: &str = "object-store";

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: DescribeLogDirsRequest,
    _version: i16,
) -> DescribeLogDirsResponse {
    let image = broker.cluster.image();
    let me = broker.cluster.config.node_id;
    let wanted = |topic: &str, index: u32| match &request.topics {
        None => true,
        Some(topics) => topics.iter().any(|t| t.topic.0.as_str() == topic && t.partitions.contains(&(index as i32))),
    };
    let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
    for (topic, index, partition) in image.led_by(me).filter(|(topic, index, _)| wanted(&topic.name, *index)) {
        let size: u64 = image
            .object_ranges_from(partition.stream_id, partition.start_offset)
            .into_iter()
            .map(|(_, range)| range.len)
            .sum();
        let described = DescribeLogDirsPartition::default()
            .with_partition_index(index as i32)
            .with_partition_size(size as i64)
            .with_offset_lag(0);
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic.name) {
            Some(found) => found.partitions.push(described),
            None => topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(text(topic.name.clone())))
                    .with_partitions(vec![described]),
            ),
        }
    }
    let result = DescribeLogDirsResult::default()
        .with_log_dir(text(LOG_DIR.to_string()))
        .with_topics(topics)
        .with_total_bytes(-1)
        .with_usable_bytes(-1);
    DescribeLogDirsResponse::default().with_results(vec![result])
}
