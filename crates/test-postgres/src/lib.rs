//! A real PostgreSQL server for tests: no mock of the database.
//!
//! [`Postgres::start`] runs `initdb` and `postgres` from the installed
//! PostgreSQL (Debian's `postgresql` package, which `scripts/test`
//! installs) in a temporary directory, listening on a free loopback port
//! with trust authentication. [`shared`] is one such server per test
//! process; each test takes a database of its own from it with
//! [`Postgres::database`], so tests run in parallel without seeing each
//! other. Fault tests start a server of their own and stop or restart it.
//!
//! PostgreSQL refuses to run as root; when the tests do, the server runs as
//! the `postgres` user the package creates. The server is tied to the test
//! process (`setpriv --pdeathsig`): it dies with it, however the tests end.
//!
//! The binaries are found in `MANDATE_TEST_PG_BIN`, else the newest
//! `/usr/lib/postgresql/*/bin`, else on the `PATH`. Without them the tests
//! fail (not skip), saying what to install.

// Test support: a database that cannot be had fails the test that asked.
#![allow(clippy::panic)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The role every test connects as (a superuser, created by `initdb`).
pub const USER: &str = "mandate";

/// How long a server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A PostgreSQL server of the tests' own.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    run_as: Option<String>,
    databases: AtomicU64,
    running: Mutex<bool>,
    /// Settings beyond the tests' defaults (`-c name=value`).
    settings: Vec<String>,
}

/// The server shared by every test of this process, started on first use.
///
/// # Panics
/// If no PostgreSQL is installed or it does not start (the message says
/// why): a test that needs the database must not pass without one.
pub fn shared() -> &'static Postgres {
    static SHARED: OnceLock<Postgres> = OnceLock::new();
    SHARED.get_or_init(|| Postgres::start().unwrap_or_else(|e| panic!("{e}")))
}

impl Postgres {
    /// Initialises a cluster in a fresh temporary directory and starts it.
    pub fn start() -> Result<Self, String> {
        Self::start_with(None)
    }

    /// Like [`start`](Self::start), serving TLS (besides plain connections)
    /// with the PEM certificate chain `cert` and its private key `key`.
    pub fn start_with_tls(cert: &str, key: &str) -> Result<Self, String> {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Result<Self, String> {
        remove_stale_dirs();
        let bin = binaries()?;
        let run_as = if is_root() {
            Some("postgres".to_owned())
        } else {
            None
        };
        static SERVERS: AtomicU64 = AtomicU64::new(0);
        let dir = base_dir(run_as.is_some()).join(format!(
            "mandate-test-pg-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(user) = &run_as {
            let (uid, gid) = ids_of(user)?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        let mut server = Self {
            bin,
            dir,
            port: free_port()?,
            run_as,
            databases: AtomicU64::new(0),
            running: Mutex::new(false),
            settings: Vec::new(),
        };
        let initdb = server
            .as_server_user(&server.bin.join("initdb"))
            .args([
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--username",
                USER,
            ])
            .arg("-D")
            .arg(server.data())
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        if let Some((cert, key)) = tls {
            for (name, text) in [("server.crt", cert), ("server.key", key)] {
                let path = server.data().join(name);
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                // PostgreSQL refuses a key others can read.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("chmod {}: {e}", path.display()))?;
                if let Some(user) = &server.run_as {
                    let (uid, gid) = ids_of(user)?;
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                        .map_err(|e| format!("chown {}: {e}", path.display()))?;
                }
            }
            server.settings.extend(
                [
                    "ssl=on",
                    "ssl_cert_file=server.crt",
                    "ssl_key_file=server.key",
                ]
                .map(str::to_owned),
            );
        }
        server.resume()?;
        Ok(server)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database of its own and returns its URL.
    ///
    /// # Panics
    /// If `createdb` fails.
    pub fn database(&self) -> String {
        let name = format!("t{}", self.databases.fetch_add(1, Ordering::Relaxed));
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", USER, "-p"])
            .arg(self.port.to_string())
            .arg(&name)
            .output()
            .unwrap_or_else(|e| panic!("createdb: {e}"));
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// Runs `sql` with `psql` on the database at `url` and returns its
    /// rows, unaligned (`|` between columns, one row per line).
    ///
    /// # Panics
    /// If `psql` fails.
    pub fn query(&self, url: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the server the way a crash would (`immediate`: no checkpoint,
    /// every connection cut); [`resume`](Self::resume) recovers it.
    pub fn crash(&self) -> Result<(), String> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let out = self
            .as_server_user(&self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.data())
            .output()
            .map_err(|e| format!("pg_ctl stop: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl stop: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        *running = false;
        Ok(())
    }

    /// Starts the server (again) on its directory and port, and waits until
    /// it accepts connections.
    pub fn resume(&self) -> Result<(), String> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if *running {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .map_err(|e| format!("server.log: {e}"))?;
        let mut command = self.as_server_user(&self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=32MB",
                // The OS cache survives the process crashes the tests cause;
                // syncing to the disk would only slow the tests down.
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ]);
        for setting in &self.settings {
            command.args(["-c", setting]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // The parent-death signal fires when the thread that started the
        // server ends: a thread of its own waits on the server for as long
        // as it runs.
        let (started, spawned) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("test-postgres".to_owned())
            .spawn(move || match command.spawn() {
                Ok(mut child) => {
                    let _ = started.send(Ok(()));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = started.send(Err(format!("postgres: {e}")));
                }
            })
            .map_err(|e| format!("thread: {e}"))?;
        spawned
            .recv()
            .map_err(|_| "the server thread ended".to_owned())??;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map_err(|e| format!("pg_isready: {e}"))?;
            if ready.success() {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                return Err(format!(
                    "PostgreSQL did not accept connections within {READY_WITHIN:?}; its log:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *running = true;
        Ok(())
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `program`, run as the server's user, dying with this process.
    fn as_server_user(&self, program: &Path) -> Command {
        let mut command = Command::new("setpriv");
        if let Some(user) = &self.run_as {
            command.args(["--reuid", user, "--regid", user, "--init-groups"]);
        }
        command.args(["--pdeathsig", "KILL", "--"]).arg(program);
        command
    }
}

/// Where `initdb`, `postgres`, `pg_ctl`, `pg_isready` and `createdb` are.
fn binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("MANDATE_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists());
    on_path.ok_or_else(|| {
        "no PostgreSQL server binaries (initdb, postgres): install Debian's `postgresql` package (scripts/test does), or set MANDATE_TEST_PG_BIN to their directory".to_owned()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| out.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

/// The uid and gid of `user`.
fn ids_of(user: &str) -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .map_err(|e| format!("id: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                format!(
                    "no user `{user}` to run PostgreSQL as (the `postgresql` package creates it)"
                )
            })
    };
    Ok((id("-u")?, id("-g")?))
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Where server directories go: the temporary directory, or `/tmp` when
/// the server runs as another user (a private `TMPDIR`, such as root's,
/// would be out of its reach).
fn base_dir(other_user: bool) -> PathBuf {
    if other_user {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    }
}

/// Directories of test processes that are gone (their servers died with
/// them).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(base_dir(is_root())) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("mandate-test-pg-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_test_gets_a_database_of_its_own() {
        let server = shared();
        let (a, b) = (server.database(), server.database());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("postgres://{USER}@127.0.0.1:{}/", server.port())));
    }
}
