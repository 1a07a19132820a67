//! Measuring: latency samples and percentiles, throughput with many
//! clients, and where on the CPUs a client or server runs.
//!
//! Latency figures come from one client doing one operation at a time,
//! pinned to a CPU (a 2-vCPU VM is bimodal: same CPU vs a cross-CPU
//! wake-up, so both placements are measured). Throughput figures come from
//! N clients, each with its own connection, running back to back for a
//! fixed time, unpinned.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

/// How much of everything to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The CI mode: tiny counts, proves the benchmark still runs.
    pub quick: bool,
    /// Untimed operations before a latency run.
    pub warmup: usize,
    /// Timed operations of a latency run.
    pub latency_iters: usize,
    /// How long each throughput point runs.
    pub duration: Duration,
    /// The client counts of the throughput points.
    pub clients: Vec<usize>,
    /// Stored credentials for the scale runs.
    pub scales: Vec<usize>,
    /// Watchers for the fan-out run.
    pub watchers: usize,
}

impl Plan {
    /// The full run.
    pub fn full() -> Self {
        Self {
            quick: false,
            warmup: 2_000,
            latency_iters: 20_000,
            duration: Duration::from_secs(3),
            clients: vec![1, 8, 32, 128],
            scales: vec![1_000, 100_000, 1_000_000],
            watchers: 100,
        }
    }

    /// The quick run CI does: every section, tiny counts.
    pub fn quick() -> Self {
        Self {
            quick: true,
            warmup: 50,
            latency_iters: 300,
            duration: Duration::from_millis(200),
            clients: vec![1, 8],
            scales: vec![1_000, 5_000],
            watchers: 10,
        }
    }
}

/// Percentiles and rate of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Completed operations per second of wall time.
    pub ops_per_s: f64,
    /// Timed operations.
    pub samples: usize,
}

/// Summarizes `samples` taken over `wall`.
pub fn summarize(samples: &mut [Duration], wall: Duration) -> Summary {
    samples.sort_unstable();
    let pick = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        // Nearest rank.
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1e6
    };
    Summary {
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        ops_per_s: if wall.is_zero() {
            0.0
        } else {
            samples.len() as f64 / wall.as_secs_f64()
        },
        samples: samples.len(),
    }
}

/// One client, one operation at a time: `warmup` untimed, then
/// `latency_iters` timed. `op` gets the iteration number.
pub async fn latency_async<F, Fut>(plan: &Plan, mut op: F) -> Result<Summary>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    for i in 0..plan.warmup {
        op(i as u64).await?;
    }
    let mut samples = Vec::with_capacity(plan.latency_iters);
    let start = Instant::now();
    for i in 0..plan.latency_iters {
        let t = Instant::now();
        op((plan.warmup + i) as u64).await?;
        samples.push(t.elapsed());
    }
    let wall = start.elapsed();
    Ok(summarize(&mut samples, wall))
}

/// [`latency_async`] for a blocking operation.
pub fn latency_blocking<F>(plan: &Plan, mut op: F) -> Result<Summary>
where
    F: FnMut(u64) -> Result<()>,
{
    for i in 0..plan.warmup {
        op(i as u64)?;
    }
    let mut samples = Vec::with_capacity(plan.latency_iters);
    let start = Instant::now();
    for i in 0..plan.latency_iters {
        let t = Instant::now();
        op((plan.warmup + i) as u64)?;
        samples.push(t.elapsed());
    }
    let wall = start.elapsed();
    Ok(summarize(&mut samples, wall))
}

/// Every client in `clients` runs `op` back to back for `duration`, each
/// on its own task of the current (multi-thread) runtime, all starting
/// together. `op` gets the client and a per-client iteration number.
pub async fn throughput_async<T, F, Fut>(
    clients: Vec<T>,
    duration: Duration,
    op: F,
) -> Result<Summary>
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let barrier = Arc::new(tokio::sync::Barrier::new(clients.len() + 1));
    let mut tasks = Vec::with_capacity(clients.len());
    for client in clients {
        let client = Arc::new(client);
        let op = op.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            let mut samples = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(client.clone(), i).await?;
                samples.push(t.elapsed());
                i += 1;
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.context("a client task panicked")??);
    }
    let wall = start.elapsed();
    Ok(summarize(&mut all, wall))
}

/// [`throughput_async`] for blocking operations: one OS thread per client.
pub fn throughput_threads<T, F>(clients: Vec<T>, duration: Duration, op: F) -> Result<Summary>
where
    T: Send,
    F: Fn(&mut T, u64) -> Result<()> + Sync,
{
    let barrier = std::sync::Barrier::new(clients.len() + 1);
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(clients.len());
        for mut client in clients {
            let (op, barrier) = (&op, &barrier);
            handles.push(scope.spawn(move || {
                barrier.wait();
                let deadline = Instant::now() + duration;
                let mut samples = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    op(&mut client, i)?;
                    samples.push(t.elapsed());
                    i += 1;
                }
                Ok::<_, anyhow::Error>(samples)
            }));
        }
        barrier.wait();
        let start = Instant::now();
        let mut all = Vec::new();
        for handle in handles {
            let samples = handle
                .join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
            all.extend(samples);
        }
        let wall = start.elapsed();
        Ok(summarize(&mut all, wall))
    })
}

/// Where a single-client latency run puts client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Client and server pinned to CPU 0.
    SameCpu,
    /// Client on CPU 0, server on CPU 1.
    CrossCpu,
}

impl Placement {
    /// Both, in report order.
    pub const ALL: [Placement; 2] = [Placement::SameCpu, Placement::CrossCpu];

    /// The client's CPU.
    pub fn client_cpu(self) -> usize {
        0
    }

    /// The server's CPU.
    pub fn server_cpu(self) -> usize {
        match self {
            Placement::SameCpu => 0,
            Placement::CrossCpu => 1,
        }
    }

    /// For tables.
    pub fn label(self) -> &'static str {
        match self {
            Placement::SameCpu => "same CPU",
            Placement::CrossCpu => "cross CPU",
        }
    }
}

/// How many CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread to `cpu` (`None`: every CPU). Threads and
/// processes it starts afterwards inherit the mask, so pinning, spawning a
/// server and unpinning places the server. A CPU this machine does not
/// have means CPU 0 (one CPU: both placements share it; `main` says so).
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpu: Option<usize>) -> Result<()> {
    use rustix::thread::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    match cpu {
        Some(c) => set.set(if c < cpus() { c } else { 0 }),
        None => {
            for c in 0..CpuSet::MAX_CPU.min(1024) {
                set.set(c);
            }
        }
    }
    sched_setaffinity(None, &set).with_context(|| format!("pin to CPU {cpu:?}"))
}

/// Pinning is Linux-only here; elsewhere the run is unpinned.
#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(_cpu: Option<usize>) -> Result<()> {
    Ok(())
}

/// Runs the blocking `f` on a fresh thread whose CPU mask is `cpu`
/// (`None`: unpinned), so the caller's own mask is untouched.
pub fn on_thread_at<R, F>(cpu: Option<usize>, f: F) -> Result<R>
where
    R: Send,
    F: FnOnce() -> Result<R> + Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                pin_current_thread(cpu)?;
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("a pinned thread panicked"))?
    })
}

/// Runs `f` on a fresh thread pinned to `cpu`, inside a current-thread
/// runtime: the client side of a latency run.
pub fn on_pinned_thread<R, F, Fut>(cpu: usize, f: F) -> Result<R>
where
    R: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<R>>,
{
    on_thread_at(Some(cpu), || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(f())
    })
}

/// `exe`, or `exe` run under `wrapper` (a program and its options, such
/// as valgrind's) when that is not empty.
pub fn command_under(
    wrapper: &[std::ffi::OsString],
    exe: &std::path::Path,
) -> std::process::Command {
    match wrapper.split_first() {
        None => std::process::Command::new(exe),
        Some((program, args)) => {
            let mut cmd = std::process::Command::new(program);
            cmd.args(args).arg(exe);
            cmd
        }
    }
}

/// Spawns `cmd` with its CPU mask set to `cpu` (`None`: unpinned).
pub fn spawn_on(
    cmd: &mut std::process::Command,
    cpu: Option<usize>,
) -> Result<std::process::Child> {
    on_thread_at(cpu, || {
        cmd.spawn()
            .with_context(|| format!("spawn {:?}", cmd.get_program()))
    })
}

/// The resident set size of `pid` in KiB (Linux: `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The anonymous part of the resident set (heap, stacks: memory the process
/// really owns, as opposed to pages of its executable and libraries that
/// the page cache shares), in KiB.
pub fn rss_anon_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon:")
}

/// CPU time (user + system, every thread) `pid` has used, in microseconds,
/// from `/proc/PID/stat` (clock ticks of 1/100 s: USER_HZ on Linux).
pub fn cpu_time_us(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are
    // plain. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 * 10_000.0)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let cpu = cpu_time_us(std::process::id()).expect("/proc/self/stat");
        assert!(
            cpu >= 10_000.0,
            "50 ms of spinning shows as CPU time: {cpu}"
        );
        assert!(rss_kib(std::process::id()).expect("VmRSS") > 0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let s = summarize(&mut samples, Duration::from_secs(2));
        assert_eq!(s.p50_us, 50.0);
        assert_eq!(s.p99_us, 99.0);
        assert_eq!(s.ops_per_s, 50.0);
        assert_eq!(s.samples, 100);
    }
}
