//! The "refresh once" pattern: several apps share a token that the server
//! has just rejected. Each one refreshes it and writes the new token with
//! compare-and-swap against the revision it read. Exactly one write wins;
//! every other app gets a conflict, re-reads, and uses the winner's token
//! instead of its own (which the server would have revoked anyway).
//!
//! ```text
//! cargo run --example refresh_once -- [--socket PATH] [--apps N] [--rounds R]
//! ```
//!
//! Each "app" is its own connection, as separate processes would be. The
//! program exits non-zero unless every round had exactly one winner and all
//! apps ended up with the same token.

use std::process::ExitCode;

use keyhaven::{Client, CredentialKey, ErrorKind, Secret, StoreOptions};

/// What one app did in a round.
struct Outcome {
    refreshed: bool,
    token: String,
}

/// One app's refresh: read, "refresh" with the server, write with
/// compare-and-swap; on conflict, adopt the winner's token. `rejected`
/// stands for the server round-trip: every app has read the rejected token
/// before any of them writes a new one, as when they all hit the same
/// expiry (a server round-trip takes far longer than a local read).
async fn refresh(
    client: &Client,
    key: &CredentialKey,
    app: usize,
    rejected: &tokio::sync::Barrier,
) -> Result<Outcome, keyhaven::Error> {
    let current = client.retrieve(key).await?;
    rejected.wait().await;
    // Stand-in for the call to the media server's refresh endpoint.
    let fresh = format!("token-r{}-app{app}", current.metadata.revision);
    let options = StoreOptions {
        label: current.metadata.label.clone(),
        expires_at: current.metadata.expires_at,
        ..StoreOptions::if_revision(current.metadata.revision)
    };
    match client
        .store(key, Secret::from(fresh.as_str()), options)
        .await
    {
        Ok(_) => Ok(Outcome {
            refreshed: true,
            token: fresh,
        }),
        Err(e) if e.kind() == ErrorKind::Conflict => {
            let winner = client.retrieve(key).await?;
            Ok(Outcome {
                refreshed: false,
                token: winner.secret.expose_str().unwrap_or_default().to_owned(),
            })
        }
        Err(e) => Err(e),
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let apps: usize = arg(&args, "--apps")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let rounds: usize = arg(&args, "--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let connect = |socket: Option<String>| async move {
        match socket {
            Some(path) => Client::connect_to(path).await,
            None => Client::connect().await,
        }
    };
    let mut clients = Vec::new();
    for _ in 0..apps {
        match connect(arg(&args, "--socket")).await {
            Ok(c) => clients.push(c),
            Err(e) => {
                eprintln!("refresh_once: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let Ok(key) = CredentialKey::new("jellyfin", "example-server", "example-user", "") else {
        return ExitCode::FAILURE;
    };
    if let Err(e) = clients[0]
        .store(&key, Secret::from("token-initial"), StoreOptions::default())
        .await
    {
        eprintln!("refresh_once: {e}");
        return ExitCode::FAILURE;
    }
    let mut ok = true;
    for round in 1..=rounds {
        let mut tasks = Vec::new();
        let rejected = std::sync::Arc::new(tokio::sync::Barrier::new(clients.len()));
        for (app, client) in clients.iter().enumerate() {
            let (client, key, rejected) = (client.clone(), key.clone(), rejected.clone());
            tasks.push(tokio::spawn(async move {
                refresh(&client, &key, app, &rejected).await
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            match task.await {
                Ok(Ok(outcome)) => outcomes.push(outcome),
                Ok(Err(e)) => {
                    eprintln!("refresh_once: {e}");
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    eprintln!("refresh_once: app task failed: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let winners = outcomes.iter().filter(|o| o.refreshed).count();
        let agreed = outcomes.windows(2).all(|w| w[0].token == w[1].token);
        println!(
            "round {round}: {winners} winner(s), {} app(s) {} the same token",
            outcomes.len(),
            if agreed { "use" } else { "do NOT use" }
        );
        ok &= winners == 1 && agreed;
    }
    println!(
        "{}",
        if ok {
            "every round: exactly one refresh, one token"
        } else {
            "FAILED"
        }
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
