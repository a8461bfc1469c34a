//! `DescribeConfigs`: every topic config Kafka 4 defines, with its value
//! (the topic's own, or Kafka's default), source, type, synonyms and
//! documentation as a Kafka broker reports them; and a broker's settings,
//! with the broker-level synonyms of the topic configs at their defaults.
//! Broker settings are read-only: they change by restarting with new flags.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::*;
use keel_controller_client::topic_configs::{ConfigType, TOPIC_CONFIGS};

use super::{RESOURCE_BROKER, RESOURCE_TOPIC, SOURCE_DEFAULT, SOURCE_STATIC_BROKER, SOURCE_TOPIC};
use crate::broker::Broker;
use crate::config::listeners::INTER_BROKER;
use crate::kafka::text;

/// One config as DescribeConfigs reports it.
pub(super) struct Entry<'a> {
    pub(super) name: &'a str,
    pub(super) value: String,
    pub(super) source: i8,
    kind: ConfigType,
    read_only: bool,
    doc: &'a str,
    /// (name, value, source), most specific first, the entry itself included.
    synonyms: Vec<(&'a str, String, i8)>,
}

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let image = broker.cluster.image();
    let (synonyms, documentation) = (request.include_synonyms, version >= 3 && request.include_documentation);
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let entries = match resource.resource_type {
                RESOURCE_TOPIC => match image.topics.get(resource.resource_name.as_str()) {
                    None => {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(text(format!(
                                "unknown topic {:?}",
                                resource.resource_name.as_str()
                            ))))
                    }
                    Some(topic) => topic_entries(&topic.configs),
                },
                RESOURCE_BROKER => broker_entries(broker),
                other => {
                    return result
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(text(format!("resource type {other} is not supported"))))
                }
            };
            let wanted = |name: &str| {
                resource.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            let configs = entries
                .into_iter()
                .filter(|entry| wanted(entry.name))
                .map(|entry| {
                    let listed = if synonyms { entry.synonyms.iter() } else { [].iter() };
                    DescribeConfigsResourceResult::default()
                        .with_name(text(entry.name.to_string()))
                        .with_value(Some(text(entry.value.clone())))
                        .with_read_only(entry.read_only)
                        .with_config_source(entry.source)
                        .with_config_type(entry.kind as i8)
                        .with_documentation(documentation.then(|| text(entry.doc.to_string())))
                        .with_synonyms(
                            listed
                                .map(|(name, value, source)| {
                                    DescribeConfigsSynonym::default()
                                        .with_name(text(name.to_string()))
                                        .with_value(Some(text(value.clone())))
                                        .with_source(*source)
                                })
                                .collect(),
                        )
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Every topic config: the topic's value, else Kafka's default (which
/// Kafka takes from the broker synonym).
pub(super) fn topic_entries(set: &std::collections::BTreeMap<String, String>) -> Vec<Entry<'static>> {
    TOPIC_CONFIGS
        .iter()
        .map(|config| {
            let own = set.get(config.name);
            let mut synonyms = Vec::new();
            if let Some(value) = own {
                synonyms.push((config.name, value.clone(), SOURCE_TOPIC));
            }
            if let Some(synonym) = config.synonym {
                synonyms.push((synonym, config.default.to_string(), SOURCE_DEFAULT));
            }
            Entry {
                name: config.name,
                value: own.cloned().unwrap_or_else(|| config.default.to_string()),
                source: if own.is_some() { SOURCE_TOPIC } else { SOURCE_DEFAULT },
                kind: config.kind,
                read_only: false,
                doc: config.doc,
                synonyms,
            }
        })
        .collect()
}

/// This broker's settings under Kafka's names, then the broker-level
/// synonyms of the topic configs at Kafka's defaults.
fn broker_entries(broker: &Broker) -> Vec<Entry<'static>> {
    let config = &broker.cluster.config;
    let set = |name: &'static str, value: String, kind: ConfigType, doc: &'static str| Entry {
        name,
        value: value.clone(),
        source: SOURCE_STATIC_BROKER,
        kind,
        read_only: true,
        doc,
        synonyms: vec![(name, value, SOURCE_STATIC_BROKER)],
    };
    let mut entries = vec![
        set(
            "advertised.listeners",
            broker
                .cluster
                .image()
                .brokers
                .get(&config.node_id)
                .map_or_else(|| format!("PLAINTEXT://{}", config.advertise), |node| node.kafka_listeners.join(",")),
            ConfigType::List,
            "The addresses clients are given for this broker, per listener (advertise, advertised_listeners).",
        ),
        set(
            "listener.security.protocol.map",
            config.listeners.iter().map(|l| format!("{}:{}", l.name, l.protocol.name())).collect::<Vec<_>>().join(","),
            ConfigType::List,
            "Each listener's security protocol (listener_security_protocol_map).",
        ),
        set(
            "inter.broker.listener.name",
            INTER_BROKER.to_owned(),
            ConfigType::String,
            "The listener brokers reach each other at: the one at `listen`.",
        ),
        set(
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            ConfigType::Boolean,
            "Whether a Metadata request for an unknown topic creates it (auto_create_topics).",
        ),
        set("broker.id", config.node_id.0.to_string(), ConfigType::Int, "This broker's id (node_id)."),
        set("broker.rack", config.zone.clone(), ConfigType::String, "This broker's availability zone (zone)."),
        set(
            "group.initial.rebalance.delay.ms",
            config.group_initial_rebalance_delay.as_millis().to_string(),
            ConfigType::Int,
            "How long a new classic group waits for more members (group_initial_rebalance_delay).",
        ),
        set(
            "listeners",
            format!("PLAINTEXT://{}", config.listen),
            ConfigType::List,
            "The address this broker listens on for Kafka clients (listen).",
        ),
        set(
            "max.connections",
            config.connections_max.to_string(),
            ConfigType::Int,
            "The most client connections open at once (connections_max).",
        ),
        set(
            "num.partitions",
            config.default_partitions.to_string(),
            ConfigType::Int,
            "The partitions of an auto-created topic, or of one created with -1 (default_partitions).",
        ),
        set(
            "offsets.retention.minutes",
            (config.offsets_retention.as_secs() / 60).to_string(),
            ConfigType::Int,
            "How long an empty group's committed offsets are kept (offsets_retention).",
        ),
        set(
            "offsets.topic.num.partitions",
            config.offsets_topic_partitions.to_string(),
            ConfigType::Int,
            "The partitions of __consumer_offsets (offsets_topic_partitions).",
        ),
        set(
            "producer.id.expiration.ms",
            config.producer_id_expiration.as_millis().to_string(),
            ConfigType::Int,
            "How long an idle producer's state is kept (producer_id_expiration).",
        ),
        set(
            "socket.request.max.bytes",
            config.request_bytes_max.to_string(),
            ConfigType::Int,
            "The largest request accepted (request_bytes_max).",
        ),
        set(
            "transaction.state.log.num.partitions",
            config.transaction_state_partitions.to_string(),
            ConfigType::Int,
            "The partitions of __transaction_state (transaction_state_partitions).",
        ),
        set(
            "transactional.id.expiration.ms",
            config.transactional_id_expiration.as_millis().to_string(),
            ConfigType::Int,
            "How long an idle transactional id is kept (transactional_id_expiration).",
        ),
    ];
    let mut seen: Vec<&str> = entries.iter().map(|entry| entry.name).collect();
    for topic_config in TOPIC_CONFIGS {
        let Some(name) = topic_config.synonym else { continue };
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        entries.push(Entry {
            name,
            value: topic_config.default.to_string(),
            source: SOURCE_DEFAULT,
            kind: topic_config.kind,
            read_only: true,
            doc: topic_config.doc,
            synonyms: vec![(name, topic_config.default.to_string(), SOURCE_DEFAULT)],
        });
    }
    entries.sort_by(|a, b| a.name.cmp(b.name));
    entries
}
