//! One background thread owns a current-thread tokio runtime and the
//! [`Client`]; the synchronous keyring calls hand it jobs over a channel
//! and block on a std channel for the answer.
//!
//! Why: keyring-core's API is synchronous and is called from plain code, from
//! `spawn_blocking`, and straight from async functions. Blocking on a
//! runtime of our own from inside the caller's (`Runtime::block_on`,
//! `Handle::block_on`) panics with "Cannot start a runtime from within a
//! runtime"; a std channel receive does not, in any kind of runtime. And a
//! tonic channel lives on the runtime it was made on, so the client must stay
//! on one runtime that outlives every caller's: this thread's.
//!
//! A call blocks the calling thread (in async code: one worker of the
//! caller's runtime) for one round trip to the daemon, as every keyring
//! store does; the caller's runtime is never needed to finish it, so even a
//! current-thread runtime cannot deadlock on it.
//!
//! The thread connects when the store is made. When a call fails with
//! `Unavailable` (the daemon stopped or restarted), the connection is
//! dropped and the next call connects again, handshake included. The
//! thread ends when the last store and entry holding it are dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keyhaven::{Client, ConnectOptions, ErrorKind};
use tokio::sync::mpsc;

use crate::error::worker_gone;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A unit of work: given a connection (or why there is none), a future that
/// does the calls and sends the answer back itself.
type Job = Box<dyn FnOnce(keyhaven::Result<Client>, Breaker) -> BoxFuture + Send>;

/// Marks the connection a job ran on as broken.
struct Breaker {
    broken: Arc<AtomicU64>,
    generation: u64,
}

impl Breaker {
    fn check<T>(&self, result: &keyhaven::Result<T>) {
        if matches!(result, Err(e) if e.kind() == ErrorKind::Unavailable) {
            self.broken.store(self.generation, Ordering::SeqCst);
        }
    }
}

/// The handle the store and its entries share.
#[derive(Debug)]
pub(crate) struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Worker {
    /// Starts the thread and connects once, so that a daemon that cannot
    /// be reached is reported when the store is made.
    pub(crate) fn start(options: ConnectOptions) -> Result<Arc<Self>, keyring_core::Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| keyring_core::Error::PlatformFailure(Box::new(e)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("keyhaven-keyring".into())
            .spawn(move || runtime.block_on(run(rx, options)))
            .map_err(|e| keyring_core::Error::PlatformFailure(Box::new(e)))?;
        let worker = Arc::new(Self { jobs: tx });
        worker.call("connection", |_client| async { Ok(()) })?;
        Ok(worker)
    }

    /// Runs `f` with the client on the worker thread and waits for its
    /// result. `what` names what an `InvalidArgument` refers to.
    pub(crate) fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, keyring_core::Error>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = keyhaven::Result<T>> + Send + 'static,
    {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |client, breaker| {
            Box::pin(async move {
                let result = match client {
                    Ok(client) => f(client).await,
                    Err(e) => Err(e),
                };
                breaker.check(&result);
                let _ = reply.send(result);
            })
        });
        self.jobs.send(job).map_err(|_| worker_gone())?;
        match answer.recv() {
            Ok(result) => result.map_err(|e| crate::error::to_keyring(e, what)),
            Err(_) => Err(worker_gone()),
        }
    }
}

/// The thread's loop: connect when there is no connection, and run each
/// job as its own task so that callers on several threads share the one
/// HTTP/2 connection concurrently.
async fn run(mut jobs: mpsc::UnboundedReceiver<Job>, options: ConnectOptions) {
    let broken = Arc::new(AtomicU64::new(0));
    let mut generation = 0u64;
    let mut client: Option<Client> = None;
    while let Some(job) = jobs.recv().await {
        if broken.load(Ordering::SeqCst) == generation {
            client = None;
        }
        let conn = match &client {
            Some(c) => Ok(c.clone()),
            None => match Client::connect_with(options.clone()).await {
                Ok(c) => {
                    generation += 1;
                    client = Some(c.clone());
                    Ok(c)
                }
                Err(e) => Err(e),
            },
        };
        let breaker = Breaker {
            broken: broken.clone(),
            generation,
        };
        tokio::spawn(job(conn, breaker));
    }
}
