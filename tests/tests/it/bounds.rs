//! What one client can take from the daemon, and what start-up refuses:
//! per-service message limits and HTTP/2 windows under messages that never
//! complete (the real `keyhavend`, its memory read off /proc), the
//! first-request deadline, idle connections making room for new ones,
//! non-gRPC content types, and absurd or unusable settings.

use std::future::{Future as _, poll_fn};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::task::Poll;
use std::time::{Duration, Instant};

use keyhaven::{Client, CredentialKey, ErrorKind, ListFilter, Secret, StoreOptions};
use keyhaven_daemon::rpc::limits::SMALL_MESSAGE;
use keyhaven_daemon::server::config::DEFAULT_MAX_SECRET_BYTES;
use keyhaven_tests::{TestDaemon, TestEnv, is_root, set_mode, skip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codegen::{Bytes, http};

/// The daemon's resident memory must stay under this whatever the clients
/// hold open.
const RSS_CEILING_KIB: u64 = 64 * 1024;

/// Every service, by one method, with its request size limit.
fn services() -> [(&'static str, usize); 5] {
    [
        // max_secret_bytes plus 48 KiB for the key, label and attributes.
        (
            "/keyhaven.v1.Credentials/Store",
            DEFAULT_MAX_SECRET_BYTES + 48 * 1024,
        ),
        ("/keyhaven.v1.Daemon/Status", SMALL_MESSAGE),
        ("/keyhaven.v1.Audit/Query", SMALL_MESSAGE),
        ("/grpc.health.v1.Health/Check", SMALL_MESSAGE),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            SMALL_MESSAGE,
        ),
    ]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A raw HTTP/2 connection (the h2 crate, no gRPC client in the way).
async fn h2_connect(socket: &Path) -> h2::client::SendRequest<Bytes> {
    let io = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (send, connection) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

fn request(path: &str, content_type: &str) -> http::Request<()> {
    http::Request::post(format!("http://localhost{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// The 5-byte gRPC message prefix: not compressed, `len` bytes follow.
fn grpc_prefix(len: usize) -> Bytes {
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
    Bytes::from(prefix)
}

/// Sends `data` as the peer's flow control allows: when this returns, the
/// daemon has granted window for (so read) all but the last chunk.
async fn send_paced(stream: &mut h2::SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(granted) => granted?,
            None => break,
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        stream.send_data(chunk, false)?;
    }
    Ok(())
}

/// Opens a stream to `path` whose message announces `announced` bytes and
/// sends all of them but the last: the message never completes.
async fn hold_open(
    mut send: h2::client::SendRequest<Bytes>,
    path: &'static str,
    announced: usize,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    send = send.ready().await.unwrap();
    let (response, mut stream) = send
        .send_request(request(path, "application/grpc"), false)
        .unwrap();
    stream.send_data(grpc_prefix(announced), false).unwrap();
    send_paced(&mut stream, Bytes::from(vec![b'x'; announced - 1]))
        .await
        .unwrap();
    (response, stream)
}

/// True while the daemon has not answered.
async fn unanswered(response: &mut h2::client::ResponseFuture) -> bool {
    poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *response).poll(cx).is_pending())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_held_open_on_every_service_keep_the_daemon_small() {
    let env = TestEnv::new();
    let daemon = env.spawn_daemon(&[]);
    let pid = daemon.pid();
    let socket = env.socket();
    let client = Client::connect_to(&socket).await.unwrap();
    let k = CredentialKey::new("jellyfin", "bounds", "u", "").unwrap();
    client
        .store(&k, Secret::from("steady"), StoreOptions::default())
        .await
        .unwrap();
    let rss_start = rss_kib(pid);
    for (path, limit) in services() {
        // 4 connections x 64 streams, each a message just under the
        // service's limit that never completes.
        let mut connections = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let send = h2_connect(&socket).await;
            for _ in 0..64 {
                tasks.spawn(hold_open(send.clone(), path, limit - 1));
            }
            connections.push(send);
        }
        let mut held = Vec::new();
        while let Some(stream) = tasks.join_next().await {
            held.push(stream.unwrap());
        }
        let mut peak = rss_kib(pid);
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            peak = peak.max(rss_kib(pid));
        }
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!(
                "{path}: 256 messages of {} bytes held open, daemon RSS {rss_start} KiB -> {peak} KiB\n",
                limit - 1
            )
            .as_bytes(),
        );
        assert!(
            peak < RSS_CEILING_KIB,
            "{path}: 256 held-open messages took the daemon to {peak} KiB"
        );
        // Unary calls wait for their message (reflection, a bidi stream,
        // answers its headers at once).
        if !path.starts_with("/grpc.reflection") {
            for (response, _) in &mut held {
                assert!(unanswered(response).await, "{path}: still waiting");
            }
        }
        // Meanwhile a well-behaved app is served, on a new connection too.
        assert_eq!(
            client.retrieve(&k).await.unwrap().secret.expose(),
            b"steady"
        );
        let fresh = Client::connect_to(&socket).await.unwrap();
        assert_eq!(fresh.retrieve(&k).await.unwrap().secret.expose(), b"steady");
        drop((held, connections, fresh));

        // A message announcing more than the limit (up to tonic's default
        // of 4 MiB) is refused at once, before its body is read.
        let send = h2_connect(&socket).await;
        let mut send = send.ready().await.unwrap();
        let (response, mut stream) = send
            .send_request(request(path, "application/grpc"), false)
            .unwrap();
        stream
            .send_data(grpc_prefix(4 * 1024 * 1024 - 1), false)
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .unwrap_or_else(|_| panic!("{path}: an oversize message is answered at once"))
            .unwrap();
        if path.starts_with("/grpc.reflection") {
            // Reflection ends the stream (tonic-reflection drops the error).
            let mut body = response.into_body();
            tokio::time::timeout(Duration::from_secs(10), async {
                while body.data().await.is_some() {}
            })
            .await
            .unwrap_or_else(|_| panic!("{path}: the oversize stream ends"));
        } else {
            let status = tonic::Status::from_header_map(response.headers())
                .unwrap_or_else(|| panic!("{path}: a gRPC status: {response:?}"));
            assert_eq!(
                status.code(),
                tonic::Code::ResourceExhausted,
                "{path}: {status:?}"
            );
            assert!(
                status.message().contains("request too large")
                    && status.message().contains(&limit.to_string()),
                "{path}: the refusal names the limit: {status:?}"
            );
        }
    }
    let (status, _) = tokio::task::spawn_blocking(move || daemon.stop())
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn connections_that_send_no_request_are_closed_within_ten_seconds() {
    let daemon = TestDaemon::start().await;
    let socket = daemon.socket().to_path_buf();
    let settings_frame: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let cases: [(&str, Vec<u8>); 3] = [
        ("nothing", Vec::new()),
        ("only the preface", preface.clone()),
        (
            "the preface and SETTINGS",
            [preface, settings_frame.to_vec()].concat(),
        ),
    ];
    let mut waits = tokio::task::JoinSet::new();
    for (name, bytes) in cases {
        let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        waits.spawn(async move {
            let mut sink = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await;
            // End of stream or a reset both mean closed.
            assert!(
                closed.is_ok(),
                "a connection that sent {name} is still open after 10 s"
            );
        });
    }
    while let Some(done) = waits.join_next().await {
        done.unwrap();
    }
    // The daemon itself serves on.
    let client = daemon.client().await;
    assert!(
        client
            .list(&ListFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_silent_connections_do_not_lock_a_new_client_out() {
    let daemon = TestDaemon::start().await;
    assert!(daemon.settings().max_connections < 200);
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(
            tokio::net::UnixStream::connect(daemon.socket())
                .await
                .unwrap(),
        );
    }
    let started = Instant::now();
    let client = tokio::time::timeout(Duration::from_secs(10), Client::connect_to(daemon.socket()))
        .await
        .expect("a new client is served within 10 s")
        .expect("a new client is served, not refused");
    let k = CredentialKey::new("jellyfin", "silent", "u", "").unwrap();
    client
        .store(&k, Secret::from("t"), StoreOptions::default())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(silent);
}

#[tokio::test]
async fn idle_connections_make_room_for_new_clients() {
    // No first-request deadline to speak of: here only making room closes
    // connections.
    let daemon = TestDaemon::start_with(|s| {
        s.max_connections = 3;
        s.first_request_deadline = Duration::from_secs(3600);
    })
    .await;
    // The connection idle longest: it never sent anything.
    let mut oldest = tokio::net::UnixStream::connect(daemon.socket())
        .await
        .unwrap();
    // Two apps connected, each did its handshake and is idle now.
    let idle = [daemon.client().await, daemon.client().await];
    // A newcomer is served: the idlest connection was closed for it.
    let k = CredentialKey::new("jellyfin", "idle", "u", "").unwrap();
    let newcomer = daemon.client().await;
    newcomer
        .store(&k, Secret::from("t"), StoreOptions::default())
        .await
        .unwrap();
    let mut sink = Vec::new();
    // End of stream or a reset: either way, closed.
    let _closed = tokio::time::timeout(Duration::from_secs(10), oldest.read_to_end(&mut sink))
        .await
        .expect("the connection idle longest is closed");
    // And another: an idle app's connection makes room this time.
    let another = daemon.client().await;
    assert_eq!(another.retrieve(&k).await.unwrap().secret.expose(), b"t");
    // (Busy connections are never closed for a newcomer:
    // `connections_past_the_limit_get_resource_exhausted`.)
    drop(idle);
}

#[tokio::test]
async fn requests_that_are_not_grpc_get_http_415_and_are_not_served() {
    let daemon = TestDaemon::start().await;
    let body = prost::Message::encode_to_vec(&keyhaven_proto::pb::StoreRequest {
        key: Some(keyhaven_proto::pb::CredentialKey {
            provider: "jellyfin".into(),
            server_id: "json".into(),
            user_id: "u".into(),
            token_type: String::new(),
        }),
        secret: b"must-not-be-stored".to_vec(),
        ..Default::default()
    });
    for content_type in ["application/json", "text/plain", "application/grpc-web"] {
        let mut send = h2_connect(daemon.socket()).await.ready().await.unwrap();
        let (response, mut stream) = send
            .send_request(
                request("/keyhaven.v1.Credentials/Store", content_type),
                false,
            )
            .unwrap();
        stream
            .send_data(
                [grpc_prefix(body.len()), Bytes::from(body.clone())]
                    .concat()
                    .into(),
                true,
            )
            .unwrap();
        let response = response.await.unwrap();
        assert_eq!(
            response.status(),
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
    }
    let client = daemon.client().await;
    let k = CredentialKey::new("jellyfin", "json", "u", "").unwrap();
    let err = client.retrieve(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "nothing stored: {err}");
}

#[tokio::test]
async fn a_full_page_of_a_thousand_credentials_is_answered() {
    // The answer is larger than a request may be (max_secret_bytes plus
    // 48 KiB): the request limit must not apply to it.
    let daemon = TestDaemon::start().await;
    let client = daemon.client().await;
    for i in 0..1000 {
        let k = CredentialKey::new(
            "jellyfin",
            &format!("server-{i:04}-{}", "s".repeat(40)),
            &format!("user-{}", "u".repeat(40)),
            "",
        )
        .unwrap();
        let label = Some("L".repeat(60));
        let options = StoreOptions {
            label,
            ..Default::default()
        };
        client.store(&k, Secret::from("t"), options).await.unwrap();
    }
    let mut raw = daemon.raw().await;
    let page = raw
        .list(keyhaven_proto::pb::ListRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.credentials.len(), 1000);
}

/// A config file in `env` with `contents`.
fn write_config(env: &TestEnv, contents: &str) {
    let dir = env.home().join(".config/keyhaven");
    std::fs::create_dir_all(&dir).unwrap();
    set_mode(&dir, 0o700);
    let file = dir.join("config.toml");
    std::fs::write(&file, contents).unwrap();
    set_mode(&file, 0o600);
}

fn run_daemon(env: &TestEnv, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut cmd = env.command("keyhavend");
    let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn absurd_max_connections_are_refused_at_start() {
    for value in ["0", "5000", "9223372036854775807"] {
        let env = TestEnv::new();
        write_config(&env, &format!("max_connections = {value}\n"));
        let (status, err) = run_daemon(&env, &[]);
        assert!(!status.success(), "max_connections = {value}: {err}");
        assert!(
            err.contains("max_connections") && err.contains("between 1 and 4096"),
            "max_connections = {value}: {err}"
        );
        assert!(!env.socket().exists(), "never served");
    }
}

#[tokio::test]
async fn a_failed_accept_loop_ends_serve_with_an_error() {
    // Settings built in code skip the config file's checks; an accept loop
    // that cannot run must not end in a clean exit.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = keyhaven_daemon::Settings::in_dir(dir.path());
    settings.max_connections = usize::MAX;
    let prepared = keyhaven_daemon::prepare(&settings).await.unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        prepared.serve(std::future::pending()),
    )
    .await
    .expect("serve ends at once");
    let err = result.unwrap_err().to_string();
    assert!(err.contains("max_connections"), "{err}");
}

#[test]
fn an_empty_data_dir_is_refused_naming_the_setting() {
    let env = TestEnv::new();
    write_config(&env, "data_dir = \"\"\n");
    let (status, err) = run_daemon(&env, &[]);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("data_dir is empty") && err.contains("config.toml"),
        "{err}"
    );
    // The flag: the command line itself refuses an empty value.
    let env = TestEnv::new();
    let (status, err) = run_daemon(&env, &["--data-dir", ""]);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("--data-dir") && err.contains("value is required"),
        "{err}"
    );
}

#[test]
fn a_read_only_database_is_refused_naming_the_path_and_the_fix() {
    if !is_root() {
        skip(
            "a_read_only_database_is_refused_naming_the_path_and_the_fix",
            "needs root to run the daemon as uid 65534 (root writes through any mode)",
        );
        return;
    }
    let env = TestEnv::new();
    set_mode(env.root(), 0o755);
    for sub in [env.home(), env.runtime_dir()] {
        rustix::fs::chown(
            &sub,
            Some(rustix::fs::Uid::from_raw(65534)),
            Some(rustix::fs::Gid::from_raw(65534)),
        )
        .unwrap();
    }
    let as_nobody = || {
        let mut cmd = env.command("keyhavend");
        cmd.uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    // A first run creates the store; it stops cleanly.
    let mut first = as_nobody().spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !env.socket().exists() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        assert!(first.try_wait().unwrap().is_none(), "the daemon exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_child(&first);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(first.wait().unwrap().success());
    let db = env.database();
    let data_dir = db.parent().unwrap().to_path_buf();

    // The data directory read-only, then the database file read-only.
    for (what, path, mode) in [
        ("directory", data_dir.clone(), 0o500),
        ("file", db.clone(), 0o400),
    ] {
        set_mode(&path, mode);
        let out = as_nobody().output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "read-only {what}: {err}");
        assert!(
            err.contains(&db.display().to_string())
                && err.contains("read-only")
                && err.contains("chmod u+w")
                && err.contains("data_dir"),
            "read-only {what}: the message names the database, the cause and the fix: {err}"
        );
        set_mode(&path, if what == "directory" { 0o700 } else { 0o600 });
    }
}

/// Resident KiB of the mappings of the daemon's own executable.
#[cfg(target_os = "linux")]
fn executable_rss_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("read smaps");
    let mut ours = false;
    let mut total = 0;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            ours = fields.nth(4).is_some_and(|p| p.ends_with("/keyhavend"));
        } else if first == "Rss:" && ours {
            total += fields
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

#[cfg(target_os = "linux")]
#[test]
fn an_idle_daemon_unmaps_its_code_and_maps_it_again_for_the_next_client() {
    let env = TestEnv::new();
    let daemon = env.spawn_daemon(&[]);
    let store = env.cli(&["store", "jellyfin", "srv-1", "user-1"], b"tok-1");
    assert_eq!(
        keyhaven_tests::code(&store),
        0,
        "{}",
        keyhaven_tests::stderr(&store)
    );
    // A Watch holds a connection open, so the daemon is not idle while its
    // code's resident size is read.
    let mut watch = env
        .command("keyhaven")
        .arg("watch")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn keyhaven watch");
    let got = env.cli(&["get", "jellyfin", "srv-1", "user-1"], b"");
    assert_eq!(keyhaven_tests::stdout(&got).trim_end(), "tok-1");
    std::thread::sleep(Duration::from_millis(300));
    let serving = executable_rss_kib(daemon.pid());
    assert!(serving > 0, "no resident pages of keyhavend");
    watch.kill().expect("stop keyhaven watch");
    watch.wait().expect("wait for keyhaven watch");
    // No connection for a second: the code pages go (they stay in the page
    // cache, so nothing is read from the disk to map them again).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut idle = serving;
    while Instant::now() < deadline {
        idle = executable_rss_kib(daemon.pid());
        if idle * 2 < serving {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        idle * 2 < serving,
        "the idle daemon still maps {idle} KiB of its executable ({serving} KiB while serving)"
    );
    // And the next client is served as before.
    let again = env.cli(&["get", "jellyfin", "srv-1", "user-1"], b"");
    assert_eq!(keyhaven_tests::stdout(&again).trim_end(), "tok-1");
    assert!(executable_rss_kib(daemon.pid()) > idle);
}
