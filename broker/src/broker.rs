//! A running broker's parts, as the Kafka edge reaches them: the cluster,
//! storage, the partitions led here, the two coordinators, the other
//! brokers and the fetch sessions. `node.rs` builds it; each handler in
//! `kafka/` takes it and uses the parts its API needs.

use std::sync::Arc;

use keel_broker_core::fetch_session::FetchSessions;

use crate::cluster::Cluster;
use crate::coordinator::{Groups, Peers, Txns};
use crate::log::Partitions;
use crate::storage::Storage;

#[derive(Debug)]
pub struct Broker {
    pub cluster: Arc<Cluster>,
    pub storage: Arc<Storage>,
    pub partitions: Arc<Partitions>,
    pub groups: Arc<Groups>,
    pub txns: Arc<Txns>,
    pub peers: Arc<dyn Peers>,
    pub fetch_sessions: FetchSessions,
}

impl Broker {
    /// Counts a partition-level (or request-level) error of `api` for the metrics.
    pub fn count_error(&self, api: &str, error: kafka_protocol::error::ResponseError) {
        self.cluster.metrics.errors.with_label_values(&[api, &format!("{error:?}")]).inc();
    }
}
