//! The server layer: start-up ([`prepare`]: the store lock, the
//! database, the data key, the socket), the serve loop ([`Prepared::serve`])
//! and background upkeep (expiry sweeps, key retries, audit pruning,
//! automatic snapshots).
//!
//! Start-up order: settings, data directory (0700), store lock, database
//! (migrated), data key (checked against the store), socket (0700 dir, 0600
//! socket; or the one systemd/launchd passed in), `READY=1`, serve until the
//! shutdown future completes (or, when socket-activated, until idle for
//! `idle_exit_seconds`), `STOPPING=1`.

pub mod config;

use std::fs::{File, OpenOptions, TryLockError};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyhaven_proto::pb::audit_server::AuditServer;
use keyhaven_proto::pb::credentials_server::CredentialsServer;
use keyhaven_proto::pb::daemon_server::DaemonServer;

use crate::error::StartError;
use crate::fsutil;
use crate::keys::custody::{Custody, CustodyConfig};
use crate::keys::keyring::Keyring;
use crate::keys::vault;
use crate::keys::vault::Vault;
use crate::net::listener;
use crate::net::listener::{AcceptPolicy, BoundSocket, OpenConnections};
use crate::net::platform;
use crate::net::platform::InheritedSocket;
use crate::rpc::audit::AuditService;
use crate::rpc::backup;
use crate::rpc::credentials::CredentialsService;
use crate::rpc::daemon::DaemonService;
use crate::rpc::limits;
use crate::rpc::policy::PolicyHandle;
use crate::rpc::shared::Shared;
use crate::rpc::{legacy, shared};
use crate::server::config::Settings;
use crate::store::Database;
use crate::store::audit::{self, AuditLog};
use crate::store::events;

/// Room for the key (640 bytes), label (256), attributes (32 names of 64
/// bytes and values of 1 KiB: 34 KiB) and framing on top of the largest
/// secret.
const MESSAGE_OVERHEAD: usize = 48 * 1024;

/// A daemon that has taken its lock, opened its store and bound its socket,
/// and is ready to [`serve`](Prepared::serve).
#[derive(Debug)]
pub struct Prepared {
    shared: Arc<Shared>,
    socket: BoundSocket,
    policy: AcceptPolicy,
    max_message: usize,
    shutdown_grace: Duration,
    expiry_sweep: Duration,
    key_retry: Duration,
    audit_retention: audit::Retention,
    idle_exit: Option<Duration>,
    stopping_tx: tokio::sync::watch::Sender<bool>,
    _lock: File,
}

impl Prepared {
    /// The socket clients connect to.
    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }

    /// The database file.
    pub fn store_path(&self) -> &Path {
        self.shared.vault.database().path()
    }

    /// `Some("systemd")` or `Some("launchd")` when serving a socket the
    /// service manager passed in.
    pub fn inherited_from(&self) -> Option<&'static str> {
        self.socket.inherited_from()
    }

    /// The live per-app policy; call `reload()` on it for SIGHUP.
    pub fn policy(&self) -> Arc<PolicyHandle> {
        self.shared.policy.clone()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish
    /// (up to the grace period), closes the store and removes the socket.
    ///
    /// Tells the service manager `READY=1` once serving and `STOPPING=1`
    /// when shutdown begins. On an inherited socket with `idle_exit` set,
    /// also stops after that long without connections.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let Some(listener) = self.socket.take_listener() else {
            return Ok(());
        };
        tracing::info!(
            socket = %self.socket.path().display(),
            store = %self.shared.vault.database().path().display(),
            key_tier = self.shared.vault.state().tier.map_or("none (locked)", |t| t.as_str()),
            pid = std::process::id(),
            "keyhavend is serving"
        );
        // The socket is listening and the store is open with its key:
        // connections from now on are answered.
        platform::notify_ready();
        let trim = tokio::spawn(release_code_when_idle(self.policy.open.clone()));
        let snapshots = tokio::spawn(backup::automatic(self.shared.clone()));
        let maintenance = tokio::spawn(maintain(
            self.shared.clone(),
            self.expiry_sweep,
            self.key_retry,
            self.audit_retention,
        ));
        let stopping_tx = self.stopping_tx.clone();
        let idle_exit = self.socket.inherited_from().and(self.idle_exit);
        let open = self.policy.open.clone();
        let shutdown = async move {
            let idle = async {
                match idle_exit {
                    Some(limit) => open.idle_for(limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown => {}
                () = idle => tracing::info!(
                    idle_exit_seconds = idle_exit.map_or(0, |d| d.as_secs()),
                    "no connections for idle_exit_seconds; exiting until the next connection"
                ),
            }
            platform::notify_stopping();
            // Ends Watch streams and the maintenance task.
            let _ = stopping_tx.send(true);
        };
        let result = serve(
            listener,
            self.shared.clone(),
            self.policy.clone(),
            self.max_message,
            self.shutdown_grace,
            shutdown,
        )
        .await;
        let _ = self.stopping_tx.send(true);
        trim.abort();
        let _ = snapshots.await;
        // Upkeep that died (a panic) is as fatal as serving that failed.
        let result = match (result, maintenance.await) {
            (Ok(()), Err(e)) => Err(std::io::Error::other(format!(
                "background upkeep (expiry sweep, key retry, policy reload) failed: {e}"
            ))),
            (result, _) => result,
        };
        self.shared.audit.flush().await;
        self.shared.vault.database().close().await;
        tracing::info!("keyhavend stopped");
        result.map_err(|source| StartError::Io {
            what: "serve on",
            path: self.socket.path().to_path_buf(),
            source,
        })
    }
}

/// Serves the keyhaven services on `listener` until `shutdown` completes.
/// Every connection passes the peer check in [`listener::incoming`] first.
///
/// Every service and connection is bounded: `Credentials` messages by
/// `max_message`, every other service's by [`limits::SMALL_MESSAGE`];
/// HTTP/2 flow-control windows and streams per connection are capped, so
/// a client cannot make the daemon buffer more than those limits allow.
///
/// Returns an error when serving cannot go on (the accept loop failed):
/// the caller must treat that as fatal.
pub async fn serve(
    listener: platform::Listener,
    shared: Arc<Shared>,
    policy: AcceptPolicy,
    max_message: usize,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use limits::SMALL_MESSAGE;
    // Answers are not held to the request limit: a List page of 1000
    // credentials is larger, and answers are bounded by the page size.
    let credentials = CredentialsServer::new(CredentialsService::new(shared.clone()))
        .max_decoding_message_size(max_message);
    // Answers are small, except Export's: one credential each.
    let daemon = DaemonServer::new(DaemonService::new(shared.clone()))
        .max_decoding_message_size(SMALL_MESSAGE)
        .max_encoding_message_size(SMALL_MESSAGE.max(max_message));
    // grpc.health.v1: "" and keyhaven.v1.Credentials are SERVING while the
    // store is open with its key, NOT_SERVING while it is locked and from
    // the moment shutdown starts.
    let health = shared.health.clone();
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(health.clone()),
    )
    .max_decoding_message_size(SMALL_MESSAGE)
    .max_encoding_message_size(SMALL_MESSAGE);
    set_health(&shared).await;
    // Audit.Query answers are bounded by their page size, not by this.
    let audit =
        AuditServer::new(AuditService::new(shared)).max_decoding_message_size(SMALL_MESSAGE);
    // A reflection answer carries file descriptors: at most all of them.
    let reflection_answer = SMALL_MESSAGE
        + keyhaven_proto::FILE_DESCRIPTOR_SET.len()
        + tonic_health::pb::FILE_DESCRIPTOR_SET.len();
    // Reflection in both versions: v1, and v1alpha, which many stock tools
    // still speak only (Python's grpcio-reflection, grpc_cli, GUI clients).
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(keyhaven_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| tracing::error!(error = %e, "server reflection v1 is unavailable"))
        .ok()
        .map(|r| {
            r.max_decoding_message_size(SMALL_MESSAGE)
                .max_encoding_message_size(reflection_answer)
        });
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| tracing::error!(error = %e, "server reflection v1alpha is unavailable"))
        .ok()
        .map(|r| {
            r.max_decoding_message_size(SMALL_MESSAGE)
                .max_encoding_message_size(reflection_answer)
        });
    let incoming = listener::incoming(listener, policy);
    let mut accept_task = incoming.task;
    let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("stopping: finishing in-flight requests");
        health
            .set_not_serving::<CredentialsServer<CredentialsService>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let _ = fired_tx.send(());
    };
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_max_header_list_size(16 * 1024)
        .timeout(Duration::from_secs(30))
        .layer(listener::TrackRequestsLayer)
        .layer(limits::GrpcBoundaryLayer::new(max_message))
        .add_service(credentials)
        .add_service(daemon)
        .add_service(audit)
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_optional_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming.stream, signal);
    tokio::pin!(server);
    let grace_over = async {
        if fired_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(grace_over);
    // The accept loop ends without error only once the server has dropped
    // its stream (shutdown). Any other end is fatal: no client could
    // connect any more, and the daemon must not look healthy. It may also
    // end the server (its stream ends), so its outcome is looked at first.
    let mut accepting = true;
    loop {
        tokio::select! {
            result = &mut server => {
                if accepting {
                    accept_outcome(accept_task.await)?;
                }
                return result.map_err(std::io::Error::other);
            }
            () = &mut grace_over => {
                tracing::warn!(grace_secs = grace.as_secs(), "connections still open after the grace period; closing them");
                return Ok(());
            }
            ended = &mut accept_task, if accepting => {
                accept_outcome(ended)?;
                accepting = false;
            }
        }
    }
}

/// `Err` when the accept loop failed or panicked.
fn accept_outcome(
    ended: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> std::io::Result<()> {
    let error = match ended {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e,
        Err(e) => std::io::Error::other(format!("the accept loop failed: {e}")),
    };
    tracing::error!(error = %error, "cannot accept connections any more");
    Err(error)
}

/// HTTP/2 streams one connection may have open at once.
const MAX_STREAMS: u32 = 64;
/// Bytes a client may send on one stream before the daemon has read them.
const STREAM_WINDOW: u32 = 64 * 1024;
/// Bytes a client may send on one connection before the daemon has read
/// them, all streams together.
const CONNECTION_WINDOW: u32 = 256 * 1024;

/// How long no connection may be open before an idle daemon unmaps its
/// code pages ([`platform::release_code_pages`]).
const RELEASE_CODE_AFTER: Duration = Duration::from_secs(1);

/// Each time the daemon has had no connection for [`RELEASE_CODE_AFTER`],
/// unmaps its code pages once; then waits for the next connection.
async fn release_code_when_idle(open: OpenConnections) {
    loop {
        open.idle_for(RELEASE_CODE_AFTER).await;
        let bytes = platform::release_code_pages();
        tracing::debug!(
            kib = bytes / 1024,
            "idle: unmapped the executable's code pages (they stay in the page cache)"
        );
        open.until_busy().await;
    }
}

/// Background upkeep until shutdown: the expiry sweep (EXPIRED events),
/// audit retention, and reloading the policy when the config file changes.
async fn maintain(
    shared: Arc<Shared>,
    sweep: Duration,
    key_retry: Duration,
    retention: audit::Retention,
) {
    let mut stopping = shared.stopping.clone();
    let mut sweep_tick = tokio::time::interval(sweep);
    let mut key_tick = tokio::time::interval(key_retry);
    key_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut policy_tick = tokio::time::interval(Duration::from_secs(2));
    let mut prune_tick = tokio::time::interval(Duration::from_secs(600));
    for tick in [&mut sweep_tick, &mut policy_tick, &mut prune_tick] {
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        if *stopping.borrow() {
            return;
        }
        tokio::select! {
            changed = stopping.changed() => if changed.is_err() { return },
            _ = sweep_tick.tick() => if let Ok(store) = shared.vault.store() {
                match store.expire_due().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "removed expired credentials"),
                    Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
                }
            },
            _ = key_tick.tick(), if !shared.vault.is_open() => {
                match shared.vault.unlock().await {
                    Ok(true) => set_health(&shared).await,
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "looking for the data key failed"),
                }
            },
            _ = policy_tick.tick() => shared.policy.reload_if_changed(),
            _ = prune_tick.tick() => match shared.audit.prune(retention).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(pruned = n, "audit log pruned"),
                Err(e) => tracing::error!(error = %e, "audit pruning failed"),
            },
        }
    }
}

/// SERVING while the store is open, NOT_SERVING while it is locked.
async fn set_health(shared: &Shared) {
    let status = if shared.vault.is_open() {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    shared
        .health
        .set_service_status("keyhaven.v1.Credentials", status)
        .await;
    shared.health.set_service_status("", status).await;
}

/// Takes the lock, opens the store with its key and binds the socket.
pub async fn prepare(settings: &Settings) -> Result<Prepared, StartError> {
    prepare_with(settings, None).await
}

/// Like [`prepare`], but serves `inherited`, a socket a service manager
/// (systemd, launchd) already bound, instead of binding `settings.socket`.
pub async fn prepare_with_listener(
    settings: &Settings,
    inherited: InheritedSocket,
) -> Result<Prepared, StartError> {
    prepare_with(settings, Some(inherited)).await
}

async fn prepare_with(
    settings: &Settings,
    inherited: Option<InheritedSocket>,
) -> Result<Prepared, StartError> {
    fsutil::ensure_private_dir(&settings.data_dir)?;
    let lock = take_lock(&settings.lock_file())?;
    let db_path = settings.database();
    let database = Database::open(&db_path).await?;
    let store_id = database.store_id().await.map_err(StartError::from)?;
    let keyring = Keyring::new(settings.keyring.clone(), settings.keyring_timeout);
    let custody = Custody::new(
        CustodyConfig {
            credentials_dir: settings.credentials_dir.clone(),
            credential_name: settings.credential_name.clone(),
            key_file: settings.key_file.clone(),
            keyring: keyring.clone(),
            pinned: settings.key_source,
        },
        &store_id,
    );
    let events = events::EventBus::new(settings.event_buffer);
    let vault = Vault::new(database.clone(), events, custody);
    // Err only when a pinned tier is unusable; a missing key otherwise
    // leaves the store locked, served UNAVAILABLE, and retried.
    vault.unlock().await.map_err(|e| match e {
        vault::VaultError::Key(k) => StartError::from(k),
        vault::VaultError::Store(s) => StartError::from(s),
        vault::VaultError::Refused(reason)
        | vault::VaultError::Downgrade(reason)
        | vault::VaultError::Locked(reason) => StartError::Config {
            path: db_path.clone(),
            reason,
        },
    })?;
    let socket = listener::bind_or_adopt(&settings.socket, inherited)?;
    let audit = AuditLog::start(database);
    let policy = Arc::new(PolicyHandle::new(
        settings.policy.clone(),
        settings.config_path.clone(),
    ));
    if !policy.get().is_open() {
        tracing::info!("a per-app policy is in force");
    }
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        vault,
        max_secret_bytes: settings.max_secret_bytes,
        health: tonic_health::server::HealthReporter::new(),
        started: Instant::now(),
        audit: audit.clone(),
        policy,
        stopping,
        legacy: legacy::ReadThrough::new(settings.legacy, keyring),
        allow_key_downgrade: settings.allow_key_downgrade,
        pages: shared::PageTokens::new().map_err(|e| StartError::Config {
            path: db_path.clone(),
            reason: format!("cannot draw the page-token key: {e}"),
        })?,
        backups: crate::rpc::snapshots::Backups::new(settings.backups.clone()),
    });
    Ok(Prepared {
        shared,
        socket,
        policy: AcceptPolicy {
            own_uid: platform::own_uid(),
            allowed_uids: settings.allowed_uids.clone(),
            max_connections: settings.max_connections,
            first_request_deadline: settings.first_request_deadline,
            audit: Some(audit),
            open: OpenConnections::default(),
        },
        max_message: settings.max_secret_bytes + MESSAGE_OVERHEAD,
        shutdown_grace: settings.shutdown_grace,
        expiry_sweep: settings.expiry_sweep,
        key_retry: settings.key_retry,
        audit_retention: settings.audit_retention,
        idle_exit: settings.idle_exit,
        stopping_tx,
        _lock: lock,
    })
}

fn take_lock(path: &PathBuf) -> Result<File, StartError> {
    fsutil::ensure_private_file(path)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| StartError::Io {
            what: "open the lock file",
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StartError::AlreadyRunning { path: path.clone() }),
        Err(TryLockError::Error(source)) => Err(StartError::Io {
            what: "lock",
            path: path.clone(),
            source,
        }),
    }
}
