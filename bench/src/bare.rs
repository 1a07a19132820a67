//! Throughput as an outside harness would take it: bare generated tonic
//! stubs, no keyhaven client library, and one OS thread with its own
//! current-thread runtime per client. The tonic echo floor and keyhavend's
//! Retrieve are measured the same way, back to back, at each client count.
//!
//! The `ops` section measures through the real client library on a shared
//! 2-worker runtime, as an app would. Here the client side is as thin as
//! tonic allows, so the ratio says what the server costs; an independent
//! harness of this shape is how the figures were first taken.

use std::path::Path;

use anyhow::{Context, Result, bail};
use keyhaven_proto::pb::credentials_client::CredentialsClient;
use keyhaven_proto::pb::{CredentialKey, RetrieveRequest};

use crate::floors::{Server, echo_channel, echo_once, unix_channel};
use crate::keyhaven::{Home, client_runtime, seed, spread};
use crate::report::{CpuMark, Group, Measurement, Point, Report, print_line};
use crate::stats::{Plan, throughput_threads};

/// Credentials seeded, as in `ops`.
const SEEDED: usize = 1_000;

/// One client thread's state: its own runtime and its own connection.
struct Thread<C> {
    rt: tokio::runtime::Runtime,
    client: C,
    /// Which client this is, so each reads its own sequence of credentials.
    no: usize,
}

fn threads<C, F, Fut>(clients: usize, connect: F) -> Result<Vec<Thread<C>>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<C>>,
{
    (0..clients)
        .map(|no| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let client = rt.block_on(connect())?;
            Ok(Thread { rt, client, no })
        })
        .collect()
}

/// The requests for the seeded credentials, made before the clock starts:
/// a request is then a clone, as the echo client's payload is.
fn retrieve_requests() -> Vec<RetrieveRequest> {
    (0..SEEDED)
        .map(|n| {
            RetrieveRequest::new(CredentialKey {
                provider: "jellyfin".to_owned(),
                server_id: format!("srv-{:07}", n / 10),
                user_id: format!("user-{}", n % 10),
                token_type: "access_token".to_owned(),
            })
        })
        .collect()
}

/// The echo floor and Retrieve through bare stubs, thread per client.
pub fn run(plan: &Plan, me: &Path, daemon_exe: &Path, report: &mut Report) -> Result<()> {
    let mut echo = Measurement::new(
        "tonic_echo_bare",
        Group::Floor,
        "unary tonic Echo, 100-byte payload; bare stub, one thread with a current-thread \
         runtime per client",
    );
    let mut retrieve = Measurement::new(
        "retrieve_bare",
        Group::Keyhaven,
        "Retrieve of a random one of 1,000 credentials; bare stub, one thread with a \
         current-thread runtime per client",
    )
    .against("tonic_echo_bare");

    let requests = retrieve_requests();
    let dir = tempfile::Builder::new().prefix("kh-bare").tempdir()?;
    let echo_socket = dir.path().join("tonic.sock");
    let home = Home::new()?;
    let socket = home.socket();
    let (daemon, _) = home.start(daemon_exe, None)?;
    client_runtime()?.block_on(seed(&socket, SEEDED, 16))?;

    for &clients in &plan.clients {
        // The echo server runs only while it is measured, so it takes no
        // CPU from the Retrieve point.
        let server = Server::start(me, "tonic-echo", &echo_socket, None)?;
        let conns = threads(clients, || echo_channel(&echo_socket))?;
        let mark = CpuMark::now(server.pid());
        let summary = throughput_threads(conns, plan.duration, |t, _| {
            t.rt.block_on(echo_once(t.client.clone()))
        })?;
        echo.throughput.push(Point::since(mark, clients, summary));
        drop(server);

        let conns = threads(clients, || async {
            Ok(CredentialsClient::new(
                unix_channel(&socket, "keyhavend").await?,
            ))
        })?;
        let mark = CpuMark::now(daemon.pid());
        let summary = throughput_threads(conns, plan.duration, |t, i| {
            let reply =
                t.rt.block_on(t.client.retrieve(requests[spread(t.no, i, SEEDED)].clone()))
                    .context("Retrieve")?;
            if reply.get_ref().secret.is_empty() {
                bail!("empty secret");
            }
            Ok(())
        })?;
        retrieve
            .throughput
            .push(Point::since(mark, clients, summary));
    }
    daemon.stop()?;
    print_line(&echo);
    print_line(&retrieve);
    report.measurements.push(echo);
    report.measurements.push(retrieve);
    Ok(())
}
