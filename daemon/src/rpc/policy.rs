//! Optional per-app policy: which programs may read or write which
//! credentials, and which may administer the store. Without a `[policy]`
//! section every program of the user may use every credential and
//! administer the store, so sharing works out of the box.
//!
//! ```toml
//! [policy]
//! default = "deny"                 # what happens when no rule matches ("allow" if absent)
//!
//! [[policy.rules]]
//! app_id = "com.github.iwalton3.jellyfin-mpv-shim"   # Flatpak app id or snap.<name>
//! access = ["read"]                # "read" (Retrieve), "write" (Store, Delete, Logout)
//! providers = ["jellyfin"]         # empty or absent: every provider
//! servers = ["srv-1"]              # empty or absent: every server
//!
//! [[policy.rules]]
//! exe = "/usr/bin/keyhaven"        # executable path (identifies, does not authenticate)
//! access = ["admin"]               # RotateKey, MoveKey, Audit.Query
//!
//! [[policy.rules]]
//! exe = "/usr/bin/feishin"
//! action = "deny"                  # "allow" if absent
//! ```
//!
//! Rules are tried in order; the first whose program, access and scope all
//! match decides. List and Watch show metadata only and are not restricted.
//!
//! `admin` is different: once a `[policy]` section exists, only a rule that
//! names `"admin"` in its `access` grants it, whatever `default` says, and
//! such a rule covers the whole store (it names no providers or servers).
//! A rule without `access` covers read and write, never admin.
//!
//! A rule can only name what this platform can tell about a caller: the
//! executable and the sandbox app id are read on Linux only, so elsewhere a
//! rule with `exe` or `app_id` is refused at load rather than silently
//! never matching.
//!
//! The policy is re-read on SIGHUP and when the config file changes; a
//! broken file keeps the previous policy and logs why. A deleted config
//! file leaves no policy in force, logged at WARN; `keyhaven status` shows
//! the policy in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::Deserialize;

use crate::identity::Identity;

/// Allow or deny.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let the request through.
    #[default]
    Allow,
    /// Refuse it with PERMISSION_DENIED.
    Deny,
}

/// What a request does to a secret, or to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Retrieve.
    Read,
    /// Store, Delete, Logout.
    Write,
    /// RotateKey, MoveKey, Audit.Query: the whole store and its key.
    Admin,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

/// Whether this platform tells the daemon a caller's executable path.
pub const CAN_MATCH_EXE: bool = cfg!(target_os = "linux");
/// Whether this platform tells the daemon a caller's sandbox app id.
pub const CAN_MATCH_APP_ID: bool = cfg!(target_os = "linux");

/// `[policy]` as written in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// When no rule matches.
    #[serde(default)]
    pub default: Action,
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// One `[[policy.rules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Executable path to match exactly.
    pub exe: Option<String>,
    /// Sandbox app id to match exactly.
    pub app_id: Option<String>,
    /// Accesses the rule covers; absent: read and write.
    pub access: Option<Vec<Access>>,
    /// Providers the rule covers; absent or empty: all.
    #[serde(default)]
    pub providers: Vec<String>,
    /// Server ids the rule covers; absent or empty: all.
    #[serde(default)]
    pub servers: Vec<String>,
    /// What the rule does.
    #[serde(default)]
    pub action: Action,
}

/// A checked policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// A `[policy]` section exists (admin access then needs a rule).
    present: bool,
    default: Action,
    rules: Vec<RuleConfig>,
}

/// A policy error at load time.
#[derive(Debug, thiserror::Error)]
#[error("policy rule {index}: {reason}")]
pub struct PolicyError {
    index: usize,
    reason: &'static str,
}

impl Policy {
    /// Validates the `[policy]` section, if there is one.
    pub fn from_section(section: Option<PolicyConfig>) -> Result<Self, PolicyError> {
        match section {
            None => Ok(Self::default()),
            Some(config) => Self::from_config(config),
        }
    }

    /// Validates a `[policy]` section.
    pub fn from_config(config: PolicyConfig) -> Result<Self, PolicyError> {
        for (i, rule) in config.rules.iter().enumerate() {
            if rule.exe.is_some() && !CAN_MATCH_EXE {
                return Err(PolicyError {
                    index: i + 1,
                    reason: "names an exe, but keyhavend cannot read a caller's executable on \
                             this platform, so the rule could never match",
                });
            }
            if rule.app_id.is_some() && !CAN_MATCH_APP_ID {
                return Err(PolicyError {
                    index: i + 1,
                    reason: "names an app_id, but this platform has no sandbox app ids \
                             keyhavend can read, so the rule could never match",
                });
            }
            let grants_admin = rule
                .access
                .as_ref()
                .is_some_and(|a| a.contains(&Access::Admin));
            if grants_admin && (!rule.providers.is_empty() || !rule.servers.is_empty()) {
                return Err(PolicyError {
                    index: i + 1,
                    reason: "admin access covers the whole store: a rule naming \"admin\" \
                             cannot name providers or servers",
                });
            }
            if rule.exe.is_none() && rule.app_id.is_none() {
                return Err(PolicyError {
                    index: i + 1,
                    reason: "names no program: give exe or app_id",
                });
            }
            if rule.access.as_ref().is_some_and(Vec::is_empty) {
                return Err(PolicyError {
                    index: i + 1,
                    reason: "access is empty: give \"read\", \"write\" or both",
                });
            }
        }
        Ok(Self {
            present: true,
            default: config.default,
            rules: config.rules,
        })
    }

    /// True when the policy restricts nothing.
    pub fn is_open(&self) -> bool {
        !self.present
    }

    /// One line for `keyhaven status`: which policy is in force.
    pub fn describe(&self) -> String {
        if !self.present {
            return "none: every program of this user may read, write and administer".into();
        }
        let admin = self
            .rules
            .iter()
            .filter(|r| {
                r.action == Action::Allow
                    && r.access
                        .as_ref()
                        .is_some_and(|a| a.contains(&Access::Admin))
            })
            .count();
        format!(
            "default {}, {} rule{}; admin granted by {admin} rule{}",
            match self.default {
                Action::Allow => "allow",
                Action::Deny => "deny",
            },
            self.rules.len(),
            if self.rules.len() == 1 { "" } else { "s" },
            if admin == 1 { "" } else { "s" },
        )
    }

    /// Decides a request; `Err` carries the refusal, naming the rule.
    pub fn check(
        &self,
        who: &Identity,
        access: Access,
        provider: &str,
        server_id: &str,
    ) -> Result<(), String> {
        if access == Access::Admin && !self.present {
            return Ok(());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let program = rule
                .exe
                .as_deref()
                .is_none_or(|exe| who.executable.as_deref() == Some(exe))
                && rule
                    .app_id
                    .as_deref()
                    .is_none_or(|app| who.app_id.as_deref() == Some(app));
            // Without `access` a rule covers read and write; admin only
            // when named.
            let covers_access = match &rule.access {
                Some(a) => a.contains(&access),
                None => access != Access::Admin,
            };
            let covers_provider =
                rule.providers.is_empty() || rule.providers.iter().any(|p| p == provider);
            let covers_server =
                rule.servers.is_empty() || rule.servers.iter().any(|s| s == server_id);
            if program && covers_access && covers_provider && covers_server {
                return match rule.action {
                    Action::Allow => Ok(()),
                    Action::Deny => Err(format!(
                        "policy rule {} ({}) denies {} {} access to {provider}",
                        i + 1,
                        describe_rule(rule),
                        who.describe(),
                        access.as_str(),
                    )),
                };
            }
        }
        if access == Access::Admin {
            return Err(format!(
                "a per-app policy is in force and no rule grants {} admin access (key rotation, \
                 key moves, the audit log); add a rule with access = [\"admin\"] for it",
                who.describe(),
            ));
        }
        match self.default {
            Action::Allow => Ok(()),
            Action::Deny => Err(format!(
                "policy default \"deny\": no rule allows {} {} access to {provider}",
                who.describe(),
                access.as_str(),
            )),
        }
    }
}

fn describe_rule(rule: &RuleConfig) -> String {
    match (&rule.app_id, &rule.exe) {
        (Some(app), Some(exe)) => format!("app_id {app}, exe {exe}"),
        (Some(app), None) => format!("app_id {app}"),
        (None, Some(exe)) => format!("exe {exe}"),
        (None, None) => "any program".into(),
    }
}

/// The live policy, replaceable while the daemon runs.
#[derive(Debug)]
pub struct PolicyHandle {
    config_path: Option<PathBuf>,
    current: RwLock<Arc<Policy>>,
    seen_mtime: RwLock<Option<SystemTime>>,
}

impl PolicyHandle {
    /// Starts with `policy`, re-reading `[policy]` from `config_path` on
    /// [`reload`](Self::reload).
    pub fn new(policy: Policy, config_path: Option<PathBuf>) -> Self {
        let mtime = config_path.as_deref().and_then(mtime);
        Self {
            config_path,
            current: RwLock::new(Arc::new(policy)),
            seen_mtime: RwLock::new(mtime),
        }
    }

    /// The policy in force.
    pub fn get(&self) -> Arc<Policy> {
        self.current
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// One line for `keyhaven status`: the policy in force and where it
    /// came from.
    pub fn describe(&self) -> String {
        let policy = self.get();
        match (&self.config_path, policy.is_open()) {
            (Some(path), false) => format!("[policy] of {}: {}", path.display(), policy.describe()),
            (Some(path), true) => {
                format!("{} (no [policy] in {})", policy.describe(), path.display())
            }
            (None, _) => policy.describe(),
        }
    }

    /// Re-reads the config file's `[policy]`. On error the old policy
    /// stays and the error is returned.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        if let Ok(mut seen) = self.seen_mtime.write() {
            *seen = mtime(path);
        }
        let had_policy = !self.get().is_open();
        let (policy, found) = load_policy(path)?;
        let open = policy.is_open();
        match self.current.write() {
            Ok(mut cur) => *cur = Arc::new(policy),
            Err(e) => *e.into_inner() = Arc::new(policy),
        }
        if !found && had_policy {
            tracing::warn!(
                path = %path.display(),
                "the config file is gone: no per-app policy is in force now, every program of \
                 this user may read, write and administer; restore the file to restrict them again"
            );
        } else if open && had_policy {
            tracing::warn!(
                path = %path.display(),
                "the [policy] section is gone: no per-app policy is in force now"
            );
        } else {
            tracing::info!(path = %path.display(), open, "policy reloaded");
        }
        Ok(())
    }

    /// Reloads when the config file's modification time changed (or it
    /// appeared or disappeared).
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.config_path else {
            return;
        };
        let now = mtime(path);
        let seen = self.seen_mtime.read().map(|s| *s).unwrap_or(None);
        if now != seen
            && let Err(e) = self.reload()
        {
            tracing::error!(error = %e, "policy not reloaded; the previous policy stays in force");
        }
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads just the `[policy]` section of a config file, through the same
/// owner and mode check as every config read. Returns the policy and
/// whether the file exists (absent file or section: no policy).
pub fn load_policy(path: &Path) -> Result<(Policy, bool), String> {
    #[derive(Deserialize)]
    struct OnlyPolicy {
        policy: Option<PolicyConfig>,
    }
    let Some(text) = crate::fsutil::read_config(path).map_err(|e| e.to_string())? else {
        return Ok((Policy::default(), false));
    };
    let parsed: OnlyPolicy =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let policy =
        Policy::from_section(parsed.policy).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((policy, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(exe: &str, app: Option<&str>) -> Identity {
        Identity {
            uid: 1000,
            pid: 42,
            executable: Some(Arc::from(exe)),
            app_id: app.map(Arc::from),
        }
    }

    fn policy(text: &str) -> Policy {
        #[derive(Deserialize)]
        struct P {
            policy: PolicyConfig,
        }
        let p: P = toml::from_str(text).unwrap();
        Policy::from_config(p.policy).unwrap()
    }

    #[test]
    fn open_by_default() {
        let p = Policy::default();
        assert!(p.is_open());
        assert!(
            p.check(&who("/bin/x", None), Access::Write, "jellyfin", "s")
                .is_ok()
        );
    }

    #[test]
    fn first_matching_rule_decides_and_names_itself() {
        let p = policy(
            r#"
            [policy]
            default = "deny"
            [[policy.rules]]
            exe = "/usr/bin/evil"
            action = "deny"
            [[policy.rules]]
            app_id = "org.jellyfin.Player"
            access = ["read"]
            providers = ["jellyfin"]
            [[policy.rules]]
            exe = "/usr/bin/sync"
            servers = ["srv-1"]
            "#,
        );
        let player = who("/app/bin/player", Some("org.jellyfin.Player"));
        assert!(p.check(&player, Access::Read, "jellyfin", "any").is_ok());
        let err = p
            .check(&player, Access::Write, "jellyfin", "any")
            .unwrap_err();
        assert!(
            err.contains("default \"deny\"") && err.contains("write"),
            "{err}"
        );
        assert!(p.check(&player, Access::Read, "plex", "any").is_err());
        let sync = who("/usr/bin/sync", None);
        assert!(p.check(&sync, Access::Write, "plex", "srv-1").is_ok());
        assert!(p.check(&sync, Access::Write, "plex", "srv-2").is_err());
        let err = p
            .check(&who("/usr/bin/evil", None), Access::Read, "plex", "s")
            .unwrap_err();
        assert!(
            err.contains("policy rule 1 (exe /usr/bin/evil) denies"),
            "{err}"
        );
    }

    #[test]
    fn rules_must_name_a_program() {
        #[derive(Deserialize)]
        struct P {
            policy: PolicyConfig,
        }
        let p: P = toml::from_str("[policy]\n[[policy.rules]]\nproviders = [\"x\"]\n").unwrap();
        let err = Policy::from_config(p.policy).unwrap_err().to_string();
        assert!(
            err.contains("rule 1") && err.contains("exe or app_id"),
            "{err}"
        );
    }
}
