//! `DescribeConfigs`: a topic's configs (set, or Kafka's defaults) and a
//! few read-only broker settings.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use std::collections::HashMap;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::*;
use keel_controller_client::topic_rules::TOPIC_CONFIG_KEYS;

use super::{RESOURCE_BROKER, RESOURCE_TOPIC, SOURCE_DEFAULT, SOURCE_TOPIC};
use crate::broker::Broker;
use crate::kafka::text;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let image = broker.cluster.image();
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
                        ("broker.id", broker.cluster.config.node_id.0.to_string()),
                        ("broker.rack", broker.cluster.config.zone.clone()),
                        ("socket.request.max.bytes", broker.cluster.config.request_bytes_max.to_string()),
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
