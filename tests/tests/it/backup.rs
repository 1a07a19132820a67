//! Backups, the portable export and restore (issue 17), mostly through the
//! real `keyhaven` and `keyhavend` binaries, as a user would run them:
//! snapshots under load, crashes of either side, a move to a fresh home
//! with a new data key, files that must be refused, newer revisions that
//! must be kept, the admin access they all need, and automatic snapshots.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyhaven::backup::format::{ExportDocument, ExportEntry, Manifest};
use keyhaven::backup::{RestoreKind, RestoreOptions};
use keyhaven::{CredentialKey, ErrorKind, ListFilter, Secret, StoreOptions};
use keyhaven_daemon::rpc::policy::{Policy, PolicyConfig};
use keyhaven_proto::exit;
use keyhaven_tests::{TestDaemon, TestEnv, have, mode_of, skip};

const WAIT: Duration = Duration::from_secs(30);
const PASSPHRASE: &[u8] = b"correct horse battery staple\n";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(env: &TestEnv, args: &[&str], stdin: &[u8]) -> String {
    let out = env.cli(args, stdin);
    assert!(
        out.status.success(),
        "keyhaven {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn get(env: &TestEnv, provider: &str, server: &str, user: &str, kind: &str) -> Vec<u8> {
    let out = env.cli(&["get", "-n", provider, server, user, kind], b"");
    assert!(out.status.success(), "get: {}", text(&out.stderr));
    out.stdout
}

fn list(env: &TestEnv) -> serde_json::Value {
    serde_json::from_str(&ok(env, &["list", "--json"], b"")).unwrap()
}

fn key_id(env: &TestEnv) -> String {
    let status: serde_json::Value =
        serde_json::from_str(&ok(env, &["status", "--json"], b"")).unwrap();
    status["key_id"].as_str().unwrap().to_owned()
}

/// Everything a user can see of a store: metadata and every secret.
fn everything(env: &TestEnv) -> Vec<(serde_json::Value, Vec<u8>)> {
    list(env)
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let field = |n: &str| m[n].as_str().unwrap().to_owned();
            let secret = get(
                env,
                &field("provider"),
                &field("server_id"),
                &field("user_id"),
                &field("token_type"),
            );
            (m.clone(), secret)
        })
        .collect()
}

/// Files in `dir` whose name starts with `prefix`.
fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Stores a few credentials with labels, an expiry and a binary secret.
fn seed(env: &TestEnv) -> Vec<(&'static [&'static str], Vec<u8>)> {
    let creds: Vec<(&'static [&'static str], Vec<u8>)> = vec![
        (
            &["jellyfin", "srv-1", "alice", "access_token"],
            b"tok-\x00\xff\x80-binary".to_vec(),
        ),
        (
            &["plex", "", "bob", "access_token"],
            "plex-token-\u{fc}".as_bytes().to_vec(),
        ),
        (&["emby", "e1", "", "api_key"], vec![b'k'; 1000]),
    ];
    for (i, (key, secret)) in creds.iter().enumerate() {
        let mut args = vec!["store"];
        args.extend_from_slice(key);
        let label = format!("Label {i}");
        if i != 1 {
            args.extend_from_slice(&["--label", &label]);
        }
        if i == 1 {
            args.extend_from_slice(&["--expires-in", "86400"]);
        }
        ok(env, &args, secret);
    }
    creds
}

fn export(env: &TestEnv, file: &Path, args: &[&str]) {
    let mut all = vec!["export", "--to", path_str(file), "--passphrase-stdin"];
    all.extend_from_slice(args);
    ok(env, &all, PASSPHRASE);
}

fn restore(env: &TestEnv, file: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut all = vec!["restore", path_str(file), "--passphrase-stdin"];
    all.extend_from_slice(args);
    env.cli(&all, stdin)
}

fn policy(text: &str) -> Policy {
    #[derive(serde::Deserialize)]
    struct P {
        policy: PolicyConfig,
    }
    let p: P = toml::from_str(text).unwrap();
    Policy::from_config(p.policy).unwrap()
}

/// A snapshot through the client library, bytes in memory.
async fn snapshot(client: &keyhaven::Client) -> (Manifest, Vec<u8>) {
    let mut stream = client.backup().await.unwrap();
    let manifest = stream.manifest().clone();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next_chunk().await.unwrap() {
        bytes.extend_from_slice(&chunk);
    }
    (manifest, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_under_32_concurrent_writers_passes_integrity_check_and_holds_every_acknowledged_credential()
 {
    let daemon = TestDaemon::start().await;
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..32 {
        let client = daemon.client().await;
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let key =
                    CredentialKey::new("jellyfin", &format!("w{w}"), &format!("u{i}"), "").unwrap();
                let stored = client
                    .store(
                        &key,
                        Secret::from(format!("t{w}-{i}")),
                        StoreOptions::default(),
                    )
                    .await
                    .unwrap();
                acked
                    .lock()
                    .unwrap()
                    .insert(key.to_string(), stored.metadata.revision);
                i += 1;
            }
        }));
    }
    let deadline = Instant::now() + WAIT;
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "the writers are too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = acked.lock().unwrap().clone();
    let client = daemon.client().await;
    let (manifest, bytes) = snapshot(&client).await;
    let during = acked.lock().unwrap().len();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        acked.lock().unwrap().len() > before.len(),
        "the writers went on while the snapshot was taken"
    );
    manifest.verify_bytes(&bytes).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    std::fs::write(&file, &bytes).unwrap();
    let mut conn = keyhaven_tests::db_connection(&file, true).await;
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(verdict, "ok");
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT provider, server_id, user_id, token_type, revision FROM auth_tokens",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let in_snapshot: HashMap<String, u64> = rows
        .into_iter()
        .map(|(p, s, u, t, r)| {
            (
                CredentialKey::new(&p, &s, &u, &t).unwrap().to_string(),
                u64::try_from(r).unwrap(),
            )
        })
        .collect();
    for (key, revision) in &before {
        assert_eq!(
            in_snapshot.get(key),
            Some(revision),
            "{key}, acknowledged before the snapshot began, is in it"
        );
    }
    assert_eq!(manifest.credential_count, in_snapshot.len() as u64);
    assert!(manifest.credential_count as usize >= before.len().max(during.min(before.len())));
    // Only ciphertext: no secret in the bytes.
    for (key, _) in before.iter().take(20) {
        let parts: Vec<&str> = key.split("::").collect();
        let secret = format!("t{}-{}", &parts[1][1..], &parts[2][1..]);
        let needle = secret.as_bytes();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{secret} in the snapshot"
        );
    }
}

#[test]
fn kill_9_of_the_daemon_during_a_snapshot_leaves_no_complete_file_and_loses_nothing() {
    let env = TestEnv::new();
    let daemon = env.spawn_daemon(&[("KEYHAVEN_FAULT", "backup:streaming")]);
    let creds = seed(&env);
    let before = everything(&env);
    let target = env.root().join("snap.khsnap");
    let out = env.cli(&["backup", "--to", path_str(&target)], b"");
    assert!(!out.status.success(), "the daemon died mid-snapshot");
    let (status, log) = daemon.wait_exit();
    assert_eq!(status.signal(), Some(9), "{log}");
    assert!(log.contains("backup:streaming"), "{log}");
    assert!(!target.exists(), "no file under the final name");
    assert_eq!(
        files_starting(env.root(), ".snap.khsnap"),
        Vec::<PathBuf>::new()
    );

    let daemon = env.spawn_daemon(&[]);
    assert_eq!(everything(&env), before, "nothing was lost");
    assert_eq!(creds.len(), before.len());
    // The next snapshot works and removes what the killed daemon left.
    let data_dir = env.database().parent().unwrap().to_path_buf();
    ok(&env, &["backup", "--to", path_str(&target)], b"");
    assert_eq!(mode_of(&target), 0o600);
    assert_eq!(
        files_starting(&data_dir, ".keyhaven-backup-"),
        Vec::<PathBuf>::new()
    );
    let manifest = ok(&env, &["backup", "--manifest", path_str(&target)], b"");
    assert!(manifest.contains("credentials:       3"), "{manifest}");
    assert!(manifest.contains("complete:          yes"), "{manifest}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_cli_during_a_restore_loses_nothing_and_a_rerun_completes() {
    const COUNT: usize = 600;
    let a = TestEnv::new();
    let _da = a.spawn_daemon(&[]);
    let lines: String = (0..COUNT)
        .map(|i| {
            format!(
                "{{\"provider\":\"jellyfin\",\"server_id\":\"srv\",\"user_id\":\"u{i}\",\
                 \"token_type\":\"access_token\",\"secret\":\"token-{i}\"}}\n"
            )
        })
        .collect();
    ok(&a, &["import", "json"], lines.as_bytes());
    let file = a.root().join("all.age");
    export(&a, &file, &[]);

    let b = TestEnv::new();
    let _db = b.spawn_daemon(&[]);
    let watcher = keyhaven::Client::connect_to(b.socket()).await.unwrap();
    let mut watch = watcher.watch(&ListFilter::default(), false).await.unwrap();
    let mut child = b
        .command("keyhaven")
        .args(["restore", path_str(&file), "--passphrase-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(PASSPHRASE).unwrap();
    }
    // The first credential the restore writes: kill the CLI there.
    let first = tokio::time::timeout(WAIT, watch.next()).await.unwrap();
    assert!(first.unwrap().is_ok());
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));

    // Whatever got in is whole; nothing else changed.
    let partial = everything(&b);
    assert!(!partial.is_empty());
    for (meta, secret) in &partial {
        let user = meta["user_id"].as_str().unwrap();
        assert_eq!(secret, format!("token-{}", &user[1..]).as_bytes());
    }
    // Run it again, as the user would. The daemon may still be finishing
    // the first one's last write: a credential written meanwhile fails
    // cleanly ("run the restore again"), never half-written.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let out = restore(&b, &file, &[], PASSPHRASE);
        let stdout = text(&out.stdout);
        if code(&out) == 0 {
            assert!(stdout.contains("unchanged"), "{stdout}");
            break;
        }
        assert_eq!(code(&out), i32::from(exit::RESTORE_FAILED), "{stdout}");
        for line in stdout.lines().filter(|l| l.starts_with("failed:")) {
            assert!(line.contains("changed while restoring"), "{line}");
        }
        assert!(attempts < 5, "{stdout}");
    }
    assert_eq!(everything(&b).len(), COUNT);
    let data_dir = b.database().parent().unwrap().to_path_buf();
    assert_eq!(
        files_starting(&data_dir, ".keyhaven-backup-"),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn an_export_restored_into_a_fresh_home_with_a_new_data_key_returns_every_secret_byte_for_byte() {
    let a = TestEnv::new();
    let _da = a.spawn_daemon(&[]);
    let creds = seed(&a);
    let file = a.root().join("move.age");
    export(&a, &file, &[]);
    assert_eq!(mode_of(&file), 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    for (_, secret) in &creds {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == &secret[..]),
            "a secret in the clear"
        );
    }

    let b = TestEnv::new();
    let _db = b.spawn_daemon(&[]);
    assert_ne!(key_id(&a), key_id(&b), "the new home has its own data key");
    let out = restore(&b, &file, &[], PASSPHRASE);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.matches("restored: ").count(),
        creds.len(),
        "{stdout}"
    );
    assert!(stdout.contains("summary: 3 restored, 0 replaced, 0 unchanged, 0 skipped, 0 failed"));
    for (key, secret) in &creds {
        assert_eq!(&get(&b, key[0], key[1], key[2], key[3]), secret, "{key:?}");
    }
    let strip = |v: serde_json::Value| -> Vec<(String, serde_json::Value, serde_json::Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["key"].as_str().unwrap().to_owned(),
                    m["label"].clone(),
                    m["expires_at"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        strip(list(&a)),
        strip(list(&b)),
        "labels and expiry came along"
    );
    // Again: nothing to do, and it says so.
    let out = restore(&b, &file, &[], PASSPHRASE);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("0 restored, 0 replaced, 3 unchanged"));
    // A filtered export holds only what matches.
    let only = a.root().join("plex.age");
    export(&a, &only, &["--provider", "plex"]);
    let c = TestEnv::new();
    let _dc = c.spawn_daemon(&[]);
    let out = restore(&c, &only, &[], PASSPHRASE);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(list(&c).as_array().unwrap().len(), 1);
}

#[test]
fn the_stock_age_tool_decrypts_an_export() {
    let test = "the_stock_age_tool_decrypts_an_export";
    if !have("age") {
        assert!(
            std::env::var_os("KEYHAVEN_REQUIRE_OTHER_LANGUAGES").is_none(),
            "CI installs the age tool; it is missing"
        );
        skip(
            test,
            "the `age` tool is not installed (apt-get install age)",
        );
        return;
    }
    if !have("script") {
        skip(
            test,
            "`script` (util-linux) is needed to give age a terminal",
        );
        return;
    }
    let env = TestEnv::new();
    let _d = env.spawn_daemon(&[]);
    let creds = seed(&env);
    let file = env.root().join("stock.age");
    export(&env, &file, &[]);
    let plain = env.root().join("plain.json");
    // age reads a passphrase only from a terminal: `script` gives it one.
    let mut child = std::process::Command::new("script")
        .args([
            "-q",
            "-e",
            "-c",
            &format!("age -d -o '{}' '{}'", plain.display(), file.display()),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(PASSPHRASE).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "age -d: {}", text(&out.stderr));
    let doc = ExportDocument::parse(&std::fs::read(&plain).unwrap()).unwrap();
    assert_eq!(doc.format, "keyhaven-export");
    assert_eq!(doc.version, 1);
    assert_eq!(doc.credentials.len(), creds.len());
    let secrets: Vec<Vec<u8>> = doc
        .credentials
        .iter()
        .map(|e: &ExportEntry| e.secret().unwrap().expose().to_vec())
        .collect();
    for (_, secret) in &creds {
        assert!(secrets.contains(secret));
    }
}

#[test]
fn wrong_passphrase_wrong_key_truncated_and_bit_flipped_files_are_refused_and_change_nothing() {
    let a = TestEnv::new();
    let _da = a.spawn_daemon(&[]);
    seed(&a);
    let snap = a.root().join("a.khsnap");
    let exp = a.root().join("a.age");
    ok(&a, &["backup", "--to", path_str(&snap)], b"");
    export(&a, &exp, &[]);
    // So that a restore would change something if it went through.
    ok(&a, &["delete", "plex", "", "bob"], b"");
    ok(&a, &["store", "jellyfin", "srv-1", "alice"], b"newer");
    let before = everything(&a);

    let snap_bytes = std::fs::read(&snap).unwrap();
    let exp_bytes = std::fs::read(&exp).unwrap();
    let flip = |bytes: &[u8], at: usize| {
        let mut b = bytes.to_vec();
        b[at] ^= 0x10;
        b
    };
    let mac_at = exp_bytes.windows(4).position(|w| w == b"--- ").unwrap() + 6;
    let manifest_edit = {
        let s = String::from_utf8_lossy(&snap_bytes[..200]).into_owned();
        let at = s.find("\"credential_count\":3").unwrap() + "\"credential_count\":".len();
        let mut b = snap_bytes.clone();
        b[at] = b'2';
        b
    };
    // A manifest whose key id would drive the terminal.
    let manifest_escape = {
        let head = String::from_utf8_lossy(&snap_bytes[..300]).into_owned();
        let id = key_id(&a);
        let at = head.find(&id).unwrap();
        let mut b = snap_bytes[..at].to_vec();
        b.extend_from_slice(b"\\u001b]0;owned\\u0007");
        b.extend_from_slice(&snap_bytes[at + id.len()..]);
        b
    };
    let cases: Vec<(&str, Vec<u8>, &[u8], &str)> = vec![
        (
            "wrong passphrase",
            exp_bytes.clone(),
            b"not the passphrase\n",
            "wrong passphrase",
        ),
        (
            "truncated export",
            exp_bytes[..exp_bytes.len() - 20].to_vec(),
            PASSPHRASE,
            "truncated",
        ),
        (
            "bit-flipped export",
            flip(&exp_bytes, exp_bytes.len() - 40),
            PASSPHRASE,
            "damaged",
        ),
        (
            "export header MAC flipped",
            flip(&exp_bytes, mac_at),
            PASSPHRASE,
            "damaged",
        ),
        (
            "truncated snapshot",
            snap_bytes[..snap_bytes.len() - 4096].to_vec(),
            b"",
            "truncated",
        ),
        (
            "bit-flipped snapshot",
            flip(&snap_bytes, snap_bytes.len() - 3000),
            b"",
            "SHA-256",
        ),
        ("edited manifest", manifest_edit, b"", "manifest says"),
        (
            "terminal escapes in the manifest",
            manifest_escape.clone(),
            b"",
            "not an id",
        ),
        (
            "not a backup",
            b"hello".to_vec(),
            b"",
            "neither a keyhaven snapshot",
        ),
    ];
    for (name, bytes, stdin, says) in cases {
        let file = a.root().join("bad");
        std::fs::write(&file, &bytes).unwrap();
        let out = restore(&a, &file, &[], stdin);
        let stderr = text(&out.stderr);
        assert_eq!(
            code(&out),
            i32::from(exit::RESTORE_FAILED),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(says), "{name}: {stderr}");
        assert!(text(&out.stdout).is_empty(), "{name}: no outcome lines");
        assert_eq!(everything(&a), before, "{name}: nothing changed");
    }

    let file = a.root().join("escape.khsnap");
    std::fs::write(&file, &manifest_escape).unwrap();
    let out = a.cli(&["backup", "--manifest", path_str(&file)], b"");
    assert_eq!(code(&out), i32::from(exit::RESTORE_FAILED));
    assert!(!out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b));

    // Another home, another key: the snapshot is refused, naming the key.
    let b = TestEnv::new();
    let _db = b.spawn_daemon(&[]);
    let out = restore(&b, &snap, &[], b"");
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), i32::from(exit::RESTORE_FAILED), "{stderr}");
    assert!(stderr.contains("sealed with data key"), "{stderr}");
    assert!(stderr.contains(&key_id(&a)), "{stderr}");
    assert!(list(&b).as_array().unwrap().is_empty());
}

#[test]
fn a_restore_never_silently_replaces_a_newer_revision() {
    let env = TestEnv::new();
    let _d = env.spawn_daemon(&[]);
    ok(&env, &["store", "jellyfin", "srv", "u1"], b"old-1");
    ok(&env, &["store", "jellyfin", "srv", "u2"], b"old-2");
    let snap = env.root().join("s.khsnap");
    let exp = env.root().join("e.age");
    ok(&env, &["backup", "--to", path_str(&snap)], b"");
    export(&env, &exp, &[]);
    ok(&env, &["store", "jellyfin", "srv", "u1"], b"new-1");

    for file in [&snap, &exp] {
        let out = restore(&env, file, &[], PASSPHRASE);
        let stdout = text(&out.stdout);
        assert_eq!(code(&out), i32::from(exit::RESTORE_SKIPPED), "{stdout}");
        assert!(
            stdout.contains(
                "skipped: jellyfin::srv::u1::access_token (stored revision 3 is newer than the file's 1"
            ),
            "{stdout}"
        );
        assert!(
            stdout.contains("unchanged: jellyfin::srv::u2::access_token"),
            "{stdout}"
        );
        assert!(stdout.contains("0 restored, 0 replaced, 1 unchanged, 1 skipped, 0 failed"));
        assert_eq!(get(&env, "jellyfin", "srv", "u1", ""), b"new-1");
    }
    let out = restore(&env, &snap, &["--overwrite", "--dry-run"], b"");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("replaced: jellyfin::srv::u1::access_token (stored revision 3; dry run)")
    );
    assert_eq!(get(&env, "jellyfin", "srv", "u1", ""), b"new-1");
    let out = restore(&env, &snap, &["--overwrite"], b"");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("replaced: jellyfin::srv::u1::access_token (revision 3 -> ")
    );
    assert_eq!(get(&env, "jellyfin", "srv", "u1", ""), b"old-1");
}

#[tokio::test]
async fn a_deny_all_policy_refuses_backup_export_and_restore_and_audits_each_refusal() {
    // Deny everything; and allow everything but grant admin to no one.
    for text in [
        "[policy]\ndefault = \"deny\"\n",
        "[policy]\ndefault = \"allow\"\n",
    ] {
        let daemon = TestDaemon::start_with(|s| s.policy = policy(text)).await;
        let client = daemon.client().await;
        let err = client.backup().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("admin"), "{err}");
        let err = client.export(&ListFilter::default()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        let key = CredentialKey::new("jellyfin", "s", "u", "").unwrap();
        let doc = ExportDocument::new(
            vec![ExportEntry::new(
                &key,
                &Secret::from("t"),
                1,
                None,
                None,
                0,
                0,
            )],
            0,
        );
        let err = client
            .restore(
                RestoreKind::Export,
                None,
                &doc.to_json(),
                RestoreOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        drop(client);
        let (dir, settings) = daemon.stop().await;
        let mut conn = keyhaven_tests::db_connection(&settings.database(), true).await;
        for op in ["backup", "export", "restore"] {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT outcome, detail FROM audit_log WHERE operation = ? ORDER BY id",
            )
            .bind(op)
            .fetch_all(&mut conn)
            .await
            .unwrap();
            assert_eq!(rows.len(), 1, "{text} {op}: {rows:?}");
            assert_eq!(rows[0].0, "PERMISSION_DENIED", "{op}: {rows:?}");
        }
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM auth_tokens")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(stored, 0, "the refused restore wrote nothing");
        drop(dir);
    }
}

#[test]
fn automatic_snapshots_are_taken_after_n_writes_and_restore_a_lost_database() {
    let env = TestEnv::new();
    let config_dir = env.home().join(".config/keyhaven");
    std::fs::create_dir_all(&config_dir).unwrap();
    keyhaven_tests::set_mode(&config_dir, 0o700);
    let auto = env.root().join("auto");
    let config = config_dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "backup_dir = \"{}\"\nbackup_every_writes = 3\nbackup_keep = 2\n",
            auto.display()
        ),
    )
    .unwrap();
    keyhaven_tests::set_mode(&config, 0o600);
    let daemon = env.spawn_daemon(&[]);
    assert!(ok(&env, &["status"], b"").contains("snapshot:  none taken yet"));
    let creds = seed(&env);
    let deadline = Instant::now() + WAIT;
    let file = loop {
        if let Some(f) = files_starting(&auto, "keyhaven-").pop() {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no automatic snapshot in {}",
            auto.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(mode_of(&file), 0o600);
    assert_eq!(mode_of(&auto), 0o700);
    let manifest = ok(&env, &["backup", "--manifest", path_str(&file)], b"");
    assert!(manifest.contains("credentials:       3"), "{manifest}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&env, &["status", "--json"], b"")).unwrap();
    assert_eq!(
        status["last_backup"].as_str(),
        Some(path_str(&file)),
        "{status}"
    );
    assert!(ok(&env, &["doctor"], b"").contains("Snapshot: last taken"));
    let before = everything(&env);
    let (status, _) = daemon.stop();
    assert!(status.success());

    // The database is lost; the key (in its file) is not.
    for f in keyhaven_tests::database_files(&env.database()) {
        let _ = std::fs::remove_file(f);
    }
    let _daemon = env.spawn_daemon(&[]);
    assert!(list(&env).as_array().unwrap().is_empty());
    let out = restore(&env, &file, &[], b"");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(everything(&env).len(), creds.len());
    for ((meta_b, secret_b), (meta_a, secret_a)) in everything(&env).iter().zip(&before) {
        assert_eq!(secret_a, secret_b);
        assert_eq!(meta_a["label"], meta_b["label"]);
    }
}

#[test]
fn on_a_terminal_the_export_passphrase_is_asked_twice_and_must_match() {
    let test = "on_a_terminal_the_export_passphrase_is_asked_twice_and_must_match";
    if !have("script") {
        skip(
            test,
            "`script` (util-linux) is needed to give keyhaven a terminal",
        );
        return;
    }
    let env = TestEnv::new();
    let _d = env.spawn_daemon(&[]);
    seed(&env);
    let on_a_terminal = |file: &Path, typed: &[u8]| {
        let mut child = std::process::Command::new("script")
            .args([
                "-q",
                "-e",
                "-c",
                &format!(
                    "'{}' export --to '{}'",
                    keyhaven_tests::bin("keyhaven").display(),
                    file.display()
                ),
                "/dev/null",
            ])
            .env("HOME", env.home())
            .env("XDG_RUNTIME_DIR", env.runtime_dir())
            .env_remove("KEYHAVEN_SOCKET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(typed).unwrap();
        }
        child.wait_with_output().unwrap()
    };
    let differ = env.root().join("differ.age");
    let out = on_a_terminal(&differ, b"one passphrase\nanother one\n");
    let transcript = text(&out.stdout);
    assert_eq!(code(&out), i32::from(exit::INVALID_INPUT), "{transcript}");
    assert!(transcript.contains("Passphrase again: "), "{transcript}");
    assert!(
        transcript.contains("the passphrases differ"),
        "{transcript}"
    );
    assert!(!differ.exists());
    assert_eq!(
        files_starting(env.root(), ".differ.age"),
        Vec::<PathBuf>::new()
    );

    // No terminal, and no --passphrase-stdin: nothing to ask on.
    let out = env.cli(&["export", "--to", path_str(&differ)], b"piped\n");
    assert_eq!(code(&out), i32::from(exit::INVALID_INPUT));
    assert!(
        text(&out.stderr).contains("--passphrase-stdin"),
        "{}",
        text(&out.stderr)
    );
    assert!(!differ.exists());

    let same = env.root().join("same.age");
    let out = on_a_terminal(&same, b"the same one\nthe same one\n");
    assert_eq!(code(&out), 0, "{}", text(&out.stdout));
    let out = restore(&env, &same, &[], b"the same one\n");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("3 unchanged"));
}
