//! The daemon in-process, through the real socket and the real client
//! library: what a client observes for good and bad requests.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use keyhaven::{CredentialKey, ErrorKind, ListFilter, Secret, StoreOptions};
use keyhaven_proto::pb;
use keyhaven_tests::TestDaemon;
use tonic::Code;

fn key(provider: &str, server: &str, user: &str) -> CredentialKey {
    CredentialKey::new(provider, server, user, "").unwrap()
}

fn wire_key(
    provider: &str,
    server: &str,
    user: &str,
    token_type: &str,
) -> Option<pb::CredentialKey> {
    Some(pb::CredentialKey {
        provider: provider.into(),
        server_id: server.into(),
        user_id: user.into(),
        token_type: token_type.into(),
    })
}

#[tokio::test]
async fn store_retrieve_delete_round_trip() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let k = key("jellyfin", "srv-1", "user-1");

    let stored = client
        .store(
            &k,
            Secret::from("tok-123"),
            StoreOptions {
                label: Some("Living room".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(stored.created);
    assert_eq!(stored.metadata.label.as_deref(), Some("Living room"));

    let cred = client.retrieve(&k).await.unwrap();
    assert_eq!(cred.secret.expose(), b"tok-123");
    assert_eq!(cred.metadata.revision, stored.metadata.revision);
    assert_eq!(cred.metadata.key.token_type(), "access_token");

    let updated = client
        .store(&k, Secret::from("tok-456"), StoreOptions::default())
        .await
        .unwrap();
    assert!(!updated.created);
    assert!(updated.metadata.revision > stored.metadata.revision);
    assert_eq!(updated.metadata.created_at, stored.metadata.created_at);
    assert_eq!(
        client.retrieve(&k).await.unwrap().secret.expose(),
        b"tok-456"
    );

    let deleted = client.delete(&k, None).await.unwrap();
    assert_eq!(deleted.revision, updated.metadata.revision);
    let err = client.retrieve(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("jellyfin::srv-1::user-1"), "{err}");
    assert_eq!(
        client.delete(&k, None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn status_reports_version_protocol_pid_store_and_tier() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    client
        .store(
            &key("plex", "", ""),
            Secret::from("t"),
            StoreOptions::default(),
        )
        .await
        .unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(status.protocol, keyhaven::PROTOCOL);
    assert_eq!(status.pid, std::process::id());
    assert_eq!(status.store_path, daemon.store_path().display().to_string());
    assert_eq!(status.key_tier, "file");
    assert!(
        status.key_source.contains("keyhaven.key"),
        "{}",
        status.key_source
    );
    assert_eq!(status.credential_count, 1);
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn list_filters_paginates_and_never_carries_secrets() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let canary = "list-canary-7f3a9";
    let mut all = Vec::new();
    for provider in ["emby", "jellyfin"] {
        for server in ["", "s1", "s2"] {
            for user in ["", "u1"] {
                let k = key(provider, server, user);
                client
                    .store(
                        &k,
                        Secret::from(format!("{canary}-{k}")),
                        StoreOptions::default(),
                    )
                    .await
                    .unwrap();
                all.push(k);
            }
        }
    }
    all.sort();

    let listed = client.list(&ListFilter::default()).await.unwrap();
    let keys: Vec<_> = listed.iter().map(|m| m.key.clone()).collect();
    assert_eq!(keys, all, "everything, in key order");

    let jf = ListFilter {
        provider: Some("jellyfin".into()),
        server_id: Some("s1".into()),
        ..Default::default()
    };
    let got: Vec<_> = client
        .list(&jf)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        got,
        vec![key("jellyfin", "s1", ""), key("jellyfin", "s1", "u1")]
    );

    let account_wide = ListFilter {
        server_id: Some(String::new()),
        user_id: Some(String::new()),
        ..Default::default()
    };
    let got: Vec<_> = client
        .list(&account_wide)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(got, vec![key("emby", "", ""), key("jellyfin", "", "")]);

    // Page by page with a small page size: every key exactly once, and no
    // response carries a secret's bytes.
    let mut raw = daemon.raw().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = raw
            .list(pb::ListRequest {
                page_size: 5,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let bytes = prost::Message::encode_to_vec(&page);
        assert!(!bytes.windows(canary.len()).any(|w| w == canary.as_bytes()));
        pages += 1;
        seen.extend(page.credentials.into_iter().map(|m| m.key.unwrap()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), all.len());

    let bad = raw
        .list(pb::ListRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("page_size"), "{}", bad.message());
    let bad = raw
        .list(pb::ListRequest {
            page_token: "not a token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn compare_and_swap_rules() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let k = key("jellyfin", "srv", "u");

    let first = client
        .store(&k, Secret::from("a"), StoreOptions::if_absent())
        .await
        .unwrap();
    let err = client
        .store(&k, Secret::from("b"), StoreOptions::if_absent())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.to_string().contains("already exists"), "{err}");

    let rev = first.metadata.revision;
    let second = client
        .store(&k, Secret::from("c"), StoreOptions::if_revision(rev))
        .await
        .unwrap();
    let stale = client
        .store(&k, Secret::from("d"), StoreOptions::if_revision(rev))
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::Conflict);
    assert!(stale.to_string().contains(&format!("not {rev}")), "{stale}");
    assert_eq!(
        client.retrieve(&k).await.unwrap().secret.expose(),
        b"c",
        "a failed CAS changes nothing"
    );

    let err = client.delete(&k, Some(rev)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    client
        .delete(&k, Some(second.metadata.revision))
        .await
        .unwrap();

    // A re-created credential never reuses an old revision.
    let again = client
        .store(&k, Secret::from("e"), StoreOptions::if_absent())
        .await
        .unwrap();
    assert!(again.metadata.revision > second.metadata.revision);
    let ghost = client
        .store(
            &key("jellyfin", "none", "u"),
            Secret::from("x"),
            StoreOptions::if_revision(1),
        )
        .await
        .unwrap_err();
    assert_eq!(ghost.kind(), ErrorKind::Conflict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_with_the_same_revision_exactly_one_wins() {
    let daemon = TestDaemon::start().await;
    let setup = daemon.client().await;
    let k = key("jellyfin", "race", "u");
    let mut rev = setup
        .store(&k, Secret::from("start"), StoreOptions::default())
        .await
        .unwrap()
        .metadata
        .revision;
    for round in 0..20 {
        let mut tasks = Vec::new();
        for writer in 0..8 {
            // Separate connections, like separate apps.
            let client = daemon.client().await;
            let k = k.clone();
            tasks.push(tokio::spawn(async move {
                let secret = Secret::from(format!("round{round}-writer{writer}"));
                (
                    writer,
                    client
                        .store(&k, secret, StoreOptions::if_revision(rev))
                        .await,
                )
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (writer, result) = task.await.unwrap();
            match result {
                Ok(stored) => winners.push((writer, stored.metadata.revision)),
                Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let (writer, new_rev) = winners[0];
        let now = setup.retrieve(&k).await.unwrap();
        assert_eq!(
            now.secret.expose_str(),
            Some(format!("round{round}-writer{writer}").as_str())
        );
        assert_eq!(now.metadata.revision, new_rev);
        rev = new_rev;
    }
}

#[tokio::test]
async fn bad_requests_get_clear_statuses_and_change_nothing() {
    let daemon = TestDaemon::start_with(|s| s.max_secret_bytes = 1024).await;
    let client = daemon.client().await;
    let good = key("jellyfin", "srv", "u");
    client
        .store(&good, Secret::from("keep-me"), StoreOptions::default())
        .await
        .unwrap();
    let before = client.list(&ListFilter::default()).await.unwrap();
    let mut raw = daemon.raw().await;

    let long_id = "i".repeat(257);
    let long_name = "p".repeat(65);
    let cases: Vec<(&str, pb::StoreRequest, Code, &str)> = vec![
        (
            "no key",
            pb::StoreRequest {
                key: None,
                secret: b"x".to_vec(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "key is required",
        ),
        (
            "empty provider",
            pb::StoreRequest {
                key: wire_key("", "s", "u", ""),
                secret: b"x".to_vec(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "key.provider must not be empty",
        ),
        (
            "long provider",
            pb::StoreRequest {
                key: wire_key(&long_name, "s", "u", ""),
                secret: b"x".to_vec(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "key.provider is 65 bytes; the limit is 64",
        ),
        (
            "long server_id",
            pb::StoreRequest {
                key: wire_key("jellyfin", &long_id, "u", ""),
                secret: b"x".to_vec(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "key.server_id is 257 bytes; the limit is 256",
        ),
        (
            "long user_id",
            pb::StoreRequest {
                key: wire_key("jellyfin", "s", &long_id, ""),
                secret: b"x".to_vec(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "key.user_id is 257 bytes",
        ),
        (
            "NUL in server_id",
            pb::StoreRequest {
                key: wire_key("jellyfin", "s\0evil", "u", ""),
                secret: b"x".to_vec(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "key.server_id contains a control character (U+0000)",
        ),
        (
            "newline in user_id",
            pb::StoreRequest {
                key: wire_key("jellyfin", "s", "u\nx", ""),
                secret: b"x".to_vec(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "key.user_id contains a control character (U+000A)",
        ),
        (
            "escape in token_type",
            pb::StoreRequest {
                key: wire_key("jellyfin", "s", "u", "tok\u{1b}"),
                secret: b"x".to_vec(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "key.token_type contains a control character (U+001B)",
        ),
        (
            "slash in provider",
            pb::StoreRequest {
                key: wire_key("a/b", "s", "u", ""),
                secret: b"x".to_vec(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "key.provider may only contain",
        ),
        (
            "control char in label",
            pb::StoreRequest {
                key: wire_key("jellyfin", "s", "u", ""),
                secret: b"x".to_vec(),
                label: Some("a\u{7}".into()),
                ..Default::default()
            },
            Code::InvalidArgument,
            "label contains a control character",
        ),
        (
            "empty secret",
            pb::StoreRequest {
                key: wire_key("jellyfin", "s", "u", ""),
                secret: Vec::new(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "secret must not be empty",
        ),
        (
            "oversize secret",
            pb::StoreRequest {
                key: wire_key("jellyfin", "s", "u", ""),
                secret: vec![b'x'; 1025],
                ..Default::default()
            },
            Code::InvalidArgument,
            "secret is 1025 bytes; the limit (max_secret_bytes) is 1024",
        ),
        (
            "bad timestamp",
            pb::StoreRequest {
                key: wire_key("jellyfin", "s", "u", ""),
                secret: b"x".to_vec(),
                expires_at: Some(prost_types_ts(1, -1)),
                ..Default::default()
            },
            Code::InvalidArgument,
            "expires_at",
        ),
        (
            "oversize message",
            pb::StoreRequest {
                key: wire_key("jellyfin", "s", "u", ""),
                secret: vec![b'x'; 64 * 1024],
                ..Default::default()
            },
            Code::ResourceExhausted,
            "request too large",
        ),
        (
            "stale revision",
            pb::StoreRequest {
                key: wire_key("jellyfin", "srv", "u", ""),
                secret: b"x".to_vec(),
                expected_revision: Some(999),
                ..Default::default()
            },
            Code::FailedPrecondition,
            "is at revision",
        ),
    ];
    for (name, request, code, message) in cases {
        let status = raw.store(request).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(
            status.message().contains(message),
            "{name}: {:?} lacks {message:?}",
            status.message()
        );
        // The daemon keeps serving on the same connection and nothing changed.
        assert_eq!(
            client.retrieve(&good).await.unwrap().secret.expose(),
            b"keep-me",
            "{name}"
        );
    }
    for (name, k) in [
        ("empty provider", wire_key("", "s", "u", "")),
        ("NUL", wire_key("jellyfin", "\0", "u", "")),
    ] {
        let st = raw
            .retrieve(pb::RetrieveRequest {
                key: k.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "retrieve {name}");
        let st = raw
            .delete(pb::DeleteRequest {
                key: k,
                expected_revision: None,
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "delete {name}");
    }
    let st = raw
        .retrieve(pb::RetrieveRequest {
            key: wire_key("jellyfin", "nope", "u", ""),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::NotFound);
    let st = raw
        .delete(pb::DeleteRequest {
            key: wire_key("jellyfin", "nope", "u", ""),
            expected_revision: None,
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::NotFound);
    // Retrieve keys that are not what the .proto says, sent as raw bytes:
    // each is a clear INVALID_ARGUMENT, and the connection is still served.
    let raw_key = |bytes: &[u8]| pb::RetrieveRequest {
        received_key: Some(bytes.to_vec().into()),
        ..Default::default()
    };
    for (name, bytes, message) in [
        (
            "user id not UTF-8",
            &[0x0a, 0x04, b'p', b'l', b'e', b'x', 0x1a, 0x02, 0xff, 0xfe][..],
            "not UTF-8",
        ),
        (
            "field cut short",
            &[0x0a, 0x05, b'p'][..],
            "not a valid CredentialKey",
        ),
        (
            "field sent as a number",
            &[0x08, 0x01][..],
            "not a valid CredentialKey",
        ),
    ] {
        let st = raw.retrieve(raw_key(bytes)).await.unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{name}: {st:?}");
        assert!(st.message().contains(message), "{name}: {st:?}");
        assert_eq!(
            client.retrieve(&good).await.unwrap().secret.expose(),
            b"keep-me",
            "{name}"
        );
    }
    assert_eq!(client.list(&ListFilter::default()).await.unwrap(), before);
}

fn prost_types_ts(seconds: i64, nanos: i32) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos }
}

#[tokio::test]
async fn expired_credentials_are_not_returned() {
    // No sweep during the test: a sweep that ran between the Store and
    // the Retrieve would purge the credential, and the answer would be a
    // plain "no credential" instead of "expired".
    let daemon = TestDaemon::start_with(|s| s.expiry_sweep = Duration::from_secs(3600)).await;
    let client = daemon.client().await;
    let k = key("plex", "", "acct");
    let past = SystemTime::now() - Duration::from_secs(60);
    client
        .store(
            &k,
            Secret::from("old"),
            StoreOptions {
                expires_at: Some(past),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let err = client.retrieve(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("expired"), "{err}");
    let future = SystemTime::now() + Duration::from_secs(3600);
    client
        .store(
            &k,
            Secret::from("new"),
            StoreOptions {
                expires_at: Some(future),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let cred = client.retrieve(&k).await.unwrap();
    assert_eq!(cred.secret.expose(), b"new");
    let got = keyhaven::system_to_ms(cred.metadata.expires_at.unwrap());
    assert_eq!(got, keyhaven::system_to_ms(future));
}

#[tokio::test]
async fn garbage_on_the_socket_does_not_disturb_other_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let k = key("jellyfin", "g", "u");
    client
        .store(&k, Secret::from("still-here"), StoreOptions::default())
        .await
        .unwrap();

    let payloads: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 4096],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\xff\xff\xff\x04\x00\x00\x00\x00".to_vec(),
        b"PRI * HTTP/2.0\r\n".to_vec(),
    ];
    let mut half_open = Vec::new();
    for payload in payloads {
        let mut s = tokio::net::UnixStream::connect(daemon.socket())
            .await
            .unwrap();
        s.write_all(&payload).await.unwrap();
        let mut buf = [0u8; 256];
        // Read whatever the daemon answers; it may close the connection.
        let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
        half_open.push(s);
        assert_eq!(
            client.retrieve(&k).await.unwrap().secret.expose(),
            b"still-here"
        );
    }
    // A fresh client still connects while the half-open connections linger.
    let fresh = daemon.client().await;
    assert_eq!(
        fresh.retrieve(&k).await.unwrap().secret.expose(),
        b"still-here"
    );
}

#[tokio::test]
async fn connections_past_the_limit_get_resource_exhausted() {
    let daemon = TestDaemon::start_with(|s| s.max_connections = 2).await;
    let a = daemon.client().await;
    let b = daemon.client().await;
    // Both busy (a Watch stream open each): idle connections would be
    // closed to make room instead.
    let watch_a = a.watch(&ListFilter::default(), false).await.unwrap();
    let _watch_b = b.watch(&ListFilter::default(), false).await.unwrap();
    let err = keyhaven::Client::connect_to(daemon.socket())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    assert!(err.to_string().contains("max_connections"), "{err}");
    let k = key("jellyfin", "c", "u");
    a.store(&k, Secret::from("x"), StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(b.retrieve(&k).await.unwrap().secret.expose(), b"x");
    drop((watch_a, a));
    // The freed slot is reusable once the daemon has seen the close; the
    // status call retries until the connection count drops.
    let mut connected = None;
    for _ in 0..100 {
        match keyhaven::Client::connect_to(daemon.socket()).await {
            Ok(c) => {
                connected = Some(c);
                break;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ResourceExhausted, "{e}");
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        connected.is_some(),
        "a slot frees up when a client disconnects"
    );
}

#[tokio::test]
async fn distinct_keys_do_not_collide() {
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    let keys = [
        CredentialKey::new("jellyfin", "a::b", "c", "").unwrap(),
        CredentialKey::new("jellyfin", "a", "b::c", "").unwrap(),
        CredentialKey::new("jellyfin", "a", "b", "c").unwrap(),
        CredentialKey::new("jellyfin", "ü", "", "refresh_token").unwrap(),
        CredentialKey::new("jellyfin", "", "ü", "refresh_token").unwrap(),
    ];
    for (i, k) in keys.iter().enumerate() {
        client
            .store(k, Secret::from(format!("s{i}")), StoreOptions::default())
            .await
            .unwrap();
    }
    let mut seen = HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        let cred = client.retrieve(k).await.unwrap();
        assert_eq!(cred.secret.expose_str(), Some(format!("s{i}").as_str()));
        assert!(seen.insert(cred.metadata.revision));
    }
    assert_eq!(
        client.list(&ListFilter::default()).await.unwrap().len(),
        keys.len()
    );
}

/// gRPC's C core (Python grpcio) and grpc-java send the socket path as
/// `:authority`, which the HTTP/2 layer would reject. Speak raw HTTP/2 the
/// way they do and check the request is served.
#[tokio::test]
async fn clients_that_send_the_socket_path_as_authority_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = TestDaemon::start().await;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }
    fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
        // Literal with incremental indexing, new name, no Huffman coding.
        block.push(0x40);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let mut block = Vec::new();
    let authority = format!("{}", daemon.socket().display()).replace('/', "%2F");
    for (n, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/keyhaven.v1.Daemon/Status"),
        (":authority", authority.as_str()),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        literal(&mut block, n, v);
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    out.extend(frame(0x1, 0x4, 1, &block)); // HEADERS, END_HEADERS
    out.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0])); // empty StatusRequest, END_STREAM

    let mut sock = tokio::net::UnixStream::connect(daemon.socket())
        .await
        .unwrap();
    sock.write_all(&out).await.unwrap();
    let mut input = Vec::new();
    let mut decoder = loona_hpack::Decoder::new();
    let mut headers = Vec::new();
    let mut data = Vec::new();
    'read: loop {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
            .await
            .expect("the daemon answers")
            .unwrap();
        assert!(
            n > 0,
            "connection closed before the answer; got {headers:?}"
        );
        input.extend_from_slice(&buf[..n]);
        while input.len() >= 9 {
            let len = (usize::from(input[0]) << 16)
                | (usize::from(input[1]) << 8)
                | usize::from(input[2]);
            if input.len() < 9 + len {
                break;
            }
            let f: Vec<u8> = input.drain(..9 + len).collect();
            let (kind, flags) = (f[3], f[4]);
            assert_ne!(kind, 0x3, "the daemon reset the stream (RST_STREAM)");
            match kind {
                0x1 => headers.extend(decoder.decode(&f[9..]).unwrap()),
                0x0 => data.extend_from_slice(&f[9..]),
                _ => {}
            }
            if kind <= 1 && flags & 0x1 != 0 {
                break 'read;
            }
        }
    }
    let find = |name: &[u8]| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(find(b":status"), Some(b"200".to_vec()));
    assert_eq!(find(b"grpc-status"), Some(b"0".to_vec()), "{headers:?}");
    let reply: pb::StatusResponse = prost::Message::decode(&data[5..]).unwrap();
    assert_eq!(reply.protocol, keyhaven::PROTOCOL);
}

/// A daemon that speaks another protocol number, as an old daemon still
/// running after an upgrade would.
struct OtherProtocol;

#[tonic::async_trait]
impl pb::daemon_server::Daemon for OtherProtocol {
    async fn status(
        &self,
        _: tonic::Request<pb::StatusRequest>,
    ) -> Result<tonic::Response<pb::StatusResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::StatusResponse {
            version: "9.9.9".into(),
            protocol: 99,
            pid: 1,
            ..Default::default()
        }))
    }

    async fn rotate_key(
        &self,
        _: tonic::Request<pb::RotateKeyRequest>,
    ) -> Result<tonic::Response<pb::RotateKeyResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("old daemon"))
    }

    async fn move_key(
        &self,
        _: tonic::Request<pb::MoveKeyRequest>,
    ) -> Result<tonic::Response<pb::MoveKeyResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("old daemon"))
    }

    type BackupStream = tokio_stream::Empty<Result<pb::BackupChunk, tonic::Status>>;

    async fn backup(
        &self,
        _: tonic::Request<pb::BackupRequest>,
    ) -> Result<tonic::Response<Self::BackupStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("old daemon"))
    }

    type ExportStream = tokio_stream::Empty<Result<pb::ExportedCredential, tonic::Status>>;

    async fn export(
        &self,
        _: tonic::Request<pb::ExportRequest>,
    ) -> Result<tonic::Response<Self::ExportStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("old daemon"))
    }

    type RestoreStream = tokio_stream::Empty<Result<pb::RestoreOutcome, tonic::Status>>;

    async fn restore(
        &self,
        _: tonic::Request<tonic::Streaming<pb::RestoreChunk>>,
    ) -> Result<tonic::Response<Self::RestoreStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("old daemon"))
    }
}

#[tokio::test]
async fn a_daemon_speaking_another_protocol_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::daemon_server::DaemonServer::new(OtherProtocol))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let err = keyhaven::Client::connect_to(&path).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProtocolMismatch, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("protocol 99") && text.contains("9.9.9") && text.contains("restart"),
        "{text}"
    );
    assert_eq!(err.exit_code(), keyhaven_proto::exit::PROTOCOL_MISMATCH);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
