//! Sharing one login between apps: Watch, the refresh race, expiry,
//! logout, caller identity, the audit log and the per-app policy, each
//! through the real socket.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use keyhaven::{AuditQuery, CredentialKey, ErrorKind, EventKind, ListFilter, Secret, StoreOptions};
use keyhaven_tests::{TestDaemon, TestEnv, bin};

fn key(server: &str, user: &str, token_type: &str) -> CredentialKey {
    CredentialKey::new("jellyfin", server, user, token_type).unwrap()
}

/// Waits at most this long for any expected event.
const WAIT: Duration = Duration::from_secs(20);

/// Lines a child prints on stdout, delivered through a channel so tests can
/// wait with a deadline.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_json(lines: &mpsc::Receiver<String>) -> serde_json::Value {
    let line = lines.recv_timeout(WAIT).expect("an event line in time");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn a_watcher_in_another_process_sees_a_store_with_the_writers_identity() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    let mut watcher = env
        .command("keyhaven")
        .args([
            "watch",
            "--json",
            "--snapshot",
            "--count",
            "3",
            "--provider",
            "jellyfin",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut watcher);
    assert_eq!(
        next_json(&lines)["kind"],
        "SYNCED",
        "empty snapshot, then live"
    );

    let canary = "watch-canary-1b2c";
    let mut writer = env
        .command("keyhaven")
        .args(["store", "jellyfin", "srv-1", "user-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let writer_pid = writer.id();
    {
        use std::io::Write;
        writer
            .stdin
            .take()
            .unwrap()
            .write_all(canary.as_bytes())
            .unwrap();
    }
    assert!(writer.wait().unwrap().success());
    // Another provider's credential is filtered out.
    let out = env.cli(&["store", "plex", "", "acct"], b"x");
    assert!(out.status.success());
    let out = env.cli(&["delete", "jellyfin", "srv-1", "user-1"], b"");
    assert!(out.status.success());

    let stored = next_json(&lines);
    assert_eq!(stored["kind"], "STORED");
    assert_eq!(
        stored["credential"]["key"],
        "jellyfin::srv-1::user-1::access_token"
    );
    assert_eq!(stored["actor"]["pid"], writer_pid);
    let exe = std::fs::canonicalize(bin("keyhaven")).unwrap();
    assert_eq!(stored["actor"]["executable"], exe.display().to_string());
    assert_eq!(stored["actor"]["uid"], rustix::process::getuid().as_raw());
    let deleted = next_json(&lines);
    assert_eq!(deleted["kind"], "DELETED");
    assert!(
        deleted["credential"]["revision"].as_u64() > stored["credential"]["revision"].as_u64(),
        "a deletion has its own, later revision"
    );
    assert!(
        watcher.wait().unwrap().success(),
        "exits after --count events"
    );
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(!rest.join("\n").contains(canary));
    assert!(
        !stored.to_string().contains(canary),
        "events never carry secrets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_told_it_lagged_and_can_resync() {
    let daemon = TestDaemon::start_with(|s| s.event_buffer = 4).await;
    let writer = daemon.client().await;
    // A watcher whose HTTP/2 window is tiny and who does not read: the
    // daemon can only buffer so much for it before it falls behind.
    let channel = tonic::transport::Endpoint::from_static("http://keyhaven.invalid")
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect_with_connector(tower::service_fn({
            let path = daemon.socket().to_path_buf();
            move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map(hyper_util::rt::TokioIo::new)
                }
            }
        }))
        .await
        .unwrap();
    let mut slow = keyhaven_proto::pb::credentials_client::CredentialsClient::new(channel)
        .watch(keyhaven_proto::pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();

    let long = "x".repeat(250);
    let mut last = 0;
    for i in 0..1500 {
        let k = CredentialKey::new("jellyfin", &long, &format!("{long}{i}"), "").unwrap();
        let opts = StoreOptions {
            label: Some(long.clone()),
            ..Default::default()
        };
        last = writer
            .store(&k, Secret::from("s"), opts)
            .await
            .unwrap()
            .metadata
            .revision;
    }
    // Now drain: somewhere there is a LAGGED event, and the stream goes on
    // to deliver the newest change.
    let mut lagged = 0;
    let mut newest = 0;
    while newest < last {
        let event = tokio::time::timeout(WAIT, slow.message())
            .await
            .expect("events keep coming")
            .unwrap()
            .expect("stream open");
        if event.kind() == keyhaven_proto::pb::EventKind::Lagged {
            lagged += event.missed;
        } else {
            newest = event.metadata.unwrap().revision;
        }
    }
    assert!(lagged > 0, "the slow watcher was told it lagged");
    assert_eq!(newest, last);
    // A fresh watcher with a snapshot re-syncs: it sees all 1500.
    let mut resync = writer.watch(&ListFilter::default(), true).await.unwrap();
    let mut snapshot = 0;
    loop {
        let e = resync.next().await.unwrap().unwrap();
        match e.kind {
            EventKind::Snapshot => snapshot += 1,
            EventKind::Synced => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(snapshot, 1500);
}

#[test]
fn the_refresh_race_has_exactly_one_winner_every_round() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    let example = bin("keyhaven")
        .parent()
        .unwrap()
        .join("examples/refresh_once");
    assert!(
        example.exists(),
        "cargo test builds the examples: {}",
        example.display()
    );
    let out = std::process::Command::new(&example)
        .args([
            "--socket",
            env.socket().to_str().unwrap(),
            "--apps",
            "4",
            "--rounds",
            "25",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("1 winner(s), 4 app(s) use the same token")
            .count(),
        25,
        "{text}"
    );
}

#[tokio::test]
async fn expired_credentials_are_purged_with_an_expired_event() {
    let daemon = TestDaemon::start_with(|s| s.expiry_sweep = Duration::from_millis(50)).await;
    let client = daemon.client().await;
    let mut watch = client.watch(&ListFilter::default(), true).await.unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap().kind, EventKind::Synced);
    let k = key("srv", "u", "");
    let expires = SystemTime::now() + Duration::from_millis(300);
    client
        .store(
            &k,
            Secret::from("short-lived"),
            StoreOptions {
                expires_at: Some(expires),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let stored = watch.next().await.unwrap().unwrap();
    assert_eq!(stored.kind, EventKind::Stored);
    let expired = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("the sweep runs")
        .unwrap()
        .unwrap();
    assert_eq!(expired.kind, EventKind::Expired);
    assert_eq!(expired.metadata.as_ref().unwrap().key, k);
    assert!(expired.actor.is_none(), "the daemon itself removed it");
    // The store keeps milliseconds: compare with the expiry it recorded,
    // not with the sub-millisecond SystemTime the test asked for.
    let recorded = stored.metadata.as_ref().unwrap().expires_at.unwrap();
    assert!(expires.duration_since(recorded).unwrap() < Duration::from_millis(1));
    assert!(
        expired.time >= recorded,
        "{:?} < {recorded:?}",
        expired.time
    );
    assert!(
        client
            .list(&ListFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        client.retrieve(&k).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_removes_a_servers_credentials_atomically_with_one_event_each() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let doomed = [
        key("srv-1", "alice", "access_token"),
        key("srv-1", "alice", "refresh_token"),
        key("srv-1", "bob", "access_token"),
        key("srv-1", "", "api_key"),
    ];
    for k in &doomed {
        client
            .store(k, Secret::from("t"), StoreOptions::default())
            .await
            .unwrap();
    }
    let survivor = key("srv-2", "alice", "");
    client
        .store(&survivor, Secret::from("t"), StoreOptions::default())
        .await
        .unwrap();
    let mut watch = client.watch(&ListFilter::default(), false).await.unwrap();

    // A reader listing srv-1 over and over must never see a partial logout.
    let lister = daemon.client().await;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let observer = tokio::spawn(async move {
        let filter = ListFilter {
            provider: Some("jellyfin".into()),
            server_id: Some("srv-1".into()),
            ..ListFilter::default()
        };
        let mut seen = Vec::new();
        loop {
            seen.push(lister.list(&filter).await.unwrap().len());
            if stop_rx.try_recv().is_ok() {
                return seen;
            }
            tokio::task::yield_now().await;
        }
    });
    let removed = client.logout("jellyfin", "srv-1", None).await.unwrap();
    let _ = stop_tx.send(());
    let seen = observer.await.unwrap();
    assert!(
        seen.iter().all(|n| *n == 4 || *n == 0),
        "partial state seen: {seen:?}"
    );
    assert_eq!(removed.len(), 4);
    let mut revisions = Vec::new();
    for _ in 0..4 {
        let e = watch.next().await.unwrap().unwrap();
        assert_eq!(e.kind, EventKind::Deleted);
        assert!(e.actor.is_some());
        revisions.push(e.metadata.unwrap().revision);
    }
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    let left = client.list(&ListFilter::default()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, survivor);

    // One user only, and nothing to delete is fine.
    client
        .store(&doomed[0], Secret::from("t"), StoreOptions::default())
        .await
        .unwrap();
    client
        .store(&doomed[2], Secret::from("t"), StoreOptions::default())
        .await
        .unwrap();
    let removed = client
        .logout("jellyfin", "srv-1", Some("bob"))
        .await
        .unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].key, doomed[2]);
    assert!(
        client
            .logout("plex", "none", None)
            .await
            .unwrap()
            .is_empty()
    );
    let err = client.logout("", "x", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test]
async fn the_audit_log_records_what_happened_and_who_did_it() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let k = key("srv", "u", "");
    client
        .store(&k, Secret::from("audit-canary-77"), StoreOptions::default())
        .await
        .unwrap();
    client.retrieve(&k).await.unwrap();
    let missing = key("srv", "nobody", "");
    client.retrieve(&missing).await.unwrap_err();
    client.delete(&k, None).await.unwrap();

    let entries = client
        .audit(&AuditQuery {
            key: Some(k.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let ops: Vec<_> = entries
        .iter()
        .map(|e| (e.operation.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        ops,
        [("delete", "OK"), ("retrieve", "OK"), ("store", "OK")],
        "newest first"
    );
    let me = std::env::current_exe().unwrap();
    for e in &entries {
        assert_eq!(e.caller.pid, i32::try_from(std::process::id()).unwrap());
        assert_eq!(e.caller.executable.as_deref(), me.to_str());
        assert_eq!(e.key.as_ref(), Some(&k));
    }
    let refusal = client
        .audit(&AuditQuery {
            key: Some(missing),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(refusal.len(), 1);
    assert_eq!(refusal[0].outcome, "NOT_FOUND");
    assert!(
        refusal[0].detail.contains("no credential"),
        "{}",
        refusal[0].detail
    );

    // Filters by program and time.
    let by_program = AuditQuery {
        program: Some("no-such-program".into()),
        ..Default::default()
    };
    assert!(client.audit(&by_program).await.unwrap().is_empty());
    let future = AuditQuery {
        since: Some(SystemTime::now() + Duration::from_secs(60)),
        ..Default::default()
    };
    assert!(client.audit(&future).await.unwrap().is_empty());
    let all = client.audit(&AuditQuery::default()).await.unwrap();
    assert!(all.len() >= 4);
    // The audit table never holds the secret.
    let (dir, settings) = daemon.stop().await;
    for f in keyhaven_tests::database_files(&settings.database()) {
        assert!(
            !keyhaven_tests::file_contains(&f, b"audit-canary-77"),
            "{}",
            f.display()
        );
    }
    drop(dir);
}

#[test]
fn the_policy_refuses_one_program_allows_another_and_reloads_on_sighup() {
    let env = TestEnv::new();
    // A second program: the same CLI under another path.
    let other = env.root().join("other-app");
    std::fs::copy(bin("keyhaven"), &other).unwrap();
    let keyhaven = std::fs::canonicalize(bin("keyhaven")).unwrap();
    let config_dir = env.home().join(".config/keyhaven");
    std::fs::create_dir_all(&config_dir).unwrap();
    keyhaven_tests::set_mode(&config_dir, 0o700);
    let config = config_dir.join("config.toml");
    let write_config = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "[policy]\ndefault = \"deny\"\n\n[[policy.rules]]\nexe = \"{}\"\n\
                 access = [\"read\", \"write\", \"admin\"]\n{extra}",
                keyhaven.display()
            ),
        )
        .unwrap();
    };
    write_config("");
    let daemon = env.spawn_daemon(&[]);
    let out = env.cli(&["store", "jellyfin", "srv", "u"], b"shared-token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run_other = || {
        std::process::Command::new(&other)
            .args([
                "--socket",
                env.socket().to_str().unwrap(),
                "get",
                "jellyfin",
                "srv",
                "u",
            ])
            .output()
            .unwrap()
    };
    let out = run_other();
    assert_eq!(
        out.status.code(),
        Some(i32::from(keyhaven_proto::exit::PERMISSION_DENIED))
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy default \"deny\"") && err.contains("other-app"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("shared-token"));

    // A watcher connected before the reload keeps its connection.
    let mut watcher = env
        .command("keyhaven")
        .args(["watch", "--json", "--snapshot", "--count", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut watcher);
    assert_eq!(next_json(&lines)["kind"], "SNAPSHOT");
    assert_eq!(next_json(&lines)["kind"], "SYNCED");

    write_config(&format!(
        "\n[[policy.rules]]\nexe = \"{}\"\naccess = [\"read\"]\n",
        std::fs::canonicalize(&other).unwrap().display()
    ));
    let pid = rustix::process::Pid::from_raw(i32::try_from(daemon.pid()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    // The reload is asynchronous; the refused program retries until the new
    // rule applies (bounded).
    let deadline = std::time::Instant::now() + WAIT;
    let out = loop {
        let out = run_other();
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "shared-token\n");
    // Read-only: writing is still refused, naming the default.
    let out = std::process::Command::new(&other)
        .args([
            "--socket",
            env.socket().to_str().unwrap(),
            "delete",
            "jellyfin",
            "srv",
            "u",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(i32::from(keyhaven_proto::exit::PERMISSION_DENIED))
    );

    let out = env.cli(&["store", "jellyfin", "srv", "u2"], b"t");
    assert!(out.status.success());
    assert_eq!(
        next_json(&lines)["kind"],
        "STORED",
        "the old watch connection survived"
    );
    assert!(watcher.wait().unwrap().success());

    // The refusals are in the audit log, with the refused program.
    let out = env.cli(&["audit", "--json", "--program", "other-app"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let denied: Vec<_> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "PERMISSION_DENIED")
        .collect();
    assert_eq!(denied.len(), 2, "{entries}");
    assert!(denied.iter().any(|e| e["operation"] == "retrieve"));
    assert!(denied.iter().any(|e| e["operation"] == "delete"));
    let (_, log) = daemon.stop();
    assert!(log.contains("policy reloaded"), "{log}");
}
