//! `keyhaven`: the command-line client of keyhavend.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, CommandFactory, Parser, Subcommand};
use keyhaven::{
    Attributes, AuditEntry, AuditQuery, Autostart, Caller, Client, ConnectOptions, CredentialKey,
    DaemonStatus, Error, ListFilter, Metadata, Secret, StoreOptions, WatchEvent, system_to_ms,
};
use keyhaven_proto::exit;

mod backup_cli;
mod import;
mod prompt;
mod terminal;

use terminal::{Out, note, outln, report};

/// Command-line client for keyhavend, the per-user credential daemon.
///
/// A credential is addressed by PROVIDER SERVER_ID USER_ID [TOKEN_TYPE];
/// TOKEN_TYPE defaults to access_token, and an empty id is written ''.
///
/// Exit codes: 0 ok, 1 other error, 2 bad usage, 3 not found, 4 permission
/// denied, 5 daemon unavailable, 6 invalid input, 7 revision conflict,
/// 8 protocol mismatch, 9 untrusted daemon (another user's socket).
#[derive(Debug, Parser)]
#[command(name = "keyhaven", version, about, long_about)]
struct Cli {
    /// Socket of the daemon [env: KEYHAVEN_SOCKET; default:
    /// $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Start keyhavend if it is not running (unless a systemd socket unit
    /// is enabled) [env: KEYHAVEN_AUTOSTART=1]
    #[arg(long, global = true)]
    autostart: bool,
    /// Also trust a daemon running as this uid. Only for a daemon that is
    /// meant to serve you from another account; without it, a socket served
    /// by another user is refused before anything is sent (exit 9).
    #[arg(
        long,
        global = true,
        value_name = "UID",
        env = "KEYHAVEN_ALLOW_DAEMON_UID"
    )]
    allow_daemon_uid: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

/// How to reach the daemon, from the global options.
#[derive(Debug, Clone)]
struct Conn {
    socket: Option<PathBuf>,
    autostart: bool,
    allow_daemon_uid: Option<u32>,
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
        /// A non-secret attribute, e.g. server_url=https://jf.example.org
        /// (repeat for more). Given attributes replace the stored ones;
        /// without --attr they are kept.
        #[arg(long = "attr", value_name = "NAME=VALUE")]
        attrs: Vec<String>,
        /// Remove every stored attribute.
        #[arg(long, conflicts_with = "attrs")]
        clear_attrs: bool,
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
    /// Only credentials with this attribute value (repeat: all must match).
    #[arg(long = "attr", value_name = "NAME=VALUE")]
    attrs: Vec<String>,
}

impl FilterArgs {
    fn filter(self) -> Result<ListFilter, Failure> {
        Ok(ListFilter {
            provider: self.provider,
            server_id: self.server_id,
            user_id: self.user_id,
            attributes: attribute_map(self.attrs)?,
        })
    }
}

/// The `--attr NAME=VALUE` arguments as a map, checked by the attribute
/// rules. The error names the argument by position, not by its text: a
/// value may hold what a terminal would act on.
fn attribute_map(args: Vec<String>) -> Result<Attributes, Failure> {
    let mut map = Attributes::new();
    for (i, text) in args.iter().enumerate() {
        let (name, value) = keyhaven::attributes::parse_pair(text)
            .map_err(|e| Failure::Input(format!("--attr #{}: {e}", i + 1)))?;
        if map.insert(name.clone(), value).is_some() {
            return Err(Failure::Input(format!("--attr {name} is given twice")));
        }
    }
    keyhaven::attributes::check(&map).map_err(|e| Failure::Input(e.to_string()))?;
    Ok(map)
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

/// A failure of the CLI itself (reading input, writing output), or one
/// from the daemon.
enum Failure {
    Client(Error),
    Input(String),
    /// Stdout could not be written; a closed pipe (`| head`) is not an
    /// error worth a word.
    Output(std::io::Error),
    /// An exit code of its own (restore), with a message unless empty.
    Code(u8, String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Client(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self::Output(e)
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
            report(&format!("cannot start: {e}"));
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(Failure::Client(e)) => {
            report(&e.to_string());
            ExitCode::from(e.exit_code())
        }
        Err(Failure::Input(msg)) => {
            report(&msg);
            ExitCode::from(exit::INVALID_INPUT)
        }
        // `keyhaven list | head -1`: the reader has what it wanted.
        Err(Failure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(exit::OK)
        }
        Err(Failure::Output(e)) => {
            report(&format!("cannot write to stdout: {e}"));
            ExitCode::from(exit::FAILURE)
        }
        Err(Failure::Code(code, msg)) => {
            if !msg.is_empty() {
                report(&msg);
            }
            ExitCode::from(code)
        }
    }
}

async fn connect(conn: &Conn) -> Result<Client, Error> {
    let env = keyhaven_proto::paths::ProcessEnv;
    let autostart = if conn.autostart {
        Some(Autostart::default())
    } else {
        Autostart::from_env(&env)
    };
    let socket = conn.socket.clone().unwrap_or_else(Client::default_socket);
    let options = ConnectOptions::new(socket)
        .autostart(autostart)
        .allow_daemon_uid(conn.allow_daemon_uid);
    Client::connect_with(options).await
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let Cli {
        socket,
        autostart,
        allow_daemon_uid,
        command,
    } = cli;
    let conn = Conn {
        socket,
        autostart,
        allow_daemon_uid,
    };
    let mut out = Out::stdout();
    match command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "keyhaven", &mut script);
            out.bytes(&script)?;
        }
        Command::Store {
            key,
            secret_file,
            label,
            attrs,
            clear_attrs,
            expires_in,
            if_revision,
            if_absent,
        } => {
            let key = key.key()?;
            let attributes = if clear_attrs {
                Some(Attributes::new())
            } else if attrs.is_empty() {
                None
            } else {
                Some(attribute_map(attrs)?)
            };
            let secret = read_secret(secret_file.as_deref(), &key)?;
            let client = connect(&conn).await?;
            let options = StoreOptions {
                label,
                expires_at: expires_in.map(|s| SystemTime::now() + Duration::from_secs(s)),
                expected_revision: if if_absent { Some(0) } else { if_revision },
                attributes,
            };
            let stored = client.store(&key, secret, options).await?;
            let verb = if stored.created { "stored" } else { "updated" };
            outln!(
                out,
                "{verb} {} (revision {})",
                key,
                stored.metadata.revision
            )?;
        }
        Command::Get { key, no_newline } => {
            let key = key.key()?;
            let client = connect(&conn).await?;
            let cred = client.retrieve(&key).await?;
            // The secret exactly as stored: never escaped.
            out.bytes(cred.secret.expose())?;
            if !no_newline {
                out.bytes(b"\n")?;
            }
        }
        Command::Delete { key, if_revision } => {
            let key = key.key()?;
            let client = connect(&conn).await?;
            let meta = client.delete(&key, if_revision).await?;
            outln!(out, "deleted {} (was revision {})", key, meta.revision)?;
        }
        Command::List { filter, json } => {
            let client = connect(&conn).await?;
            let items = client.list(&filter.filter()?).await?;
            if json {
                let rows: Vec<_> = items.iter().map(metadata_json).collect();
                out.exact_line(&serde_json::Value::Array(rows).to_string())?;
            } else {
                print_table(&mut out, &items)?;
            }
        }
        Command::Watch {
            filter,
            snapshot,
            count,
            json,
        } => {
            let client = connect(&conn).await?;
            let mut watch = client.watch(&filter.filter()?, snapshot).await?;
            let mut seen = 0u64;
            while count.is_none_or(|n| seen < n) {
                let Some(event) = watch.next().await else {
                    break;
                };
                print_event(&mut out, &event?, json)?;
                seen += 1;
            }
        }
        Command::Logout {
            provider,
            server_id,
            user_id,
        } => {
            let client = connect(&conn).await?;
            let removed = client
                .logout(&provider, &server_id, user_id.as_deref())
                .await?;
            for m in &removed {
                outln!(out, "deleted {}", m.key)?;
            }
            outln!(out, "logged out: {} credential(s) deleted", removed.len())?;
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
            let client = connect(&conn).await?;
            let query = AuditQuery {
                key,
                program,
                since,
                until: None,
                limit,
            };
            print_audit(&mut out, &client.audit(&query).await?, json)?;
        }
        Command::Doctor => {
            let client = connect(&conn).await?;
            let status = client.status().await?;
            print_doctor(&mut out, &status)?;
        }
        Command::Key(KeyCommand::Rotate) => {
            let client = connect(&conn).await?;
            let r = client.rotate_key().await?;
            outln!(
                out,
                "rotated the data key in the {} tier: {} -> {}, {} credential(s) re-sealed",
                r.tier,
                r.old_key_id,
                r.new_key_id,
                r.resealed
            )?;
        }
        Command::Key(KeyCommand::Move { to }) => {
            let client = connect(&conn).await?;
            let from = client.move_key(&to).await?;
            if from == to {
                outln!(out, "the data key is already kept in the {to} tier")?;
            } else {
                outln!(
                    out,
                    "moved the data key from the {from} tier to the {to} tier"
                )?;
            }
        }
        Command::Import(command) => return import(&conn, &mut out, command).await,
        Command::Backup {
            manifest: Some(file),
            ..
        } => return backup_cli::inspect(&file),
        Command::Backup { to, manifest: None } => {
            return backup_cli::backup(&connect(&conn).await?, to).await;
        }
        Command::Export {
            to,
            filter,
            passphrase_stdin,
        } => {
            let client = connect(&conn).await?;
            return backup_cli::export(&client, to, filter.filter()?, passphrase_stdin).await;
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
            let client = async || Ok(connect(&conn).await?);
            return backup_cli::restore(client, &file, options, passphrase_stdin).await;
        }
        Command::Status { json } => {
            let client = connect(&conn).await?;
            let status = client.status().await?;
            print_status(&mut out, &client, &status, json)?;
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
            let _ = write!(
                std::io::stderr(),
                "Secret for {}: ",
                terminal::inert(&key.to_string())
            );
            let _ = std::io::stderr().flush();
            let line = prompt::read_line_no_echo()
                .map_err(|e| Failure::Input(format!("cannot read the secret: {e}")))?;
            let _ = writeln!(std::io::stderr());
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

fn print_event(out: &mut Out, e: &WatchEvent, json: bool) -> std::io::Result<()> {
    if json {
        let value = serde_json::json!({
            "kind": e.kind.as_str(),
            "time": rfc3339(e.time),
            "credential": e.metadata.as_ref().map(metadata_json),
            "actor": e.actor.as_ref().map(caller_json),
            "missed": (e.kind == keyhaven::EventKind::Lagged).then_some(e.missed),
        });
        out.exact_line(&value.to_string())?;
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
        outln!(out, "{line}")?;
    }
    Ok(())
}

fn print_audit(out: &mut Out, entries: &[AuditEntry], json: bool) -> std::io::Result<()> {
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
        out.exact_line(&serde_json::Value::Array(rows).to_string())?;
        return Ok(());
    }
    if entries.is_empty() {
        note("no audit entries");
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
        outln!(out, "{line}")?;
    }
    Ok(())
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
    keyhaven_proto::time::rfc3339(system_to_ms(t))
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
        "attributes": m.attributes,
    })
}

fn print_table(out: &mut Out, items: &[Metadata]) -> std::io::Result<()> {
    if items.is_empty() {
        note("no credentials");
        return Ok(());
    }
    let width = items
        .iter()
        .map(|m| m.key.to_string().chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    outln!(
        out,
        "{:<width$}  {:>8}  {:<20}  {:<20}  LABEL",
        "KEY",
        "REVISION",
        "UPDATED",
        "EXPIRES"
    )?;
    for m in items {
        outln!(
            out,
            "{:<width$}  {:>8}  {:<20}  {:<20}  {}",
            m.key.to_string(),
            m.revision,
            rfc3339(m.updated_at),
            m.expires_at.map(rfc3339).unwrap_or_else(|| "-".into()),
            m.label.as_deref().unwrap_or("")
        )?;
        // Attributes under their credential, one per line.
        for (name, value) in &m.attributes {
            outln!(out, "    {name} = {value}")?;
        }
    }
    Ok(())
}

fn print_doctor(out: &mut Out, s: &DaemonStatus) -> std::io::Result<()> {
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
    outln!(out, "keyhaven doctor")?;
    outln!(out)?;
    match (
        &s.key_problem,
        s.key_tiers.iter().find(|t| t.state == "active"),
    ) {
        (Some(problem), _) => {
            outln!(
                out,
                "PROBLEM: the credential store is locked. Apps get \"unavailable\" until"
            )?;
            outln!(out, "this is fixed; keyhavend keeps looking on its own.")?;
            outln!(out, "  {problem}")?;
        }
        (None, Some(active)) => {
            outln!(
                out,
                "Your tokens are encrypted with a data key (id {}) kept in:",
                s.key_id
            )?;
            outln!(out, "  {} ({})", active.tier, active.detail)?;
            outln!(out, "  {}", explain(&active.tier))?;
        }
        (None, None) => outln!(out, "The daemon did not report where its key is.")?,
    }
    outln!(out)?;
    outln!(out, "Where a data key can be kept, strongest first:")?;
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
        outln!(out, "  {:<19} {state}: {}", t.tier, t.detail)?;
    }
    println!();
    outln!(out, "Snapshot: {}", last_backup_text(s))?;
    let active = s
        .key_tiers
        .iter()
        .find(|t| t.state == "active")
        .map(|t| t.tier.as_str());
    // The daemon reports a systemd-credential tier only where systemd can
    // provide one (Linux): no systemd advice on Windows or macOS.
    let systemd = s.key_tiers.iter().any(|t| t.tier == "systemd-credential");
    outln!(out)?;
    match active {
        Some("file") => {
            let keyring = s.key_tiers.iter().find(|t| t.tier == "keyring");
            if keyring.is_some_and(|k| k.state == "empty" || k.state == "holds-key") {
                outln!(out, "To do better: your keyring is reachable. Run")?;
                outln!(out, "  keyhaven key move --to keyring")?;
            } else if !systemd {
                outln!(
                    out,
                    "To do better: make your keyring (Credential Manager, Keychain) reachable"
                )?;
                outln!(
                    out,
                    "to keyhavend, then run `keyhaven key move --to keyring`."
                )?;
            } else {
                outln!(
                    out,
                    "To do better: start a keyring (e.g. gnome-keyring or KeePassXC with"
                )?;
                outln!(
                    out,
                    "Secret Service) in your session, then run `keyhaven key move --to keyring`;"
                )?;
                outln!(
                    out,
                    "or, for a service, provide the key as a systemd credential (see \"The data key\" in docs/operations.md)."
                )?;
            }
        }
        Some("keyring") if systemd => {
            outln!(
                out,
                "To do better on a machine with a TPM: provide the key as a systemd"
            )?;
            outln!(
                out,
                "credential (systemd-creds encrypt, LoadCredentialEncrypted=; see \"The data key\" in docs/operations.md)."
            )?;
        }
        _ => {}
    }
    Ok(())
}

/// When the last snapshot was taken, for `status` and `doctor`.
fn last_backup_text(s: &DaemonStatus) -> String {
    match &s.last_backup {
        Some((at, what)) => format!("last taken {} ({what})", rfc3339(*at)),
        None => "none taken yet: `keyhaven backup`, or set backup_dir for automatic ones".into(),
    }
}

fn print_status(
    out: &mut Out,
    client: &Client,
    s: &DaemonStatus,
    json: bool,
) -> std::io::Result<()> {
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
        out.exact_line(&value.to_string())?;
        return Ok(());
    }
    outln!(
        out,
        "keyhavend {} (protocol {}), pid {}, up {}s",
        s.version,
        s.protocol,
        s.pid,
        s.uptime_seconds
    )?;
    outln!(out, "socket:    {}", client.socket().display())?;
    outln!(
        out,
        "store:     {} ({} credentials)",
        s.store_path,
        s.credential_count
    )?;
    match &s.key_problem {
        None => outln!(out, "key tier:  {} ({})", s.key_tier, s.key_source)?,
        Some(problem) => outln!(out, "key:       LOCKED: {problem}")?,
    }
    outln!(out, "policy:    {}", s.policy)?;
    outln!(out, "snapshot:  {}", last_backup_text(s))?;
    outln!(
        out,
        "client:    keyhaven {} (protocol {})",
        env!("CARGO_PKG_VERSION"),
        keyhaven::PROTOCOL
    )?;
    Ok(())
}

async fn import(conn: &Conn, out: &mut Out, command: ImportCommand) -> Result<(), Failure> {
    use crate::import::{self, Options, Summary};
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
    let client = connect(conn).await?;
    let options = Options {
        dry_run: common.dry_run,
        overwrite: common.overwrite,
    };
    let mut summary = Summary::default();
    let mut verified_rows = Vec::new();
    let mut all_verified = true;
    // An import is finished even when nobody reads its report any more: a
    // closed stdout does not stop it.
    let mut say = |line: &str, json: bool| {
        let _ = if json {
            out.exact_line(line)
        } else {
            out.line(line)
        };
    };
    for candidate in &candidates {
        let outcome = import::import_one(&client, candidate, options).await;
        summary.add(&outcome);
        match &outcome {
            o if o.verified() => {
                verified_rows.extend(candidate.row_id.map(|id| (id, &candidate.secret)));
            }
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
        say(&line, common.json);
    }
    let mut wiped = None;
    if let Some(path) = wipe {
        if all_verified {
            let done = import::wipe_reel_rows(&path, &verified_rows)
                .await
                .map_err(|e| Failure::Input(e.to_string()))?;
            for id in &done.changed {
                let reason = "its token changed after it was read (the app refreshed it); \
                              not removed: run the import again to bring in the new token";
                let line = if common.json {
                    serde_json::json!({
                        "outcome": "kept",
                        "source": format!("row {id}"),
                        "reason": reason,
                    })
                    .to_string()
                } else {
                    format!("kept: row {id}: {reason}")
                };
                say(&line, common.json);
            }
            wiped = Some(done);
        } else {
            report(&format!(
                "not wiping {}: not every row is verified in the store",
                path.display()
            ));
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
                "wiped_rows": wiped.as_ref().map(|w| w.removed),
                "kept_changed_rows": wiped.as_ref().map(|w| w.changed.len()),
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
        if let Some(w) = &wiped {
            line.push_str(&format!("; {} rows removed from the source", w.removed));
            if !w.changed.is_empty() {
                line.push_str(&format!(
                    ", {} kept because their token changed",
                    w.changed.len()
                ));
            }
        }
        line
    };
    say(&line, common.json);
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
