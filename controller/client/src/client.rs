//! The gRPC client every Keel process uses to reach the controller quorum.
//!
//! It holds one lazily connected channel per controller and sends each call to
//! the controller that answered last (at first a random one, so that not every
//! process leans on the same controller). Any controller accepts any call
//! (writes on a follower are forwarded to the leader), so the client only
//! moves on to the next controller when one is unreachable, silent or has no
//! leader, and retries with backoff until the call's deadline.
//!
//! A silent controller (frozen, or behind a network that drops its packets)
//! is the common fault, so no attempt waits long: each has its own deadline,
//! well under a node's session for the heartbeat path, and every channel
//! sends HTTP/2 keepalive pings, so a connection to a silent peer is closed
//! within seconds rather than when TCP gives up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use keel_proto::controller as pb;
use pb::metadata_client::MetadataClient as GrpcClient;
use tokio::time::Instant;

use crate::command::{Command, Outcome};
use crate::error::MetaError;
use crate::ids::Version;
use crate::image::Image;

/// The largest gRPC message a controller sends or accepts (images can be large).
pub const GRPC_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// Why a call to the controller quorum failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The controller refused the request; nothing changed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// No controller answered usefully before the deadline. `heard` says
    /// whether some controller answered at all (refusing retriably, with no
    /// leader say), as against none being reachable.
    #[error("no controller answered within {waited:?} (last error: {last})")]
    Unavailable { waited: Duration, last: String, heard: bool },
    /// A controller refused the call with a status that carries no typed error.
    #[error("controller refused the call: {0}")]
    Refused(String),
    /// A controller answered with something this client cannot read.
    #[error("controller reply could not be decoded: {0}")]
    Decode(String),
}

/// Options for a `MetadataClient`; every field is used explicitly.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long one attempt may take before the next controller is tried.
    pub attempt_timeout: Duration,
    /// How long a call keeps retrying across controllers.
    pub call_deadline: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { attempt_timeout: Duration::from_secs(2), call_deadline: Duration::from_secs(15) }
    }
}

/// How long one call may take: each attempt, and all of them.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    pub attempt: Duration,
    pub call: Duration,
}

/// Checks a node's controller addresses and, if given, the zone of each
/// (`controller_zones`), as the broker and WAL configs take them.
pub fn check_controllers(controllers: &[String], zones: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(!controllers.is_empty(), "controllers must list the controller quorum's addresses");
    anyhow::ensure!(
        zones.is_empty() || zones.len() == controllers.len(),
        "controller_zones must name one zone per controller ({} given for {} controllers)",
        zones.len(),
        controllers.len()
    );
    Ok(())
}

/// A client of the whole controller quorum.
#[derive(Debug)]
pub struct MetadataClient {
    endpoints: Vec<String>,
    channels: Vec<keel_proto::auth::Channel>,
    /// Index of the controller that answered last.
    preferred: AtomicUsize,
    options: ClientOptions,
}

/// One event of a watch stream.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchItem {
    /// Replace the whole image with this one.
    Image(Image),
    /// Apply this command at this version.
    Delta(Version, Command),
    /// Nothing new: the controller is at this version and alive.
    Progress(Version),
}

impl MetadataClient {
    /// Builds a client for controllers at `endpoints` (`host:port`). Connects lazily.
    pub fn new(endpoints: Vec<String>, options: ClientOptions) -> anyhow::Result<MetadataClient> {
        anyhow::ensure!(!endpoints.is_empty(), "no controller address given");
        let channels = endpoints
            .iter()
            .map(|addr| Ok(keel_proto::auth::channel(keel_proto::transport::endpoint(addr)?.connect_lazy())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Not the same controller for every process: one frozen controller
        // must not hold up everyone's first attempt.
        let preferred = AtomicUsize::new(rand::random::<usize>() % endpoints.len());
        Ok(MetadataClient { endpoints, channels, preferred, options })
    }

    /// Starts with the controller of `own_zone` when `zones` names each
    /// controller's zone (in the order of the endpoints), so a node's calls
    /// stay in its zone and a silent zone holds up only its own nodes' first
    /// attempts; with no zones, or none in `own_zone`, the random start of
    /// `new` stays.
    pub fn prefer_zone(self, zones: &[String], own_zone: &str) -> anyhow::Result<MetadataClient> {
        if zones.is_empty() {
            return Ok(self);
        }
        anyhow::ensure!(
            zones.len() == self.endpoints.len(),
            "controller_zones names {} zones for {} controllers",
            zones.len(),
            self.endpoints.len()
        );
        let local: Vec<usize> = (0..zones.len()).filter(|&i| zones[i] == own_zone).collect();
        if !local.is_empty() {
            self.preferred.store(local[rand::random::<usize>() % local.len()], Ordering::Relaxed);
        }
        Ok(self)
    }

    /// The index of the controller the next call tries first.
    pub fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed)
    }

    /// The controller addresses this client knows.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A raw gRPC client for controller `index`, for calls that must reach one
    /// particular controller (`NodeStatus`).
    pub fn controller(&self, index: usize) -> GrpcClient<keel_proto::auth::Channel> {
        GrpcClient::new(self.channels[index].clone())
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
    }

    /// The client's own deadlines.
    pub fn deadlines(&self) -> Deadlines {
        Deadlines { attempt: self.options.attempt_timeout, call: self.options.call_deadline }
    }

    /// Sends one call, moving across controllers and retrying with backoff
    /// while the failure is retryable and the deadline has not passed.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(GrpcClient<keel_proto::auth::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_within(self.deadlines(), call).await.map(|(_, answer)| answer)
    }

    /// `call` with its own deadlines; returns the index of the controller
    /// that answered, with its answer.
    pub async fn call_within<T, F, Fut>(&self, deadlines: Deadlines, call: F) -> Result<(usize, T), ClientError>
    where
        F: Fn(GrpcClient<keel_proto::auth::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(20);
        let mut index = self.preferred.load(Ordering::Relaxed);
        let mut heard = false;
        loop {
            let attempt = tokio::time::timeout(deadlines.attempt, call(self.controller(index))).await;
            let status = match attempt {
                Ok(Ok(response)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((index, response.into_inner()));
                }
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded(format!("no answer within {:?}", deadlines.attempt)),
            };
            let refusal = MetaError::from_status(&status);
            heard |= refusal.is_some();
            match refusal {
                Some(error) if !error.is_retryable() => return Err(error.into()),
                _ if !is_retryable_status(&status) => {
                    return Err(ClientError::Refused(format!("{:?}: {}", status.code(), status.message())))
                }
                _ => {}
            }
            if start.elapsed() + backoff > deadlines.call {
                return Err(ClientError::Unavailable { waited: start.elapsed(), last: status.to_string(), heard });
            }
            tracing::debug!(controller = %self.endpoints[index], %status, "controller call failed, trying next");
            index = (index + 1) % self.channels.len();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// Sends a write and decodes its outcome.
    async fn write<F, Fut>(&self, call: F) -> Result<(Version, Outcome), ClientError>
    where
        F: Fn(GrpcClient<keel_proto::auth::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<pb::WriteReply>, tonic::Status>>,
    {
        let reply = self.call(call).await?;
        let outcome = serde_json::from_slice(&reply.outcome).map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok((Version(reply.version), outcome))
    }

    pub async fn create_topic(&self, request: pb::CreateTopicRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| {
            let request = request.clone();
            async move { c.create_topic(request).await }
        })
        .await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(Version, Outcome), ClientError> {
        let request = pb::DeleteTopicRequest { name: name.to_owned() };
        self.write(|mut c| {
            let request = request.clone();
            async move { c.delete_topic(request).await }
        })
        .await
    }

    pub async fn create_partitions(&self, name: &str, count: i32) -> Result<(Version, Outcome), ClientError> {
        let request = pb::CreatePartitionsRequest { name: name.to_owned(), count };
        self.write(|mut c| {
            let request = request.clone();
            async move { c.create_partitions(request).await }
        })
        .await
    }

    pub async fn alter_configs(&self, request: pb::AlterConfigsRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| {
            let request = request.clone();
            async move { c.alter_configs(request).await }
        })
        .await
    }

    /// Sets and removes SCRAM credentials.
    pub async fn alter_scram_credentials(
        &self,
        upsert: &[crate::ScramCredential],
        delete: &[(String, crate::ScramMechanism)],
    ) -> Result<(Version, Outcome), ClientError> {
        let request = pb::AlterScramCredentialsRequest {
            upsert: serde_json::to_vec(upsert).expect("credentials serialize"),
            delete: serde_json::to_vec(delete).expect("names serialize"),
        };
        self.write(|mut c| {
            let request = request.clone();
            async move { c.alter_scram_credentials(request).await }
        })
        .await
    }

    pub async fn allocate_producer_ids(
        &self,
        request: pb::AllocateProducerIdsRequest,
    ) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| async move { c.allocate_producer_ids(request).await }).await
    }

    pub async fn open_log(&self, request: pb::OpenLogRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| {
            let request = request.clone();
            async move { c.open_log(request).await }
        })
        .await
    }

    pub async fn recover_log(&self, request: pb::RecoverLogRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| async move { c.recover_log(request).await }).await
    }

    pub async fn seal_log(&self, request: pb::SealLogRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| {
            let request = request.clone();
            async move { c.seal_log(request).await }
        })
        .await
    }

    pub async fn advance_start_offset(
        &self,
        request: pb::AdvanceStartOffsetRequest,
    ) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| {
            let request = request.clone();
            async move { c.advance_start_offset(request).await }
        })
        .await
    }

    pub async fn drain_broker(&self, request: pb::DrainBrokerRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| async move { c.drain_broker(request).await }).await
    }

    /// Sends a load report to the leader (not a Raft write).
    pub async fn report_load(&self, request: pb::ReportLoadRequest) -> Result<(), ClientError> {
        self.call(|mut c| {
            let request = request.clone();
            async move { c.report_load(request).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn close_partition(&self, request: pb::ClosePartitionRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| {
            let request = request.clone();
            async move { c.close_partition(request).await }
        })
        .await
    }

    pub async fn reserve_objects(&self, request: pb::ReserveObjectsRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| async move { c.reserve_objects(request).await }).await
    }

    pub async fn commit_upload(&self, request: pb::CommitUploadRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| {
            let request = request.clone();
            async move { c.commit_upload(request).await }
        })
        .await
    }

    pub async fn compact_ranges(&self, request: pb::CompactRangesRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| {
            let request = request.clone();
            async move { c.compact_ranges(request).await }
        })
        .await
    }

    pub async fn delete_objects(&self, request: pb::DeleteObjectsRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| {
            let request = request.clone();
            async move { c.delete_objects(request).await }
        })
        .await
    }

    pub async fn purge_objects(&self, request: pb::PurgeObjectsRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| {
            let request = request.clone();
            async move { c.purge_objects(request).await }
        })
        .await
    }

    pub async fn forget_logs(&self, request: pb::ForgetLogsRequest) -> Result<(Version, Outcome), ClientError> {
        self.write(|mut c| {
            let request = request.clone();
            async move { c.forget_logs(request).await }
        })
        .await
    }

    /// A linearizable read of the whole image.
    pub async fn read_image(&self) -> Result<Image, ClientError> {
        let reply = self.call(|mut c| async move { c.read_image(pb::ReadImageRequest {}).await }).await?;
        decode_image(&reply)
    }

    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusReply, ClientError> {
        self.call(|mut c| async move { c.cluster_status(pb::ClusterStatusRequest {}).await }).await
    }

    /// Moves this client off controller `index` if it is the one calls go
    /// to first (it went silent on a stream, say).
    pub fn avoid(&self, index: usize) {
        let next = (index + 1) % self.channels.len();
        let _ = self.preferred.compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Opens a watch stream from `from_version` on whichever controller
    /// answers; returns that controller's index with the stream.
    ///
    /// The stream ends when the connection breaks; the caller reopens it from
    /// the last version it applied and gets exactly the changes it missed (or
    /// a fresh image when those are no longer in the controller's log). A
    /// controller sends `Progress` while it has nothing else to send, so a
    /// silent stream is a broken one.
    pub async fn watch(
        &self,
        from_version: Version,
    ) -> Result<(usize, impl Stream<Item = Result<WatchItem, ClientError>>), ClientError> {
        let request = pb::WatchRequest { from_version: from_version.0 };
        let (index, stream) = self.call_within(self.deadlines(), |mut c| async move { c.watch(request).await }).await?;
        Ok((
            index,
            stream.map(|event| {
                let event = event.map_err(|status| ClientError::Unavailable {
                    waited: Duration::ZERO,
                    last: status.to_string(),
                    heard: false,
                })?;
                match event.event {
                    Some(pb::watch_event::Event::Image(image)) => decode_image(&image).map(WatchItem::Image),
                    Some(pb::watch_event::Event::Delta(delta)) => serde_json::from_slice(&delta.command)
                        .map(|command| WatchItem::Delta(Version(delta.version), command))
                        .map_err(|e| ClientError::Decode(e.to_string())),
                    Some(pb::watch_event::Event::Progress(progress)) => {
                        Ok(WatchItem::Progress(Version(progress.version)))
                    }
                    None => Err(ClientError::Decode("empty watch event".into())),
                }
            }),
        ))
    }
}

fn decode_image(reply: &pb::ImageReply) -> Result<Image, ClientError> {
    let image: Image = serde_json::from_slice(&reply.image).map_err(|e| ClientError::Decode(e.to_string()))?;
    if image.version.0 != reply.version {
        return Err(ClientError::Decode(format!("image at {} labelled v{}", image.version, reply.version)));
    }
    Ok(image)
}

/// Statuses worth sending to another controller: it is down, busy or between leaders.
fn is_retryable_status(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> MetadataClient {
        let endpoints = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"].map(String::from).to_vec();
        MetadataClient::new(endpoints, ClientOptions::default()).unwrap()
    }

    #[tokio::test]
    async fn a_node_starts_at_its_own_zones_controller_and_the_others_spread() {
        let zones = ["a", "b", "c"].map(String::from);
        for (own, index) in [("a", 0), ("b", 1), ("c", 2)] {
            for _ in 0..20 {
                assert_eq!(client().prefer_zone(&zones, own).unwrap().preferred(), index, "zone {own}");
            }
        }
        // No controller in the node's zone, or no zones given: a random
        // start, not the same one for every node.
        let starts: std::collections::BTreeSet<usize> =
            (0..200).map(|_| client().prefer_zone(&zones, "d").unwrap().preferred()).collect();
        assert_eq!(starts.len(), 3, "{starts:?}");
        let starts: std::collections::BTreeSet<usize> =
            (0..200).map(|_| client().prefer_zone(&[], "a").unwrap().preferred()).collect();
        assert_eq!(starts.len(), 3, "{starts:?}");
        let error = client().prefer_zone(&zones[..2], "a").unwrap_err().to_string();
        assert!(error.contains("2 zones for 3 controllers"), "{error}");
    }
}
