//! The `Wal` gRPC service over the store.
//!
//! An append stream is pipelined: each request (one or more entries) is
//! queued to the store as it arrives, and the reply stream waits for the
//! answers in request order, so many entries are in flight and their
//! acknowledgements still come back in order.

use futures::{Stream, StreamExt};
use keel_proto::wal as pb;
use keel_wal_client::ids::{LogEpoch, LogId};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::store::{StoreHandle, StoreRequest};

/// Appends in flight per stream before the reader waits for acknowledgements.
const STREAM_IN_FLIGHT_MAX: usize = 4096;

/// The gRPC face of a WAL node's store.
#[derive(Debug)]
pub struct WalService {
    store: StoreHandle,
    incarnation: String,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl WalService {
    pub fn new(store: StoreHandle, incarnation: String, tasks: TaskTracker, cancel: CancellationToken) -> WalService {
        WalService { store, incarnation, tasks, cancel }
    }

    async fn ask<T>(&self, request: StoreRequest, reply: oneshot::Receiver<T>) -> Result<T, Status> {
        self.store.send(request).await.map_err(|e| Status::unavailable(e.to_string()))?;
        reply.await.map_err(|_| Status::unavailable("the WAL store stopped"))
    }
}

#[tonic::async_trait]
impl pb::wal_server::Wal for WalService {
    type AppendStream = std::pin::Pin<Box<dyn Stream<Item = Result<pb::AppendReply, Status>> + Send>>;

    async fn append(
        &self,
        request: Request<Streaming<pb::AppendRequest>>,
    ) -> Result<Response<Self::AppendStream>, Status> {
        let mut inbound = request.into_inner();
        let (pending_sender, pending) = mpsc::channel::<oneshot::Receiver<pb::AppendReply>>(STREAM_IN_FLIGHT_MAX);
        let store = self.store.clone();
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    next = inbound.next() => next,
                };
                let Some(Ok(request)) = next else { return };
                let (reply, answer) = oneshot::channel();
                let append = StoreRequest::Append { epoch: LogEpoch(request.epoch), entries: request.entries, reply };
                if store.send(append).await.is_err() {
                    return;
                }
                if pending_sender.send(answer).await.is_err() {
                    return;
                }
            }
        });
        // The reply stream waits for each answer in request order.
        let replies = ReceiverStream::new(pending)
            .then(|answer| async move { answer.await.map_err(|_| Status::unavailable("the WAL store stopped")) });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn fence(&self, request: Request<pb::FenceRequest>) -> Result<Response<pb::FenceReply>, Status> {
        let request = request.into_inner();
        let (reply, answer) = oneshot::channel();
        let fence = StoreRequest::Fence { log: LogId(request.log), epoch: LogEpoch(request.epoch), reply };
        let mut reply = self.ask(fence, answer).await?;
        reply.incarnation = self.incarnation.clone();
        Ok(Response::new(reply))
    }

    async fn read(&self, request: Request<pb::ReadRequest>) -> Result<Response<pb::ReadReply>, Status> {
        let (reply, answer) = oneshot::channel();
        let mut reply = self.ask(StoreRequest::Read { request: request.into_inner(), reply }, answer).await?;
        reply.incarnation = self.incarnation.clone();
        Ok(Response::new(reply))
    }

    async fn read_stream(
        &self,
        request: Request<pb::ReadStreamRequest>,
    ) -> Result<Response<pb::ReadStreamReply>, Status> {
        let (reply, answer) = oneshot::channel();
        Ok(Response::new(self.ask(StoreRequest::ReadStream { request: request.into_inner(), reply }, answer).await?))
    }

    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let (reply, answer) = oneshot::channel();
        let mut status = self.ask(StoreRequest::Status { reply }, answer).await?;
        status.incarnation = self.incarnation.clone();
        Ok(Response::new(status))
    }
}
