//! The state database's single writer: group commit.
//!
//! Every decision under a task credential writes its history entry (and
//! every reported result its labels) durably before it is answered. With
//! one transaction and one fsync per write, concurrent decisions queued
//! behind each other's fsync. Like the ledger's writer, this thread takes
//! every write waiting, runs them in one `BEGIN IMMEDIATE` transaction,
//! each in a savepoint of its own, and commits once: one fsync for the
//! group. A write that fails is rolled back to its savepoint alone; the
//! others commit. Nobody hears of a write before the commit is on disk.
//!
//! Writes run one after the other on this thread, in the order they were
//! sent, so each sees the ones before it, and its checks and changes stay
//! atomic, as with a transaction each.

use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::StateError;

/// The most writes committed in one group.
const MAX_GROUP: usize = 256;

/// A write waiting for its group.
type Job = Box<dyn Write>;

/// A write as the writer thread sees it.
trait Write: Send {
    /// Runs the write on the group's transaction.
    fn run(self: Box<Self>, conn: &Connection) -> Ran;
    /// Answers the caller without running the write: the group failed
    /// before its turn.
    fn refuse(self: Box<Self>, reason: &str);
}

/// What a write did: whether it succeeded (else its savepoint is rolled
/// back), and how to answer its caller once the group's fate is known
/// (`Some(reason)` if the group was not committed).
struct Ran {
    ok: bool,
    answer: Answer,
}

/// Answers a write's caller, given why its group failed, if it did.
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// A caller's write and where its answer goes.
struct Pending<T, F> {
    f: F,
    reply: Reply<T>,
}

/// Where a write's answer goes: a thread blocked on it, or a task awaiting
/// it (which saves a blocking thread's two hand-offs per write).
enum Reply<T> {
    Wait(SyncSender<Result<T, StateError>>),
    Await(oneshot::Sender<Result<T, StateError>>),
}

impl<T> Reply<T> {
    fn send(self, result: Result<T, StateError>) {
        // The caller may have gone; nothing to tell then.
        match self {
            Reply::Wait(reply) => {
                let _ = reply.send(result);
            }
            Reply::Await(reply) => {
                let _ = reply.send(result);
            }
        }
    }
}

impl<T, F> Write for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StateError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Ran {
        let Pending { f, reply } = *self;
        let out = f(conn);
        Ran {
            ok: out.is_ok(),
            answer: Box::new(move |failed| {
                let result = match (out, failed) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Some(reason)) => Err(StateError::Commit(reason.to_owned())),
                    (Ok(value), None) => Ok(value),
                };
                reply.send(result);
            }),
        }
    }

    fn refuse(self: Box<Self>, reason: &str) {
        self.reply.send(Err(StateError::Commit(reason.to_owned())));
    }
}

/// The handle writes are sent through; the thread ends when it is dropped.
#[derive(Debug)]
pub(crate) struct StateWriter {
    jobs: Sender<Job>,
}

impl StateWriter {
    /// Starts the writer thread on `conn`.
    pub(crate) fn start(conn: Connection) -> Result<Self, StateError> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("mandate-state-writer".into())
            .spawn(move || run(conn, &queue))
            .map_err(|e| {
                StateError::Unavailable(format!("the writer thread did not start: {e}"))
            })?;
        Ok(Self { jobs })
    }

    /// Runs `f` in the next group and waits until the group is committed:
    /// `f`'s error (its changes rolled back) or the commit's, else its value.
    pub(crate) fn write<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StateError> + Send + 'static,
    {
        let (reply, answer) = sync_channel(1);
        self.send(Box::new(Pending {
            f,
            reply: Reply::Wait(reply),
        }))?;
        answer.recv().map_err(|_| stopped_before_answering())?
    }

    /// [`write`](Self::write) for a task: awaits the commit instead of
    /// blocking a thread on it.
    pub(crate) async fn write_async<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StateError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Box::new(Pending {
            f,
            reply: Reply::Await(reply),
        }))?;
        answer.await.map_err(|_| stopped_before_answering())?
    }

    fn send(&self, job: Job) -> Result<(), StateError> {
        self.jobs
            .send(job)
            .map_err(|_| StateError::Commit("the state database's writer has stopped".into()))
    }
}

fn stopped_before_answering() -> StateError {
    StateError::Commit("the state database's writer stopped before answering".into())
}

fn run(mut conn: Connection, queue: &Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit(&mut conn, group);
    }
}

/// Runs `group` in one transaction and answers every write.
fn commit(conn: &mut Connection, group: Vec<Job>) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let reason = e.to_string();
            for job in group {
                job.refuse(&reason);
            }
            return;
        }
    };
    let mut answers = Vec::with_capacity(group.len());
    let mut jobs = group.into_iter();
    while let Some(job) = jobs.next() {
        if let Err(e) = tx.execute_batch("SAVEPOINT write") {
            job.refuse(&e.to_string());
            continue;
        }
        let ran = job.run(&tx);
        let close = if ran.ok {
            "RELEASE write"
        } else {
            "ROLLBACK TO write; RELEASE write"
        };
        answers.push(ran.answer);
        // A savepoint that cannot be closed leaves the transaction in
        // doubt: fail the whole group rather than commit half a write.
        if let Err(e) = tx.execute_batch(close) {
            let reason = e.to_string();
            drop(tx);
            for answer in answers {
                answer(Some(&reason));
            }
            for job in jobs {
                job.refuse(&reason);
            }
            return;
        }
    }
    let failed = tx.commit().err().map(|e| e.to_string());
    for answer in answers {
        answer(failed.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rusqlite::params;

    use super::*;

    fn writer(dir: &tempfile::TempDir) -> (Arc<StateWriter>, Connection) {
        let path = dir.path().join("state.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY) STRICT;",
        )
        .unwrap();
        let reader = Connection::open(&path).unwrap();
        (Arc::new(StateWriter::start(conn).unwrap()), reader)
    }

    fn count(reader: &Connection) -> i64 {
        reader
            .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_failed_write_is_rolled_back_alone_and_the_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = writer(&dir);
        let threads: Vec<_> = (0..64)
            .map(|n: i64| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    writer.write(move |conn| {
                        conn.execute("INSERT INTO t (n) VALUES (?1)", params![n])?;
                        if n % 8 == 0 {
                            // Its insert happened; failing must undo it.
                            return Err(StateError::Invalid(format!("{n} refused")));
                        }
                        Ok(n)
                    })
                })
            })
            .collect();
        for (n, thread) in (0..).zip(threads) {
            match thread.join().unwrap() {
                Ok(value) => assert_eq!(value, n),
                Err(StateError::Invalid(reason)) => {
                    assert_eq!(n % 8, 0);
                    assert_eq!(reason, format!("{n} refused"));
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(count(&reader), 56);
        let refused: i64 = reader
            .query_row("SELECT COUNT(*) FROM t WHERE n % 8 = 0", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(refused, 0);
    }

    #[tokio::test]
    async fn an_awaited_write_answers_after_its_commit_and_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = writer(&dir);
        let (ok, refused) = tokio::join!(
            writer.write_async(|conn| Ok(conn.execute("INSERT INTO t (n) VALUES (1)", [])?)),
            writer.write_async(|conn| {
                conn.execute("INSERT INTO t (n) VALUES (2)", [])?;
                Err::<(), _>(StateError::Invalid("refused".into()))
            }),
        );
        assert_eq!(ok.unwrap(), 1);
        assert!(
            matches!(refused, Err(StateError::Invalid(_))),
            "{refused:?}"
        );
        // Committed by the time it answered, and the refused write undone.
        assert_eq!(count(&reader), 1);
    }

    #[test]
    fn a_write_that_breaks_the_transaction_fails_its_group_not_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = writer(&dir);
        // Committing inside a write ends the group's transaction under it.
        let broken = writer.write(|conn| {
            conn.execute_batch("INSERT INTO t (n) VALUES (1); RELEASE write; COMMIT;")?;
            Ok(())
        });
        assert!(broken.is_err(), "{broken:?}");
        // The writer goes on with the next group.
        writer
            .write(|conn| Ok(conn.execute("INSERT INTO t (n) VALUES (2)", [])?))
            .unwrap();
        let rows: Vec<i64> = reader
            .prepare("SELECT n FROM t ORDER BY n")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(rows.contains(&2), "{rows:?}");
    }
}
