//! Admin APIs: topics, partitions and configs. Any broker takes them and
//! forwards the change to the controller quorum, which checks it (Kafka's
//! topic-name, partition and config rules) and commits it; the answer waits
//! until this broker's metadata shows the change, so a client's next
//! `Metadata` sees it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use keel_controller_client::topic_rules::{
    validate_partition_count, validate_topic_config, validate_topic_name, TOPIC_CONFIG_KEYS,
};
use keel_controller_client::{pb, ClientError, MetaError, NodeState, Outcome, Version};

use crate::broker::Broker;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// The Kafka error for a controller refusal, with its message.
fn kafka_error(error: &ClientError) -> (ResponseError, String) {
    let code = match error {
        ClientError::Meta(meta) => match meta {
            MetaError::TopicAlreadyExists { .. } => ResponseError::TopicAlreadyExists,
            MetaError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
            MetaError::UnknownTopic { .. } => ResponseError::UnknownTopicOrPartition,
            MetaError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
            MetaError::UnknownConfig { .. } | MetaError::InvalidConfig { .. } => ResponseError::InvalidConfig,
            MetaError::InvalidRequest { .. } => ResponseError::InvalidRequest,
            MetaError::NoLeader | MetaError::Internal { .. } => ResponseError::NotController,
            _ => ResponseError::UnknownServerError,
        },
        ClientError::Unavailable { .. } => ResponseError::RequestTimedOut,
        ClientError::Refused(_) | ClientError::Decode(_) => ResponseError::UnknownServerError,
    };
    (code, error.to_string())
}

fn meta_error(error: MetaError) -> (ResponseError, String) {
    kafka_error(&ClientError::Meta(error))
}

/// Waits (briefly) until this broker's metadata shows a committed change.
async fn seen(broker: &Broker, version: Version) {
    let mut images = broker.images.clone();
    let _ = keel_controller_client::follower::wait_for_version(&mut images, version, Duration::from_secs(5)).await;
}

fn text(value: String) -> StrBytes {
    StrBytes::from_string(value)
}

pub(super) async fn create_topics(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut last = None;
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let configs = topic
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()));
        let checked = (|| {
            if !topic.assignments.is_empty() {
                return Err(meta_error(MetaError::InvalidRequest {
                    reason: "manual replica assignments are not supported: Keel places leaders itself".into(),
                }));
            }
            if topic.replication_factor == 0 || topic.replication_factor < -1 {
                return Err((
                    ResponseError::InvalidReplicationFactor,
                    "replication factor must be -1 or positive".into(),
                ));
            }
            let partitions = if topic.num_partitions == -1 { 1 } else { topic.num_partitions };
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
            Ok((partitions, _)) if request.validate_only => {
                if broker.image().topics.contains_key(&name) {
                    Err(meta_error(MetaError::TopicAlreadyExists { name: name.clone() }))
                } else {
                    Ok((partitions, None))
                }
            }
            Ok((partitions, configs)) => {
                let create = pb::CreateTopicRequest {
                    name: name.clone(),
                    partitions,
                    configs: configs.into_iter().collect(),
                    ..Default::default()
                };
                match broker.client.create_topic(create).await {
                    Ok((version, Outcome::TopicCreated { id })) => {
                        last = Some(version);
                        Ok((partitions, Some(id)))
                    }
                    Ok((_, other)) => Err((ResponseError::UnknownServerError, format!("unexpected outcome {other:?}"))),
                    Err(error) => Err(kafka_error(&error)),
                }
            }
        };
        results.push(match outcome {
            Ok((partitions, id)) => {
                // Partition count and replication factor are answered from v5, the id from v7.
                let result = match version >= 5 {
                    true => result.with_num_partitions(partitions).with_replication_factor(1),
                    false => result,
                };
                match id {
                    Some(id) if version >= 7 => result.with_topic_id(id.0),
                    _ => result,
                }
            }
            Err((error, message)) => {
                super::count_error(broker, "CreateTopics", error);
                result.with_error_code(error.code()).with_error_message(Some(text(message)))
            }
        });
    }
    if let Some(version) = last {
        seen(broker, version).await;
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub(super) async fn delete_topics(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // Before v6 topics are named in `topic_names`; from v6 by name or id in `topics`.
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        request.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)).collect()
    } else {
        request.topic_names.iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect()
    };
    let mut results = Vec::with_capacity(wanted.len());
    let mut last = None;
    for (name, id) in wanted {
        let image = broker.image();
        let topic = match &name {
            Some(name) => image.topics.get(name),
            None => image.topic_by_id(keel_controller_client::TopicId(id)),
        };
        let result =
            DeletableTopicResult::default().with_name(name.clone().map(|n| TopicName(text(n)))).with_topic_id(id);
        let outcome = match topic {
            None if name.is_none() => Err((ResponseError::UnknownTopicId, format!("no topic has id {id}"))),
            None => {
                Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {:?}", name.unwrap_or_default())))
            }
            Some(topic) => match broker.client.delete_topic(&topic.name).await {
                Ok((version, _)) => {
                    last = Some(version);
                    Ok((topic.name.clone(), topic.id.0))
                }
                Err(error) => Err(kafka_error(&error)),
            },
        };
        results.push(match outcome {
            // Topic ids are answered from v6, error messages from v5.
            Ok((name, id)) => result.with_name(Some(TopicName(text(name)))).with_topic_id(if version >= 6 {
                id
            } else {
                uuid::Uuid::nil()
            }),
            Err((error, message)) => {
                super::count_error(broker, "DeleteTopics", error);
                result.with_error_code(error.code()).with_error_message((version >= 5).then(|| text(message)))
            }
        });
    }
    if let Some(version) = last {
        seen(broker, version).await;
    }
    DeleteTopicsResponse::default().with_responses(results)
}

pub(super) async fn create_partitions(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut last = None;
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let image = broker.image();
        let outcome = match image.topics.get(&name) {
            None => Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {name:?}"))),
            Some(_) if topic.assignments.is_some() => Err((
                ResponseError::InvalidRequest,
                "manual replica assignments are not supported: Keel places leaders itself".into(),
            )),
            Some(existing) if topic.count <= existing.partitions.len() as i32 => Err((
                ResponseError::InvalidPartitions,
                format!("topic {name:?} has {} partitions; the new count must be larger", existing.partitions.len()),
            )),
            Some(_) if request.validate_only => validate_partition_count(i64::from(topic.count)).map_err(meta_error),
            Some(_) => match broker.client.create_partitions(&name, topic.count).await {
                Ok((version, _)) => {
                    last = Some(version);
                    Ok(())
                }
                Err(error) => Err(kafka_error(&error)),
            },
        };
        results.push(match outcome {
            Ok(()) => result,
            Err((error, message)) => {
                super::count_error(broker, "CreatePartitions", error);
                result.with_error_code(error.code()).with_error_message(Some(text(message)))
            }
        });
    }
    if let Some(version) = last {
        seen(broker, version).await;
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub(super) fn describe_configs(broker: &Arc<Broker>, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let image = broker.image();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let wanted = |key: &str| {
                resource.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
            };
            match resource.resource_type {
                RESOURCE_TOPIC => match image.topics.get(resource.resource_name.as_str()) {
                    None => result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(text(format!("unknown topic {:?}", resource.resource_name.as_str())))),
                    Some(topic) => result.with_configs(
                        TOPIC_CONFIG_KEYS
                            .iter()
                            .filter(|key| wanted(key))
                            .map(|key| {
                                let (value, source) = match topic.configs.get(*key) {
                                    Some(value) => (value.as_str(), SOURCE_TOPIC),
                                    None => (topic.config(key).unwrap_or_default(), SOURCE_DEFAULT),
                                };
                                DescribeConfigsResourceResult::default()
                                    .with_name(text(key.to_string()))
                                    .with_value(Some(text(value.to_string())))
                                    .with_config_source(source)
                            })
                            .collect(),
                    ),
                },
                RESOURCE_BROKER => {
                    let settings: HashMap<&str, String> = HashMap::from([
                        ("broker.id", broker.config.node_id.0.to_string()),
                        ("broker.rack", broker.config.zone.clone()),
                        ("socket.request.max.bytes", broker.config.request_bytes_max.to_string()),
                    ]);
                    let mut keys: Vec<&&str> = settings.keys().filter(|key| wanted(key)).collect();
                    keys.sort();
                    result.with_configs(
                        keys.into_iter()
                            .map(|key| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(text(key.to_string()))
                                    .with_value(Some(text(settings[*key].clone())))
                                    .with_read_only(true)
                                    .with_config_source(SOURCE_DEFAULT)
                            })
                            .collect(),
                    )
                }
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(text(format!("resource type {other} is not supported")))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

pub(super) async fn incremental_alter_configs(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    let mut last = None;
    for resource in request.resources {
        let result = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let name = resource.resource_name.to_string();
        let outcome = (|| {
            if resource.resource_type != RESOURCE_TOPIC {
                return Err((ResponseError::InvalidRequest, "only topic configs can be changed".to_string()));
            }
            let mut set = std::collections::BTreeMap::new();
            let mut delete = Vec::new();
            for config in &resource.configs {
                let key = config.name.to_string();
                match config.config_operation {
                    OP_SET => {
                        let value = config.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                        validate_topic_config(&key, &value).map_err(meta_error)?;
                        set.insert(key, value);
                    }
                    OP_DELETE => delete.push(key),
                    other => {
                        return Err((
                            ResponseError::InvalidRequest,
                            format!("config operation {other} (APPEND/SUBTRACT) applies to list configs only"),
                        ))
                    }
                }
            }
            Ok(pb::AlterConfigsRequest { name: name.clone(), set: set.into_iter().collect(), delete })
        })();
        let outcome = match outcome {
            Err(error) => Err(error),
            Ok(_) if request.validate_only => {
                if broker.image().topics.contains_key(&name) {
                    Ok(())
                } else {
                    Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {name:?}")))
                }
            }
            Ok(alter) => match broker.client.alter_configs(alter).await {
                Ok((version, _)) => {
                    last = Some(version);
                    Ok(())
                }
                Err(error) => Err(kafka_error(&error)),
            },
        };
        responses.push(match outcome {
            Ok(()) => result,
            Err((error, message)) => {
                super::count_error(broker, "IncrementalAlterConfigs", error);
                result.with_error_code(error.code()).with_error_message(Some(text(message)))
            }
        });
    }
    if let Some(version) = last {
        seen(broker, version).await;
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

pub(super) fn describe_cluster(broker: &Arc<Broker>, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let image = broker.image();
    let brokers = image
        .brokers
        .values()
        .filter(|node| request.include_fenced_brokers || node.state == NodeState::Active)
        .filter_map(|node| {
            let (host, port) = super::metadata::kafka_endpoint(node)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(node.id.0 as i32))
                    .with_host(text(host))
                    .with_port(port)
                    .with_rack(Some(text(node.zone.clone())))
                    .with_is_fenced(node.state != NodeState::Active),
            )
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(text(broker.config.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.config.node_id.0 as i32))
        .with_brokers(brokers)
}
