//! `DeleteTopics`: by name, or by id from v6; answered once this broker's
//! metadata shows the deletion.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;

use super::{kafka_error, seen};
use crate::broker::Broker;
use crate::kafka::text;

pub(crate) async fn handle(broker: &Arc<Broker>, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    // Before v6 topics are named in `topic_names`; from v6 by name or id in `topics`.
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        request.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)).collect()
    } else {
        request.topic_names.iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect()
    };
    let mut results = Vec::with_capacity(wanted.len());
    let mut last = None;
    for (name, id) in wanted {
        let image = broker.cluster.image();
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
            Some(topic) => match broker.cluster.client.delete_topic(&topic.name).await {
                Ok((version, _)) => {
                    last = Some(version);
                    Ok((topic.name.clone(), topic.id.0))
                }
                Err(error) => Err(kafka_error(error)),
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
                broker.count_error("DeleteTopics", error);
                result.with_error_code(error.code()).with_error_message((version >= 5).then(|| text(message)))
            }
        });
    }
    if let Some(version) = last {
        seen(broker, version).await;
    }
    DeleteTopicsResponse::default().with_responses(results)
}
