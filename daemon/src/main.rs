//! `keyhavend`: parses flags, sets up logging, runs the daemon until SIGTERM
//! or SIGINT (or, when socket-activated with `idle_exit_seconds`, until idle).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use keyhaven_daemon::InheritedSocket;
use keyhaven_daemon::net::platform;
use keyhaven_daemon::server::config::{LogFormat, Overrides, Settings};
use keyhaven_proto::paths::ProcessEnv;
use tracing_subscriber::EnvFilter;

/// keyhavend: the per-user credential daemon for media applications.
///
/// Logging: KEYHAVEN_LOG (or RUST_LOG) sets the filter, e.g. `debug`.
#[derive(Debug, Parser)]
#[command(name = "keyhavend", version, about)]
struct Args {
    /// Socket to listen on [env: KEYHAVEN_SOCKET]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Directory for the database and lock file [env: KEYHAVEN_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Data key file (key-file tier) [env: KEYHAVEN_KEY_FILE]
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Config file (TOML, optional) [env: KEYHAVEN_CONFIG]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Stop the keyhavend serving this pipe cleanly and wait for it to exit
    /// (Windows: a daemon started without a console gets no Ctrl-C)
    #[cfg(windows)]
    #[arg(long)]
    stop: bool,
}

fn main() -> ExitCode {
    platform::harden_process();
    let args = Args::parse();
    #[cfg(windows)]
    let stop = args.stop;
    let overrides = Overrides {
        config: args.config,
        socket: args.socket,
        data_dir: args.data_dir,
        key_file: args.key_file,
        log_format: args.log_format,
    };
    let settings = match Settings::resolve(&overrides, &ProcessEnv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keyhavend: {e}");
            return ExitCode::FAILURE;
        }
    };
    #[cfg(windows)]
    if stop {
        return platform::stop_running(&settings.socket);
    }
    init_tracing(settings.log_format);
    // Before the runtime starts any thread: this clears LISTEN_FDS and
    // LISTEN_PID from the environment.
    let inherited = match platform::take_inherited_socket() {
        Ok(inherited) => inherited,
        Err(e) => {
            tracing::error!("keyhavend cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(settings, inherited));
    // A keyring call stuck in a blocking thread must not hold up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // Any error, also one after serving began (the accept loop failing),
    // exits non-zero so that a service manager restarts the daemon.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("keyhavend cannot continue: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: most error messages already
/// include their cause's text.
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

async fn run(settings: Settings, inherited: Option<InheritedSocket>) -> anyhow::Result<()> {
    let prepared = match inherited {
        Some(socket) => keyhaven_daemon::prepare_with_listener(&settings, socket).await?,
        None => keyhaven_daemon::prepare(&settings).await?,
    };
    let shutdown = platform::shutdown_signal()?;
    let policy = prepared.policy();
    platform::on_hangup(move || {
        tracing::info!("received SIGHUP: reloading the policy");
        if let Err(e) = policy.reload() {
            tracing::error!(error = %e, "policy not reloaded; the previous policy stays in force");
        }
    })?;
    prepared.serve(shutdown).await?;
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("KEYHAVEN_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
