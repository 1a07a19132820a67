//! `keyhaven-keyring-store`: apps written against `keyring_core::Entry`,
//! switched to the daemon with one line. The example programs run against a
//! real `keyhavend` and the real `keyhaven` CLI reads what they wrote (and
//! the other way round); in-process tests call the synchronous API from
//! plain code and from inside both kinds of tokio runtime.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use keyhaven::{ConnectOptions, CredentialKey};
use keyhaven_daemon::server::config::LegacyOptions;
use keyhaven_keyring_store::Store;
use keyhaven_proto::exit;
use keyhaven_tests::{TestDaemon, TestEnv, TestKeyring};
use keyhaven_tests::{stderr, stdout};
use keyring_core::api::CredentialStoreApi;
use keyring_core::{Entry, Error};

const EXAMPLES: [&str; 3] = [
    "keyring_entry",
    "keyring_entry_tokio",
    "keyring_entry_tokio_current",
];

/// Runs example `name` with `args` in `env`, feeding `stdin`.
fn run_example(env: &TestEnv, name: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = env
        .example_command(name)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the example");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("the example runs")
}

/// `keyhaven get` of the four fields: the secret, or the exit code.
fn cli_get(env: &TestEnv, fields: [&str; 4]) -> Result<Vec<u8>, i32> {
    let mut args = vec!["get", "-n"];
    args.extend(fields);
    let out = env.cli(&args, b"");
    match out.status.code() {
        Some(0) => Ok(out.stdout),
        code => Err(code.expect("exited normally")),
    }
}

fn cli_list(env: &TestEnv) -> Vec<serde_json::Value> {
    let out = env.cli(&["list", "--json"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    rows.as_array().unwrap().clone()
}

fn store_at(socket: &std::path::Path) -> Arc<Store> {
    Store::new_with_options(ConnectOptions::new(socket)).expect("the store connects")
}

#[test]
fn the_example_walks_through_from_plain_main_and_both_tokio_mains() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    for name in EXAMPLES {
        let out = run_example(&env, name, &[], b"");
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "set_password / get_password: ok\n\
             set_secret / get_secret (not UTF-8): ok\n\
             get_password of it: BadEncoding\n\
             delete_credential: ok\n\
             get_password after delete: NoEntry\n\
             delete_credential again: NoEntry\n",
            "{name}"
        );
    }
    // The scratch entry is gone; the daemon saw the writes.
    assert_eq!(cli_list(&env), Vec::<serde_json::Value>::new());
}

#[test]
fn what_a_keyring_app_writes_the_cli_reads_under_the_legacy_and_generic_keys() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    // (example, service, user, secret, the key the CLI finds it under)
    let cases: [(&str, &str, &str, &str, [&str; 4]); 6] = [
        (
            "keyring_entry",
            "jellytau",
            "jellytau::4fd1c2e7::e2f5a0b1::access_token",
            "jt-token",
            ["jellyfin", "4fd1c2e7", "e2f5a0b1", "access_token"],
        ),
        (
            "keyring_entry_tokio",
            "jellytau::srv-2::usr-2::access_token",
            "any-user",
            "jt-token-2",
            ["jellyfin", "srv-2", "usr-2", "access_token"],
        ),
        (
            "keyring_entry_tokio_current",
            "reel.plex_123",
            "token",
            "reel-token",
            ["plex", "", "123", "access_token"],
        ),
        (
            "keyring_entry",
            "gnome-reel.jellyfin_abc",
            "api_key",
            "reel-api-key",
            ["jellyfin", "", "abc", "api_key"],
        ),
        (
            "keyring_entry_tokio",
            "my-app",
            "alice@example.com",
            "generic pw",
            ["keyring_core", "my-app", "alice@example.com", "secret"],
        ),
        (
            "keyring_entry_tokio_current",
            "a:b::c 100%",
            "ünï\tcödé",
            "awkward pw",
            ["keyring_core", "a:b::c 100%25", "ünï%09cödé", "secret"],
        ),
    ];
    for (example, service, user, secret, key) in cases {
        let out = run_example(&env, example, &["set", service, user], secret.as_bytes());
        assert!(out.status.success(), "{service} {user}: {}", stderr(&out));
        assert_eq!(
            cli_get(&env, key),
            Ok(secret.as_bytes().to_vec()),
            "{service} {user}"
        );
    }
    let rows = cli_list(&env);
    let mut keys: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            ["provider", "server_id", "user_id", "token_type"]
                .map(|f| r[f].as_str().unwrap().to_owned())
        })
        .collect();
    keys.sort();
    let mut want: Vec<[String; 4]> = cases.iter().map(|c| c.4.map(str::to_owned)).collect();
    want.sort();
    assert_eq!(keys, want);
    assert!(
        !stdout(&env.cli(&["list"], b"")).contains("pw"),
        "list shows no secret"
    );

    // And back: what the CLI stores, the keyring app reads under every name
    // that maps to the key.
    let out = env.cli(&["store", "plex", "", "456"], b"from-the-cli");
    assert!(out.status.success(), "{}", stderr(&out));
    for service in ["reel.plex_456", "gnome-reel.plex_456"] {
        let out = run_example(&env, "keyring_entry", &["get", service, "token"], b"");
        assert!(out.status.success(), "{service}: {}", stderr(&out));
        assert_eq!(stdout(&out), "from-the-cli\n");
    }
    // What the CLI deletes, the keyring app no longer finds.
    let out = env.cli(&["delete", "jellyfin", "srv-2", "usr-2"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_example(
        &env,
        "keyring_entry_tokio",
        &["get", "jellytau", "jellytau::srv-2::usr-2::access_token"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stderr(&out), "no such entry\n");
    // And what the keyring app deletes, the CLI no longer finds.
    let out = run_example(
        &env,
        "keyring_entry",
        &["delete", "my-app", "alice@example.com"],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        cli_get(
            &env,
            ["keyring_core", "my-app", "alice@example.com", "secret"]
        ),
        Err(i32::from(exit::NOT_FOUND))
    );
}

#[test]
fn without_a_daemon_the_example_says_so_and_fails() {
    let env = TestEnv::new();
    let out = run_example(&env, "keyring_entry", &[], b"");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "cannot use keyhaven: Couldn't access platform storage: keyhavend is not running"
        ),
        "{err}"
    );
}

/// The synchronous API end to end on one store: set, get, secrets out of
/// `Debug`, attributes, delete.
fn exercise(store: &Store, service: &str) {
    let entry = store.build(service, "user-1", None).unwrap();
    entry.set_password("pw-1").unwrap();
    assert_eq!(entry.get_password().unwrap(), "pw-1");
    entry.set_secret(&[0xc3, 0x28]).unwrap();
    assert_eq!(entry.get_secret().unwrap(), [0xc3, 0x28]);
    assert!(matches!(entry.get_password(), Err(Error::BadEncoding(b)) if b.is_empty()));
    let shown = format!("{entry:?} {store:?}");
    assert!(!shown.contains("pw-1"), "{shown}");
    assert!(
        shown.contains(&format!("keyring_core::{service}::user-1::secret")),
        "{shown}"
    );
    let attrs = entry.get_attributes().unwrap();
    assert_eq!(attrs["provider"], "keyring_core");
    assert_eq!(attrs["server_id"], service);
    assert_eq!(attrs["user_id"], "user-1");
    assert_eq!(attrs["token_type"], "secret");
    entry.delete_credential().unwrap();
    assert!(matches!(entry.get_password(), Err(Error::NoEntry)));
    assert!(matches!(entry.get_attributes(), Err(Error::NoEntry)));
    assert!(matches!(entry.get_credential(), Err(Error::NoEntry)));
    assert!(matches!(
        entry.update_attributes(&HashMap::new()),
        Err(Error::NoEntry)
    ));
    assert!(matches!(
        entry.update_attributes(&HashMap::from([("label", "x")])),
        Err(Error::NoEntry)
    ));
}

#[test]
fn the_sync_api_works_from_plain_code() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    exercise(&store_at(&env.socket()), "plain");
}

#[tokio::test(flavor = "current_thread")]
async fn the_sync_api_works_inside_a_current_thread_runtime() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    // Made and used on the runtime's only thread, which each call blocks.
    exercise(&store_at(&env.socket()), "current-thread");
    // From a task too, and from spawn_blocking.
    let store = store_at(&env.socket());
    let s = store.clone();
    tokio::spawn(async move { exercise(&s, "task") })
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || exercise(&store, "blocking"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_api_works_inside_a_multi_thread_runtime() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    let store = store_at(&env.socket());
    exercise(&store, "multi-thread");
    // Several tasks at once share the store's one connection.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { exercise(&store, &format!("task-{i}")) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// The keys agree with the daemon's legacy read-through: an entry JellyTau
/// or Reel left in the OS keyring is found through the same `Entry::new`
/// call the app always made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_tokens_in_the_os_keyring_are_read_through_under_the_same_names() {
    let keyring = TestKeyring::new();
    let jellytau = "jellytau::srv-1::user-1::access_token";
    keyring.seed("jellytau", jellytau, b"jt-legacy");
    keyring.seed("gnome-reel.plex_123", "token", b"reel-legacy");
    let choice = keyring.choice();
    let daemon = TestDaemon::start_with(|s| {
        s.keyring = choice;
        s.legacy = LegacyOptions::default();
        s.keyring_timeout = Duration::from_millis(300);
    })
    .await;
    let store = store_at(daemon.socket());
    // The daemon runs on this runtime's other worker while the test blocks
    // this one.
    let entry = store.build("jellytau", jellytau, None).unwrap();
    assert_eq!(entry.get_password().unwrap(), "jt-legacy");
    let reel = store.build("reel.plex_123", "token", None).unwrap();
    assert_eq!(reel.get_password().unwrap(), "reel-legacy");
    let client = daemon.client().await;
    for key in [
        CredentialKey::new("jellyfin", "srv-1", "user-1", "").unwrap(),
        CredentialKey::new("plex", "", "123", "").unwrap(),
    ] {
        client.retrieve(&key).await.unwrap();
    }
    // As documented: a delete removes the migrated copy, and the token the
    // daemon left in the OS keyring is found again by the next read.
    entry.delete_credential().unwrap();
    assert_eq!(entry.get_password().unwrap(), "jt-legacy");
    assert_eq!(keyring.legacy_reads(), 3);
}

#[test]
fn a_store_reconnects_after_the_daemon_restarts() {
    let env = TestEnv::new();
    let daemon = env.spawn_daemon(&[]);
    let store = store_at(&env.socket());
    let entry = store.build("restart", "u", None).unwrap();
    entry.set_password("kept").unwrap();
    daemon.stop();
    match entry.get_password() {
        Err(Error::NoStorageAccess(e)) => {
            assert!(!e.to_string().contains("kept"), "{e}")
        }
        other => panic!("with the daemon stopped: {other:?}"),
    }
    let _daemon = env.spawn_daemon(&[]);
    assert_eq!(entry.get_password().unwrap(), "kept");
}

#[test]
fn labels_attributes_search_and_refusals() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    let store = store_at(&env.socket());

    // The label modifier labels a credential the entry creates; a new
    // password keeps whatever label it has.
    let mods = HashMap::from([("label", "My app, Alice")]);
    let entry = store.build("my-app", "alice", Some(&mods)).unwrap();
    entry.set_password("one").unwrap();
    entry.set_password("two").unwrap();
    let rows = cli_list(&env);
    assert_eq!(rows[0]["label"], "My app, Alice");
    entry
        .update_attributes(&HashMap::from([("label", "Renamed")]))
        .unwrap();
    let plain = store.build("my-app", "alice", None).unwrap();
    plain.set_password("three").unwrap();
    let attrs = plain.get_attributes().unwrap();
    assert_eq!(attrs["label"], "Renamed");
    assert!(attrs["updated_at"].ends_with('Z'), "{attrs:?}");
    assert_eq!(plain.get_password().unwrap(), "three");
    match plain.update_attributes(&HashMap::from([("provider", "plex")])) {
        Err(Error::Invalid(what, _)) => assert_eq!(what, "provider"),
        other => panic!("{other:?}"),
    }
    plain
        .update_attributes(&HashMap::from([("label", "")]))
        .unwrap();
    assert!(!plain.get_attributes().unwrap().contains_key("label"));

    // The credential's own attributes: set through the entry, seen by the
    // CLI, kept by the next password, removed with "".
    plain
        .update_attributes(&HashMap::from([
            ("server_url", "https://jf.example.org"),
            ("device_id", "dev-7"),
        ]))
        .unwrap();
    plain.set_password("four").unwrap();
    let rows = cli_list(&env);
    assert_eq!(rows[0]["attributes"]["device_id"], "dev-7", "{rows:?}");
    assert_eq!(
        plain.get_attributes().unwrap()["server_url"],
        "https://jf.example.org"
    );
    plain
        .update_attributes(&HashMap::from([("device_id", "")]))
        .unwrap();
    let attrs = plain.get_attributes().unwrap();
    assert!(
        !attrs.contains_key("device_id") && attrs.contains_key("server_url"),
        "{attrs:?}"
    );
    match plain.update_attributes(&HashMap::from([("bad name", "v")])) {
        Err(Error::Invalid(what, _)) => assert_eq!(what, "bad name"),
        other => panic!("{other:?}"),
    }

    // Search by name, by key field, or everything; what the CLI stored
    // under a key no name reaches comes back without specifiers.
    store
        .build("reel.plex_9", "api_key", None)
        .unwrap()
        .set_password("k")
        .unwrap();
    let out = env.cli(&["store", "emby", "srv", "u"], b"cli-token");
    assert!(out.status.success(), "{}", stderr(&out));
    let names = |spec: &[(&str, &str)]| -> Vec<Option<(String, String)>> {
        let spec: HashMap<&str, &str> = spec.iter().copied().collect();
        let mut found: Vec<_> = store
            .search(&spec)
            .unwrap()
            .iter()
            .map(Entry::get_specifiers)
            .collect();
        found.sort();
        found
    };
    let name = |s: &str, u: &str| Some((s.to_owned(), u.to_owned()));
    assert_eq!(
        names(&[]),
        vec![
            None,
            name("my-app", "alice"),
            name("reel.plex_9", "api_key")
        ]
    );
    assert_eq!(
        names(&[("service", "my-app")]),
        vec![name("my-app", "alice")]
    );
    assert_eq!(
        names(&[("service", "gnome-reel.plex_9"), ("user", "api_key")]),
        vec![name("reel.plex_9", "api_key")]
    );
    assert_eq!(names(&[("provider", "emby")]), vec![None]);
    assert_eq!(names(&[("service", "nobody")]), vec![]);
    let found = store
        .search(&HashMap::from([("provider", "emby")]))
        .unwrap();
    assert_eq!(found[0].get_password().unwrap(), "cli-token");
    assert!(matches!(
        store.search(&HashMap::from([("colour", "red")])),
        Err(Error::Invalid(what, _)) if what == "colour"
    ));

    // Refused before anything is sent.
    assert!(matches!(
        entry.set_password(""),
        Err(Error::Invalid(what, _)) if what == "secret"
    ));
    let long = "s".repeat(257);
    assert!(matches!(
        store.build(&long, "u", None),
        Err(Error::TooLong(what, 256)) if what == "service"
    ));
    assert!(matches!(
        store.build("s", "u", Some(&HashMap::from([("colour", "red")]))),
        Err(Error::Invalid(what, _)) if what == "colour"
    ));
    // Over the daemon's secret limit: its message, as Invalid.
    let big = "x".repeat(70_000);
    match entry.set_password(&big) {
        Err(Error::Invalid(what, why)) => {
            assert_eq!(what, "secret");
            assert!(why.contains("limit"), "{why}");
            assert!(!why.contains("xxxx"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}
