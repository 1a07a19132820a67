//! The result of a run: every measurement, printed as a table with each
//! keyhaven figure as a ratio to its floor, and written as JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::stats::{Placement, Summary, cpu_time_us};

/// What a measurement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// The cost of the parts keyhaven is built from.
    Floor,
    /// keyhaven through its real daemon and client library.
    Keyhaven,
    /// What apps use today (the Secret Service).
    Peer,
}

/// A single-client latency run at one placement.
#[derive(Debug, Clone, Serialize)]
pub struct Placed {
    /// Where client and server ran.
    pub placement: Placement,
    /// The figures.
    #[serde(flatten)]
    pub summary: Summary,
}

/// A throughput run with `clients` clients.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Concurrent clients, each with its own connection.
    pub clients: usize,
    /// The figures.
    #[serde(flatten)]
    pub summary: Summary,
    /// CPU time the server process (all its threads) spent per operation,
    /// in microseconds, when the server is a process of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_op: Option<f64>,
    /// CPU time the benchmark's own process (the clients) spent per
    /// operation, in microseconds, where it is measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cpu_us_per_op: Option<f64>,
}

impl Point {
    /// A point without a server CPU figure.
    pub fn new(clients: usize, summary: Summary) -> Self {
        Self {
            clients,
            summary,
            server_cpu_us_per_op: None,
            client_cpu_us_per_op: None,
        }
    }

    /// A throughput point with the CPU time the server and this process
    /// (the clients) spent per operation since `mark`.
    pub fn since(mark: CpuMark, clients: usize, summary: Summary) -> Self {
        let per_op = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(b), Some(a)) if summary.samples > 0 => Some((a - b) / summary.samples as f64),
            _ => None,
        };
        let server = per_op(mark.server, cpu_time_us(mark.server_pid));
        let client = per_op(mark.clients, cpu_time_us(std::process::id()));
        Self {
            clients,
            summary,
            server_cpu_us_per_op: server,
            client_cpu_us_per_op: client,
        }
    }
}

/// The CPU time (microseconds, [`cpu_time_us`]) of a server process and
/// of this process, read just before a throughput point runs.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    server_pid: u32,
    server: Option<f64>,
    clients: Option<f64>,
}

impl CpuMark {
    /// Now, for the server `server_pid`.
    pub fn now(server_pid: u32) -> Self {
        Self {
            server_pid,
            server: cpu_time_us(server_pid),
            clients: cpu_time_us(std::process::id()),
        }
    }
}

/// One operation, measured.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Short, stable id (`tonic_echo`, `retrieve`, ...).
    pub name: String,
    /// Floor, keyhaven or peer.
    pub group: Group,
    /// One line for people.
    pub what: String,
    /// The floor this is compared with, by name.
    pub floor: Option<String>,
    /// Single-client latency, pinned.
    pub latency: Vec<Placed>,
    /// Throughput by client count, unpinned.
    pub throughput: Vec<Point>,
}

impl Measurement {
    /// An empty measurement.
    pub fn new(name: &str, group: Group, what: &str) -> Self {
        Self {
            name: name.to_owned(),
            group,
            what: what.to_owned(),
            floor: None,
            latency: Vec::new(),
            throughput: Vec::new(),
        }
    }

    /// Sets the floor it is compared with.
    pub fn against(mut self, floor: &str) -> Self {
        self.floor = Some(floor.to_owned());
        self
    }

    /// The latency at `placement`.
    pub fn at(&self, placement: Placement) -> Option<&Summary> {
        self.latency
            .iter()
            .find(|p| p.placement == placement)
            .map(|p| &p.summary)
    }

    /// The throughput point with `clients` clients.
    pub fn with_clients(&self, clients: usize) -> Option<&Summary> {
        self.throughput
            .iter()
            .find(|p| p.clients == clients)
            .map(|p| &p.summary)
    }
}

/// A single figure (cold start, RSS, fan-out time).
#[derive(Debug, Clone, Serialize)]
pub struct Scalar {
    /// Stable id.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// How it was taken.
    pub what: String,
}

/// A target of the issue, checked against this run.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is aimed for, in words.
    pub goal: String,
    /// The measured ratio or value.
    pub measured: f64,
    /// The bound it must be within (`<=` or `>=`, see `at_least`).
    pub bound: f64,
    /// True when `measured >= bound` is the goal, else `measured <= bound`.
    pub at_least: bool,
    /// Whether this run met it.
    pub met: bool,
    /// The figures it was computed from.
    pub detail: String,
}

/// The machine the run was on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available to the benchmark.
    pub cpus: usize,
    /// `uname -r`-like kernel release, when known.
    pub kernel: Option<String>,
    /// CPU model, when known.
    pub cpu_model: Option<String>,
    /// The 1-, 5- and 15-minute load averages when the run started.
    pub load_average: Option<String>,
}

impl Machine {
    /// Reads it off this machine.
    pub fn detect() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        Self {
            cpus: crate::stats::cpus(),
            kernel: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
            cpu_model: read("/proc/cpuinfo").and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            }),
            load_average: read("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// keyhaven's version.
    pub version: String,
    /// Unix seconds when the run started.
    pub started_at: u64,
    /// True for the quick (CI) run, whose figures mean little.
    pub quick: bool,
    /// Where it ran.
    pub machine: Machine,
    /// Operations.
    pub measurements: Vec<Measurement>,
    /// Single figures.
    pub scalars: Vec<Scalar>,
    /// The targets, checked.
    pub targets: Vec<Target>,
    /// Sections that could not run, and why.
    pub skipped: Vec<String>,
    /// Reasons to distrust this run's figures (a floor that moved).
    pub warnings: Vec<String>,
    /// How many times the floors and operations were measured; targets
    /// on them are the median of the repetitions.
    pub repetitions: usize,
    /// The git commit of the working directory, when it is a checkout.
    pub commit: Option<String>,
}

impl Report {
    /// An empty report.
    pub fn new(quick: bool) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            quick,
            machine: Machine::detect(),
            measurements: Vec::new(),
            scalars: Vec::new(),
            targets: Vec::new(),
            skipped: Vec::new(),
            warnings: Vec::new(),
            repetitions: 1,
            commit: commit(),
        }
    }

    /// Records a reason to distrust the figures, loudly.
    pub fn warn(&mut self, why: String) {
        eprintln!("WARNING: {why}");
        self.warnings.push(why);
    }

    /// The measurement called `name`.
    pub fn get(&self, name: &str) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.name == name)
    }

    /// The scalar called `name`.
    pub fn scalar(&self, name: &str) -> Option<f64> {
        self.scalars
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
    }

    /// Adds a scalar and prints it.
    pub fn add_scalar(&mut self, name: &str, value: f64, unit: &str, what: &str) {
        // A ratio to two decimals: its target is judged on the second.
        let decimals = if unit == "x" { 2 } else { 1 };
        println!("  {name}: {value:.decimals$} {unit} ({what})");
        self.scalars.push(Scalar {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            what: what.to_owned(),
        });
    }

    /// Records that a section did not run, loudly.
    pub fn skip(&mut self, why: String) {
        eprintln!("SKIPPED: {why}");
        self.skipped.push(why);
    }

    /// The table: every measurement, keyhaven rows with ratios to their
    /// floor from this run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let clients: Vec<usize> = {
            let mut c: Vec<usize> = self
                .measurements
                .iter()
                .flat_map(|m| m.throughput.iter().map(|p| p.clients))
                .collect();
            c.sort_unstable();
            c.dedup();
            c
        };
        let _ = write!(
            out,
            "| operation | p50 same CPU | p50 cross CPU | p99 same CPU |"
        );
        for c in &clients {
            let _ = write!(out, " ops/s @{c} |");
        }
        out.push('\n');
        out.push_str("|---|---|---|---|");
        for _ in &clients {
            out.push_str("---|");
        }
        out.push('\n');
        for m in &self.measurements {
            let floor = m.floor.as_deref().and_then(|f| self.get(f));
            let lat = |placement: Placement, p99: bool| {
                let Some(s) = m.at(placement) else {
                    return "–".to_owned();
                };
                let v = if p99 { s.p99_us } else { s.p50_us };
                let ratio = floor.and_then(|f| f.at(placement)).map(|f| {
                    let fv = if p99 { f.p99_us } else { f.p50_us };
                    v / fv
                });
                match ratio {
                    Some(r) if !p99 => format!("{} ({r:.2}x)", micros(v)),
                    _ => micros(v),
                }
            };
            let _ = write!(
                out,
                "| {} {} | {} | {} | {} |",
                match m.group {
                    Group::Floor => "floor:",
                    Group::Keyhaven => "keyhaven",
                    Group::Peer => "peer:",
                },
                m.name,
                lat(Placement::SameCpu, false),
                lat(Placement::CrossCpu, false),
                lat(Placement::SameCpu, true),
            );
            for c in &clients {
                match m.with_clients(*c) {
                    None => out.push_str(" – |"),
                    Some(s) => {
                        let ratio = floor
                            .and_then(|f| f.with_clients(*c))
                            .map(|f| s.ops_per_s / f.ops_per_s);
                        match ratio {
                            Some(r) => {
                                let _ = write!(out, " {} ({r:.2}x) |", rate(s.ops_per_s));
                            }
                            None => {
                                let _ = write!(out, " {} |", rate(s.ops_per_s));
                            }
                        }
                    }
                }
            }
            out.push('\n');
        }
        out
    }

    /// The targets, one line each.
    pub fn target_lines(&self) -> String {
        let mut out = String::new();
        for t in &self.targets {
            let _ = writeln!(
                out,
                "{} {}: {:.2} (need {} {:.2}) — {}",
                if t.met { "MET   " } else { "MISSED" },
                t.goal,
                t.measured,
                if t.at_least { ">=" } else { "<=" },
                t.bound,
                t.detail
            );
        }
        out
    }

    /// Writes the JSON result file.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
    }
}

/// The commit checked out in the current directory (`git describe`-like:
/// the short hash, with `-dirty` when files differ), if any.
fn commit() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let hash = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

/// `12.3 µs` or `1.25 ms`.
pub fn micros(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

/// `184k` or `8.1k` or `539`.
pub fn rate(ops: f64) -> String {
    if ops >= 100_000.0 {
        format!("{:.0}k", ops / 1000.0)
    } else if ops >= 1000.0 {
        format!("{:.1}k", ops / 1000.0)
    } else {
        format!("{ops:.0}")
    }
}

/// One line per measurement, as it lands: latencies by placement, then
/// throughput by clients with the server's CPU per operation when known.
pub fn print_line(m: &Measurement) {
    let lat: Vec<String> = m
        .latency
        .iter()
        .map(|p| {
            format!(
                "{} {} (p99 {})",
                micros(p.summary.p50_us),
                p.placement.label(),
                micros(p.summary.p99_us)
            )
        })
        .collect();
    let tput: Vec<String> = m
        .throughput
        .iter()
        .map(|p| {
            let mut cpu = Vec::new();
            if let Some(us) = p.server_cpu_us_per_op {
                cpu.push(format!("server CPU {us:.1} µs/op"));
            }
            if let Some(us) = p.client_cpu_us_per_op {
                cpu.push(format!("client CPU {us:.1} µs/op"));
            }
            if cpu.is_empty() {
                format!("{} @{}", rate(p.summary.ops_per_s), p.clients)
            } else {
                format!(
                    "{} @{} ({})",
                    rate(p.summary.ops_per_s),
                    p.clients,
                    cpu.join(", ")
                )
            }
        })
        .collect();
    let mut line = format!("  {}:", m.name);
    if !lat.is_empty() {
        line.push_str(&format!(" p50 {}", lat.join(" / ")));
    }
    if !tput.is_empty() {
        line.push_str(&format!("; ops/s {}", tput.join(", ")));
    }
    println!("{line}");
}
