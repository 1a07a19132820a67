//! Admin access under the per-app policy, the audit log's rule that nothing
//! is served unrecorded, page tokens, and the config file's owner and mode.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keyhaven::{AuditQuery, CredentialKey, ErrorKind, Secret, StoreOptions};
use keyhaven_daemon::identity::Identity;
use keyhaven_daemon::rpc::policy::{Policy, PolicyConfig};
use keyhaven_daemon::store::Database;
use keyhaven_daemon::store::audit::{AuditLog, Filter, Operation, Record, Retention};
use keyhaven_proto::pb;
use keyhaven_tests::{TestDaemon, TestEnv};

const WAIT: Duration = Duration::from_secs(20);

fn policy(text: &str) -> Policy {
    #[derive(serde::Deserialize)]
    struct P {
        policy: PolicyConfig,
    }
    let p: P = toml::from_str(text).unwrap();
    Policy::from_config(p.policy).unwrap()
}

/// Audit rows of `operation`, read from the database file itself (the
/// daemon is stopped, so everything it accepted is written).
async fn audit_rows(db: &Path, operation: &str) -> Vec<(String, String)> {
    let mut conn = keyhaven_tests::db_connection(db, true).await;
    sqlx::query_as("SELECT outcome, detail FROM audit_log WHERE operation = ? ORDER BY id")
        .bind(operation)
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_deny_all_policy_refuses_key_admin_and_the_audit_log_and_records_each_refusal() {
    let daemon = TestDaemon::start_with(|s| {
        // default = "allow" does not grant admin: only a rule naming it does.
        s.policy = policy("[policy]\ndefault = \"allow\"\n");
    })
    .await;
    let client = daemon.client().await;
    let key = CredentialKey::new("jellyfin", "srv", "u", "access_token").unwrap();
    client
        .store(&key, Secret::from("tok"), StoreOptions::default())
        .await
        .unwrap();
    let before = client.status().await.unwrap();

    let err = client.rotate_key().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("admin"), "{err}");
    let err = client.move_key("keyring").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let err = client.audit(&AuditQuery::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");

    // Nothing changed: same key, same tier; the token still reads.
    let after = client.status().await.unwrap();
    assert_eq!(after.key_id, before.key_id);
    assert_eq!(after.key_tier, before.key_tier);
    assert!(after.policy.contains("default allow"), "{}", after.policy);
    assert_eq!(client.retrieve(&key).await.unwrap().secret.expose(), b"tok");
    drop(client);

    let (dir, settings) = daemon.stop().await;
    let db = settings.database();
    for op in ["rotate-key", "move-key", "audit-query"] {
        let rows = audit_rows(&db, op).await;
        assert_eq!(rows.len(), 1, "{op}: {rows:?}");
        assert_eq!(rows[0].0, "PERMISSION_DENIED", "{op}: {rows:?}");
        assert!(rows[0].1.contains("admin"), "{op}: {rows:?}");
    }
    drop(dir);
}

#[tokio::test]
async fn a_rule_naming_admin_grants_it_to_that_program_only() {
    let me = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    let daemon = TestDaemon::start_with(|s| {
        s.policy = policy(&format!(
            "[policy]\ndefault = \"deny\"\n[[policy.rules]]\nexe = \"{}\"\naccess = [\"read\", \"write\", \"admin\"]\n",
            me.display()
        ));
    })
    .await;
    let client = daemon.client().await;
    let rotation = client.rotate_key().await.unwrap();
    assert_ne!(rotation.old_key_id, rotation.new_key_id);
    assert!(
        !client
            .audit(&AuditQuery::default())
            .await
            .unwrap()
            .is_empty()
    );

    // A rule without `access` covers read and write, never admin.
    let daemon = TestDaemon::start_with(|s| {
        s.policy = policy(&format!(
            "[policy]\n[[policy.rules]]\nexe = \"{}\"\n",
            me.display()
        ));
    })
    .await;
    let client = daemon.client().await;
    let err = client.rotate_key().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
}

#[test]
fn an_admin_rule_cannot_be_scoped_to_providers() {
    #[derive(serde::Deserialize)]
    struct P {
        policy: PolicyConfig,
    }
    let p: P = toml::from_str(
        "[policy]\n[[policy.rules]]\nexe = \"/x\"\naccess = [\"admin\"]\nproviders = [\"plex\"]\n",
    )
    .unwrap();
    let err = Policy::from_config(p.policy).unwrap_err().to_string();
    assert!(err.contains("whole store"), "{err}");
}

#[tokio::test]
async fn a_retrieve_during_a_flood_of_audited_calls_is_in_the_audit_log() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let key = CredentialKey::new("jellyfin", "srv", "reader", "access_token").unwrap();
    client
        .store(&key, Secret::from("tok"), StoreOptions::default())
        .await
        .unwrap();

    // The disk stalls: another connection holds SQLite's write lock, so the
    // audit writer cannot commit and its queue fills.
    let mut blocker = keyhaven_tests::db_connection(daemon.store_path(), false).await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();

    // A flood of cheap audited calls (misses), more than the queue holds.
    const FLOOD: usize = 10_000;
    let done = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    for t in 0..50 {
        let client = client.clone();
        let done = done.clone();
        flood.push(tokio::spawn(async move {
            let miss = CredentialKey::new("plex", "flood", &format!("t{t}"), "x").unwrap();
            for _ in 0..FLOOD / 50 {
                let _ = client.retrieve(&miss).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Wait until the flood is through (records would have been dropped) or
    // stalls (records wait for room), whichever comes first.
    let mut last = 0;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = done.load(Ordering::Relaxed);
        if now == FLOOD || (now == last && now > 0) {
            break;
        }
        last = now;
    }
    let reader = {
        let client = client.clone();
        let key = key.clone();
        tokio::spawn(async move { client.retrieve(&key).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    drop(blocker);

    let read = reader.await.unwrap();
    for task in flood {
        task.await.unwrap();
    }
    // Served means recorded.
    if let Ok(cred) = &read {
        assert_eq!(cred.secret.expose(), b"tok");
    }
    let entries = client
        .audit(&AuditQuery {
            key: Some(key.clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let recorded = entries
        .iter()
        .any(|e| e.operation == "retrieve" && e.outcome == "OK");
    assert!(
        read.is_err() || recorded,
        "a Retrieve was served but is not in the audit log: {entries:?}"
    );
    assert!(read.is_ok(), "the retrieve was refused: {read:?}");
}

/// The successful reads of one caller in a batch are one row (a group),
/// yet every read is an entry of its own: in the order of the requests
/// around a refusal, paged without loss or repetition, found by key and
/// by time.
#[tokio::test]
async fn reads_of_many_credentials_are_one_row_and_each_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let db = Database::open(&path).await.unwrap();
    let audit = AuditLog::start(db.clone());
    let who = Identity {
        uid: 1000,
        pid: 42,
        executable: Some("/usr/bin/player".into()),
        app_id: None,
    };
    let key = |i: usize| {
        keyhaven_proto::CanonicalKey::new("jellyfin", &format!("srv-{i}"), "u", "").unwrap()
    };
    // Each credential's key as the read cache shares it with the audit log.
    let cached: Vec<Arc<keyhaven_proto::CanonicalKey>> =
        (0..40).map(|i| Arc::new(key(i))).collect();
    let before = keyhaven_proto::time::now_unix_ms();
    // 30 reads of distinct credentials (the 3rd read twice), a refusal,
    // then 10 more reads.
    let mut expected: Vec<(String, String)> = Vec::new();
    for i in 0..30 {
        audit
            .read(7, &who, key(i).view(), Some(&cached[i]))
            .await
            .unwrap();
        if i != 3 {
            expected.push(("retrieve".into(), key(i).to_string()));
        }
        if i == 5 {
            audit
                .read(7, &who, key(3).view(), Some(&cached[3]))
                .await
                .unwrap();
        }
    }
    expected.insert(3, ("retrieve".into(), key(3).to_string()));
    let refused = tonic::Status::not_found("no such credential");
    audit
        .request(7, &who, Operation::Retrieve, Some(key(99)), Some(&refused))
        .await
        .unwrap();
    expected.push(("retrieve".into(), key(99).to_string()));
    for (i, shared) in cached.iter().enumerate().skip(30) {
        audit
            .read(7, &who, key(i).view(), Some(shared))
            .await
            .unwrap();
        expected.push(("retrieve".into(), key(i).to_string()));
    }
    audit.flush().await;
    let after = keyhaven_proto::time::now_unix_ms();

    let query = |filter: Filter| {
        let audit = audit.clone();
        async move { audit.query(&filter).await.unwrap() }
    };
    let all = query(Filter {
        limit: 1000,
        ..Filter::default()
    })
    .await;
    let seen: Vec<(String, String)> = all
        .iter()
        .rev()
        .map(|e| (e.operation.clone(), e.key.as_ref().unwrap().to_string()))
        .collect();
    assert_eq!(
        seen, expected,
        "one entry per credential read, in request order"
    );
    assert!(
        all.windows(2).all(|w| w[0].id > w[1].id),
        "ids strictly newest first"
    );
    let twice = all.iter().find(|e| e.key == Some(key(3))).unwrap();
    assert!(
        twice.detail.starts_with("2 reads, the last at "),
        "{twice:?}"
    );
    let no = all.iter().find(|e| e.key == Some(key(99))).unwrap();
    assert_eq!(
        (no.outcome.as_str(), no.detail.as_str()),
        ("NOT_FOUND", "no such credential")
    );
    assert!(
        all.iter()
            .all(|e| e.uid == 1000 && e.pid == 42 && e.executable == "/usr/bin/player")
    );

    // Pages of 7, each starting below the last id of the one before.
    let mut paged = Vec::new();
    let mut before_id = None;
    loop {
        let page = query(Filter {
            limit: 7,
            before_id,
            ..Filter::default()
        })
        .await;
        let Some(last) = page.last() else { break };
        before_id = Some(last.id);
        paged.extend(page);
    }
    assert_eq!(paged, all);

    // By key, from the middle of a group; by time, and by program.
    let by_key = query(Filter {
        key: Some(key(17)),
        limit: 100,
        ..Filter::default()
    })
    .await;
    assert_eq!(by_key.len(), 1);
    assert_eq!(
        by_key[0],
        *all.iter().find(|e| e.key == Some(key(17))).unwrap()
    );
    let in_time = query(Filter {
        since: Some(before),
        until: Some(after + 1),
        limit: 1000,
        ..Filter::default()
    })
    .await;
    assert_eq!(in_time, all);
    for (since, until) in [(Some(after + 1), None), (None, Some(before))] {
        let none = query(Filter {
            since,
            until,
            limit: 1000,
            ..Filter::default()
        })
        .await;
        assert!(none.is_empty(), "{since:?}..{until:?}: {none:?}");
    }
    let other_program = query(Filter {
        program: Some("browser".into()),
        limit: 1000,
        ..Filter::default()
    })
    .await;
    assert!(other_program.is_empty());

    // What the file holds: the reads before the refusal in one row, the
    // refusal, the reads after it (a batch may be cut in two by the
    // linger, so a row more at most each side).
    drop(audit);
    db.close().await;
    let mut conn = keyhaven_tests::db_connection(&path, true).await;
    let (rows, entries): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), SUM(entries) FROM audit_log")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(entries, i64::try_from(all.len()).unwrap());
    assert!(rows <= 5, "{rows} rows for {entries} entries");
}

#[tokio::test]
async fn count_pruning_never_removes_records_younger_than_the_age_retention() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&dir.path().join("store.db")).await.unwrap();
    let audit = AuditLog::start(db.clone());
    let who = Identity {
        uid: 1000,
        pid: 1,
        executable: None,
        app_id: None,
    };
    let now = keyhaven_proto::time::now_unix_ms();
    for i in 0..20 {
        audit
            .record(Record::new(
                now - i,
                who.clone(),
                Operation::Retrieve,
                None,
                "OK",
                String::new(),
            ))
            .await
            .unwrap();
    }
    // And one older than the age limit.
    audit
        .record(Record::new(
            now - 10 * 86_400_000,
            who.clone(),
            Operation::Retrieve,
            None,
            "OK",
            "old".into(),
        ))
        .await
        .unwrap();
    audit.flush().await;
    let pruned = audit
        .prune(Retention {
            max_entries: 5,
            max_age: Duration::from_secs(86_400),
        })
        .await
        .unwrap();
    assert_eq!(pruned, 1, "only the record past the age limit goes");
    let left = audit
        .query(&keyhaven_daemon::store::audit::Filter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 20);
    db.close().await;
}

#[tokio::test]
async fn page_tokens_the_daemon_never_issued_are_refused() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    for i in 0..5 {
        let key = CredentialKey::new("jellyfin", "srv", &format!("u{i}"), "access_token").unwrap();
        client
            .store(&key, Secret::from("t"), StoreOptions::default())
            .await
            .unwrap();
    }
    let mut raw = daemon.raw().await;
    let list = |page_token: String| pb::ListRequest {
        page_size: 2,
        page_token,
        ..Default::default()
    };
    // An issued token pages on.
    let first = raw.list(list(String::new())).await.unwrap().into_inner();
    assert_eq!(first.credentials.len(), 2);
    let second = raw
        .list(list(first.next_page_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.credentials.len(), 2);
    assert_ne!(first.credentials[0].key, second.credentials[0].key);
    // Forged: a key text, an edited token, garbage.
    let edited = first.next_page_token.replacen("u1", "u3", 1);
    for forged in [
        "jellyfin::srv::u1::access_token".to_owned(),
        edited,
        "x.y".to_owned(),
    ] {
        let status = raw.list(list(forged.clone())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{forged}");
        assert!(status.message().contains("page_token"), "{status:?}");
    }
    let channel = keyhaven_tests::raw_channel(daemon.socket()).await;
    let mut audit = pb::audit_client::AuditClient::new(channel);
    let status = audit
        .query(pb::AuditQuery {
            page_token: "12345".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

fn write_config(env: &TestEnv, text: &str) -> std::path::PathBuf {
    let dir = env.home().join(".config/keyhaven");
    std::fs::create_dir_all(&dir).unwrap();
    keyhaven_tests::set_mode(&dir, 0o700);
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    keyhaven_tests::set_mode(&path, 0o600);
    path
}

/// Runs keyhavend expecting it to refuse to start; returns its stderr.
fn refused_start(env: &TestEnv) -> String {
    let out = env
        .command("keyhavend")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "keyhavend started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_config_file_other_users_can_change_is_refused() {
    let env = TestEnv::new();
    let config = write_config(&env, "[policy]\ndefault = \"deny\"\n");
    keyhaven_tests::set_mode(&config, 0o666);
    let log = refused_start(&env);
    assert!(
        log.contains("chmod go-w") && log.contains(&config.display().to_string()),
        "{log}"
    );
    keyhaven_tests::set_mode(&config, 0o600);
    keyhaven_tests::set_mode(config.parent().unwrap(), 0o777);
    let log = refused_start(&env);
    assert!(log.contains("directory"), "{log}");
    keyhaven_tests::set_mode(config.parent().unwrap(), 0o700);
    if !keyhaven_tests::is_root() {
        keyhaven_tests::skip(
            "a_config_file_other_users_can_change_is_refused (owner part)",
            "needs root to give the file to another uid",
        );
        return;
    }
    rustix::fs::chown(
        &config,
        Some(rustix::fs::Uid::from_raw(65534)),
        Some(rustix::fs::Gid::from_raw(65534)),
    )
    .unwrap();
    let log = refused_start(&env);
    assert!(log.contains("owned by uid 65534"), "{log}");
}

#[test]
fn deleting_the_config_file_warns_and_status_shows_the_policy_in_force() {
    let env = TestEnv::new();
    let keyhaven = std::fs::canonicalize(keyhaven_tests::bin("keyhaven")).unwrap();
    let config = write_config(
        &env,
        &format!(
            "[policy]\ndefault = \"deny\"\n[[policy.rules]]\nexe = \"{}\"\naccess = [\"read\", \"write\", \"admin\"]\n",
            keyhaven.display()
        ),
    );
    let daemon = env.spawn_daemon(&[]);
    let policy_line = || {
        let out = env.cli(&["status", "--json"], b"");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["policy"].as_str().unwrap_or_default().to_owned()
    };
    let line = policy_line();
    assert!(
        line.contains("default deny") && line.contains(&config.display().to_string()),
        "{line}"
    );
    let out = env.cli(&["status"], b"");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("default deny"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    std::fs::remove_file(&config).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut line = policy_line();
    while !line.starts_with("none") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        line = policy_line();
    }
    assert!(line.starts_with("none"), "{line}");
    let (_, log) = daemon.stop();
    assert!(
        log.contains("WARN") && log.contains("no per-app policy is in force"),
        "{log}"
    );
}

#[tokio::test]
async fn repeated_reads_are_folded_into_records_that_count_every_read() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let polled = CredentialKey::new("jellyfin", "srv", "polled", "").unwrap();
    let other = CredentialKey::new("jellyfin", "srv", "other", "").unwrap();
    for k in [&polled, &other] {
        client
            .store(k, Secret::from("tok"), StoreOptions::default())
            .await
            .unwrap();
    }
    // An app polling its token, and one read of another credential and one
    // refused read in between: each of those keeps a record of its own.
    for i in 0..60 {
        client.retrieve(&polled).await.unwrap();
        if i == 30 {
            client.retrieve(&other).await.unwrap();
            let missing = CredentialKey::new("jellyfin", "srv", "missing", "").unwrap();
            client.retrieve(&missing).await.unwrap_err();
        }
    }
    let reads = |key: &CredentialKey| {
        let client = client.clone();
        let key = key.clone();
        async move {
            client
                .audit(&AuditQuery {
                    key: Some(key),
                    ..AuditQuery::default()
                })
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.operation == "retrieve")
                .collect::<Vec<_>>()
        }
    };
    let polled_entries = reads(&polled).await;
    let counted: u64 = polled_entries
        .iter()
        .map(|e| {
            assert_eq!(e.outcome, "OK");
            match e.detail.split_once(" reads, the last at ") {
                Some((n, _)) => n.parse::<u64>().unwrap(),
                None => {
                    assert_eq!(e.detail, "", "{e:?}");
                    1
                }
            }
        })
        .sum();
    assert_eq!(
        counted, 60,
        "every read is accounted for: {polled_entries:?}"
    );
    assert!(
        polled_entries.len() < 60,
        "reads within one batch share a record: {} records",
        polled_entries.len()
    );
    assert_eq!(reads(&other).await.len(), 1);
    let missing = CredentialKey::new("jellyfin", "srv", "missing", "").unwrap();
    let refused = reads(&missing).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].outcome, "NOT_FOUND");
}

#[tokio::test]
async fn an_audit_record_is_an_append_and_a_query_by_key_finds_only_its_own() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let keys: Vec<CredentialKey> = (0..20)
        .map(|i| CredentialKey::new("jellyfin", "srv", &format!("user-{i}"), "").unwrap())
        .collect();
    for k in &keys {
        client
            .store(k, Secret::from("tok"), StoreOptions::default())
            .await
            .unwrap();
    }
    for k in keys.iter().rev() {
        client.retrieve(k).await.unwrap();
    }
    let found = client
        .audit(&AuditQuery {
            key: Some(keys[7].clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let ops: Vec<&str> = found.iter().map(|e| e.operation.as_str()).collect();
    assert_eq!(ops, ["retrieve", "store"], "newest first: {found:?}");
    assert!(found.iter().all(|e| e.key.as_ref() == Some(&keys[7])));

    // One index, on time, which records are appended to in order. The
    // index on the key that the first schema had put each record at a
    // random place in it, and no query used it.
    let (_dir, settings) = daemon.stop().await;
    let mut conn = keyhaven_tests::db_connection(&settings.database(), true).await;
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_log' \
         ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(indexes, [("audit_log_at".to_owned(),)]);
}

/// How many reads of `user`'s credential the audit rows count, read from
/// the database file, without asking the daemon to flush anything: rows
/// of one read (none, since reads are grouped) and the elements of group
/// rows (`[first_at, last_at, reads, provider, server_id, user_id,
/// token_type]`, see migration `20261202000003_audit_read_groups.sql`).
async fn reads_in_file(db: &Path, user: &str) -> u64 {
    let mut conn = keyhaven_tests::db_connection(db, true).await;
    let single: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE operation = 'retrieve' AND outcome = 'OK' \
         AND reads IS NULL AND user_id = ?",
    )
    .bind(user)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let grouped: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(e.value ->> 2), 0) FROM audit_log, json_each(audit_log.reads) AS e \
         WHERE audit_log.reads IS NOT NULL AND e.value ->> 5 = ?",
    )
    .bind(user)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    u64::try_from(single + grouped).unwrap()
}

#[tokio::test]
async fn reads_counted_on_a_connection_reach_the_file_without_a_query_or_another_request() {
    let daemon = TestDaemon::start().await;
    let db = daemon.store_path().to_owned();
    let key = CredentialKey::new("jellyfin", "srv", "poller", "").unwrap();
    {
        let client = daemon.client().await;
        client
            .store(&key, Secret::from("tok"), StoreOptions::default())
            .await
            .unwrap();
        // The Store's batch is written first, so no batch is pending when
        // the reads start.
        let deadline = Instant::now() + WAIT;
        while audit_rows(&db, "store").await.is_empty() {
            assert!(Instant::now() < deadline, "the Store is never written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..7 {
            client.retrieve(&key).await.unwrap();
        }
    }
    // The app is gone and nothing else happens: the reads its connection
    // counted are still written, within the audit log's linger.
    let deadline = Instant::now() + WAIT;
    let mut seen = reads_in_file(&db, "poller").await;
    while seen < 7 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = reads_in_file(&db, "poller").await;
    }
    assert_eq!(seen, 7, "every read is in the file");
}

#[tokio::test]
async fn a_connections_records_are_in_the_order_of_its_requests() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let key = CredentialKey::new("jellyfin", "srv", "ordered", "").unwrap();
    client
        .store(&key, Secret::from("tok"), StoreOptions::default())
        .await
        .unwrap();
    client.retrieve(&key).await.unwrap();
    client.retrieve(&key).await.unwrap();
    client.delete(&key, None).await.unwrap();
    let found = client
        .audit(&AuditQuery {
            key: Some(key.clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let ops: Vec<&str> = found.iter().map(|e| e.operation.as_str()).collect();
    assert_eq!(
        ops,
        ["delete", "retrieve", "store"],
        "newest first: {found:?}"
    );
    assert!(
        found[1].detail.starts_with("2 reads, the last at "),
        "{found:?}"
    );
}

#[tokio::test]
async fn reads_counted_just_before_the_daemon_stops_are_written() {
    let daemon = TestDaemon::start().await;
    let key = CredentialKey::new("jellyfin", "srv", "last", "").unwrap();
    let client = daemon.client().await;
    client
        .store(&key, Secret::from("tok"), StoreOptions::default())
        .await
        .unwrap();
    for _ in 0..3 {
        client.retrieve(&key).await.unwrap();
    }
    let (_dir, settings) = daemon.stop().await;
    assert_eq!(reads_in_file(&settings.database(), "last").await, 3);
}

#[tokio::test]
async fn while_the_audit_log_cannot_be_written_nothing_is_served_and_no_served_read_is_lost() {
    let daemon = TestDaemon::start().await;
    let db = daemon.store_path().to_owned();
    let client = daemon.client().await;
    let key = CredentialKey::new("jellyfin", "srv", "guarded", "").unwrap();
    client
        .store(&key, Secret::from("tok"), StoreOptions::default())
        .await
        .unwrap();
    client.retrieve(&key).await.unwrap();
    let mut served = 1u64;

    // Every audit insert now fails, as it would on a full or failing disk.
    keyhaven_tests::sql(
        &db,
        "CREATE TRIGGER audit_blocked BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'blocked by the test'); END",
    )
    .await;
    // Reads are served (counted in their slot, or queued) until the writer
    // finds it cannot write them; from then on every one is refused, the
    // read the cache answers at once included.
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        assert!(Instant::now() < deadline, "reads never refused");
        match client.retrieve(&key).await {
            Ok(_) => served += 1,
            Err(e) => break e,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert!(
        refused.to_string().contains("audit log cannot be written"),
        "{refused}"
    );
    for _ in 0..3 {
        let e = client.retrieve(&key).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
    let e = client
        .store(&key, Secret::from("changed"), StoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");

    // The disk is back: the records the writer kept are written, and the
    // daemon serves again.
    keyhaven_tests::sql(&db, "DROP TRIGGER audit_blocked").await;
    let deadline = Instant::now() + WAIT;
    loop {
        match client.retrieve(&key).await {
            Ok(c) => {
                assert_eq!(
                    c.secret.expose(),
                    b"tok",
                    "the refused Store changed nothing"
                );
                served += 1;
                break;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                assert!(Instant::now() < deadline, "never served again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let (_dir, settings) = daemon.stop().await;
    assert_eq!(
        reads_in_file(&settings.database(), "guarded").await,
        served,
        "every read that was served is in the audit log"
    );
}
