//! keyhaven-bench: keyhaven against its physical floors and the Secret
//! Service, in one run on one machine.
//!
//! ```text
//! cargo build --release --bins && target/release/keyhaven-bench
//! ```
//!
//! Prints a table (each keyhaven figure with its ratio to the floor from
//! the same run), the issue's targets as MET or MISSED, and writes a JSON
//! result file and an SVG plot. `--quick` is the CI mode: every section
//! with tiny counts, to prove the benchmark still works; its figures mean
//! nothing.

mod bare;
mod floors;
mod instructions;
mod keyhaven;
mod plot;
mod report;
mod secret_service;
mod stats;
mod targets;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::report::Report;
use crate::stats::Plan;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "keyhaven against its floors and the Secret Service, in one run"
)]
struct Args {
    /// CI mode: every section, tiny counts. Proves the benchmark runs; the
    /// figures mean nothing.
    #[arg(long)]
    quick: bool,
    /// The machine-readable result file.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// The plot (latency and throughput against clients), as SVG.
    #[arg(long, default_value = "bench-latency.svg")]
    svg: PathBuf,
    /// The keyhavend binary (default: next to this one).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Client counts of the throughput points (default: 1,8,32,128; quick:
    /// 1,8).
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Seconds each throughput point runs (default: 3; quick: 0.2).
    #[arg(long)]
    seconds: Option<f64>,
    /// Measure the floors and operations this many times (default 3;
    /// quick: 1) and judge their targets on the median.
    #[arg(long)]
    repeat: Option<usize>,
    /// Run only these sections (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    #[command(subcommand)]
    serve: Option<Serve>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Raw socket echo, tonic echo, SQLite read and fsync'd upsert.
    Floors,
    /// Retrieve, Store and List through the daemon at 1..128 clients.
    Ops,
    /// The echo floor and Retrieve through bare tonic stubs, one thread
    /// with a current-thread runtime per client.
    Bare,
    /// gnome-keyring lookup and store in a private D-Bus session.
    SecretService,
    /// Cold start, idle RSS, RSS under load.
    Startup,
    /// Retrieve and List with 1k, 100k, 1M credentials.
    Scale,
    /// Server-side instructions per Echo, Retrieve and Store (callgrind).
    Instructions,
    /// One Store reaching 100 watchers.
    Watch,
}

#[derive(Debug, Subcommand)]
enum Serve {
    /// Internal: run a floor's server process on `socket`.
    #[command(hide = true)]
    Serve {
        /// `raw-echo` or `tonic-echo`.
        kind: String,
        /// Where to listen.
        socket: PathBuf,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Serve::Serve { kind, socket }) = &args.serve {
        return floors::serve(kind, socket);
    }
    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(seconds) = args.seconds {
        plan.duration = std::time::Duration::from_secs_f64(seconds.clamp(0.05, 600.0));
    }
    if !args.clients.is_empty() {
        plan.clients.clone_from(&args.clients);
    }
    let me = std::env::current_exe().context("where is this binary")?;
    let daemon = match &args.daemon {
        Some(p) => p.clone(),
        None => me.with_file_name(format!("keyhavend{}", std::env::consts::EXE_SUFFIX)),
    };
    if !daemon.exists() {
        bail!(
            "no keyhavend at {}: build it first (cargo build --release --bins) or pass --daemon",
            daemon.display()
        );
    }
    let wants = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let mut report = Report::new(plan.quick);
    println!(
        "keyhaven-bench {}{}: commit {}, {} CPUs ({}), kernel {}, load {}, daemon {}",
        report.version,
        if plan.quick {
            " (quick mode: figures mean nothing)"
        } else {
            ""
        },
        report.commit.as_deref().unwrap_or("unknown"),
        report.machine.cpus,
        report
            .machine
            .cpu_model
            .as_deref()
            .unwrap_or("unknown model"),
        report.machine.kernel.as_deref().unwrap_or("unknown"),
        report.machine.load_average.as_deref().unwrap_or("unknown"),
        daemon.display()
    );
    if report.machine.cpus < 2 {
        report.skip(
            "only one CPU: the cross-CPU placement runs on the same CPU as the same-CPU one"
                .to_owned(),
        );
    }
    // The floors and the operations, repeated: each repetition's ratios are
    // to its own floors, and the spread says how far the machine can be
    // trusted.
    let repeat = args.repeat.unwrap_or(if plan.quick { 1 } else { 3 }).max(1);
    report.repetitions = repeat;
    let mut runs = Vec::new();
    if wants(Section::Floors) || wants(Section::Ops) || wants(Section::Bare) {
        for rep in 1..=repeat {
            let mut run = Report::new(plan.quick);
            if wants(Section::Floors) {
                println!("== floors ({rep}/{repeat})");
                floors::run(&plan, &me, &mut run)?;
            }
            if wants(Section::Ops) {
                println!("== keyhaven operations ({rep}/{repeat})");
                keyhaven::ops(&plan, &daemon, &mut run)?;
            }
            if wants(Section::Bare) {
                println!("== bare stubs, thread per client ({rep}/{repeat})");
                bare::run(&plan, &me, &daemon, &mut run)?;
            }
            targets::check(&mut run);
            runs.push(run);
        }
        if let Some(last) = runs.last() {
            report.measurements.clone_from(&last.measurements);
            report.skipped.extend(last.skipped.iter().cloned());
        }
        targets::check_floors(&mut report, &runs);
    }
    if wants(Section::SecretService) {
        println!("== Secret Service");
        secret_service::run(&plan, &mut report)?;
    }
    if wants(Section::Startup) {
        println!("== start-up and memory");
        keyhaven::startup(&plan, &daemon, &mut report)?;
    }
    if wants(Section::Scale) {
        println!("== scale");
        keyhaven::scale(&plan, &daemon, &mut report)?;
    }
    if wants(Section::Instructions) {
        println!("== instructions (callgrind)");
        instructions::run(&plan, &me, &daemon, &mut report)?;
    }
    if wants(Section::Watch) {
        println!("== watch fan-out");
        keyhaven::watch(&plan, &daemon, &mut report)?;
    }
    targets::check(&mut report);
    targets::use_medians(&mut report, &runs);
    println!("\n{}", report.table());
    print!("{}", report.target_lines());
    for w in &report.warnings {
        println!("WARNING: {w}");
    }
    report.write_json(&args.out)?;
    std::fs::write(&args.svg, plot::svg(&report))
        .with_context(|| format!("write {}", args.svg.display()))?;
    println!(
        "results: {} ; plot: {}",
        args.out.display(),
        args.svg.display()
    );
    Ok(())
}
