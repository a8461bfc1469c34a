//! `CreateTopics`: Kafka's name, partition, replication and config rules
//! checked here, the topic committed by the controller quorum; answered once
//! this broker's metadata shows it. A replication factor is accepted and
//! means nothing here (every partition's data is in the WAL across three
//! zones, then in the object store), as is a valid manual assignment (its
//! partition count is used; leaders are Keel's choice). `validate_only`
//! checks everything a creation would, and creates nothing.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::*;
use keel_controller_client::topic_rules::{validate_partition_count, validate_topic_config, validate_topic_name};
use keel_controller_client::{pb, MetaError, Outcome};

use super::{kafka_error, meta_error, seen};
use crate::broker::Broker;
use crate::kafka::text;

pub(crate) async fn handle(broker: &Arc<Broker>, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut last = None;
    let default_partitions = broker.cluster.config.default_partitions;
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let configs = topic
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()));
        let checked = (|| {
            let partitions = if !topic.assignments.is_empty() {
                if topic.num_partitions != -1 || topic.replication_factor != -1 {
                    return Err((
                        ResponseError::InvalidRequest,
                        "a manual partition assignment was given, but numPartitions or replicationFactor was not -1"
                            .into(),
                    ));
                }
                let mut indexes: Vec<i32> = topic.assignments.iter().map(|a| a.partition_index).collect();
                indexes.sort_unstable();
                if indexes.iter().enumerate().any(|(i, index)| *index != i as i32) {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        "partitions in the manual partition assignment must be numbered 0 through n-1".into(),
                    ));
                }
                let image = broker.cluster.image();
                super::check_assignments(&image, topic.assignments.iter().map(|a| a.broker_ids.as_slice()))?;
                topic.assignments.len() as i32
            } else {
                if topic.replication_factor == 0 || topic.replication_factor < -1 {
                    return Err((
                        ResponseError::InvalidReplicationFactor,
                        "replication factor must be -1 or positive".into(),
                    ));
                }
                // -1: the broker's default (Kafka's num.partitions).
                if topic.num_partitions == -1 {
                    default_partitions
                } else {
                    topic.num_partitions
                }
            };
            validate_topic_name(&name).map_err(meta_error)?;
            validate_partition_count(i64::from(partitions)).map_err(meta_error)?;
            let configs = keel_controller_client::configs_from_pairs(configs).map_err(meta_error)?;
            for (key, value) in &configs {
                validate_topic_config(key, value).map_err(meta_error)?;
            }
            Ok((partitions, configs))
        })();
        let outcome = match checked {
            Err(error) => Err(error),
            Ok((partitions, configs)) if request.validate_only => {
                if broker.cluster.image().topics.contains_key(&name) {
                    Err(meta_error(MetaError::TopicAlreadyExists { name: name.clone() }))
                } else {
                    Ok((partitions, None, configs))
                }
            }
            Ok((partitions, configs)) => {
                let create = pb::CreateTopicRequest {
                    name: name.clone(),
                    partitions,
                    configs: configs.clone().into_iter().collect(),
                    ..Default::default()
                };
                match broker.cluster.client.create_topic(create).await {
                    Ok((version, Outcome::TopicCreated { id })) => {
                        last = Some(version);
                        Ok((partitions, Some(id), configs))
                    }
                    Ok((_, other)) => Err((ResponseError::UnknownServerError, format!("unexpected outcome {other:?}"))),
                    Err(error) => Err(kafka_error(error)),
                }
            }
        };
        results.push(match outcome {
            Ok((partitions, id, configs)) => {
                // Partition count, replication factor and every config are
                // answered from v5 (as DescribeConfigs would), the id from v7.
                let result = match version >= 5 {
                    true => result.with_num_partitions(partitions).with_replication_factor(1).with_configs(Some(
                        super::describe_configs::topic_entries(&configs)
                            .into_iter()
                            .map(|entry| {
                                CreatableTopicConfigs::default()
                                    .with_name(text(entry.name.to_string()))
                                    .with_value(Some(text(entry.value)))
                                    .with_config_source(entry.source)
                            })
                            .collect(),
                    )),
                    false => result,
                };
                match id {
                    Some(id) if version >= 7 => result.with_topic_id(id.0),
                    _ => result,
                }
            }
            Err((error, message)) => {
                broker.count_error("CreateTopics", error);
                result.with_error_code(error.code()).with_error_message(Some(text(message)))
            }
        });
    }
    if let Some(version) = last {
        seen(broker, version).await;
    }
    CreateTopicsResponse::default().with_topics(results)
}
