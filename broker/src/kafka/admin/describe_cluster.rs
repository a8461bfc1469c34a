//! `DescribeCluster`: the active (and, if asked, fenced) brokers.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::*;
use keel_controller_client::NodeState;

use crate::broker::Broker;
use crate::kafka::text;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: DescribeClusterRequest,
    _version: i16,
    listener: &str,
) -> DescribeClusterResponse {
    let image = broker.cluster.image();
    let brokers = image
        .brokers
        .values()
        .filter(|node| request.include_fenced_brokers || node.state == NodeState::Active)
        .filter_map(|node| {
            let (host, port) = crate::kafka::metadata::kafka_endpoint(node, listener)?;
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
        .with_cluster_id(text(broker.cluster.config.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.cluster.config.node_id.0 as i32))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(crate::kafka::authorized::cluster(
            request.include_cluster_authorized_operations,
        ))
}
