//! `keyhaven`: the command-line client of keyhavend.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, CommandFactory, Parser, Subcommand};
use keyhaven::{
    AuditEntry, AuditQuery, Autostart, Caller, Client, CredentialKey, DaemonStatus, Error,
    ListFilter, Metadata, Secret, StoreOptions, WatchEvent, system_to_ms,
};
use keyhaven_proto::exit;

mod backup_cli;
mod prompt;

/// Command-line client for keyhavend, the per-user credential daemon.
///
/// A credential is addressed by PROVIDER SERVER_ID USER_ID [TOKEN_TYPE];
/// TOKEN_TYPE defaults to access_token, and an empty id is written ''.
///
/// Exit codes: 0 ok, 1 other error, 2 bad usage, 3 not found, 4 permission
/// denied, 5 daemon unavailable, 6 invalid input, 7 revision conflict,
/// 8 protocol mismatch.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Socket of the daemon [env: KEYHAVEN_SOCKET; default:
    /// $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Start keyhavend if it is not running (unless a systemd socket unit
    /// is enabled) [env: KEYHAVEN_AUTOSTART=1]
    #[arg(long, global = true)]
    autostart: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store a credential. The secret is read from stdin (one trailing
    /// newline is dropped) or from --secret-file; never from the command line.
    Store {
        #[command(flatten)]
        key: KeyArgs,
        /// Read the secret from this file instead of stdin.
        #[arg(long, value_name = "PATH")]
        secret_file: Option<PathBuf>,
        /// A label for people, e.g. "Living-room Jellyfin".
        #[arg(long)]
        label: Option<String>,
        /// Expire after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        expires_in: Option<u64>,
        /// Only if it is still at this revision (compare-and-swap).
        #[arg(long, value_name = "N", conflicts_with = "if_absent")]
        if_revision: Option<u64>,
        /// Only if it does not exist yet.
        #[arg(long)]
        if_absent: bool,
    },
    /// Print a credential's secret to stdout.
    Get {
        #[command(flatten)]
        key: KeyArgs,
        /// Do not print a newline after the secret.
        #[arg(short = 'n', long)]
        no_newline: bool,
    },
    /// Delete a credential.
    Delete {
        #[command(flatten)]
        key: KeyArgs,
        /// Only if it is still at this revision.
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// List credentials (metadata only, never secrets).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// JSON output (an array of objects).
        #[arg(long)]
        json: bool,
    },
    /// Print changes as they happen, one line each (never secrets).
    Watch {
        #[command(flatten)]
        filter: FilterArgs,
        /// Print the current credentials first (SNAPSHOT ... SYNCED).
        #[arg(long)]
        snapshot: bool,
        /// Exit after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Delete every credential of a provider and server (and user), at once.
    Logout {
        /// jellyfin, plex, emby, ...
        provider: String,
        /// The server's id ('' for account-wide tokens).
        server_id: String,
        /// Only this account ('' for the empty one); all accounts if left out.
        user_id: Option<String>,
    },
    /// Show the audit log: who read, wrote or was refused what.
    Audit {
        /// Only this credential: provider::server_id::user_id[::token_type].
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Only programs whose path or app id contains this.
        #[arg(long)]
        program: Option<String>,
        /// Only the last DURATION, e.g. 30s, 15m, 2h, 7d.
        #[arg(long, value_name = "DURATION")]
        last: Option<String>,
        /// At most this many entries (newest first).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON output (an array of objects).
        #[arg(long)]
        json: bool,
    },
    /// Explain where the data key is kept, what that protects against,
    /// and how to do better.
    Doctor,
    /// Manage the data key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Bring in tokens from where apps kept them before keyhaven. Sources
    /// are only read (except `reel-db --wipe-source`); re-running is harmless.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Take a sealed snapshot of the store (admin access) and write it to a
    /// file (0600, complete or absent). It opens only with the same data key.
    Backup {
        /// The file to write [default: keyhaven-snapshot-TIME.khsnap here].
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
        /// Print the manifest of snapshot FILE (no key needed) instead.
        #[arg(long, value_name = "FILE", conflicts_with = "to")]
        manifest: Option<PathBuf>,
    },
    /// Write every credential (or those matching the filters) with its
    /// metadata to an age file encrypted to a passphrase (admin access).
    Export {
        /// The file to write [default: keyhaven-export-TIME.age here].
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Read the passphrase from the first line of stdin instead of
        /// asking on the terminal.
        #[arg(long)]
        passphrase_stdin: bool,
    },
    /// Restore from a snapshot or an export (admin access). A stored
    /// credential with a newer revision is kept unless --overwrite.
    /// Exit 0: all restored or unchanged; 20: some skipped; 21: failed.
    Restore {
        /// A snapshot (keyhaven backup) or an export (keyhaven export).
        file: PathBuf,
        /// Say what would happen; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replace stored credentials even when their revision is newer.
        #[arg(long)]
        overwrite: bool,
        /// Read an export's passphrase from the first line of stdin.
        #[arg(long)]
        passphrase_stdin: bool,
        /// Only print what FILE is (a snapshot's manifest), no key needed.
        #[arg(long, conflicts_with_all = ["dry_run", "overwrite"])]
        inspect: bool,
    },
    /// Show the daemon's version, protocol, pid, store and key tier.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, ...) to stdout.
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Re-seal every credential under a new data key (crash-safe).
    Rotate,
    /// Move the data key to another tier.
    Move {
        /// keyring or file.
        #[arg(long, value_parser = ["keyring", "file"])]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// JellyTau's or Reel's OS keyring entries. Without ids, every entry
    /// of that app the Secret Service has is listed and imported. The
    /// keyring entries are only read.
    Keyring {
        /// JellyTau's entries (jellytau::SERVER::USER::access_token).
        #[arg(long, conflicts_with = "reel", required_unless_present = "reel")]
        jellytau: bool,
        /// Reel's entries (service reel.SOURCE or gnome-reel.SOURCE).
        #[arg(long)]
        reel: bool,
        /// JellyTau: the server id.
        #[arg(
            long = "server",
            value_name = "SERVER_ID",
            requires = "user_id",
            requires = "jellytau"
        )]
        server_id: Option<String>,
        /// JellyTau: the user id.
        #[arg(long = "user", value_name = "USER_ID", requires = "server_id")]
        user_id: Option<String>,
        /// Reel: the source id, e.g. plex_123.
        #[arg(long = "source", value_name = "SOURCE_ID", requires = "reel")]
        source_id: Option<String>,
        #[command(flatten)]
        common: ImportArgs,
    },
    /// Reel's database: every row of its auth_tokens table.
    ReelDb {
        /// The database file.
        path: PathBuf,
        /// After every row is verified in the store, delete the imported
        /// rows from the file.
        #[arg(long, conflicts_with = "dry_run")]
        wipe_source: bool,
        #[command(flatten)]
        common: ImportArgs,
    },
    /// JSON lines on stdin: {"provider", "server_id", "user_id",
    /// "token_type", "secret", "label"?, "expires_at"? (Unix seconds)}.
    Json {
        #[command(flatten)]
        common: ImportArgs,
    },
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// Only say what would happen.
    #[arg(long)]
    dry_run: bool,
    /// Replace a different value already in the store.
    #[arg(long)]
    overwrite: bool,
    /// One JSON object per line, then a summary object.
    #[arg(long)]
    json: bool,
}

/// Which credentials `list` and `watch` cover; all when none is given.
#[derive(Debug, Args)]
struct FilterArgs {
    /// Only this provider.
    #[arg(long)]
    provider: Option<String>,
    /// Only this server id ('' for empty).
    #[arg(long = "server", value_name = "SERVER_ID")]
    server_id: Option<String>,
    /// Only this user id ('' for empty).
    #[arg(long = "user", value_name = "USER_ID")]
    user_id: Option<String>,
}

impl From<FilterArgs> for ListFilter {
    fn from(f: FilterArgs) -> Self {
        ListFilter {
            provider: f.provider,
            server_id: f.server_id,
            user_id: f.user_id,
        }
    }
}

#[derive(Debug, Args)]
struct KeyArgs {
    /// jellyfin, plex, emby, ...
    provider: String,
    /// The server's id ('' for account-wide tokens).
    server_id: String,
    /// The account's id ('' if none).
    user_id: String,
    /// access_token (default), refresh_token, api_key, ...
    token_type: Option<String>,
}

impl KeyArgs {
    fn key(&self) -> Result<CredentialKey, Error> {
        Ok(CredentialKey::new(
            &self.provider,
            &self.server_id,
            &self.user_id,
            self.token_type.as_deref().unwrap_or(""),
        )?)
    }
}

/// A failure of the CLI itself (reading input), or one from the daemon.
enum Failure {
    Client(Error),
    Input(String),
    /// An exit code of its own (restore), with a message unless empty.
    Code(u8, String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Client(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyhaven: cannot start: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(Failure::Client(e)) => {
            eprintln!("keyhaven: {e}");
            ExitCode::from(e.exit_code())
        }
        Err(Failure::Input(msg)) => {
            eprintln!("keyhaven: {msg}");
            ExitCode::from(exit::INVALID_INPUT)
        }
        Err(Failure::Code(code, msg)) => {
            if !msg.is_empty() {
                eprintln!("keyhaven: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

async fn connect(socket: Option<PathBuf>, autostart: bool) -> Result<Client, Error> {
    let env = keyhaven_proto::paths::ProcessEnv;
    let autostart = if autostart {
        Some(Autostart::default())
    } else {
        Autostart::from_env(&env)
    };
    let socket = socket.unwrap_or_else(Client::default_socket);
    Client::connect_or_start(socket, autostart).await
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "keyhaven",
                &mut std::io::stdout(),
            );
        }
        Command::Store {
            key,
            secret_file,
            label,
            expires_in,
            if_revision,
            if_absent,
        } => {
            let key = key.key()?;
            let secret = read_secret(secret_file.as_deref(), &key)?;
            let client = connect(cli.socket, cli.autostart).await?;
            let options = StoreOptions {
                label,
                expires_at: expires_in.map(|s| SystemTime::now() + Duration::from_secs(s)),
                expected_revision: if if_absent { Some(0) } else { if_revision },
            };
            let stored = client.store(&key, secret, options).await?;
            let verb = if stored.created { "stored" } else { "updated" };
            println!("{verb} {} (revision {})", key, stored.metadata.revision);
        }
        Command::Get { key, no_newline } => {
            let key = key.key()?;
            let client = connect(cli.socket, cli.autostart).await?;
            let cred = client.retrieve(&key).await?;
            let mut out = std::io::stdout().lock();
            let written = out
                .write_all(cred.secret.expose())
                .and_then(|()| {
                    if no_newline {
                        Ok(())
                    } else {
                        out.write_all(b"\n")
                    }
                })
                .and_then(|()| out.flush());
            if let Err(e) = written {
                return Err(Failure::Input(format!("cannot write to stdout: {e}")));
            }
        }
        Command::Delete { key, if_revision } => {
            let key = key.key()?;
            let client = connect(cli.socket, cli.autostart).await?;
            let meta = client.delete(&key, if_revision).await?;
            println!("deleted {} (was revision {})", key, meta.revision);
        }
        Command::List { filter, json } => {
            let client = connect(cli.socket, cli.autostart).await?;
            let items = client.list(&filter.into()).await?;
            if json {
                let rows: Vec<_> = items.iter().map(metadata_json).collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                print_table(&items);
            }
        }
        Command::Watch {
            filter,
            snapshot,
            count,
            json,
        } => {
            let client = connect(cli.socket, cli.autostart).await?;
            let mut watch = client.watch(&filter.into(), snapshot).await?;
            let mut seen = 0u64;
            while count.is_none_or(|n| seen < n) {
                let Some(event) = watch.next().await else {
                    break;
                };
                print_event(&event?, json);
                seen += 1;
            }
        }
        Command::Logout {
            provider,
            server_id,
            user_id,
        } => {
            let client = connect(cli.socket, cli.autostart).await?;
            let removed = client
                .logout(&provider, &server_id, user_id.as_deref())
                .await?;
            for m in &removed {
                println!("deleted {}", m.key);
            }
            println!("logged out: {} credential(s) deleted", removed.len());
        }
        Command::Audit {
            key,
            program,
            last,
            limit,
            json,
        } => {
            let key = key
                .map(|k| CredentialKey::parse(&k))
                .transpose()
                .map_err(Error::from)?;
            let since = match last {
                None => None,
                Some(text) => Some(
                    SystemTime::now()
                        - parse_duration(&text).ok_or_else(|| {
                            Failure::Input(format!(
                                "--last {text:?}: give a number and a unit, e.g. 30s, 15m, 2h, 7d"
                            ))
                        })?,
                ),
            };
            let client = connect(cli.socket, cli.autostart).await?;
            let query = AuditQuery {
                key,
                program,
                since,
                until: None,
                limit,
            };
            print_audit(&client.audit(&query).await?, json);
        }
        Command::Doctor => {
            let client = connect(cli.socket, cli.autostart).await?;
            let status = client.status().await?;
            print_doctor(&status);
        }
        Command::Key(KeyCommand::Rotate) => {
            let client = connect(cli.socket, cli.autostart).await?;
            let r = client.rotate_key().await?;
            println!(
                "rotated the data key in the {} tier: {} -> {}, {} credential(s) re-sealed",
                r.tier, r.old_key_id, r.new_key_id, r.resealed
            );
        }
        Command::Key(KeyCommand::Move { to }) => {
            let client = connect(cli.socket, cli.autostart).await?;
            let from = client.move_key(&to).await?;
            if from == to {
                println!("the data key is already kept in the {to} tier");
            } else {
                println!("moved the data key from the {from} tier to the {to} tier");
            }
        }
        Command::Import(command) => return import(cli.socket, cli.autostart, command).await,
        Command::Backup {
            manifest: Some(file),
            ..
        } => return backup_cli::inspect(&file),
        Command::Backup { to, manifest: None } => {
            return backup_cli::backup(&connect(cli.socket, cli.autostart).await?, to).await;
        }
        Command::Export {
            to,
            filter,
            passphrase_stdin,
        } => {
            let client = connect(cli.socket, cli.autostart).await?;
            return backup_cli::export(&client, to, filter.into(), passphrase_stdin).await;
        }
        Command::Restore {
            file,
            inspect: true,
            ..
        } => return backup_cli::inspect(&file),
        Command::Restore {
            file,
            dry_run,
            overwrite,
            passphrase_stdin,
            inspect: false,
        } => {
            let options = keyhaven::backup::RestoreOptions { dry_run, overwrite };
            let client = async || Ok(connect(cli.socket, cli.autostart).await?);
            return backup_cli::restore(client, &file, options, passphrase_stdin).await;
        }
        Command::Status { json } => {
            let client = connect(cli.socket, cli.autostart).await?;
            let status = client.status().await?;
            print_status(&client, &status, json);
        }
    }
    Ok(())
}

/// Reads the secret from `file` or stdin. A terminal gets a prompt with echo
/// off. One trailing newline (`\n` or `\r\n`) is dropped.
fn read_secret(file: Option<&std::path::Path>, key: &CredentialKey) -> Result<Secret, Failure> {
    // Room for the largest secret up front, so reading does not leave
    // reallocated copies of it behind.
    let mut bytes = Vec::with_capacity(64 * 1024 + 2);
    match file {
        Some(path) => {
            let mut f = std::fs::File::open(path)
                .map_err(|e| Failure::Input(format!("cannot open {}: {e}", path.display())))?;
            f.read_to_end(&mut bytes)
                .map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))?;
        }
        None if std::io::stdin().is_terminal() => {
            eprint!("Secret for {key}: ");
            let _ = std::io::stderr().flush();
            let line = prompt::read_line_no_echo()
                .map_err(|e| Failure::Input(format!("cannot read the secret: {e}")))?;
            eprintln!();
            bytes = line.into_vec();
        }
        None => {
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .map_err(|e| Failure::Input(format!("cannot read stdin: {e}")))?;
        }
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(Failure::Input(
            "the secret is empty; pipe it on stdin, e.g. printf '%s' \"$TOKEN\" | keyhaven store ...".into(),
        ));
    }
    Ok(Secret::new(bytes))
}

fn caller_json(c: &Caller) -> serde_json::Value {
    serde_json::json!({
        "uid": c.uid,
        "pid": c.pid,
        "executable": c.executable,
        "app_id": c.app_id,
    })
}

fn caller_text(c: &Caller) -> String {
    let program = c
        .app_id
        .as_deref()
        .or(c.executable.as_deref())
        .unwrap_or("?");
    format!("{program} (pid {}, uid {})", c.pid, c.uid)
}

fn print_event(e: &WatchEvent, json: bool) {
    if json {
        let value = serde_json::json!({
            "kind": e.kind.as_str(),
            "time": rfc3339(e.time),
            "credential": e.metadata.as_ref().map(metadata_json),
            "actor": e.actor.as_ref().map(caller_json),
            "missed": (e.kind == keyhaven::EventKind::Lagged).then_some(e.missed),
        });
        println!("{value}");
    } else {
        let mut line = format!("{} {}", rfc3339(e.time), e.kind.as_str());
        if let Some(m) = &e.metadata {
            line.push_str(&format!(" {} revision {}", m.key, m.revision));
        }
        if let Some(a) = &e.actor {
            line.push_str(&format!(" by {}", caller_text(a)));
        }
        if e.kind == keyhaven::EventKind::Lagged {
            line.push_str(&format!(
                " missed {} events; re-sync with --snapshot",
                e.missed
            ));
        }
        println!("{line}");
    }
    let _ = std::io::stdout().flush();
}

fn print_audit(entries: &[AuditEntry], json: bool) {
    if json {
        let rows: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id,
                    "time": rfc3339(e.time),
                    "caller": caller_json(&e.caller),
                    "operation": e.operation,
                    "key": e.key.as_ref().map(ToString::to_string),
                    "outcome": e.outcome,
                    "detail": e.detail,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    if entries.is_empty() {
        eprintln!("no audit entries");
    }
    for e in entries {
        let key = e
            .key
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "-".into());
        let mut line = format!(
            "{}  {:<8}  {:<20}  {}  {}",
            rfc3339(e.time),
            e.operation,
            e.outcome,
            key,
            caller_text(&e.caller)
        );
        if !e.detail.is_empty() {
            line.push_str(&format!("  ({})", e.detail));
        }
        println!("{line}");
    }
}

/// `30s`, `15m`, `2h`, `7d`.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

fn rfc3339(t: SystemTime) -> String {
    let ms = system_to_ms(t);
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

fn metadata_json(m: &Metadata) -> serde_json::Value {
    serde_json::json!({
        "key": m.key.to_string(),
        "provider": m.key.provider(),
        "server_id": m.key.server_id(),
        "user_id": m.key.user_id(),
        "token_type": m.key.token_type(),
        "revision": m.revision,
        "created_at": rfc3339(m.created_at),
        "updated_at": rfc3339(m.updated_at),
        "expires_at": m.expires_at.map(rfc3339),
        "label": m.label,
    })
}

fn print_table(items: &[Metadata]) {
    if items.is_empty() {
        eprintln!("no credentials");
        return;
    }
    let width = items
        .iter()
        .map(|m| m.key.to_string().chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    println!(
        "{:<width$}  {:>8}  {:<20}  {:<20}  LABEL",
        "KEY", "REVISION", "UPDATED", "EXPIRES"
    );
    for m in items {
        println!(
            "{:<width$}  {:>8}  {:<20}  {:<20}  {}",
            m.key.to_string(),
            m.revision,
            rfc3339(m.updated_at),
            m.expires_at.map(rfc3339).unwrap_or_else(|| "-".into()),
            m.label.as_deref().unwrap_or("")
        );
    }
}

fn print_doctor(s: &DaemonStatus) {
    let explain = |tier: &str| match tier {
        "systemd-credential" => {
            "a systemd credential, decrypted by systemd when the service starts (TPM- or \
             host-key-sealed with systemd-creds). A copy of your home directory or disk image is \
             useless without this machine. Strongest here."
        }
        "keyring" => {
            "your desktop keyring (Secret Service, Keychain, Credential Manager), encrypted with \
             your login password. A copy of your files is useless without that password; \
             programs running as you while you are logged in can still ask for it."
        }
        _ => {
            "a file readable only by you (mode 0600). It keeps the tokens safe if the database \
             alone is copied (a backup, a synced folder), but anyone or anything that can read \
             your home directory can read the key too."
        }
    };
    println!("keyhaven doctor");
    println!();
    match (
        &s.key_problem,
        s.key_tiers.iter().find(|t| t.state == "active"),
    ) {
        (Some(problem), _) => {
            println!("PROBLEM: the credential store is locked. Apps get \"unavailable\" until");
            println!("this is fixed; keyhavend keeps looking on its own.");
            println!("  {problem}");
        }
        (None, Some(active)) => {
            println!(
                "Your tokens are encrypted with a data key (id {}) kept in:",
                s.key_id
            );
            println!("  {} ({})", active.tier, active.detail);
            println!("  {}", explain(&active.tier));
        }
        (None, None) => println!("The daemon did not report where its key is."),
    }
    println!();
    println!("Where a data key can be kept, strongest first:");
    for t in &s.key_tiers {
        let state = match t.state.as_str() {
            "active" => "in use",
            "holds-key" => "holds a key",
            "empty" => "available, empty",
            "unavailable" => "not reachable",
            "not-configured" => "not set up",
            "skipped" => "not checked (a stronger tier is in use)",
            other => other,
        };
        println!("  {:<19} {state}: {}", t.tier, t.detail);
    }
    println!();
    println!("Snapshot: {}", last_backup_text(s));
    let active = s
        .key_tiers
        .iter()
        .find(|t| t.state == "active")
        .map(|t| t.tier.as_str());
    println!();
    match active {
        Some("file") => {
            let keyring = s.key_tiers.iter().find(|t| t.tier == "keyring");
            if keyring.is_some_and(|k| k.state == "empty" || k.state == "holds-key") {
                println!("To do better: your keyring is reachable. Run");
                println!("  keyhaven key move --to keyring");
            } else {
                println!("To do better: start a keyring (e.g. gnome-keyring or KeePassXC with");
                println!(
                    "Secret Service) in your session, then run `keyhaven key move --to keyring`;"
                );
                println!(
                    "or, for a service, provide the key as a systemd credential (see README)."
                );
            }
        }
        Some("keyring") => {
            println!("To do better on a machine with a TPM: provide the key as a systemd");
            println!("credential (systemd-creds encrypt, LoadCredentialEncrypted=; see README).");
        }
        _ => {}
    }
}

/// When the last snapshot was taken, for `status` and `doctor`.
fn last_backup_text(s: &DaemonStatus) -> String {
    match &s.last_backup {
        Some((at, what)) => format!("last taken {} ({what})", rfc3339(*at)),
        None => "none taken yet: `keyhaven backup`, or set backup_dir for automatic ones".into(),
    }
}

fn print_status(client: &Client, s: &DaemonStatus, json: bool) {
    if json {
        let value = serde_json::json!({
            "version": s.version,
            "protocol": s.protocol,
            "pid": s.pid,
            "socket": client.socket().display().to_string(),
            "store_path": s.store_path,
            "key_tier": s.key_tier,
            "key_source": s.key_source,
            "credential_count": s.credential_count,
            "uptime_seconds": s.uptime_seconds,
            "key_id": s.key_id,
            "key_problem": s.key_problem,
            "policy": s.policy,
            "last_backup_at": s.last_backup.as_ref().map(|(t, _)| rfc3339(*t)),
            "last_backup": s.last_backup.as_ref().map(|(_, w)| w),
            "key_tiers": s.key_tiers.iter().map(|t| serde_json::json!({
                "tier": t.tier, "state": t.state, "detail": t.detail,
            })).collect::<Vec<_>>(),
            "client_version": env!("CARGO_PKG_VERSION"),
            "client_protocol": keyhaven::PROTOCOL,
        });
        println!("{value}");
        return;
    }
    println!(
        "keyhavend {} (protocol {}), pid {}, up {}s",
        s.version, s.protocol, s.pid, s.uptime_seconds
    );
    println!("socket:    {}", client.socket().display());
    println!(
        "store:     {} ({} credentials)",
        s.store_path, s.credential_count
    );
    match &s.key_problem {
        None => println!("key tier:  {} ({})", s.key_tier, s.key_source),
        Some(problem) => println!("key:       LOCKED: {problem}"),
    }
    println!("policy:    {}", s.policy);
    println!("snapshot:  {}", last_backup_text(s));
    println!(
        "client:    keyhaven {} (protocol {})",
        env!("CARGO_PKG_VERSION"),
        keyhaven::PROTOCOL
    );
}

async fn import(
    socket: Option<PathBuf>,
    autostart: bool,
    command: ImportCommand,
) -> Result<(), Failure> {
    use keyhaven::import::{self, Options, Summary};
    let (candidates, common, wipe) = match command {
        ImportCommand::Keyring {
            jellytau,
            reel: _,
            server_id,
            user_id,
            source_id,
            common,
        } => {
            let query = match (jellytau, server_id, user_id, source_id) {
                (true, Some(server_id), Some(user_id), _) => {
                    import::KeyringQuery::JellyTau { server_id, user_id }
                }
                (true, ..) => {
                    import::KeyringQuery::Discover(keyhaven_proto::legacy::Layout::JellyTau)
                }
                (false, _, _, Some(source_id)) => import::KeyringQuery::Reel { source_id },
                (false, ..) => import::KeyringQuery::Discover(keyhaven_proto::legacy::Layout::Reel),
            };
            let found = import::read_keyring(query).await.map_err(Failure::Input)?;
            (found, common, None)
        }
        ImportCommand::ReelDb {
            path,
            wipe_source,
            common,
        } => {
            let rows = import::read_reel_db(&path)
                .await
                .map_err(|e| Failure::Input(e.to_string()))?;
            (rows, common, wipe_source.then_some(path))
        }
        ImportCommand::Json { common } => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::Input(format!("cannot read stdin: {e}")))?;
            let candidates = text
                .lines()
                .enumerate()
                .filter(|(_, line)| !line.trim().is_empty())
                .map(|(i, line)| import::parse_json_line(i + 1, line))
                .collect();
            (candidates, common, None)
        }
    };
    let client = connect(socket, autostart).await?;
    let options = Options {
        dry_run: common.dry_run,
        overwrite: common.overwrite,
    };
    let mut summary = Summary::default();
    let mut verified_rows = Vec::new();
    let mut all_verified = true;
    let mut out = std::io::stdout().lock();
    for candidate in &candidates {
        let outcome = import::import_one(&client, candidate, options).await;
        summary.add(&outcome);
        match &outcome {
            o if o.verified() => verified_rows.extend(candidate.row_id),
            import::Outcome::Skipped(_) => {}
            _ => all_verified = false,
        }
        let key = candidate.key.as_ref().map(ToString::to_string).ok();
        let line = if common.json {
            serde_json::json!({
                "outcome": outcome.word(),
                "key": key,
                "source": candidate.origin,
                "reason": outcome.reason(),
            })
            .to_string()
        } else {
            let mut line = format!(
                "{}: {} ({})",
                outcome.word(),
                key.as_deref().unwrap_or("-"),
                candidate.origin
            );
            if let Some(reason) = outcome.reason() {
                line.push_str(&format!(": {reason}"));
            }
            line
        };
        // Each line as soon as it is decided, so a killed run shows how far it got.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }
    let mut wiped = None;
    if let Some(path) = wipe {
        if all_verified {
            let n = import::wipe_reel_rows(&path, &verified_rows)
                .await
                .map_err(|e| Failure::Input(e.to_string()))?;
            wiped = Some(n);
        } else {
            eprintln!(
                "keyhaven: not wiping {}: not every row is verified in the store",
                path.display()
            );
        }
    }
    let line = if common.json {
        serde_json::json!({
            "summary": {
                "imported": summary.imported,
                "would_import": summary.would_import,
                "already_present": summary.present,
                "conflicts": summary.conflicts,
                "skipped": summary.skipped,
                "failed": summary.failed,
                "wiped_rows": wiped,
            }
        })
        .to_string()
    } else {
        let mut line = format!(
            "summary: {} imported, {} already present, {} conflicts, {} skipped, {} failed",
            summary.imported, summary.present, summary.conflicts, summary.skipped, summary.failed
        );
        if common.dry_run {
            line.push_str(&format!(
                " ({} would be imported; dry run)",
                summary.would_import
            ));
        }
        if let Some(n) = wiped {
            line.push_str(&format!("; {n} rows removed from the source"));
        }
        line
    };
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    if summary.failed > 0 {
        return Err(Failure::Input(format!(
            "{} credential(s) could not be imported",
            summary.failed
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        for bad in ["", "5", "h", "5w", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400_000)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_795_436_059_000)), "2026-11-23T12:14:19Z");
    }
}
