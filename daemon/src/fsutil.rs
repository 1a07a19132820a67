//! Private directories and files: created with their mode from the first
//! byte, then verified (owner, mode, not a symlink). Nothing here ever
//! loosens or silently fixes permissions.
//!
//! On Windows there are no mode bits: files live under the user's profile
//! (`%LOCALAPPDATA%`, `%APPDATA%`), whose inherited ACL admits the user,
//! SYSTEM and administrators; only "not a symlink" and the kind are checked.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::StartError;

/// Mode bits for new private directories and files (Unix only).
fn private(builder: &mut DirBuilder) -> &mut DirBuilder {
    #[cfg(unix)]
    builder.mode(0o700);
    builder
}

fn private_file(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    options.mode(0o600);
    options
}

/// Creates `dir` (and missing parents) with mode 0700 if needed, then checks
/// that it is a real directory owned by this user with no group or other
/// access.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StartError> {
    match private(DirBuilder::new().recursive(true)).create(dir) {
        Ok(()) => {}
        Err(source) => {
            return Err(StartError::Io {
                what: "create directory",
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    verify_private(dir, true)
}

/// Checks an existing path: not a symlink, the right kind, owned by this
/// user, no group/other permission bits.
pub fn verify_private(path: &Path, want_dir: bool) -> Result<(), StartError> {
    let meta = std::fs::symlink_metadata(path).map_err(|source| StartError::Io {
        what: "inspect",
        path: path.to_path_buf(),
        source,
    })?;
    let insecure = |reason: String| StartError::Insecure {
        path: path.to_path_buf(),
        reason,
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(insecure(
            "it is a symbolic link; keyhaven only uses real directories and files it owns".into(),
        ));
    }
    if want_dir && !ft.is_dir() {
        return Err(insecure("it is not a directory".into()));
    }
    if !want_dir && !ft.is_file() {
        return Err(insecure("it is not a regular file".into()));
    }
    #[cfg(unix)]
    check_owner_and_mode(path, &meta, want_dir)?;
    Ok(())
}

#[cfg(unix)]
fn check_owner_and_mode(
    path: &Path,
    meta: &std::fs::Metadata,
    want_dir: bool,
) -> Result<(), StartError> {
    let insecure = |reason: String| StartError::Insecure {
        path: path.to_path_buf(),
        reason,
    };
    let uid = keyhaven_proto::paths::current_uid();
    if meta.uid() != uid {
        return Err(insecure(format!(
            "it is owned by uid {} but keyhavend runs as uid {uid}; another user may have created it",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let want = if want_dir { "700" } else { "600" };
        return Err(insecure(format!(
            "its mode is {mode:03o}, which lets other users in; run `chmod {want} {}`",
            path.display()
        )));
    }
    Ok(())
}

/// Creates `path` with mode 0600 if it does not exist (never following a
/// symlink), then verifies it. Returns true when it was created.
pub fn ensure_private_file(path: &Path) -> Result<bool, StartError> {
    let created = match private_file(OpenOptions::new().write(true).create_new(true)).open(path) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(source) => {
            return Err(StartError::Io {
                what: "create",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    verify_private(path, false)?;
    Ok(created)
}

/// Writes `bytes` to a new file at `path` with mode 0600 and makes it
/// durable (file and directory fsync). Fails if the file exists.
pub fn write_new_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = private_file(OpenOptions::new().write(true).create_new(true)).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    // Directory fsync makes the new name durable; Windows has no such call
    // (NTFS journals the metadata).
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Reads a config file that steers the daemon (settings and the per-app
/// policy), after checking who can change it: the file (symlinks followed,
/// so a config kept in a dotfiles repository still works) and the directory
/// it sits in must be owned by this user or root and not writable by group
/// or others; otherwise another user could rewrite the policy. The checks
/// are made on the opened file, so the bytes read are the bytes checked.
/// `Ok(None)` when the file does not exist.
pub fn read_config(path: &Path) -> Result<Option<String>, StartError> {
    use std::io::Read;
    let io = |what, source| StartError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read the config file", e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| io("inspect the config file", e))?;
    if !meta.is_file() {
        return Err(StartError::Insecure {
            path: path.to_path_buf(),
            reason: "the config file is not a regular file".into(),
        });
    }
    #[cfg(unix)]
    {
        check_steering(path, &meta, "the config file")?;
        let real = std::fs::canonicalize(path).map_err(|e| io("resolve the config file", e))?;
        if let Some(dir) = real.parent() {
            let dir_meta = std::fs::metadata(dir).map_err(|source| StartError::Io {
                what: "inspect the config file's directory",
                path: dir.to_path_buf(),
                source,
            })?;
            check_steering(dir, &dir_meta, "the config file's directory")?;
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| io("read the config file", e))?;
    Ok(Some(text))
}

/// Owned by this user or root, and not writable by group or others.
#[cfg(unix)]
fn check_steering(path: &Path, meta: &std::fs::Metadata, what: &str) -> Result<(), StartError> {
    let uid = keyhaven_proto::paths::current_uid();
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(StartError::Insecure {
            path: path.to_path_buf(),
            reason: format!(
                "{what} is owned by uid {}, not by keyhavend's user (uid {uid}) or root: that \
                 user could change keyhaven's settings and policy",
                meta.uid()
            ),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    // A sticky directory (like /tmp) lets others add files but not replace
    // ours.
    let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_dir {
        return Err(StartError::Insecure {
            path: path.to_path_buf(),
            reason: format!(
                "{what} has mode {:03o}: other users could change keyhaven's settings and \
                 policy; run `chmod go-w {}`",
                mode & 0o777,
                path.display()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_dirs_and_files_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        assert!(ensure_private_file(&file).unwrap());
        assert!(!ensure_private_file(&file).unwrap());
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn refuses_open_modes_and_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = ensure_private_dir(&open).unwrap_err().to_string();
        assert!(
            err.contains("mode is 755") && err.contains("chmod 700"),
            "{err}"
        );

        let real = tmp.path().join("real");
        ensure_private_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");

        let file_link = tmp.path().join("file-link");
        std::os::unix::fs::symlink(real.join("target"), &file_link).unwrap();
        assert!(ensure_private_file(&file_link).is_err());
        assert!(
            !real.join("target").exists(),
            "must not create through a symlink"
        );
    }
}
