//! Concurrent Stores are committed together (one transaction, one fsync
//! for the group). What a caller sees must not change: each Store keeps its
//! own compare-and-swap outcome, revisions stay unique and gap-free, events
//! come in revision order, and every acknowledged write survives a restart.

use std::sync::Arc;

use keyhaven::{CredentialKey, ErrorKind, EventKind, ListFilter, Secret, StoreOptions};
use keyhaven_tests::TestDaemon;

fn key(i: usize) -> CredentialKey {
    CredentialKey::new("jellyfin", &format!("srv-{i}"), "user-1", "").unwrap()
}

/// Rounds of concurrent writers; each round mixes writes that must win
/// with compare-and-swaps that must lose.
const ROUNDS: usize = 5;
const WRITERS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stores_keep_their_own_outcome_and_order() {
    let daemon = TestDaemon::start().await;
    let admin = daemon.client().await;
    let mut revisions = Vec::new();
    for i in 0..WRITERS {
        let stored = admin
            .store(&key(i), Secret::from("v0"), StoreOptions::default())
            .await
            .unwrap();
        revisions.push(stored.metadata.revision);
    }
    let mut watch = admin.watch(&ListFilter::default(), false).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..WRITERS {
        clients.push(Arc::new(daemon.client().await));
    }
    let mut acknowledged = Vec::new();
    for round in 1..=ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
        let mut tasks = Vec::new();
        for (i, client) in clients.iter().enumerate() {
            let (client, barrier) = (client.clone(), barrier.clone());
            // Odd writers present a revision that is not the stored one.
            let expected = if i % 2 == 0 {
                revisions[i]
            } else {
                revisions[i] + 1_000_000
            };
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                client
                    .store(
                        &key(i),
                        Secret::new(format!("v{round}-{i}").into_bytes()),
                        StoreOptions::if_revision(expected),
                    )
                    .await
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await.unwrap() {
                Ok(stored) => {
                    assert_eq!(i % 2, 0, "writer {i} with a stale revision won");
                    assert!(!stored.created);
                    revisions[i] = stored.metadata.revision;
                    acknowledged.push(stored.metadata.revision);
                }
                Err(e) => {
                    assert_eq!(i % 2, 1, "writer {i} with the right revision lost: {e}");
                    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
                }
            }
        }
    }
    // Every acknowledged write consumed exactly one revision: unique and,
    // with nothing else writing, contiguous.
    acknowledged.sort_unstable();
    let want = ROUNDS * WRITERS / 2;
    assert_eq!(acknowledged.len(), want);
    assert_eq!(
        acknowledged.last().unwrap() - acknowledged[0],
        want as u64 - 1,
        "revisions have gaps or repeats: {acknowledged:?}"
    );
    // The watcher sees each of them once, in revision order.
    let mut seen = Vec::new();
    while seen.len() < want {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
            .await
            .expect("every write reaches the watcher")
            .unwrap()
            .unwrap();
        assert_eq!(event.kind, EventKind::Updated);
        seen.push(event.metadata.unwrap().revision);
    }
    assert_eq!(seen, acknowledged, "events out of revision order");

    // Unconditional writers racing on one key: the stored value is the one
    // with the highest acknowledged revision, even when they share a group.
    let shared = key(WRITERS + 1);
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let (client, barrier, shared) = (client.clone(), barrier.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let stored = client
                .store(
                    &shared,
                    Secret::new(format!("racer-{i}").into_bytes()),
                    StoreOptions::default(),
                )
                .await
                .unwrap();
            (stored.metadata.revision, i)
        }));
    }
    let mut racers = Vec::new();
    for task in tasks {
        racers.push(task.await.unwrap());
    }
    let (last_revision, last_writer) = *racers.iter().max().unwrap();
    let got = admin.retrieve(&shared).await.unwrap();
    assert_eq!(got.metadata.revision, last_revision);
    assert_eq!(
        got.secret.expose(),
        format!("racer-{last_writer}").as_bytes()
    );
    assert_eq!(
        racers.iter().filter(|(_, i)| *i == 0).count(),
        1,
        "each racer acknowledged once"
    );

    // Acknowledged means durable: every winner's value after a restart.
    drop(watch);
    drop(clients);
    drop(admin);
    let (dir, settings) = daemon.stop().await;
    let daemon = TestDaemon::start_in(dir, settings).await.unwrap();
    let client = daemon.client().await;
    for (i, revision) in revisions.iter().enumerate() {
        let got = client.retrieve(&key(i)).await.unwrap();
        let want = if i % 2 == 0 {
            format!("v{ROUNDS}-{i}")
        } else {
            "v0".to_owned()
        };
        assert_eq!(got.secret.expose(), want.as_bytes(), "credential {i}");
        assert_eq!(got.metadata.revision, *revision);
    }
}
