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

mod floors;
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
    /// gnome-keyring lookup and store in a private D-Bus session.
    SecretService,
    /// Cold start, idle RSS, RSS under load.
    Startup,
    /// Retrieve and List with 1k, 100k, 1M credentials.
    Scale,
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
        "keyhaven-bench {}{}: {} CPUs, daemon {}",
        report.version,
        if plan.quick {
            " (quick mode: figures mean nothing)"
        } else {
            ""
        },
        report.machine.cpus,
        daemon.display()
    );
    if report.machine.cpus < 2 {
        report.skip(
            "only one CPU: the cross-CPU placement runs on the same CPU as the same-CPU one"
                .to_owned(),
        );
    }
    if wants(Section::Floors) {
        println!("== floors");
        floors::run(&plan, &me, &mut report)?;
    }
    if wants(Section::Ops) {
        println!("== keyhaven operations");
        keyhaven::ops(&plan, &daemon, &mut report)?;
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
    if wants(Section::Watch) {
        println!("== watch fan-out");
        keyhaven::watch(&plan, &daemon, &mut report)?;
    }
    targets::check(&mut report);
    println!("\n{}", report.table());
    print!("{}", report.target_lines());
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
