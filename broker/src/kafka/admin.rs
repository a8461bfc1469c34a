//! Admin APIs: topics, partitions and configs, one file each. Any broker
//! takes them and forwards the change to the controller quorum, which checks
//! it (Kafka's topic-name, partition and config rules) and commits it; the
//! answer waits until this broker's metadata shows the change, so a
//! client's next `Metadata` sees it.

pub mod alter_configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_log_dirs;
pub mod elect_leaders;
pub mod incremental_alter_configs;
pub mod partition_reassignments;
pub mod scram_credentials;

use kafka_protocol::error::ResponseError;
use keel_controller_client::{ClientError, MetaError, Version};

use crate::broker::Broker;
use crate::error::BrokerError;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// The Kafka error for a controller's refusal, with what the client may be
/// told of it: its own mistake verbatim, internal detail only in the log.
fn kafka_error(error: ClientError) -> (ResponseError, String) {
    let error = BrokerError::Metadata(error);
    let message = error.client_message().unwrap_or_else(|| {
        tracing::warn!("an admin request could not be committed: {error}");
        "the controller quorum could not take the change now; retry".to_owned()
    });
    (error.kafka_error(), message)
}

/// A refusal of the request's own content, found before asking the controllers.
fn meta_error(error: MetaError) -> (ResponseError, String) {
    kafka_error(ClientError::Meta(error))
}

/// Checks manual replica assignments (CreateTopics, CreatePartitions) as
/// Kafka does: every replica list non-empty, of one length, without a
/// broker twice, of registered brokers only. Keel keeps no replicas (the
/// WAL and the object store hold the data) and places leaders itself, so a
/// valid assignment is accepted and otherwise ignored.
fn check_assignments<'a>(
    image: &keel_controller_client::Image,
    lists: impl IntoIterator<Item = &'a [kafka_protocol::messages::BrokerId]>,
) -> Result<(), (ResponseError, String)> {
    let invalid = |message: String| Err((ResponseError::InvalidReplicaAssignment, message));
    let mut length = None;
    for replicas in lists {
        if replicas.is_empty() {
            return invalid("the manual partition assignment includes an empty replica list".into());
        }
        if *length.get_or_insert(replicas.len()) != replicas.len() {
            return invalid(
                "all partitions in the manual partition assignment must have the same number of replicas".into(),
            );
        }
        for (i, broker) in replicas.iter().enumerate() {
            if replicas[..i].contains(broker) {
                return invalid(format!(
                    "the manual partition assignment includes the broker {} more than once",
                    broker.0
                ));
            }
            let registered =
                u32::try_from(broker.0).is_ok_and(|id| image.brokers.contains_key(&keel_controller_client::NodeId(id)));
            if !registered {
                return invalid(format!(
                    "the manual partition assignment includes broker {}, but no such broker is registered",
                    broker.0
                ));
            }
        }
    }
    Ok(())
}

/// Commits a change of a topic's configs (AlterConfigs and
/// IncrementalAlterConfigs), keeping in `last` the metadata version reached.
async fn alter_topic_configs(
    broker: &Broker,
    alter: keel_controller_client::pb::AlterConfigsRequest,
    last: &mut Option<Version>,
) -> Result<(), (ResponseError, String)> {
    let (version, _) = broker.cluster.client.alter_configs(alter).await.map_err(kafka_error)?;
    *last = Some(version);
    Ok(())
}

/// Waits (briefly) until this broker's metadata shows a committed change.
async fn seen(broker: &Broker, version: Version) {
    let _ = broker.cluster.seen(version).await;
}
