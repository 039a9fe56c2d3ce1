//! Where the ledger and its signing key live, and the key's first creation.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use mandate_ledger::LogKey;

/// Origin prefix of a log whose key Mandate generated.
const DEFAULT_ORIGIN_PREFIX: &str = "mandate.local";

/// The ledger database in a data directory.
pub fn ledger_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ledger.db")
}

/// The generated signing key in a data directory.
pub fn default_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("ledger.key")
}

/// Reads the signing key: the configured file, or the data directory's,
/// generated (mode 0600) if the data directory has none yet.
pub fn load_or_generate_key(data_dir: &Path, configured: Option<&Path>) -> anyhow::Result<LogKey> {
    if let Some(path) = configured {
        return read_key(path);
    }
    let path = default_key_path(data_dir);
    if path.exists() {
        return read_key(&path);
    }
    let ledger = ledger_path(data_dir);
    if std::fs::metadata(&ledger).is_ok_and(|m| m.len() > 0) {
        // A new key could not continue the existing log: say so instead of
        // leaving a stray key behind.
        anyhow::bail!(
            "the receipt ledger `{}` exists but its signing key `{}` is missing; restore the key (or point --signing-key-file at it)",
            ledger.display(),
            path.display()
        );
    }
    let key = LogKey::generate_for_new_log(DEFAULT_ORIGIN_PREFIX)?;
    write_private(&path, key.to_private_text())?;
    tracing::info!(path = %path.display(), verifier_key = %key.verifier().as_text(), "generated the receipt signing key");
    Ok(key)
}

/// Creates the ledger file empty and owner-only before SQLite opens it, so
/// that receipts (which may hold argument values) and SQLite's `-wal` and
/// `-shm` files, which take the database's mode, are not world-readable.
pub fn create_ledger_file(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    Ok(())
}

/// Reads a signing key file.
pub fn read_key(path: &Path) -> anyhow::Result<LogKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the signing key `{}`", path.display()))?;
    LogKey::parse(&text).with_context(|| format!("`{}`", path.display()))
}

/// Writes a new private file readable by its owner only; never overwrites.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create `{}`", dir.display()))
}
