//! `Watch`: a live feed of changes, optionally preceded by a snapshot.
//!
//! The subscription to the event bus is taken *before* the snapshot is
//! read, and the snapshot records the store's latest revision in the same
//! read transaction; live events at or below that revision are already in
//! the snapshot and are skipped. So nothing falls between the two.
//!
//! Each watcher has a small queue towards its stream. When the client reads
//! slowly the queue fills, the forwarding task waits, and the bounded event
//! bus drops that watcher's oldest events: the watcher then gets one
//! LAGGED event saying how many it missed, and can re-sync. Writers never
//! wait for watchers, and memory per watcher is bounded.

use std::sync::Arc;

use keyhaven_proto::pb;
use keyhaven_proto::time::{from_unix_ms, now_unix_ms};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::rpc::convert::{identity_to_pb, parse_filter, to_pb};
use crate::rpc::shared::Shared;
use crate::rpc::status::ServiceError;
use crate::store::Metadata;
use crate::store::events::{Event, EventKind};

/// Events queued per watcher between the bus and its HTTP/2 stream.
const QUEUE: usize = 16;

/// The stream a `Watch` call returns.
pub type EventStream = ReceiverStream<Result<pb::WatchEvent, Status>>;

/// Starts a watch: validates the filter, subscribes, reads the snapshot if
/// asked, and spawns the forwarding task.
pub async fn start(
    shared: &Arc<Shared>,
    req: pb::WatchRequest,
) -> Result<EventStream, ServiceError> {
    let filter = parse_filter(
        req.provider,
        req.server_id,
        req.user_id,
        req.match_empty_server_id,
        req.match_empty_user_id,
        req.attributes,
    )?;
    let store = shared.vault.store()?;
    let mut events = shared.vault.events().subscribe();
    let (snapshot_revision, snapshot) = if req.snapshot {
        store.snapshot(&filter).await?
    } else {
        (0, Vec::new())
    };
    let mut stopping = shared.stopping.clone();
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        if req.snapshot {
            let now = now_unix_ms();
            for meta in snapshot {
                if tx.send(Ok(snapshot_event(meta, now))).await.is_err() {
                    return;
                }
            }
            if tx.send(Ok(marker(pb::EventKind::Synced, 0))).await.is_err() {
                return;
            }
        }
        loop {
            if *stopping.borrow() {
                let _ = tx
                    .send(Err(Status::unavailable(
                        "keyhavend is shutting down; watch again once it is back",
                    )))
                    .await;
                return;
            }
            let event = tokio::select! {
                changed = stopping.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
                () = tx.closed() => return,
                event = events.recv() => event,
            };
            let item = match event {
                Ok(event) => {
                    if event.metadata.revision <= snapshot_revision
                        || !filter.matches(&event.metadata)
                    {
                        continue;
                    }
                    event_to_pb(&event)
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "a watcher fell behind; telling it to re-sync");
                    marker(pb::EventKind::Lagged, missed)
                }
                Err(RecvError::Closed) => return,
            };
            if tx.send(Ok(item)).await.is_err() {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

fn snapshot_event(meta: Metadata, now: i64) -> pb::WatchEvent {
    pb::WatchEvent {
        kind: pb::EventKind::Snapshot.into(),
        metadata: Some(to_pb(meta)),
        time: Some(from_unix_ms(now)),
        actor: None,
        missed: 0,
    }
}

fn marker(kind: pb::EventKind, missed: u64) -> pb::WatchEvent {
    pb::WatchEvent {
        kind: kind.into(),
        metadata: None,
        time: Some(from_unix_ms(now_unix_ms())),
        actor: None,
        missed,
    }
}

fn event_to_pb(event: &Event) -> pb::WatchEvent {
    let kind = match event.kind {
        EventKind::Stored => pb::EventKind::Stored,
        EventKind::Updated => pb::EventKind::Updated,
        EventKind::Deleted => pb::EventKind::Deleted,
        EventKind::Expired => pb::EventKind::Expired,
    };
    pb::WatchEvent {
        kind: kind.into(),
        metadata: Some(to_pb(event.metadata.clone())),
        time: Some(from_unix_ms(event.time)),
        actor: event.actor.as_ref().map(identity_to_pb),
        missed: 0,
    }
}
