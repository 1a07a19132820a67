//! What the daemon knows of its snapshots: the automatic-snapshot settings,
//! the newest snapshot taken, and the names of its files. Kept apart from
//! [`super::backup`] (which takes, streams and restores snapshots) so the
//! daemon's shared state can hold it without depending on the RPCs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use keyhaven_proto::backup::Manifest;

/// Prefix of the daemon's temporary files in the data directory.
pub(crate) const TEMP_PREFIX: &str = ".keyhaven-backup-";
/// Suffix of automatic snapshot files.
pub(crate) const AUTO_SUFFIX: &str = ".khsnap";
/// Automatic snapshot settings (`backup_dir`, `backup_keep`,
/// `backup_every_writes`).
#[derive(Debug, Clone, Default)]
pub struct AutoSettings {
    /// Where automatic snapshots go; `None`: no automatic snapshots.
    pub dir: Option<PathBuf>,
    /// How many automatic snapshot files to keep.
    pub keep: usize,
    /// Take one after this many writes (and at most daily).
    pub every_writes: u64,
}

/// Default for [`AutoSettings::keep`].
pub const DEFAULT_KEEP: usize = 7;
/// Default for [`AutoSettings::every_writes`].
pub const DEFAULT_EVERY_WRITES: u64 = 100;

/// What the daemon knows about its snapshots.
#[derive(Debug, Default)]
pub struct Backups {
    pub(crate) auto: AutoSettings,
    last: std::sync::Mutex<Option<(i64, String)>>,
    /// When the last automatic snapshot was taken (the daily limit).
    pub(crate) last_auto: std::sync::Mutex<Option<i64>>,
    counter: AtomicU64,
}

impl Backups {
    /// With these automatic-snapshot settings.
    pub fn new(auto: AutoSettings) -> Self {
        let last = auto.dir.as_deref().and_then(newest_auto);
        Self {
            auto,
            last_auto: std::sync::Mutex::new(last.as_ref().map(|(at, _)| *at)),
            last: std::sync::Mutex::new(last),
            counter: AtomicU64::new(0),
        }
    }

    /// When the last snapshot was taken (Unix ms) and where it went.
    pub fn last(&self) -> Option<(i64, String)> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn record(&self, at: i64, what: String) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, what));
    }

    pub(crate) fn temp_path(&self, dir: &Path, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        dir.join(format!(
            "{TEMP_PREFIX}{}-{n}-{what}.tmp",
            std::process::id()
        ))
    }
}

/// The newest automatic snapshot in `dir`: its time (from its manifest) and path.
fn newest_auto(dir: &Path) -> Option<(i64, String)> {
    auto_files(dir)
        .into_iter()
        .filter_map(|p| {
            let head = read_head(&p)?;
            let (m, _) = Manifest::parse_header(&head).ok()?;
            Some((m.taken_at_unix_ms, p.display().to_string()))
        })
        .max()
}

fn read_head(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = vec![0u8; 8192];
    let mut f = std::fs::File::open(path).ok()?;
    let n = f.read(&mut head).ok()?;
    head.truncate(n);
    Some(head)
}

pub(crate) fn auto_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("keyhaven-") && n.ends_with(AUTO_SUFFIX))
        })
        .collect();
    files.sort();
    files
}
