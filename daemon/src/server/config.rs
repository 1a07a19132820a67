//! Settings: the optional TOML config file merged with command-line flags and
//! environment variables. Every setting has a default; the file may be absent.
//!
//! ```toml
//! # $XDG_CONFIG_HOME/keyhaven/config.toml
//! data_dir = "/home/me/.local/share/keyhaven"   # database and lock
//! key_file = "/home/me/.config/keyhaven/keyhaven.key"
//! max_secret_bytes = 65536                       # largest secret accepted
//! max_connections = 128                          # concurrent client connections (1 to 4096)
//! allowed_uids = []                              # other uids allowed besides the daemon's own
//! log_format = "text"                            # or "json"
//! key_source = "keyring"                        # pin a key tier: "systemd-credential", "keyring" or "file"
//! credential_name = "keyhaven.key"               # the systemd credential's name
//! key_retry_seconds = 5                          # how often a locked store looks for its key
//! expiry_sweep_seconds = 30                      # how often expired credentials are purged
//! audit_max_entries = 100000                     # audit log retention, by count
//! audit_max_age_days = 90                        # and by age
//! idle_exit_seconds = 0                          # socket-activated only: exit when idle this long (0: never)
//! legacy_read_through = true                     # on a miss, look in JellyTau's and Reel's keyring entries
//! legacy_keyring_cleanup = false                 # remove a legacy entry once it is verified in the store
//! allow_key_downgrade = false                    # let `key move` weaken the key's tier (e.g. keyring -> file)
//! backup_dir = "/home/me/.local/share/keyhaven/backups"  # automatic snapshots (absent: none)
//! backup_keep = 7                                # how many automatic snapshots to keep
//! backup_every_writes = 100                      # take one after this many writes, at most daily
//!
//! [policy]                                       # optional per-app policy, see `policy.rs`
//! default = "allow"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use keyhaven_proto::paths::{self, Env};
use serde::Deserialize;

use crate::error::StartError;
use crate::keys::custody::KeyTier;
use crate::keys::keyring::KeyringChoice;
pub use crate::net::listener::{DEFAULT_FIRST_REQUEST_DEADLINE, MAX_CONNECTIONS_CEILING};
pub use crate::rpc::legacy::Options as LegacyOptions;
use crate::rpc::policy::{Policy, PolicyConfig};
use crate::store::audit::Retention;

/// Default for [`Settings::max_secret_bytes`].
pub const DEFAULT_MAX_SECRET_BYTES: usize = 64 * 1024;
/// Hard ceiling for [`Settings::max_secret_bytes`]: the store is for tokens.
pub const MAX_SECRET_BYTES_CEILING: usize = 1024 * 1024;
/// Default systemd credential name.
pub const DEFAULT_CREDENTIAL_NAME: &str = "keyhaven.key";
/// Default for [`Settings::key_retry`], in seconds.
pub const DEFAULT_KEY_RETRY_SECONDS: u64 = 5;
/// Default for [`Settings::expiry_sweep`], in seconds.
pub const DEFAULT_EXPIRY_SWEEP_SECONDS: u64 = 30;
/// Default for [`Settings::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;

/// The config file's contents. Unknown keys are an error, so a typo does not
/// silently leave a default in place.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory for the database and lock file.
    pub data_dir: Option<PathBuf>,
    /// Path of the key file (the key-file tier).
    pub key_file: Option<PathBuf>,
    /// Largest secret accepted, in bytes.
    pub max_secret_bytes: Option<usize>,
    /// Most concurrent client connections.
    pub max_connections: Option<usize>,
    /// Uids allowed to connect besides the daemon's own.
    pub allowed_uids: Option<Vec<u32>>,
    /// `text` or `json`.
    pub log_format: Option<LogFormat>,
    /// Seconds between expiry sweeps.
    pub expiry_sweep_seconds: Option<u64>,
    /// Use only this key tier.
    pub key_source: Option<String>,
    /// The systemd credential's file name.
    pub credential_name: Option<String>,
    /// Seconds between looks for a missing key.
    pub key_retry_seconds: Option<u64>,
    /// Audit entries kept.
    pub audit_max_entries: Option<u64>,
    /// Days audit entries are kept.
    pub audit_max_age_days: Option<u64>,
    /// When socket-activated, exit after this many seconds without
    /// connections; 0 or absent: never.
    pub idle_exit_seconds: Option<u64>,
    /// Look in the legacy apps' keyring entries on a `Retrieve` miss.
    pub legacy_read_through: Option<bool>,
    /// Remove a legacy keyring entry after its verified migration.
    pub legacy_keyring_cleanup: Option<bool>,
    /// Allow `keyhaven key move` to a weaker key tier (e.g. keyring to
    /// key file).
    pub allow_key_downgrade: Option<bool>,
    /// Directory of automatic snapshots; absent: none are taken.
    pub backup_dir: Option<PathBuf>,
    /// Automatic snapshots kept.
    pub backup_keep: Option<usize>,
    /// Writes between automatic snapshots (and at most one a day).
    pub backup_every_writes: Option<u64>,
    /// Per-app policy.
    pub policy: Option<PolicyConfig>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What the command line gave; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--key-file`.
    pub key_file: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

/// Everything the daemon needs to start, with every path decided.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Socket to listen on.
    pub socket: PathBuf,
    /// Directory of the database and lock file.
    pub data_dir: PathBuf,
    /// Key file of the key-file tier.
    pub key_file: PathBuf,
    /// Largest secret accepted, in bytes.
    pub max_secret_bytes: usize,
    /// Most concurrent client connections served: at the limit, the one
    /// idle longest is closed for a newcomer; when all are busy, more get
    /// RESOURCE_EXHAUSTED.
    pub max_connections: usize,
    /// How long a new connection may take to send its first request before
    /// it is closed.
    pub first_request_deadline: Duration,
    /// Uids allowed besides the daemon's own.
    pub allowed_uids: Vec<u32>,
    /// Log format.
    pub log_format: LogFormat,
    /// How long in-flight requests may take to finish after a stop signal.
    pub shutdown_grace: Duration,
    /// How often expired credentials are purged.
    pub expiry_sweep: Duration,
    /// Events kept for slow watchers before they are told they lagged.
    pub event_buffer: usize,
    /// Audit log retention.
    pub audit_retention: Retention,
    /// The per-app policy at start-up.
    pub policy: Policy,
    /// The config file, re-read for the policy on SIGHUP or change.
    pub config_path: Option<PathBuf>,
    /// `$CREDENTIALS_DIRECTORY` (systemd credentials).
    pub credentials_dir: Option<PathBuf>,
    /// The systemd credential's file name.
    pub credential_name: String,
    /// Which keyring to use.
    pub keyring: KeyringChoice,
    /// How long one keyring call may take.
    pub keyring_timeout: Duration,
    /// `key_source`: use only this tier.
    pub key_source: Option<KeyTier>,
    /// How often a locked store looks for its key again.
    pub key_retry: Duration,
    /// Exit after this long without connections, when the socket was passed
    /// in by a service manager (which starts the daemon again on the next
    /// connection). `None`: never.
    pub idle_exit: Option<Duration>,
    /// Legacy keyring read-through.
    pub legacy: LegacyOptions,
    /// MoveKey may move the data key to a weaker tier.
    pub allow_key_downgrade: bool,
    /// Automatic snapshots.
    pub backups: crate::rpc::snapshots::AutoSettings,
}

impl Settings {
    /// Settings for a daemon whose files all live under `dir` (tests, tools).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            socket: dir.join("run").join(paths::SOCKET_NAME),
            data_dir: dir.join("data"),
            key_file: dir.join("config").join(paths::KEY_FILE_NAME),
            max_secret_bytes: DEFAULT_MAX_SECRET_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            first_request_deadline: DEFAULT_FIRST_REQUEST_DEADLINE,
            allowed_uids: Vec::new(),
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(10),
            expiry_sweep: Duration::from_secs(DEFAULT_EXPIRY_SWEEP_SECONDS),
            event_buffer: crate::store::events::DEFAULT_CAPACITY,
            audit_retention: Retention::default(),
            policy: Policy::default(),
            config_path: None,
            credentials_dir: None,
            credential_name: DEFAULT_CREDENTIAL_NAME.into(),
            // Hermetic by default: tests opt in to a keyring.
            keyring: KeyringChoice::Disabled,
            keyring_timeout: crate::keys::keyring::DEFAULT_TIMEOUT,
            key_source: None,
            key_retry: Duration::from_secs(DEFAULT_KEY_RETRY_SECONDS),
            idle_exit: None,
            legacy: LegacyOptions::default(),
            allow_key_downgrade: false,
            backups: crate::rpc::snapshots::AutoSettings::default(),
        }
    }

    /// Decides every setting: flag > env > config file > XDG > fallback.
    /// A config file named by flag or env must exist; the default one may not.
    pub fn resolve(over: &Overrides, env: &dyn Env) -> Result<Self, StartError> {
        let explicit = over.config.is_some() || env.var(paths::ENV_CONFIG).is_some();
        let config_path = paths::config_file(over.config.as_deref(), env)?;
        let file = load_file(&config_path, explicit)?;
        let max_secret_bytes = file.max_secret_bytes.unwrap_or(DEFAULT_MAX_SECRET_BYTES);
        if max_secret_bytes == 0 || max_secret_bytes > MAX_SECRET_BYTES_CEILING {
            return Err(StartError::Config {
                path: config_path,
                reason: format!(
                    "max_secret_bytes must be between 1 and {MAX_SECRET_BYTES_CEILING}"
                ),
            });
        }
        let max_connections = file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 || max_connections > MAX_CONNECTIONS_CEILING {
            return Err(StartError::Config {
                path: config_path,
                reason: format!(
                    "max_connections is {max_connections}; it must be between 1 and \
                     {MAX_CONNECTIONS_CEILING} (the default is {DEFAULT_MAX_CONNECTIONS})"
                ),
            });
        }
        // An empty path would mean "the current directory" to some calls and
        // nothing to others: refuse it, naming where it came from.
        if over
            .data_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(StartError::EmptySetting {
                setting: "data_dir",
                origin: "--data-dir".into(),
            });
        }
        if file
            .data_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(StartError::EmptySetting {
                setting: "data_dir",
                origin: format!("the config file {}", config_path.display()),
            });
        }
        let config_error = |reason: String| StartError::Config {
            path: config_path.clone(),
            reason,
        };
        let policy = Policy::from_section(file.policy).map_err(|e| config_error(e.to_string()))?;
        let sweep = file
            .expiry_sweep_seconds
            .unwrap_or(DEFAULT_EXPIRY_SWEEP_SECONDS);
        if sweep == 0 {
            return Err(config_error(
                "expiry_sweep_seconds must be at least 1".into(),
            ));
        }
        let key_source = match file.key_source.as_deref() {
            None => None,
            Some(name) => Some(KeyTier::parse(name).ok_or_else(|| {
                config_error(format!(
                    "key_source = {name:?}: use \"systemd-credential\", \"keyring\" or \"file\""
                ))
            })?),
        };
        let defaults = Retention::default();
        let audit_retention = Retention {
            max_entries: file.audit_max_entries.unwrap_or(defaults.max_entries),
            max_age: file.audit_max_age_days.map_or(defaults.max_age, |d| {
                Duration::from_secs(d.saturating_mul(86_400))
            }),
        };
        Ok(Self {
            socket: paths::socket(over.socket.as_deref(), env),
            data_dir: paths::data_dir(over.data_dir.as_deref(), file.data_dir.as_deref(), env)?,
            key_file: paths::key_file(over.key_file.as_deref(), file.key_file.as_deref(), env)?,
            max_secret_bytes,
            max_connections,
            first_request_deadline: DEFAULT_FIRST_REQUEST_DEADLINE,
            allowed_uids: file.allowed_uids.unwrap_or_default(),
            log_format: over.log_format.or(file.log_format).unwrap_or_default(),
            shutdown_grace: Duration::from_secs(10),
            expiry_sweep: Duration::from_secs(sweep),
            event_buffer: crate::store::events::DEFAULT_CAPACITY,
            audit_retention,
            policy,
            idle_exit: file
                .idle_exit_seconds
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            config_path: Some(config_path),
            credentials_dir: env
                .var("CREDENTIALS_DIRECTORY")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            credential_name: file
                .credential_name
                .unwrap_or_else(|| DEFAULT_CREDENTIAL_NAME.into()),
            keyring: KeyringChoice::Platform,
            keyring_timeout: crate::keys::keyring::DEFAULT_TIMEOUT,
            key_source,
            key_retry: Duration::from_secs(
                file.key_retry_seconds
                    .unwrap_or(DEFAULT_KEY_RETRY_SECONDS)
                    .max(1),
            ),
            legacy: LegacyOptions {
                enabled: file.legacy_read_through.unwrap_or(true),
                cleanup: file.legacy_keyring_cleanup.unwrap_or(false),
            },
            allow_key_downgrade: file.allow_key_downgrade.unwrap_or(false),
            backups: crate::rpc::snapshots::AutoSettings {
                dir: file.backup_dir.filter(|d| !d.as_os_str().is_empty()),
                keep: file
                    .backup_keep
                    .unwrap_or(crate::rpc::snapshots::DEFAULT_KEEP)
                    .max(1),
                every_writes: file
                    .backup_every_writes
                    .unwrap_or(crate::rpc::snapshots::DEFAULT_EVERY_WRITES)
                    .max(1),
            },
        })
    }

    /// The SQLite database file.
    pub fn database(&self) -> PathBuf {
        self.data_dir.join(paths::DATABASE_NAME)
    }

    /// The lock file that keeps a second daemon off this store.
    pub fn lock_file(&self) -> PathBuf {
        self.data_dir.join(paths::LOCK_NAME)
    }
}

fn load_file(path: &Path, must_exist: bool) -> Result<FileConfig, StartError> {
    let Some(text) = crate::fsutil::read_config(path)? else {
        if must_exist {
            return Err(StartError::Io {
                what: "read the config file",
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        return Ok(FileConfig::default());
    };
    toml::from_str(&text).map_err(|e| StartError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    #[test]
    fn file_settings_sit_between_env_and_xdg() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            "data_dir = \"/from/file\"\nmax_secret_bytes = 100\nlog_format = \"json\"\n",
        )
        .unwrap();
        let cfg_os = OsString::from(cfg.as_os_str());
        let env = move |name: &str| match name {
            "KEYHAVEN_CONFIG" => Some(cfg_os.clone()),
            "HOME" => Some(OsString::from("/home/u")),
            _ => None,
        };
        let s = Settings::resolve(&Overrides::default(), &env).unwrap();
        assert_eq!(s.data_dir, Path::new("/from/file"));
        assert_eq!(s.max_secret_bytes, 100);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.legacy, LegacyOptions::default());
        assert!(s.legacy.enabled && !s.legacy.cleanup);
        std::fs::write(
            &cfg,
            "legacy_read_through = false\nlegacy_keyring_cleanup = true\n",
        )
        .unwrap();
        let s = Settings::resolve(&Overrides::default(), &env).unwrap();
        assert!(!s.legacy.enabled && s.legacy.cleanup);
        std::fs::write(
            &cfg,
            "data_dir = \"/from/file\"\nmax_secret_bytes = 100\nlog_format = \"json\"\n",
        )
        .unwrap();
        let over = Overrides {
            data_dir: Some("/flag".into()),
            log_format: Some(LogFormat::Text),
            ..Default::default()
        };
        let s = Settings::resolve(&over, &env).unwrap();
        assert_eq!(s.data_dir, Path::new("/flag"));
        assert_eq!(s.log_format, LogFormat::Text);
    }

    #[test]
    fn unknown_keys_and_missing_explicit_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, "max_secret_byte = 1\n").unwrap();
        let over = Overrides {
            config: Some(cfg.clone()),
            ..Default::default()
        };
        let home = |n: &str| (n == "HOME").then(|| OsString::from("/home/u"));
        let err = Settings::resolve(&over, &home).unwrap_err().to_string();
        assert!(err.contains("max_secret_byte"), "{err}");
        let over = Overrides {
            config: Some(dir.path().join("absent.toml")),
            ..Default::default()
        };
        assert!(Settings::resolve(&over, &home).is_err());
        // The default config file may be absent.
        assert!(Settings::resolve(&Overrides::default(), &home).is_ok());
    }
}
