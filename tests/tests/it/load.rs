//! Load and exhaustion against the real daemon: a connection flood past
//! `max_connections`, thousands of requests in flight, idle connections
//! held open, half-open and oversized garbage, and the daemon's memory
//! before and after (printed; bounded).

use std::io::Write as _;

use keyhaven::{Client, CredentialKey, ErrorKind, ListFilter, Secret, StoreOptions};
use keyhaven_tests::TestEnv;
use tokio::io::AsyncWriteExt;

const MAX_CONNECTIONS: usize = 64;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_refused_and_well_formed_clients_keep_being_served() {
    let env = TestEnv::new();
    let config = env.home().join(".config/keyhaven");
    std::fs::create_dir_all(&config).unwrap();
    keyhaven_tests::set_mode(&config, 0o700);
    std::fs::write(
        config.join("config.toml"),
        format!("max_connections = {MAX_CONNECTIONS}\n"),
    )
    .unwrap();
    let daemon = env.spawn_daemon(&[]);
    let pid = daemon.pid();
    let first = Client::connect_to(env.socket()).await.unwrap();
    let k = CredentialKey::new("jellyfin", "load", "u", "").unwrap();
    first
        .store(&k, Secret::from("steady"), StoreOptions::default())
        .await
        .unwrap();
    let rss_before = rss_kib(pid);

    // Garbage alongside: half-open connections, a preface followed by a
    // frame header announcing 16 MiB, and a gRPC message claiming 4 GiB.
    let mut hostile = Vec::new();
    for payload in [
        b"PRI * HTTP/2.0\r\n".to_vec(),
        [
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(),
            &[0xff, 0xff, 0xff, 0x00, 0x00, 0, 0, 0, 1],
        ]
        .concat(),
        vec![0u8, 0xff, 0xff, 0xff, 0xff],
    ] {
        let mut s = tokio::net::UnixStream::connect(env.socket()).await.unwrap();
        let _ = s.write_all(&payload).await;
        hostile.push(s);
    }

    // A flood of clients, each keeping its connection busy with a Watch
    // stream (idle ones would be closed to make room): the first ones are
    // admitted, the next get RESOURCE_EXHAUSTED, the rest are closed; none
    // of it disturbs the clients already served.
    let mut watches = vec![first.watch(&ListFilter::default(), false).await.unwrap()];
    let mut admitted = vec![first];
    let (mut exhausted, mut closed) = (0, 0);
    for _ in 0..(MAX_CONNECTIONS * 3) {
        match Client::connect_to(env.socket()).await {
            Ok(c) => {
                watches.push(c.watch(&ListFilter::default(), false).await.unwrap());
                admitted.push(c);
            }
            Err(e) if e.kind() == ErrorKind::ResourceExhausted => {
                assert!(e.to_string().contains("max_connections"), "{e}");
                exhausted += 1;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                closed += 1;
            }
        }
    }
    // The hostile connections count against the limit too.
    assert!(admitted.len() <= MAX_CONNECTIONS, "{}", admitted.len());
    assert!(
        admitted.len() >= MAX_CONNECTIONS - hostile.len(),
        "{}",
        admitted.len()
    );
    assert!(exhausted > 0, "the excess was told RESOURCE_EXHAUSTED");

    // Thousands of requests in flight over the admitted connections.
    let mut tasks = Vec::new();
    for (i, client) in admitted.iter().enumerate() {
        for j in 0..40 {
            let (client, k) = (client.clone(), k.clone());
            tasks.push(tokio::spawn(async move {
                if (i + j) % 10 == 0 {
                    let own = CredentialKey::new("jellyfin", "load", &format!("c{i}"), "").unwrap();
                    client
                        .store(&own, Secret::from(format!("v{j}")), StoreOptions::default())
                        .await
                        .map(|_| ())
                } else {
                    client
                        .retrieve(&k)
                        .await
                        .map(|c| assert_eq!(c.secret.expose(), b"steady"))
                }
            }));
        }
    }
    let requests = tasks.len();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let rss_after = rss_kib(pid);
    let _ = writeln!(
        std::io::stderr(),
        "load: {} connections admitted, {exhausted} refused with RESOURCE_EXHAUSTED, {closed} \
         closed, {requests} requests in flight, daemon RSS {rss_before} KiB before, {rss_after} \
         KiB after",
        admitted.len()
    );
    assert!(
        rss_after < rss_before + 128 * 1024,
        "memory stays bounded: {rss_before} KiB -> {rss_after} KiB"
    );

    // Everything released: new clients are served again.
    drop((watches, admitted));
    drop(hostile);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let client = loop {
        match Client::connect_to(env.socket()).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "slots never freed: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(
        client.retrieve(&k).await.unwrap().secret.expose(),
        b"steady"
    );
    let (status, _) = tokio::task::spawn_blocking(move || daemon.stop())
        .await
        .unwrap();
    assert!(status.success());
}
