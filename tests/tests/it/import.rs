//! `keyhaven import`, end to end: the real binaries, a Reel database made
//! here with Reel's exact `auth_tokens` table, JSON lines on stdin, dry
//! runs, re-runs, conflicts and an import killed halfway.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};

use keyhaven_tests::{DaemonProcess, TestEnv};
use keyhaven_tests::{code, stderr, stdout};

/// Reel's table, as its migrations create it.
const REEL_SCHEMA: &str = "CREATE TABLE auth_tokens (\
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, \
    source_id TEXT NOT NULL, \
    token_type TEXT NOT NULL, \
    token TEXT NOT NULL, \
    created_at TEXT NOT NULL, \
    updated_at TEXT NOT NULL, \
    expires_at TEXT)";

/// A Reel database holding `rows` (source_id, token_type, token).
fn reel_db(path: &Path, rows: &[(String, String, String)]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query(REEL_SCHEMA).execute(&mut conn).await.unwrap();
        for (source, kind, token) in rows {
            sqlx::query(
                "INSERT INTO auth_tokens (source_id, token_type, token, created_at, updated_at, expires_at) \
                 VALUES (?, ?, ?, '2025-01-01 10:00:00', '2025-01-01 10:00:00', NULL)",
            )
            .bind(source)
            .bind(kind)
            .bind(token)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        sqlx::Connection::close(conn).await.unwrap();
    });
}

fn reel_rows(path: &Path) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .connect()
            .await
            .unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM auth_tokens")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        n
    })
}

fn get(env: &TestEnv, provider: &str, user: &str, token_type: &str) -> Output {
    env.cli(&["get", "-n", provider, "", user, token_type], b"")
}

fn start(env: &TestEnv) -> DaemonProcess {
    env.spawn_daemon(&[])
}

#[test]
fn reel_db_dry_run_import_rerun_conflict_and_wipe() {
    let env = TestEnv::new();
    let daemon = start(&env);
    let db = env.root().join("reel.db");
    let rows: Vec<(String, String, String)> = [
        ("plex_123", "token", "plex-tok"),
        ("jellyfin_ü_x", "api_key", "jf-key"),
        ("plex_123", "password_bob", "hunter2"),
        ("plex", "token", "bad-source"),
    ]
    .iter()
    .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
    .collect();
    reel_db(&db, &rows);
    let db_arg = db.to_str().unwrap();
    let before = std::fs::read(&db).unwrap();

    let out = env.cli(&["import", "reel-db", db_arg, "--dry-run"], b"");
    let text = stdout(&out);
    assert!(
        text.contains("would import: plex::::123::access_token"),
        "{text}"
    );
    assert!(
        text.contains("(row 3 (source \"plex_123\", password_bob)): a password, not a token"),
        "{text}"
    );
    assert!(text.contains("skipped: "), "{text}");
    assert!(text.contains("failed: - (row 4"), "{text}");
    assert!(text.contains("has no '_'"), "{text}");
    assert_eq!(code(&out), 6, "a failed row makes the exit code non-zero");
    assert_eq!(get(&env, "plex", "123", "").status.code(), Some(3));

    let out = env.cli(&["import", "reel-db", db_arg], b"");
    let text = stdout(&out);
    assert!(
        text.contains("imported: plex::::123::access_token"),
        "{text}"
    );
    assert!(
        text.contains("imported: jellyfin::::ü_x::api_key"),
        "{text}"
    );
    assert!(
        text.contains("summary: 2 imported, 0 already present, 0 conflicts, 1 skipped, 1 failed"),
        "{text}"
    );
    for secret in ["plex-tok", "jf-key", "hunter2", "bad-source"] {
        assert!(!text.contains(secret) && !stderr(&out).contains(secret));
    }
    assert_eq!(stdout(&get(&env, "plex", "123", "")), "plex-tok");
    assert_eq!(stdout(&get(&env, "jellyfin", "ü_x", "api_key")), "jf-key");
    // Read-only: the file is untouched without --wipe-source.
    assert_eq!(std::fs::read(&db).unwrap(), before);

    // A re-run is harmless; a different value in the store is kept.
    let out = env.cli(&["store", "plex", "", "123"], b"newer");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = env.cli(&["import", "reel-db", db_arg, "--json"], b"");
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["outcome"], "conflict");
    assert_eq!(lines[0]["key"], "plex::::123::access_token");
    assert_eq!(lines[1]["outcome"], "already present");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["conflicts"], 1);
    assert_eq!(summary["already_present"], 1);
    assert_eq!(stdout(&get(&env, "plex", "123", "")), "newer");

    // A conflict is not verified: --wipe-source leaves the file alone.
    let out = env.cli(&["import", "reel-db", db_arg, "--wipe-source"], b"");
    assert!(stderr(&out).contains("not wiping"), "{}", stderr(&out));
    assert_eq!(reel_rows(&db), 4);
    // With --overwrite every token row is verified; the bad row still
    // fails, so nothing is wiped either.
    let out = env.cli(
        &["import", "reel-db", db_arg, "--overwrite", "--wipe-source"],
        b"",
    );
    assert!(stdout(&out).contains("overwritten: plex::::123::access_token"));
    assert_eq!(stdout(&get(&env, "plex", "123", "")), "plex-tok");
    assert_eq!(reel_rows(&db), 4);
    // Each write is in the audit log; no secret is there or in the
    // daemon's log.
    let audit = stdout(&env.cli(&["audit"], b""));
    assert!(audit.contains("plex::::123::access_token"), "{audit}");
    let log = daemon.log();
    for secret in ["plex-tok", "jf-key", "hunter2", "bad-source", "newer"] {
        assert!(!log.contains(secret), "{secret} in {log}");
        assert!(!audit.contains(secret), "{secret} in {audit}");
    }
    drop(daemon);
}

#[test]
fn wipe_source_removes_only_verified_rows_after_all_are_verified() {
    let env = TestEnv::new();
    let _daemon = start(&env);
    let db = env.root().join("reel.db");
    let rows = vec![
        ("plex_1".to_owned(), "token".to_owned(), "t1".to_owned()),
        (
            "plex_1".to_owned(),
            "password_x".to_owned(),
            "pw".to_owned(),
        ),
    ];
    reel_db(&db, &rows);
    let out = env.cli(
        &["import", "reel-db", db.to_str().unwrap(), "--wipe-source"],
        b"",
    );
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("1 rows removed from the source"));
    assert_eq!(reel_rows(&db), 1, "the password row stays");
    assert_eq!(stdout(&get(&env, "plex", "1", "")), "t1");
}

#[test]
fn json_lines_with_odd_ids() {
    let env = TestEnv::new();
    let _daemon = start(&env);
    let input = concat!(
        r#"{"provider":"jellyfin","server_id":"srv::1","user_id":"","token_type":"access_token","secret":"a","label":"Living room"}"#,
        "\n",
        r#"{"provider":"emby","server_id":"s_1","user_id":"ünï","secret":"b","expires_at":4102444800}"#,
        "\n\n",
        r#"{"provider":"bad provider","secret":"c"}"#,
        "\n"
    );
    let out = env.cli(&["import", "json"], input.as_bytes());
    let text = stdout(&out);
    assert!(
        text.contains("imported: jellyfin::srv%3A%3A1::::access_token"),
        "{text}"
    );
    assert!(
        text.contains("imported: emby::s_1::ünï::access_token"),
        "{text}"
    );
    assert!(text.contains("failed: - (line 4)"), "{text}");
    assert_eq!(code(&out), 6);
    let out = env.cli(&["get", "-n", "jellyfin", "srv::1", ""], b"");
    assert_eq!(stdout(&out), "a");
    let again = env.cli(
        &["import", "json"],
        &input.as_bytes()[..input.find('\n').unwrap()],
    );
    assert!(
        stdout(&again).contains("already present"),
        "{}",
        stdout(&again)
    );
    assert_eq!(code(&again), 0);
}

#[test]
fn an_import_killed_halfway_completes_on_the_next_run() {
    let env = TestEnv::new();
    let _daemon = start(&env);
    let db = env.root().join("reel.db");
    let n = 40;
    let rows: Vec<_> = (0..n)
        .map(|i| (format!("plex_{i}"), "token".to_owned(), format!("tok-{i}")))
        .collect();
    reel_db(&db, &rows);
    let mut child = env
        .command("keyhaven")
        .args(["import", "reel-db", db.to_str().unwrap(), "--wipe-source"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..5 {
        let line = lines.next().unwrap().unwrap();
        assert!(line.starts_with("imported: "), "{line}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Killed before the end: nothing was wiped.
    assert_eq!(reel_rows(&db), n);

    let out = env.cli(
        &["import", "reel-db", db.to_str().unwrap(), "--wipe-source"],
        b"",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("already present"), "{text}");
    assert_eq!(reel_rows(&db), 0);
    // Every seeded token is readable, exactly once.
    let out = env.cli(&["list", "--json"], b"");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed.len(), usize::try_from(n).unwrap());
    for i in 0..n {
        assert_eq!(
            stdout(&get(&env, "plex", &i.to_string(), "")),
            format!("tok-{i}")
        );
    }
}

#[test]
fn import_keyring_without_a_secret_service_says_so() {
    let env = TestEnv::new();
    let _daemon = start(&env);
    for args in [
        &["import", "keyring", "--reel"][..],
        &[
            "import",
            "keyring",
            "--jellytau",
            "--server",
            "s",
            "--user",
            "u",
        ][..],
    ] {
        let out = env.cli(args, b"");
        assert_eq!(code(&out), 6, "{}", stderr(&out));
        assert!(
            stderr(&out).contains("no D-Bus session bus"),
            "{}",
            stderr(&out)
        );
    }
    // --server without --user is a usage error.
    let out = env.cli(&["import", "keyring", "--jellytau", "--server", "s"], b"");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn import_keyring_refuses_jellytau_ids_that_do_not_round_trip() {
    let env = TestEnv::new();
    let _daemon = start(&env);
    // Each of these names a JellyTau entry that another account's key names
    // too; it is refused before any keyring is opened.
    for (server, user) in [("a::b", "u"), ("a", "b::u"), ("a:", "b"), ("a", ":b")] {
        let out = env.cli(
            &[
                "import",
                "keyring",
                "--jellytau",
                "--server",
                server,
                "--user",
                user,
            ],
            b"",
        );
        let err = stderr(&out);
        assert_eq!(code(&out), 6, "{err}");
        assert!(err.contains("not importing"), "{err}");
        assert!(err.contains("do not map to one JellyTau entry"), "{err}");
        assert!(!err.contains("D-Bus"), "the keyring was consulted: {err}");
    }
}

/// Opens `path` in WAL mode, so that a writer holding its lock does not
/// keep readers out (as in an app that is refreshing a token).
async fn wal_connection(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap()
}

#[test]
fn wipe_source_keeps_a_row_whose_token_changed_after_it_was_read() {
    let env = TestEnv::new();
    let _daemon = start(&env);
    let db = env.root().join("reel.db");
    let rows = vec![
        ("plex_1".to_owned(), "token".to_owned(), "t1".to_owned()),
        ("plex_2".to_owned(), "token".to_owned(), "t2".to_owned()),
    ];
    reel_db(&db, &rows);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Reel refreshes row 1's token while the import runs: its write is
    // under way (uncommitted) when the import reads, and commits before the
    // import wipes.
    let mut reel = runtime.block_on(async {
        let mut conn = wal_connection(&db).await;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("UPDATE auth_tokens SET token = 'refreshed' WHERE id = 1")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    });
    let mut child = env
        .command("keyhaven")
        .args(["import", "reel-db", db.to_str().unwrap(), "--wipe-source"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    // Both rows were read and imported: the old token of row 1 is in the store.
    for _ in 0..2 {
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        assert!(line.starts_with("imported: "), "{line}");
        text.push_str(&line);
    }
    runtime.block_on(async {
        sqlx::query("COMMIT").execute(&mut reel).await.unwrap();
    });
    std::io::Read::read_to_string(&mut lines, &mut text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{text}{}", stderr(&out));
    assert!(
        text.contains("kept: row 1: its token changed after it was read"),
        "{text}"
    );
    assert!(
        text.contains("1 rows removed from the source, 1 kept because their token changed"),
        "{text}"
    );
    // The refreshed token survives in Reel's file; the unchanged row is gone.
    let left: Vec<(i64, String)> = runtime.block_on(async {
        sqlx::query_as("SELECT id, token FROM auth_tokens ORDER BY id")
            .fetch_all(&mut reel)
            .await
            .unwrap()
    });
    assert_eq!(left, vec![(1, "refreshed".to_owned())]);
    assert_eq!(stdout(&get(&env, "plex", "1", "")), "t1");
    // The next run brings the refreshed token in as a conflict, never lost.
    let out = env.cli(&["import", "reel-db", db.to_str().unwrap()], b"");
    assert!(
        stdout(&out).contains("conflict: plex::::1::access_token"),
        "{}",
        stdout(&out)
    );
}
