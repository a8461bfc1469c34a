//! `IncrementalAlterConfigs`: SET and DELETE of topic configs, and APPEND
//! and SUBTRACT of the items of list configs (`cleanup.policy`), applied to
//! the topic's value (or Kafka's default) in the order given.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;
use keel_controller_client::pb;
use keel_controller_client::topic_configs::{list_items, topic_config, validate_topic_config, ConfigType};
use keel_controller_client::MetaError;

use super::{meta_error, seen, OP_APPEND, OP_DELETE, OP_SET, OP_SUBTRACT, RESOURCE_TOPIC};
use crate::broker::Broker;
use crate::kafka::text;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
    _version: i16,
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
            let image = broker.cluster.image();
            let topic = image.topics.get(&name);
            let mut set: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
            let mut delete: Vec<String> = Vec::new();
            for config in &resource.configs {
                let key = config.name.to_string();
                let given = config.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                let value = match config.config_operation {
                    OP_SET => given,
                    OP_DELETE => {
                        topic_config(&key).ok_or_else(|| meta_error(MetaError::UnknownConfig { key: key.clone() }))?;
                        set.remove(&key);
                        delete.push(key);
                        continue;
                    }
                    op @ (OP_APPEND | OP_SUBTRACT) => {
                        let known = topic_config(&key)
                            .ok_or_else(|| meta_error(MetaError::UnknownConfig { key: key.clone() }))?;
                        if known.kind != ConfigType::List {
                            return Err((
                                ResponseError::InvalidConfig,
                                format!("{key} is not a list: APPEND and SUBTRACT apply to list configs only"),
                            ));
                        }
                        let current = match set.get(&key) {
                            Some(value) => value.as_str(),
                            None if delete.contains(&key) => known.default,
                            None => topic.and_then(|t| t.configs.get(&key)).map_or(known.default, String::as_str),
                        };
                        let mut items: Vec<&str> = list_items(current);
                        for item in list_items(&given) {
                            if op == OP_APPEND && !items.contains(&item) {
                                items.push(item);
                            }
                            if op == OP_SUBTRACT {
                                items.retain(|existing| *existing != item);
                            }
                        }
                        items.join(",")
                    }
                    other => return Err((ResponseError::InvalidRequest, format!("unknown config operation {other}"))),
                };
                validate_topic_config(&key, &value).map_err(meta_error)?;
                delete.retain(|deleted| *deleted != key);
                set.insert(key, value);
            }
            Ok(pb::AlterConfigsRequest { name: name.clone(), set: set.into_iter().collect(), delete })
        })();
        let outcome = match outcome {
            Err(error) => Err(error),
            Ok(_) if request.validate_only => {
                if broker.cluster.image().topics.contains_key(&name) {
                    Ok(())
                } else {
                    Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {name:?}")))
                }
            }
            Ok(alter) => super::alter_topic_configs(broker, alter, &mut last).await,
        };
        responses.push(match outcome {
            Ok(()) => result,
            Err((error, message)) => {
                broker.count_error("IncrementalAlterConfigs", error);
                result.with_error_code(error.code()).with_error_message(Some(text(message)))
            }
        });
    }
    if let Some(version) = last {
        seen(broker, version).await;
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
