//! `AlterConfigs` (the legacy, non-incremental API that kafka-python and
//! Sarama use): a topic's configs become exactly the given ones; those not
//! given go back to their defaults. Broker settings are read-only here.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;
use keel_controller_client::pb;
use keel_controller_client::topic_configs::validate_topic_config;

use super::{meta_error, seen, RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::broker::Broker;
use crate::kafka::text;

pub(crate) async fn handle(broker: &Arc<Broker>, request: AlterConfigsRequest, _version: i16) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    let mut last = None;
    for resource in request.resources {
        let result = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let name = resource.resource_name.to_string();
        let checked = (|| {
            match resource.resource_type {
                RESOURCE_TOPIC => {}
                RESOURCE_BROKER => {
                    return Err((
                        ResponseError::InvalidRequest,
                        "broker settings are read-only here: restart the broker with new settings".to_string(),
                    ))
                }
                other => {
                    return Err((ResponseError::InvalidRequest, format!("resource type {other} is not supported")))
                }
            }
            let image = broker.cluster.image();
            let topic = image
                .topics
                .get(&name)
                .ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("unknown topic {name:?}")))?;
            let pairs = resource
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()));
            let set = keel_controller_client::configs_from_pairs(pairs).map_err(meta_error)?;
            for (key, value) in &set {
                validate_topic_config(key, value).map_err(meta_error)?;
            }
            let delete = topic.configs.keys().filter(|key| !set.contains_key(*key)).cloned().collect();
            Ok(pb::AlterConfigsRequest { name: name.clone(), set: set.into_iter().collect(), delete })
        })();
        let outcome = match checked {
            Err(error) => Err(error),
            Ok(_) if request.validate_only => Ok(()),
            Ok(alter) => super::alter_topic_configs(broker, alter, &mut last).await,
        };
        responses.push(match outcome {
            Ok(()) => result,
            Err((error, message)) => {
                broker.count_error("AlterConfigs", error);
                result.with_error_code(error.code()).with_error_message(Some(text(message)))
            }
        });
    }
    if let Some(version) = last {
        seen(broker, version).await;
    }
    AlterConfigsResponse::default().with_responses(responses)
}
