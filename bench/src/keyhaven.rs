//! keyhaven itself: the real `keyhavend` binary, spoken to through the
//! real client library, in a private home directory (key-file tier, no
//! session bus).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use keyhaven::{Client, CredentialKey, ListFilter, Secret, StoreOptions};

use crate::report::{CpuMark, Group, Measurement, Placed, Point, Report, print_line};
use crate::stats::{
    Placement, Plan, latency_async, on_pinned_thread, rss_anon_kib, rss_kib, spawn_on,
    throughput_async,
};

/// Credentials per server id: a List returns this many.
const PER_SERVER: usize = 10;
/// Credentials stored before the operation runs.
const SEEDED: usize = 1_000;
/// Connections the benchmark may hold at once (128 clients, plus its own).
const CONFIG: &str = "max_connections = 256\n";

/// A private home for one daemon: socket, data and key file inside a
/// temporary directory that goes away with it.
#[derive(Debug)]
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    /// A fresh, empty home.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("kh-bench").tempdir()?;
        let run = dir.path().join("run");
        std::fs::create_dir(&run)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))?;
        }
        std::fs::write(dir.path().join("keyhaven.toml"), CONFIG)?;
        Ok(Self { dir })
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/keyhaven.sock")
    }

    /// The daemon's command line, run under `wrapper` (e.g. valgrind and
    /// its options) when that is not empty.
    fn wrapped(&self, wrapper: &[std::ffi::OsString], exe: &Path) -> Command {
        let root = self.dir.path();
        let mut cmd = crate::stats::command_under(wrapper, exe);
        // Nothing of the caller's environment: no keyhaven settings, no
        // session bus (so the key-file tier), no socket activation.
        cmd.env_clear();
        cmd.env("HOME", root)
            .env("XDG_RUNTIME_DIR", root.join("run"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--data-dir")
            .arg(root.join("data"))
            .arg("--key-file")
            .arg(root.join("keyhaven.key"))
            .arg("--config")
            .arg(root.join("keyhaven.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    /// Starts the daemon with its CPU mask at `cpu` and waits until it
    /// answers `Status`. Returns it and how long that took from exec.
    pub fn start(&self, exe: &Path, cpu: Option<usize>) -> Result<(Daemon, Duration)> {
        self.start_under(&[], exe, cpu, Duration::from_secs(20))
    }

    /// As [`Home::start`], with the daemon run under `wrapper`, waiting up
    /// to `patience` for its first answer.
    pub fn start_under(
        &self,
        wrapper: &[std::ffi::OsString],
        exe: &Path,
        cpu: Option<usize>,
        patience: Duration,
    ) -> Result<(Daemon, Duration)> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))?;
        let mut cmd = self.wrapped(wrapper, exe);
        cmd.stderr(log);
        let t0 = Instant::now();
        let child = spawn_on(&mut cmd, cpu)?;
        let mut daemon = Daemon {
            child,
            log: self.dir.path().join("daemon.log"),
        };
        let socket = self.socket();
        let deadline = t0 + patience;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        loop {
            if let Some(status) = daemon.child.try_wait()? {
                bail!(
                    "keyhavend exited ({status}) at start: {}",
                    daemon.log_tail()
                );
            }
            if rt.block_on(Client::connect_to(&socket)).is_ok() {
                return Ok((daemon, t0.elapsed()));
            }
            if Instant::now() > deadline {
                bail!(
                    "keyhavend did not answer within {} s: {}",
                    patience.as_secs(),
                    daemon.log_tail()
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// A running daemon; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Stops it and waits.
    pub fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        #[cfg(unix)]
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if self.child.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// The key of credential `i`: `PER_SERVER` users per server id.
pub fn key(i: usize) -> CredentialKey {
    CredentialKey::new(
        "jellyfin",
        &format!("srv-{:07}", i / PER_SERVER),
        &format!("user-{}", i % PER_SERVER),
        "access_token",
    )
    .expect("benchmark keys are valid")
}

/// A token the size of a Jellyfin/Plex access token (a dummy).
fn token(i: u64) -> Secret {
    Secret::new(format!("{i:032x}{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes())
}

/// A filter that selects the `PER_SERVER` credentials of one server.
fn server_filter(server: usize) -> ListFilter {
    ListFilter {
        provider: Some("jellyfin".to_owned()),
        server_id: Some(format!("srv-{server:07}")),
        user_id: None,
        ..ListFilter::default()
    }
}

/// A well-spread index in `0..n` for request `i` of client `client`: both
/// mixed by splitmix64's finalizer, so neighbouring requests, and the
/// clients of one run, read unrelated credentials (and do not share
/// pages, as `i % n` would). Each read is then its own audit record unless
/// the same credential comes up again within a batch, by chance.
///
/// (Until 2026-12-02 this was `(i + 1) * φ >> 17 mod n`, whose low digits
/// cycle: 87 neighbouring reads touched only 35 credentials, and every
/// client read the same sequence, so the audit log folded most reads.)
pub(crate) fn spread(client: usize, i: u64, n: usize) -> usize {
    let mut z = ((client as u64) << 40 ^ i).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::spread;
    use std::collections::HashSet;

    #[test]
    fn neighbouring_reads_and_other_clients_touch_different_credentials() {
        // 100 neighbouring reads of 1,000 credentials drawn at random hit
        // about 95 distinct ones; a cycling sequence hits far fewer.
        for client in 0..4 {
            for start in [0u64, 1_000, 123_456] {
                let seen: HashSet<usize> = (start..start + 100)
                    .map(|i| spread(client, i, 1_000))
                    .collect();
                assert!(
                    seen.len() >= 85,
                    "client {client} from {start}: {} distinct",
                    seen.len()
                );
            }
        }
        let same = (0..1_000u64)
            .filter(|&i| spread(0, i, 1_000) == spread(1, i, 1_000))
            .count();
        assert!(
            same < 20,
            "two clients read the same credential at {same} of 1,000 steps"
        );
        assert!((0..10_000u64).all(|i| spread(3, i, 7) < 7));
    }
}

/// A multi-thread runtime like the one an app would have: 2 workers.
pub(crate) fn client_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Stores `count` credentials through `clients` concurrent connections.
pub(crate) async fn seed(socket: &Path, count: usize, clients: usize) -> Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = Client::connect_to(socket).await?;
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                client
                    .store(&key(i), token(i as u64), StoreOptions::default())
                    .await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Which operation a run does.
#[derive(Debug, Clone, Copy)]
enum Op {
    Retrieve,
    Store,
    List,
}

impl Op {
    async fn run(self, client: &Client, n: usize, client_no: usize, i: u64) -> Result<()> {
        match self {
            Op::Retrieve => {
                let got = client.retrieve(&key(spread(client_no, i, n))).await?;
                if got.secret.is_empty() {
                    bail!("empty secret");
                }
            }
            Op::Store => {
                // Each client rewrites its own small set of keys.
                let k = key(n + client_no * 16 + (i % 16) as usize);
                client.store(&k, token(i), StoreOptions::default()).await?;
            }
            Op::List => {
                let got = client
                    .list(&server_filter(spread(client_no, i, n / PER_SERVER)))
                    .await?;
                if got.len() != PER_SERVER {
                    bail!("list returned {} entries, not {PER_SERVER}", got.len());
                }
            }
        }
        Ok(())
    }
}

/// Single-client latency of `op` at each placement (the daemon restarted
/// pinned for each), then throughput at each client count (unpinned).
fn measure(
    plan: &Plan,
    exe: &Path,
    home: &Home,
    op: Op,
    n: usize,
    mut m: Measurement,
) -> Result<Measurement> {
    let socket = home.socket();
    for placement in Placement::ALL {
        let (daemon, _) = home.start(exe, Some(placement.server_cpu()))?;
        let summary = on_pinned_thread(placement.client_cpu(), || async {
            let client = Client::connect_to(&socket).await?;
            latency_async(plan, |i| op.run(&client, n, 0, i)).await
        })?;
        m.latency.push(Placed { placement, summary });
        daemon.stop()?;
    }
    let (daemon, _) = home.start(exe, None)?;
    let rt = client_runtime()?;
    for &clients in &plan.clients {
        let (mark, summary) = rt.block_on(async {
            let mut conns = Vec::with_capacity(clients);
            for c in 0..clients {
                conns.push((c, Client::connect_to(&socket).await?));
            }
            let mark = CpuMark::now(daemon.pid());
            let summary = throughput_async(conns, plan.duration, move |cc, i| async move {
                op.run(&cc.1, n, cc.0, i).await
            })
            .await?;
            Ok::<_, anyhow::Error>((mark, summary))
        })?;
        m.throughput.push(Point::since(mark, clients, summary));
    }
    drop(rt);
    daemon.stop()?;
    print_line(&m);
    Ok(m)
}

/// Retrieve, Store (durable) and List through the daemon.
pub fn ops(plan: &Plan, exe: &Path, report: &mut Report) -> Result<()> {
    let home = Home::new()?;
    {
        let (daemon, _) = home.start(exe, None)?;
        client_runtime()?.block_on(seed(&home.socket(), SEEDED, 16))?;
        daemon.stop()?;
    }
    let runs = [
        (
            Op::Retrieve,
            Measurement::new(
                "retrieve",
                Group::Keyhaven,
                "Retrieve of a random one of 1,000 credentials, 64-byte token",
            )
            .against("tonic_echo"),
        ),
        (
            Op::Store,
            Measurement::new(
                "store",
                Group::Keyhaven,
                "Store (acknowledged after fsync), 64-byte token, each client its own keys",
            )
            .against("sqlite_upsert_fsync"),
        ),
        (
            Op::List,
            Measurement::new(
                "list",
                Group::Keyhaven,
                "List of one server's 10 credentials out of 1,000",
            )
            .against("tonic_echo"),
        ),
    ];
    for (op, m) in runs {
        let m = measure(plan, exe, &home, op, SEEDED, m)?;
        report.measurements.push(m);
    }
    Ok(())
}

/// Cold start (exec to the first answered Status, on an existing store and
/// on first use), idle RSS and RSS under load.
pub fn startup(plan: &Plan, exe: &Path, report: &mut Report) -> Result<()> {
    let rounds = if plan.quick { 3 } else { 15 };
    let mut first = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..rounds {
        let home = Home::new()?;
        let (daemon, took) = home.start(exe, None)?;
        first.push(took);
        daemon.stop()?;
        let (daemon, took) = home.start(exe, None)?;
        warm.push(took);
        daemon.stop()?;
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort_unstable();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    report.add_scalar(
        "cold_start_ms",
        median(&mut warm),
        "ms",
        "exec to first answered Status, existing store, median",
    );
    report.add_scalar(
        "first_start_ms",
        median(&mut first),
        "ms",
        "exec to first answered Status, new store (key made, migrations run), median",
    );

    let home = Home::new()?;
    let (daemon, _) = home.start(exe, None)?;
    let socket = home.socket();
    let rt = client_runtime()?;
    rt.block_on(seed(&socket, SEEDED, 8))?;
    // Half a second after the clients left, the daemon still holds the
    // code pages it ran; after a second with no connection it unmaps them
    // (they stay in the page cache). Both are reported; "idle" is the
    // second.
    std::thread::sleep(Duration::from_millis(500));
    let busy = rss_kib(daemon.pid()).context("read the daemon's RSS")?;
    report.add_scalar(
        "after_burst_rss_mib",
        busy as f64 / 1024.0,
        "MiB",
        "VmRSS after start and 1,000 stores, 0.5 s after the clients left",
    );
    std::thread::sleep(Duration::from_millis(2_000));
    let idle = rss_kib(daemon.pid()).context("read the daemon's RSS")?;
    report.add_scalar(
        "idle_rss_mib",
        idle as f64 / 1024.0,
        "MiB",
        "VmRSS after start and 1,000 stores, 2.5 s without a connection",
    );
    let anon = rss_anon_kib(daemon.pid()).context("read the daemon's RSS")?;
    report.add_scalar(
        "idle_rss_anon_mib",
        anon as f64 / 1024.0,
        "MiB",
        "RssAnon (heap and stacks, without the shared executable pages), idle",
    );
    let pid = daemon.pid();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let clients = *plan.clients.iter().max().unwrap_or(&8);
    rt.block_on(async {
        let mut conns = Vec::new();
        for c in 0..clients {
            conns.push((c, Client::connect_to(&socket).await?));
        }
        throughput_async(
            conns,
            plan.duration.max(Duration::from_millis(500)),
            |cc, i| async move {
                // Nine reads to one write, like apps checking their token.
                let op = if i % 10 == 9 { Op::Store } else { Op::Retrieve };
                op.run(&cc.1, SEEDED, cc.0, i).await
            },
        )
        .await
    })?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    report.add_scalar(
        "loaded_rss_mib",
        peak as f64 / 1024.0,
        "MiB",
        &format!("peak under {clients} clients, 9 Retrieves to 1 Store"),
    );
    drop(rt);
    daemon.stop()?;
    Ok(())
}

/// Retrieve and List latency with 1k, 100k and 1M stored credentials.
pub fn scale(plan: &Plan, exe: &Path, report: &mut Report) -> Result<()> {
    for &n in &plan.scales {
        let home = Home::new()?;
        {
            let (daemon, _) = home.start(exe, None)?;
            let t = Instant::now();
            client_runtime()?.block_on(seed(&home.socket(), n, 32))?;
            let took = t.elapsed();
            println!(
                "  seeded {n} credentials in {:.1} s ({:.0}/s)",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64()
            );
            daemon.stop()?;
        }
        let socket = home.socket();
        for (op, name) in [(Op::Retrieve, "retrieve"), (Op::List, "list")] {
            let placement = Placement::SameCpu;
            let (daemon, _) = home.start(exe, Some(placement.server_cpu()))?;
            let summary = on_pinned_thread(placement.client_cpu(), || async {
                let client = Client::connect_to(&socket).await?;
                latency_async(plan, |i| op.run(&client, n, 0, i)).await
            })?;
            daemon.stop()?;
            let mut m = Measurement::new(
                &format!("{name}_at_{n}"),
                Group::Keyhaven,
                &format!("{name} with {n} credentials stored, random keys"),
            );
            m.latency.push(Placed { placement, summary });
            print_line(&m);
            report.measurements.push(m);
        }
    }
    Ok(())
}

/// How long one Store takes to reach every one of `plan.watchers`
/// watchers, each on its own connection.
pub fn watch(plan: &Plan, exe: &Path, report: &mut Report) -> Result<()> {
    let home = Home::new()?;
    let (daemon, _) = home.start(exe, None)?;
    let socket = home.socket();
    let rounds = if plan.quick { 5 } else { 30 };
    let rt = client_runtime()?;
    let (all, median_watcher) = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
        let mut watchers = Vec::new();
        for _ in 0..plan.watchers {
            let client = Client::connect_to(&socket).await?;
            let mut feed = client.watch(&ListFilter::default(), false).await?;
            let tx = tx.clone();
            watchers.push(tokio::spawn(async move {
                let _client = client;
                while let Some(event) = feed.next().await {
                    let event = event?;
                    if let Some(meta) = event.metadata {
                        let _ = tx.send((meta.revision, Instant::now()));
                    }
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        drop(tx);
        let writer = Client::connect_to(&socket).await?;
        // Let every watch subscription settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut all = Vec::new();
        let mut per_watcher = Vec::new();
        for round in 0..rounds {
            let t0 = Instant::now();
            let stored = writer
                .store(&key(round), token(round as u64), StoreOptions::default())
                .await?;
            let revision = stored.metadata.revision;
            let mut seen = Vec::with_capacity(plan.watchers);
            while seen.len() < plan.watchers {
                let (rev, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .context("a watcher did not see the store within 10 s")?
                    .context("watchers ended")?;
                if rev == revision {
                    seen.push(at.duration_since(t0));
                }
            }
            seen.sort_unstable();
            per_watcher.push(seen[seen.len() / 2]);
            all.push(seen[seen.len() - 1]);
        }
        for w in watchers {
            w.abort();
        }
        all.sort_unstable();
        per_watcher.sort_unstable();
        Ok::<_, anyhow::Error>((all[all.len() / 2], per_watcher[per_watcher.len() / 2]))
    })?;
    drop(rt);
    daemon.stop()?;
    report.add_scalar(
        "watch_fanout_all_ms",
        all.as_secs_f64() * 1e3,
        "ms",
        &format!(
            "Store call to the last of {} watchers receiving it, median of {rounds}",
            plan.watchers
        ),
    );
    report.add_scalar(
        "watch_fanout_median_ms",
        median_watcher.as_secs_f64() * 1e3,
        "ms",
        &format!(
            "Store call to the median watcher of {} receiving it, median of {rounds}",
            plan.watchers
        ),
    );
    Ok(())
}
