//! One `mandate serve` per data directory.
//!
//! Two servers on one directory would both append to the receipt log and
//! both sign checkpoints over trees that each of them only partly sees, and
//! both would sweep the same approvals. SQLite's own locking keeps each
//! write whole, not the log consistent. So `serve` takes an exclusive OS
//! file lock on `DATA_DIR/mandate.lock` for as long as it runs, and writes
//! its process id there for the operator. The lock, not the file, is what
//! counts: the OS drops it when the process ends, however it ends, so a
//! stale file left by a crash never blocks a start.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "mandate.lock";

/// The data directory, held: dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Another process holds the data directory.
#[derive(Debug)]
pub struct InUse {
    path: PathBuf,
    holder: String,
}

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let holder = if self.holder.is_empty() {
            "another process (its pid is not written yet)".to_owned()
        } else {
            format!("another process, pid {}", self.holder)
        };
        write!(
            f,
            "the data directory is in use: `{}` is locked by {holder}; stop that `mandate serve`, or give this one another `--data-dir`",
            self.path.display()
        )
    }
}

/// Takes the data directory's lock, or says who holds it. The outer error
/// is the lock file failing to open or write.
pub fn acquire(data_dir: &Path) -> std::io::Result<Result<DataDirLock, InUse>> {
    let path = data_dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            // The holder may be between taking the lock and writing its pid.
            let _ = file.read_to_string(&mut holder);
            return Ok(Err(InUse {
                path,
                holder: holder.trim().chars().take(32).collect(),
            }));
        }
        Err(TryLockError::Error(e)) => return Err(e),
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.flush()?;
    Ok(Ok(DataDirLock { _file: file }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_the_pid_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path()).unwrap().unwrap();
        let refused = acquire(dir.path()).unwrap().unwrap_err();
        assert_eq!(refused.holder, std::process::id().to_string());
        assert!(refused.to_string().contains("mandate.lock"), "{refused}");
        drop(held);
        assert!(acquire(dir.path()).unwrap().is_ok());
    }
}
