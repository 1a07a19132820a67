//! Credential attributes: a login carries its server, user name and device
//! id, so another app can find it and reuse it. Through the real socket
//! (in-process daemon) and through the real binaries.

use std::collections::BTreeMap;

use keyhaven::{Attributes, CredentialKey, ErrorKind, EventKind, ListFilter, Secret, StoreOptions};
use keyhaven_proto::pb;
use keyhaven_tests::{TestDaemon, TestEnv, code, database_files, file_contains, stderr, stdout};
use tonic::Code;

fn key(provider: &str, server: &str, user: &str) -> CredentialKey {
    CredentialKey::new(provider, server, user, "").unwrap()
}

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn with_attrs(pairs: &[(&str, &str)]) -> StoreOptions {
    StoreOptions {
        attributes: Some(attrs(pairs)),
        ..Default::default()
    }
}

fn filter(pairs: &[(&str, &str)]) -> ListFilter {
    ListFilter {
        attributes: attrs(pairs),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_store_keeps_replaces_or_clears_attributes_and_every_read_returns_them() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let k = key("jellyfin", "srv-1", "user-1");
    let login = [
        ("server_url", "https://jf.example.org:8920/base"),
        ("server_name", "Living room"),
        ("user_name", "alice"),
        ("device_id", "dev-42"),
    ];

    let stored = client
        .store(&k, Secret::from("tok-1"), with_attrs(&login))
        .await
        .unwrap();
    assert_eq!(stored.metadata.attributes, attrs(&login));
    let read = client.retrieve(&k).await.unwrap();
    assert_eq!(read.metadata.attributes, attrs(&login));
    // Unsealed, as SECURITY.md says: the value is in the database file
    // (or its WAL); the token is in neither.
    let in_db = |needle: &[u8]| {
        database_files(daemon.store_path())
            .iter()
            .any(|f| file_contains(f, needle))
    };
    assert!(in_db(b"https://jf.example.org:8920/base"));
    assert!(!in_db(b"tok-1"));

    // No attributes given: the stored ones stay (a token refresh does not
    // lose the device id).
    let refreshed = client
        .store(&k, Secret::from("tok-2"), StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(refreshed.metadata.attributes, attrs(&login));

    // Given: they replace the stored ones, whole.
    let replaced = client
        .store(
            &k,
            Secret::from("tok-3"),
            with_attrs(&[("server_name", "Den")]),
        )
        .await
        .unwrap();
    assert_eq!(
        replaced.metadata.attributes,
        attrs(&[("server_name", "Den")])
    );
    let listed = client.list(&ListFilter::default()).await.unwrap();
    assert_eq!(listed[0].attributes, attrs(&[("server_name", "Den")]));

    // An empty map clears them.
    let cleared = client
        .store(&k, Secret::from("tok-4"), with_attrs(&[]))
        .await
        .unwrap();
    assert!(cleared.metadata.attributes.is_empty());
    assert!(
        client
            .retrieve(&k)
            .await
            .unwrap()
            .metadata
            .attributes
            .is_empty()
    );

    // They survive a restart of the daemon (they are in the store).
    client
        .store(&k, Secret::from("tok-5"), with_attrs(&login))
        .await
        .unwrap();
    drop(client);
    let (dir, settings) = daemon.stop().await;
    let daemon = TestDaemon::start_in(dir, settings).await.unwrap();
    let client = daemon.client().await;
    assert_eq!(
        client.retrieve(&k).await.unwrap().metadata.attributes,
        attrs(&login)
    );
}

#[tokio::test]
async fn list_selects_by_exact_attribute_values_across_pages() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    // Interleaved, so matches and non-matches share every page.
    for i in 0..30 {
        let server = if i % 3 == 0 { "srv-a" } else { "srv-b" };
        let user = format!("user-{i:02}");
        client
            .store(
                &key("jellyfin", server, &user),
                Secret::from("tok"),
                with_attrs(&[
                    ("server_url", &format!("https://{server}.example")),
                    ("user_name", &user),
                ]),
            )
            .await
            .unwrap();
    }
    client
        .store(
            &key("plex", "", "p1"),
            Secret::from("tok"),
            with_attrs(&[("server_url", "https://srv-a.example")]),
        )
        .await
        .unwrap();

    let a = client
        .list(&filter(&[("server_url", "https://srv-a.example")]))
        .await
        .unwrap();
    assert_eq!(a.len(), 11, "10 jellyfin logins and the plex one");
    let both = client
        .list(&filter(&[
            ("server_url", "https://srv-a.example"),
            ("user_name", "user-03"),
        ]))
        .await
        .unwrap();
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].key, key("jellyfin", "srv-a", "user-03"));
    // Exact: a prefix, another case or an absent name matches nothing.
    for pairs in [
        [("server_url", "https://srv-a")],
        [("server_url", "HTTPS://SRV-A.EXAMPLE")],
        [("device_id", "")],
    ] {
        assert!(client.list(&filter(&pairs)).await.unwrap().is_empty());
    }
    // Combined with the key fields.
    let plex = ListFilter {
        provider: Some("plex".into()),
        ..filter(&[("server_url", "https://srv-a.example")])
    };
    assert_eq!(client.list(&plex).await.unwrap().len(), 1);

    // Page by page on the wire: pages of 4 hold only matches, and the
    // tokens lead through all 11 without repeats.
    let mut raw = daemon.raw().await;
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let page = raw
            .list(pb::ListRequest {
                page_size: 4,
                page_token: token,
                attributes: attrs(&[("server_url", "https://srv-a.example")]),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.credentials.len() <= 4);
        seen.extend(page.credentials.into_iter().map(|m| m.key.unwrap()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 11);
}

#[tokio::test]
async fn attributes_that_break_a_rule_are_refused_and_change_nothing() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let k = key("jellyfin", "srv-1", "user-1");
    client
        .store(
            &k,
            Secret::from("tok-1"),
            with_attrs(&[("device_id", "d1")]),
        )
        .await
        .unwrap();
    let before = client.retrieve(&k).await.unwrap().metadata;

    let too_many: Attributes = (0..33).map(|i| (format!("n{i}"), String::new())).collect();
    let long_value: Attributes = attrs(&[("v", &"x".repeat(1025))]);
    let cases: Vec<(Attributes, bool, &str)> = vec![
        (attrs(&[("bad name", "v")]), false, "attribute name #1"),
        (attrs(&[("", "v")]), false, "name must not be empty"),
        (too_many, false, "33 attributes given; the limit is 32"),
        (long_value, false, "value is 1025 bytes; the limit is 1024"),
        (attrs(&[("n", "a\u{1b}[2Jb")]), false, "control character"),
        (
            attrs(&[("n", "a\u{202e}b")]),
            false,
            "bidirectional control",
        ),
        (
            attrs(&[("n", "v")]),
            true,
            "clear_attributes is set but attributes are given",
        ),
    ];
    // The raw client: the library would refuse most of these itself.
    let mut raw = daemon.raw().await;
    for (attributes, clear_attributes, want) in cases {
        let status = raw
            .store(pb::StoreRequest {
                key: Some(k.to_pb()),
                secret: b"tok-evil".to_vec(),
                attributes,
                clear_attributes,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(want), "{want}: {status:?}");
        assert!(
            !status.message().contains('\u{1b}') && !status.message().contains('\u{202e}'),
            "the refusal must not echo what a terminal would act on: {status:?}"
        );
    }
    let after = client.retrieve(&k).await.unwrap();
    assert_eq!(after.metadata, before, "nothing changed");
    assert_eq!(after.secret.expose(), b"tok-1");

    // A filter is held to the same rules.
    let status = raw
        .list(pb::ListRequest {
            attributes: attrs(&[("no spaces", "v")]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // The library checks before sending.
    let err = client
        .store(&k, Secret::from("x"), with_attrs(&[("a/b", "v")]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

#[tokio::test]
async fn list_pages_stay_under_a_mebibyte_however_large_the_attributes() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    // 40 credentials of 32 KiB of attributes each: 1.3 MiB in all.
    let big: Attributes = (0..32)
        .map(|i| (format!("a{i:02}"), "v".repeat(1024)))
        .collect();
    for i in 0..40 {
        client
            .store(
                &key("jellyfin", "srv", &format!("u{i:02}")),
                Secret::from("tok"),
                StoreOptions {
                    attributes: Some(big.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let mut raw = daemon.raw().await;
    let first = raw
        .list(pb::ListRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bytes = prost::Message::encoded_len(&first);
    assert!(bytes <= 1 << 20, "a page of {bytes} bytes");
    assert!(first.credentials.len() < 40);
    assert!(!first.next_page_token.is_empty(), "the rest is a page away");
    // The library follows the pages and gets all of them.
    let all = client.list(&ListFilter::default()).await.unwrap();
    assert_eq!(all.len(), 40);
    assert!(all.iter().all(|m| m.attributes == big));
}

#[tokio::test]
async fn watch_events_carry_attributes_and_a_watch_can_select_by_them() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let k1 = key("jellyfin", "srv-1", "alice");
    client
        .store(
            &k1,
            Secret::from("t"),
            with_attrs(&[("server_name", "Den")]),
        )
        .await
        .unwrap();
    let den = filter(&[("server_name", "Den")]);
    let mut watch = client.watch(&den, true).await.unwrap();
    let snap = watch.next().await.unwrap().unwrap();
    assert_eq!(snap.kind, EventKind::Snapshot);
    assert_eq!(
        snap.metadata.unwrap().attributes,
        attrs(&[("server_name", "Den")])
    );
    assert_eq!(watch.next().await.unwrap().unwrap().kind, EventKind::Synced);

    // Another server's login is not this watcher's business...
    client
        .store(
            &key("jellyfin", "srv-2", "bob"),
            Secret::from("t"),
            with_attrs(&[("server_name", "Attic")]),
        )
        .await
        .unwrap();
    // ...a second login to the Den is.
    let k3 = key("jellyfin", "srv-1", "carol");
    client
        .store(
            &k3,
            Secret::from("t"),
            with_attrs(&[("server_name", "Den"), ("device_id", "d3")]),
        )
        .await
        .unwrap();
    let event = watch.next().await.unwrap().unwrap();
    assert_eq!(event.kind, EventKind::Stored);
    let meta = event.metadata.unwrap();
    assert_eq!(meta.key, k3);
    assert_eq!(
        meta.attributes,
        attrs(&[("device_id", "d3"), ("server_name", "Den")])
    );
}

#[test]
fn the_cli_stores_lists_filters_exports_and_restores_attributes() {
    let env = TestEnv::new();
    let _daemon = env.spawn_daemon(&[]);
    let ok = |args: &[&str], stdin: &[u8]| {
        let out = env.cli(args, stdin);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    ok(
        &[
            "store",
            "jellyfin",
            "srv-1",
            "user-1",
            "--attr",
            "server_url=https://jf.example.org/?a=b",
            "--attr",
            "server_name=Living room",
            "--attr",
            "device_id=dev-1",
        ],
        b"tok-1",
    );
    ok(
        &[
            "store",
            "jellyfin",
            "srv-2",
            "user-1",
            "--attr",
            "server_name=Attic",
        ],
        b"tok-2",
    );

    let table = ok(&["list"], b"");
    assert!(
        table.contains("    server_url = https://jf.example.org/?a=b"),
        "{table}"
    );
    assert!(table.contains("    server_name = Living room"), "{table}");
    let json = ok(
        &["list", "--json", "--attr", "server_name=Living room"],
        b"",
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["server_id"], "srv-1");
    assert_eq!(rows[0]["attributes"]["device_id"], "dev-1");

    // A bad --attr is refused before anything is sent or stored.
    for bad in ["no-equals-sign", "bad name=v", "n=a\u{1b}[2J"] {
        let out = env.cli(
            &["store", "jellyfin", "srv-1", "user-1", "--attr", bad],
            b"tok-evil",
        );
        assert_ne!(code(&out), 0, "{bad:?} accepted");
        assert!(!stderr(&out).contains('\u{1b}'), "{}", stderr(&out));
    }
    let out = env.cli(
        &[
            "store", "jellyfin", "srv-1", "user-1", "--attr", "a=1", "--attr", "a=2",
        ],
        b"tok-evil",
    );
    assert!(
        stderr(&out).contains("--attr a is given twice"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ok(&["get", "jellyfin", "srv-1", "user-1"], b""), "tok-1\n");

    // Through an export and a restore into an emptied store.
    let file = env.root().join("logins.age");
    let file = file.to_str().unwrap();
    ok(
        &["export", "--to", file, "--passphrase-stdin"],
        b"correct horse\n",
    );
    ok(&["delete", "jellyfin", "srv-1", "user-1"], b"");
    ok(&["restore", file, "--passphrase-stdin"], b"correct horse\n");
    let json = ok(&["list", "--json", "--attr", "device_id=dev-1"], b"");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    let want: BTreeMap<String, String> = attrs(&[
        ("device_id", "dev-1"),
        ("server_name", "Living room"),
        ("server_url", "https://jf.example.org/?a=b"),
    ]);
    let got: BTreeMap<String, String> =
        serde_json::from_value(rows[0]["attributes"].clone()).unwrap();
    assert_eq!(got, want);
}

#[tokio::test]
async fn the_largest_secret_with_the_most_and_longest_attributes_fits_one_store() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let max_secret = daemon.settings().max_secret_bytes;
    let most: Attributes = (0..keyhaven::attributes::MAX_ATTRIBUTES)
        .map(|i| {
            (
                format!(
                    "{i:02}{}",
                    "n".repeat(keyhaven::attributes::MAX_NAME_BYTES - 2)
                ),
                "é".repeat(keyhaven::attributes::MAX_VALUE_BYTES / 2),
            )
        })
        .collect();
    let k = CredentialKey::new(
        &"p".repeat(64),
        &"s".repeat(256),
        &"u".repeat(256),
        &"t".repeat(64),
    )
    .unwrap();
    let stored = client
        .store(
            &k,
            Secret::new(vec![0xa5; max_secret]),
            StoreOptions {
                label: Some("l".repeat(256)),
                attributes: Some(most.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(stored.metadata.attributes, most);
    assert_eq!(client.retrieve(&k).await.unwrap().secret.len(), max_secret);
}
