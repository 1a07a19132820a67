//! `keyhaven backup`, `export` and `restore`: the files on the user's side.
//!
//! Every file is written under a temporary name (`.NAME.partial-PID`) in
//! the target directory, mode 0600 from its first byte, fsynced, and only
//! then given its name (a hard link, so an existing file is never
//! replaced; then the temporary name goes) and the directory fsynced: a
//! file under the final name is always complete. A restore reads and
//! checks the whole file before it sends a byte to the daemon, which checks
//! it again before its first write. Formats: `docs/backup.md`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use age::secrecy::SecretString;
use keyhaven::backup::format::{self, ExportDocument, ExportEntry, FileKind, Manifest};
use keyhaven::backup::{RestoreKind, RestoreOptions, RestoreOutcome, RestoreResult};
use keyhaven::{ListFilter, system_to_ms};
use keyhaven_proto::exit;
use zeroize::Zeroizing;

use crate::Failure;
use crate::terminal::{Out, outln};

/// scrypt work factor of exports: N = 2^18, as the `age` tool uses.
const EXPORT_WORK_FACTOR: u8 = 18;
/// Highest work factor a restore accepts (2^20: 1 GiB of memory).
const MAX_WORK_FACTOR: u8 = 20;

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure::Code(code, message.into())
}

fn stamp() -> String {
    format::rfc3339(system_to_ms(SystemTime::now())).replace([':', '-'], "")
}

/// A file being written: removed unless [`Partial::commit`] gives it its name.
struct Partial {
    temp: PathBuf,
    target: PathBuf,
    file: Option<std::fs::File>,
}

impl Partial {
    fn create(target: &Path) -> Result<Self, Failure> {
        if target.exists() {
            return Err(Failure::Input(format!(
                "{} exists; choose another name or move it away first",
                target.display()
            )));
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .ok_or_else(|| Failure::Input(format!("{} is not a file name", target.display())))?;
        let temp = dir.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&temp)
            .map_err(|e| Failure::Input(format!("cannot create {}: {e}", temp.display())))?;
        Ok(Self {
            temp,
            target: target.to_path_buf(),
            file: Some(file),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let temp = self.temp.display().to_string();
        let Some(file) = self.file.as_mut() else {
            return Err(Failure::Input(format!("{temp} is closed")));
        };
        file.write_all(bytes)
            .map_err(|e| Failure::Input(format!("cannot write {temp}: {e}")))
    }

    /// fsync, name it, fsync the directory.
    fn commit(mut self) -> Result<PathBuf, Failure> {
        let io = |what: &str, e: std::io::Error| Failure::Input(format!("cannot {what}: {e}"));
        if let Some(file) = self.file.take() {
            file.sync_all()
                .map_err(|e| io("flush the file to disk", e))?;
        }
        match std::fs::hard_link(&self.temp, &self.target) {
            Ok(()) => {
                let _ = std::fs::remove_file(&self.temp);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Failure::Input(format!(
                    "{} appeared while writing; not replacing it",
                    self.target.display()
                )));
            }
            // File systems without hard links: a rename (checked above
            // that nothing is there).
            Err(_) => std::fs::rename(&self.temp, &self.target)
                .map_err(|e| io(&format!("name {}", self.target.display()), e))?,
        }
        #[cfg(unix)]
        if let Some(dir) = self.target.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("flush the directory to disk", e))?;
        }
        Ok(self.target.clone())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// `keyhaven backup [--to FILE]`.
pub async fn backup(client: &keyhaven::Client, to: Option<PathBuf>) -> Result<(), Failure> {
    let target =
        to.unwrap_or_else(|| PathBuf::from(format!("keyhaven-snapshot-{}.khsnap", stamp())));
    let mut partial = Partial::create(&target)?;
    let mut stream = client.backup().await?;
    let manifest = stream.manifest().clone();
    partial.write(&manifest.header())?;
    let mut hasher = format::Hasher::default();
    let mut size = 0u64;
    while let Some(chunk) = stream.next_chunk().await? {
        size += chunk.len() as u64;
        hasher.update(&chunk);
        partial.write(&chunk)?;
    }
    if size != manifest.size || hasher.finish() != manifest.sha256 {
        return Err(Failure::Input(format!(
            "the snapshot did not arrive whole ({size} of {} bytes, or a wrong SHA-256); \
             nothing was written",
            manifest.size
        )));
    }
    let path = partial.commit()?;
    outln!(
        Out::stdout(),
        "snapshot written to {}: {} credential(s), revision {}, sealed with data key {} \
         (it opens only with that key)",
        path.display(),
        manifest.credential_count,
        manifest.highest_revision,
        manifest.key_id
    )?;
    Ok(())
}

/// `keyhaven backup --manifest FILE` and `keyhaven restore --inspect FILE`.
pub fn inspect(path: &Path) -> Result<(), Failure> {
    let mut out = Out::stdout();
    let bytes = read_file(path)?;
    match format::detect(&bytes) {
        FileKind::Snapshot => {
            let (manifest, _) = Manifest::parse_header(&bytes)
                .map_err(|e| fail(exit::RESTORE_FAILED, format!("{}: {e}", path.display())))?;
            print_manifest(&mut out, &manifest)?;
            match Manifest::verify_file(&bytes) {
                Ok(_) => {
                    outln!(out, "complete:          yes (size and SHA-256 match)")?;
                    Ok(())
                }
                Err(e) => Err(fail(
                    exit::RESTORE_FAILED,
                    format!("{} is damaged: {e}", path.display()),
                )),
            }
        }
        FileKind::Export | FileKind::ArmoredExport => {
            outln!(
                out,
                "kind:              export (age, encrypted to a passphrase)"
            )?;
            outln!(out, "contents:          readable only with its passphrase")?;
            Ok(())
        }
        FileKind::Unknown => Err(not_a_backup(path)),
    }
}

/// The manifest's fields come from the file: printed inert.
fn print_manifest(out: &mut Out, m: &Manifest) -> std::io::Result<()> {
    outln!(
        out,
        "kind:              snapshot (format {})",
        m.format_version
    )?;
    outln!(out, "taken at:          {}", m.taken_at)?;
    outln!(out, "store id:          {}", m.store_id)?;
    outln!(out, "data key id:       {}", m.key_id)?;
    outln!(out, "credentials:       {}", m.credential_count)?;
    outln!(out, "highest revision:  {}", m.highest_revision)?;
    outln!(out, "size:              {} bytes", m.size)?;
    outln!(out, "sha256:            {}", m.sha256)?;
    Ok(())
}

fn not_a_backup(path: &Path) -> Failure {
    fail(
        exit::RESTORE_FAILED,
        format!(
            "{} is neither a keyhaven snapshot nor an age-encrypted export",
            path.display()
        ),
    )
}

fn read_file(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))
}

/// The passphrase: one line of stdin with `--passphrase-stdin`, else asked
/// on the terminal without echo (twice when `confirm`). Never from argv.
fn passphrase(from_stdin: bool, confirm: bool) -> Result<SecretString, Failure> {
    let text = if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Failure::Input(format!("cannot read the passphrase from stdin: {e}")))?;
        strip_newline(&line)
    } else if std::io::stdin().is_terminal() {
        let first = ask("Passphrase: ")?;
        if confirm {
            let again = ask("Passphrase again: ")?;
            if *again != *first {
                return Err(Failure::Input(
                    "the passphrases differ; nothing was written".into(),
                ));
            }
        }
        first
    } else {
        return Err(Failure::Input(
            "no terminal to ask for the passphrase: give it on stdin with --passphrase-stdin"
                .into(),
        ));
    };
    if text.is_empty() {
        return Err(Failure::Input("the passphrase is empty".into()));
    }
    Ok(SecretString::from(text.to_string()))
}

fn strip_newline(line: &str) -> Zeroizing<String> {
    Zeroizing::new(
        line.strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(line)
            .to_owned(),
    )
}

fn ask(prompt: &str) -> Result<Zeroizing<String>, Failure> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let line = crate::prompt::read_line_no_echo()
        .map_err(|e| Failure::Input(format!("cannot read the passphrase: {e}")))?;
    eprintln!();
    let text = std::str::from_utf8(line.expose())
        .map_err(|_| Failure::Input("the passphrase is not UTF-8".into()))?;
    Ok(strip_newline(text))
}

/// `keyhaven export [--to FILE] [filters]`.
pub async fn export(
    client: &keyhaven::Client,
    to: Option<PathBuf>,
    filter: ListFilter,
    passphrase_stdin: bool,
) -> Result<(), Failure> {
    let target = to.unwrap_or_else(|| PathBuf::from(format!("keyhaven-export-{}.age", stamp())));
    if target.exists() {
        return Err(Failure::Input(format!(
            "{} exists; choose another name or move it away first",
            target.display()
        )));
    }
    let credentials = client.export(&filter).await?;
    let entries = credentials
        .iter()
        .map(|c| {
            let m = &c.metadata;
            let mut entry = ExportEntry::new(
                &m.key,
                &c.secret,
                m.revision,
                m.label.clone(),
                m.expires_at.map(system_to_ms),
                system_to_ms(m.created_at),
                system_to_ms(m.updated_at),
            );
            entry.attributes = m.attributes.clone();
            entry
        })
        .collect();
    let doc = ExportDocument::new(entries, system_to_ms(SystemTime::now()));
    let json = doc.to_json();
    drop(doc);
    let pass = passphrase(passphrase_stdin, true)?;
    let mut recipient = age::scrypt::Recipient::new(pass);
    recipient.set_work_factor(EXPORT_WORK_FACTOR);
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as _))
        .map_err(|e| Failure::Input(format!("cannot encrypt: {e}")))?;
    let mut partial = Partial::create(&target)?;
    let Some(file) = partial.file.take() else {
        return Err(Failure::Input("the export file is closed".into()));
    };
    let encrypted = (|| {
        let mut writer = encryptor.wrap_output(file)?;
        writer.write_all(&json)?;
        writer.finish()
    })()
    .map_err(|e| Failure::Input(format!("cannot write {}: {e}", partial.temp.display())))?;
    partial.file = Some(encrypted);
    let path = partial.commit()?;
    outln!(
        Out::stdout(),
        "exported {} credential(s) to {}, encrypted to your passphrase (age, scrypt 2^{EXPORT_WORK_FACTOR}). \
         Anyone with this file and the passphrase can read every token in it",
        credentials.len(),
        path.display()
    )?;
    Ok(())
}

/// `keyhaven restore FILE [--dry-run] [--overwrite]`.
pub async fn restore(
    client_for: impl AsyncFnOnce() -> Result<keyhaven::Client, Failure>,
    path: &Path,
    options: RestoreOptions,
    passphrase_stdin: bool,
) -> Result<(), Failure> {
    let bytes = read_file(path)?;
    let refused = |why: String| {
        fail(
            exit::RESTORE_FAILED,
            format!("refusing {}: {why}; nothing was changed", path.display()),
        )
    };
    let outcomes = match format::detect(&bytes) {
        FileKind::Snapshot => {
            let (manifest, data) = Manifest::verify_file(&bytes).map_err(|e| refused(e.0))?;
            let client = client_for().await?;
            client
                .restore(RestoreKind::Snapshot, Some(&manifest), data, options)
                .await
                .map_err(|e| daemon_refused(e, &refused))?
        }
        FileKind::Export => {
            let pass = passphrase(passphrase_stdin, false)?;
            let json = decrypt(&bytes, pass).map_err(refused)?;
            // Checked here too, so a bad file is named before connecting.
            ExportDocument::parse(&json).map_err(|e| refused(e.0))?;
            let client = client_for().await?;
            client
                .restore(RestoreKind::Export, None, &json, options)
                .await
                .map_err(|e| daemon_refused(e, &refused))?
        }
        FileKind::ArmoredExport => {
            return Err(refused(
                "it is an ASCII-armored age file; decrypt it with `age -d` or convert it \
                 with `age -d | age -p` first"
                    .into(),
            ));
        }
        FileKind::Unknown => return Err(not_a_backup(path)),
    };
    report(&outcomes, options)
}

/// A refusal by the daemon: policy and availability keep their exit codes,
/// the rest (wrong key, damaged file) are restore failures.
fn daemon_refused(e: keyhaven::Error, refused: &impl Fn(String) -> Failure) -> Failure {
    use keyhaven::ErrorKind;
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::Unavailable | ErrorKind::ProtocolMismatch => {
            Failure::Client(e)
        }
        _ => refused(e.to_string()),
    }
}

fn decrypt(bytes: &[u8], pass: SecretString) -> Result<Zeroizing<Vec<u8>>, String> {
    let decryptor = age::Decryptor::new_buffered(bytes)
        .map_err(|e| format!("it is not a readable age file ({e}); truncated or damaged"))?;
    if !decryptor.is_scrypt() {
        return Err("it is an age file encrypted to a key, not to a passphrase".into());
    }
    let mut identity = age::scrypt::Identity::new(pass);
    identity.set_max_work_factor(MAX_WORK_FACTOR);
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as _))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed
            | age::DecryptError::KeyDecryptionFailed
            | age::DecryptError::NoMatchingKeys => "wrong passphrase".to_owned(),
            age::DecryptError::ExcessiveWork { required, .. } => format!(
                "its scrypt work factor 2^{required} is above the 2^{MAX_WORK_FACTOR} accepted"
            ),
            other => format!("it cannot be decrypted ({other}); truncated or damaged"),
        })?;
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    reader.read_to_end(&mut out).map_err(|e| {
        format!("its contents do not decrypt whole ({e}): the file is truncated or damaged")
    })?;
    Ok(out)
}

fn report(outcomes: &[RestoreOutcome], options: RestoreOptions) -> Result<(), Failure> {
    let mut out = Out::stdout();
    let mut counts = [0usize; 5];
    for o in outcomes {
        let n = match o.result {
            RestoreResult::Restored => 0,
            RestoreResult::Replaced => 1,
            RestoreResult::Unchanged => 2,
            RestoreResult::Skipped => 3,
            RestoreResult::Failed => 4,
        };
        counts[n] += 1;
        let line = match o.result {
            RestoreResult::Restored if options.dry_run => format!("restored: {} (dry run)", o.key),
            RestoreResult::Restored => format!("restored: {} (revision {})", o.key, o.new_revision),
            RestoreResult::Replaced if options.dry_run => format!(
                "replaced: {} (stored revision {}; dry run)",
                o.key, o.stored_revision
            ),
            RestoreResult::Replaced => format!(
                "replaced: {} (revision {} -> {})",
                o.key, o.stored_revision, o.new_revision
            ),
            RestoreResult::Unchanged => format!("unchanged: {}", o.key),
            RestoreResult::Skipped if !o.detail.is_empty() => {
                format!("skipped: {} ({})", o.key, o.detail)
            }
            RestoreResult::Skipped => format!(
                "skipped: {} (stored revision {} is newer than the file's {}; --overwrite replaces it)",
                o.key, o.stored_revision, o.file_revision
            ),
            RestoreResult::Failed => format!("failed: {}: {}", o.key, o.detail),
        };
        out.line(&line)?;
    }
    let mut summary = format!(
        "summary: {} restored, {} replaced, {} unchanged, {} skipped, {} failed",
        counts[0], counts[1], counts[2], counts[3], counts[4]
    );
    if options.dry_run {
        summary.push_str(" (dry run: nothing was written)");
    }
    out.line(&summary)?;
    if counts[4] > 0 {
        Err(fail(
            exit::RESTORE_FAILED,
            format!("{} credential(s) were not restored", counts[4]),
        ))
    } else if counts[3] > 0 {
        Err(fail(exit::RESTORE_SKIPPED, String::new()))
    } else {
        Ok(())
    }
}
