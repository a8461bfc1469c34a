//! `IncrementalAlterConfigs`: SET and DELETE of topic configs.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;
use keel_controller_client::pb;
use keel_controller_client::topic_rules::validate_topic_config;

use super::{kafka_error, meta_error, seen, OP_DELETE, OP_SET, RESOURCE_TOPIC};
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
                if broker.cluster.image().topics.contains_key(&name) {
                    Ok(())
                } else {
                    Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {name:?}")))
                }
            }
            Ok(alter) => match broker.cluster.client.alter_configs(alter).await {
                Ok((version, _)) => {
                    last = Some(version);
                    Ok(())
                }
                Err(error) => Err(kafka_error(error)),
            },
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
