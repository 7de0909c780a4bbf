//! The embedded store's single writer: every write goes through one thread that commits them in
//! batches (group commit). Whatever writes are queued while the previous batch was being synced
//! run in one `BEGIN IMMEDIATE` transaction, each in its own savepoint (so a failing write does
//! not undo its neighbours), and nobody is answered before that transaction is committed.

use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// Writes waiting for the writer thread; past this, callers wait (backpressure).
pub(super) const WRITE_QUEUE: usize = 4096;
/// Writes committed together at most; bounds one transaction's size and latency.
const MAX_BATCH: usize = 256;
/// WAL pages past which the writer checkpoints by itself (SQLite's default is 1,000). While the
/// writer is busy the checkpointer never catches up with the end of the WAL, so only this
/// checkpoint lets SQLite reuse the file from its start: it bounds the WAL (about 16 MB), which
/// a small disk needs (16,000 pages filled the disk-full test's 32 MiB and kept it full).
pub(super) const WRITER_CHECKPOINT_PAGES: u32 = 4_000;
/// The checkpointer waits this long after a commit wakes it, so one checkpoint covers the
/// commits of that while: a page rewritten by many of them is copied once.
const CHECKPOINT_PACE: Duration = Duration::from_millis(100);

/// Runs one write inside the batch's transaction (given a connection) or reports that the batch
/// could not begin (given none); returns whether it succeeded and how to answer its caller
/// once the batch's fate is known.
pub(super) type WriteJob = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;
/// Answers a caller: `true` once the batch is durably committed.
pub(super) type Finish = Box<dyn FnOnce(bool) + Send>;

/// Wraps a write so it can run in the writer's transaction: the job runs `f` (or reports that the
/// batch could not begin), and its finish answers the caller once the commit's fate is known.
/// A job whose turn comes after `deadline` does nothing: its caller has answered 503 already, and
/// a 503 must mean that nothing happened.
pub(super) fn job<T, F>(
    f: F,
    answer: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
    deadline: std::time::Instant,
) -> WriteJob
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    Box::new(move |conn| {
        let result = match conn {
            _ if std::time::Instant::now() > deadline => Err(StoreError::Unavailable(
                "the write's caller gave up before its turn; nothing was changed".into(),
            )),
            Some(conn) => f(conn),
            None => Err(StoreError::Unavailable(
                "cannot begin a write transaction".into(),
            )),
        };
        let ok = result.is_ok();
        let finish: Finish = Box::new(move |committed| {
            let _ = answer.send(match result {
                Ok(_) if !committed => Err(StoreError::Unavailable("the commit failed".into())),
                other => other,
            });
        });
        (ok, finish)
    })
}

/// A full disk or a locked file fails every batch: one line per 10 s says so, with the count.
static FAILURES: crate::telemetry::LogThrottle = crate::telemetry::LogThrottle::new(10_000);

/// The writer thread: takes whatever writes are queued, runs them in one transaction (one
/// savepoint each, so a failing write does not undo its neighbours), commits once, then answers.
/// After each commit it nudges the checkpointer (`commits`) and never waits for it.
pub(super) fn run_writer(
    mut conn: Connection,
    mut jobs: tokio::sync::mpsc::Receiver<WriteJob>,
    commits: SyncSender<()>,
) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut finishes = Vec::with_capacity(batch.len());
        let committed = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(mut tx) => {
                for job in batch {
                    finishes.push(run_in_savepoint(&mut tx, job));
                }
                match tx.commit() {
                    Ok(()) => {
                        // Full means a nudge is already pending; gone means nothing to nudge.
                        let _ = commits.try_send(());
                        true
                    }
                    Err(e) => {
                        if let Some(suppressed) = FAILURES.admit(crate::clock::system_ms()) {
                            tracing::error!(error = %e, similar_since_last = suppressed, "embedded store: commit failed");
                        }
                        false
                    }
                }
            }
            Err(e) => {
                if let Some(suppressed) = FAILURES.admit(crate::clock::system_ms()) {
                    tracing::error!(error = %e, similar_since_last = suppressed, "embedded store: cannot begin a write transaction");
                }
                finishes.extend(batch.into_iter().map(|job| job(None).1));
                false
            }
        };
        for finish in finishes {
            finish(committed);
        }
    }
}

fn run_in_savepoint(tx: &mut rusqlite::Transaction<'_>, job: WriteJob) -> Finish {
    let Ok(mut savepoint) = tx.savepoint() else {
        return job(None).1;
    };
    let (ok, finish) = job(Some(&savepoint));
    if ok {
        if savepoint.commit().is_err() {
            // RELEASE failing leaves the whole transaction suspect: answer this one as failed.
            return Box::new(move |_| finish(false));
        }
    } else {
        let _ = savepoint.rollback();
    }
    finish
}

/// The checkpointer thread: copies committed pages from the WAL into the database file (a
/// passive checkpoint, which never blocks the writer or readers) on a connection of its own.
/// The writer used to do this itself every 1,000 pages: the copy and the database file's fsync
/// then stalled every write queued behind it, and took the single writer's CPU. Ends when the
/// writer does.
pub(super) fn run_checkpointer(conn: Connection, commits: Receiver<()>) {
    while commits.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_PACE);
        // The nudges of the commits made meanwhile: this checkpoint covers them.
        while commits.try_recv().is_ok() {}
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            && let Some(suppressed) = CHECKPOINT_FAILURES.admit(crate::clock::system_ms())
        {
            tracing::warn!(error = %e, similar_since_last = suppressed, "embedded store: checkpoint failed; the writer's own checkpoints still bound the WAL");
        }
    }
}

static CHECKPOINT_FAILURES: crate::telemetry::LogThrottle =
    crate::telemetry::LogThrottle::new(10_000);
