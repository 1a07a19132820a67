//! Where keyhaven keeps its files. Every path is decided here, by one rule:
//!
//! **command-line flag > environment variable > config file > XDG directory >
//! fallback**. (The config file can set the data directory and key file, not
//! its own location or the socket the client looks for.)
//!
//! | what | flag | env | XDG | fallback |
//! |---|---|---|---|---|
//! | socket | `--socket` | `KEYHAVEN_SOCKET` | `$XDG_RUNTIME_DIR/keyhaven/keyhaven.sock` | `${TMPDIR:-/tmp}/keyhaven-$UID/keyhaven.sock` |
//! | data dir (database, lock) | `--data-dir` | `KEYHAVEN_DATA_DIR` | `$XDG_DATA_HOME/keyhaven` | `$HOME/.local/share/keyhaven` |
//! | config file | `--config` | `KEYHAVEN_CONFIG` | `$XDG_CONFIG_HOME/keyhaven/config.toml` | `$HOME/.config/keyhaven/config.toml` |
//! | key file | `--key-file` | `KEYHAVEN_KEY_FILE` | `$XDG_CONFIG_HOME/keyhaven/keyhaven.key` | `$HOME/.config/keyhaven/keyhaven.key` |
//!
//! XDG variables are used only when set to an absolute path, as the XDG Base
//! Directory specification requires. No path is ever built from a hard-coded
//! `/run/user/<uid>`.
//!
//! On Windows the "socket" is the named pipe `\\.\pipe\keyhaven-<user>`
//! (after the flag and `KEYHAVEN_SOCKET`), and without HOME or XDG variables
//! the data directory is `%LOCALAPPDATA%\keyhaven` and the config directory
//! `%APPDATA%\keyhaven`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The socket file name inside the socket directory.
pub const SOCKET_NAME: &str = "keyhaven.sock";
/// The database file name inside the data directory.
pub const DATABASE_NAME: &str = "keyhaven.db";
/// The lock file name inside the data directory.
pub const LOCK_NAME: &str = "keyhavend.lock";
/// The key file name inside the config directory.
pub const KEY_FILE_NAME: &str = "keyhaven.key";
/// Environment variable naming the socket.
pub const ENV_SOCKET: &str = "KEYHAVEN_SOCKET";
/// Environment variable naming the data directory.
pub const ENV_DATA_DIR: &str = "KEYHAVEN_DATA_DIR";
/// Environment variable naming the config file.
pub const ENV_CONFIG: &str = "KEYHAVEN_CONFIG";
/// Environment variable naming the key file.
pub const ENV_KEY_FILE: &str = "KEYHAVEN_KEY_FILE";

/// A path could not be decided.
#[derive(Debug, thiserror::Error)]
#[error("cannot decide the {what}: neither {env} nor {xdg} nor HOME is set")]
pub struct NoHome {
    what: &'static str,
    env: &'static str,
    xdg: &'static str,
}

/// Reads environment variables; tests pass a closure instead of the process
/// environment.
pub trait Env {
    /// The variable's value, if set.
    fn var(&self, name: &str) -> Option<OsString>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }
}

impl<F: Fn(&str) -> Option<OsString>> Env for F {
    fn var(&self, name: &str) -> Option<OsString> {
        self(name)
    }
}

fn non_empty(env: &dyn Env, name: &str) -> Option<PathBuf> {
    env.var(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn absolute(env: &dyn Env, name: &str) -> Option<PathBuf> {
    non_empty(env, name).filter(|p| p.is_absolute())
}

/// The socket the daemon listens on and the client connects to.
pub fn socket(flag: Option<&Path>, env: &dyn Env) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = non_empty(env, ENV_SOCKET) {
        return p;
    }
    default_socket(env)
}

/// The socket when neither the flag nor `KEYHAVEN_SOCKET` names one: the
/// XDG runtime directory's, else the fallback's (Windows: the named pipe).
/// The client trusts this location only when its directory is the user's
/// own and closed to others, because in the shared `/tmp` fallback another
/// user may have created it first.
pub fn default_socket(env: &dyn Env) -> PathBuf {
    #[cfg(windows)]
    {
        pipe_path(env)
    }
    #[cfg(not(windows))]
    {
        if let Some(runtime) = absolute(env, "XDG_RUNTIME_DIR") {
            return runtime.join("keyhaven").join(SOCKET_NAME);
        }
        fallback_runtime_dir(env).join(SOCKET_NAME)
    }
}

/// `\\.\pipe\keyhaven-<user>`: the default named pipe on Windows. The
/// user name comes from `USERNAME`; characters other than ASCII letters,
/// digits, `.`, `_` and `-` become `_`. Who may open the pipe is decided by
/// its security descriptor, not by its name.
pub fn pipe_path(env: &dyn Env) -> PathBuf {
    let user = env
        .var("USERNAME")
        .map(|u| u.to_string_lossy().into_owned())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "default".into());
    let user: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    PathBuf::from(format!(r"\\.\pipe\keyhaven-{user}"))
}

/// `${TMPDIR:-/tmp}/keyhaven-$UID`: the socket directory when there is no
/// `XDG_RUNTIME_DIR`. The daemon creates it 0700 and refuses it when it is
/// not owned by the user.
#[cfg(unix)]
pub fn fallback_runtime_dir(env: &dyn Env) -> PathBuf {
    let tmp = absolute(env, "TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp"));
    tmp.join(format!("keyhaven-{}", current_uid()))
}

/// The directory holding the database and the lock file.
pub fn data_dir(
    flag: Option<&Path>,
    config: Option<&Path>,
    env: &dyn Env,
) -> Result<PathBuf, NoHome> {
    pick(
        flag,
        env,
        ENV_DATA_DIR,
        config,
        "XDG_DATA_HOME",
        ".local/share",
    )
    .ok_or(NoHome {
        what: "data directory",
        env: ENV_DATA_DIR,
        xdg: "XDG_DATA_HOME",
    })
}

/// The optional TOML config file.
pub fn config_file(flag: Option<&Path>, env: &dyn Env) -> Result<PathBuf, NoHome> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = non_empty(env, ENV_CONFIG) {
        return Ok(p);
    }
    config_dir(env)
        .map(|d| d.join("config.toml"))
        .ok_or(NoHome {
            what: "config file",
            env: ENV_CONFIG,
            xdg: "XDG_CONFIG_HOME",
        })
}

/// The 0600 file holding the data key (the key-file tier).
pub fn key_file(
    flag: Option<&Path>,
    config: Option<&Path>,
    env: &dyn Env,
) -> Result<PathBuf, NoHome> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = non_empty(env, ENV_KEY_FILE) {
        return Ok(p);
    }
    if let Some(p) = config {
        return Ok(p.to_path_buf());
    }
    config_dir(env)
        .map(|d| d.join(KEY_FILE_NAME))
        .ok_or(NoHome {
            what: "key file",
            env: ENV_KEY_FILE,
            xdg: "XDG_CONFIG_HOME",
        })
}

fn config_dir(env: &dyn Env) -> Option<PathBuf> {
    absolute(env, "XDG_CONFIG_HOME")
        .or_else(|| non_empty(env, "HOME").map(|h| h.join(".config")))
        .or_else(|| windows_dir(env, "APPDATA"))
        .map(|d| d.join("keyhaven"))
}

/// flag > env > config > `$XDG/keyhaven` > `$HOME/<home_rel>/keyhaven`;
/// `None` when nothing applies.
fn pick(
    flag: Option<&Path>,
    env: &dyn Env,
    env_name: &str,
    config: Option<&Path>,
    xdg: &str,
    home_rel: &str,
) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| non_empty(env, env_name))
        .or_else(|| config.map(Path::to_path_buf))
        .or_else(|| absolute(env, xdg).map(|d| d.join("keyhaven")))
        .or_else(|| non_empty(env, "HOME").map(|h| h.join(home_rel).join("keyhaven")))
        .or_else(|| windows_dir(env, "LOCALAPPDATA").map(|d| d.join("keyhaven")))
}

/// `%APPDATA%` or `%LOCALAPPDATA%` on Windows, where HOME is usually unset;
/// never elsewhere.
fn windows_dir(env: &dyn Env, name: &str) -> Option<PathBuf> {
    if cfg!(windows) {
        absolute(env, name)
    } else {
        None
    }
}

/// The real uid of this process.
#[cfg(unix)]
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Env {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn socket_precedence_flag_env_xdg_fallback() {
        let all = env(&[
            ("KEYHAVEN_SOCKET", "/env/k.sock"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("TMPDIR", "/var/tmp"),
        ]);
        let flag = Path::new("/flag/k.sock");
        assert_eq!(socket(Some(flag), &all), flag);
        assert_eq!(socket(None, &all), Path::new("/env/k.sock"));
        let xdg = env(&[
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("TMPDIR", "/var/tmp"),
        ]);
        assert_eq!(
            socket(None, &xdg),
            Path::new("/run/user/1000/keyhaven/keyhaven.sock")
        );
        let tmp = env(&[("TMPDIR", "/var/tmp")]);
        let want = format!("/var/tmp/keyhaven-{}/keyhaven.sock", current_uid());
        assert_eq!(socket(None, &tmp), Path::new(&want));
        let none = env(&[]);
        let want = format!("/tmp/keyhaven-{}/keyhaven.sock", current_uid());
        assert_eq!(socket(None, &none), Path::new(&want));
        // The default ignores the flag and KEYHAVEN_SOCKET.
        assert_eq!(
            default_socket(&all),
            Path::new("/run/user/1000/keyhaven/keyhaven.sock")
        );
    }

    #[test]
    fn pipe_names_are_per_user_and_tame() {
        let e = env(&[("USERNAME", "Jane Doe\\x")]);
        assert_eq!(pipe_path(&e), Path::new(r"\\.\pipe\keyhaven-Jane_Doe_x"));
        assert_eq!(
            pipe_path(&env(&[])),
            Path::new(r"\\.\pipe\keyhaven-default")
        );
    }

    #[test]
    fn relative_xdg_values_are_ignored() {
        let e = env(&[
            ("XDG_RUNTIME_DIR", "relative/dir"),
            ("XDG_DATA_HOME", "rel"),
        ]);
        assert!(socket(None, &e).starts_with("/tmp"));
        assert!(data_dir(None, None, &e).is_err());
    }

    #[test]
    fn data_dir_precedence() {
        let e = env(&[
            ("KEYHAVEN_DATA_DIR", "/env/data"),
            ("XDG_DATA_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ]);
        let flag = Path::new("/flag");
        let cfg = Path::new("/cfg");
        assert_eq!(data_dir(Some(flag), Some(cfg), &e).unwrap(), flag);
        assert_eq!(
            data_dir(None, Some(cfg), &e).unwrap(),
            Path::new("/env/data")
        );
        let e = env(&[("XDG_DATA_HOME", "/xdg"), ("HOME", "/home/u")]);
        assert_eq!(data_dir(None, Some(cfg), &e).unwrap(), cfg);
        assert_eq!(
            data_dir(None, None, &e).unwrap(),
            Path::new("/xdg/keyhaven")
        );
        let e = env(&[("HOME", "/home/u")]);
        assert_eq!(
            data_dir(None, None, &e).unwrap(),
            Path::new("/home/u/.local/share/keyhaven")
        );
    }

    #[test]
    fn config_and_key_file_live_together_by_default() {
        let e = env(&[("HOME", "/home/u")]);
        assert_eq!(
            config_file(None, &e).unwrap(),
            Path::new("/home/u/.config/keyhaven/config.toml")
        );
        assert_eq!(
            key_file(None, None, &e).unwrap(),
            Path::new("/home/u/.config/keyhaven/keyhaven.key")
        );
        let e = env(&[("XDG_CONFIG_HOME", "/xdg"), ("KEYHAVEN_KEY_FILE", "/k")]);
        assert_eq!(key_file(None, None, &e).unwrap(), Path::new("/k"));
        assert_eq!(
            config_file(None, &e).unwrap(),
            Path::new("/xdg/keyhaven/config.toml")
        );
    }
}
