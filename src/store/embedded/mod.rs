//! The embedded backend: one SQLite file, so latchkey runs with no server at all. The SQL lives
//! in [`sql`], the group-commit writer in [`writer`]; this module wires them to the store trait.
//!
//! WAL mode lets the CLI (`users add`, …) write while `serve` runs on the same file. With
//! `store.durability = "fsync"`, `synchronous = FULL` makes a committed rotation survive power
//! loss: a refresh that answered 200 is on disk. With `"process"`, `synchronous = NORMAL` syncs
//! at checkpoints only: a committed rotation survives a killed or crashed process (the WAL is
//! in the OS's page cache), and power loss may lose the last moments. Writes go through one writer thread that commits them in batches (group
//! commit): every write queued while the previous batch was being synced runs in one
//! `BEGIN IMMEDIATE` transaction, each in its own savepoint, and nobody is answered before that
//! transaction's fsync. Racing presentations are serialised inside it, and a kill at any moment
//! leaves each family either before or after its swap. Reads use a second connection beside
//! the writer, and a third copies committed pages from the WAL into the database file
//! (checkpoints) on a thread of its own, off the writer's path. Expiry is checked on every read
//! and a periodic sweep deletes the rest.

mod sql;
mod writer;

pub use sql::permission_warnings;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::Connection;
use uuid::Uuid;

use super::{
    KeyPublication, NewSession, RotateOutcome, Rotation, Session, Store, StoreError, User,
};
use crate::clock::UnixMs;
use crate::config::Durability;
use crate::store::{LogNote, LogPosition, RevocationRecord};
use crate::tokens::TokenId;
use writer::WriteJob;

/// How long a caller waits for a read or a write before answering 503. A write whose turn comes
/// later is skipped (see `writer::job`).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// A queued write must start this long before its caller's timeout, so that the commit it joins
/// is answered while the caller still waits.
const COMMIT_MARGIN: Duration = Duration::from_millis(250);

/// Readiness probes answer within this.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

pub struct EmbeddedStore {
    /// The read connection. A std `Mutex` is right: it is only held on the blocking pool,
    /// never across an `.await`.
    reader: Arc<Mutex<Connection>>,
    writer: tokio::sync::mpsc::Sender<WriteJob>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::Error as E;
        match e {
            // The file answered, with something this version cannot read.
            E::FromSqlConversionFailure(..)
            | E::InvalidColumnType(..)
            | E::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
            other => StoreError::unavailable(other),
        }
    }
}

/// The lock a serving process holds on an embedded store (`PATH.serve-lock`, beside the
/// database): one process serves an embedded store, since its login throttles and DPoP replay
/// memory live in that process. A separate file, never the database: closing any descriptor of
/// the database would drop SQLite's own locks. Released when the returned file is dropped (or
/// the process ends, however it ends). The CLI's commands take no lock and run beside `serve`.
pub fn lock_for_serving(database: &Path) -> std::io::Result<Option<std::fs::File>> {
    let mut name = database.as_os_str().to_owned();
    name.push(".serve-lock");
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(std::path::PathBuf::from(name))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

impl EmbeddedStore {
    pub async fn open(path: &str, durability: Durability) -> Result<EmbeddedStore, StoreError> {
        let path = path.to_owned();
        let (writer_conn, reader, checkpointer) = tokio::task::spawn_blocking(move || {
            let path = Path::new(&path);
            let writer = sql::open_connection(path, durability)?;
            writer.pragma_update(None, "wal_autocheckpoint", writer::WRITER_CHECKPOINT_PAGES)?;
            let connections = (
                writer,
                sql::open_connection(path, durability)?,
                sql::open_connection(path, durability)?,
            );
            for warning in sql::permission_warnings(path) {
                tracing::warn!("{warning}");
            }
            Ok::<_, StoreError>(connections)
        })
        .await
        .map_err(StoreError::unavailable)??;
        let (writer, jobs) = tokio::sync::mpsc::channel(writer::WRITE_QUEUE);
        let (commits, committed) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("sqlite-checkpt".into())
            .spawn(move || writer::run_checkpointer(checkpointer, committed))
            .map_err(StoreError::unavailable)?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer::run_writer(writer_conn, jobs, commits))
            .map_err(StoreError::unavailable)?;
        Ok(EmbeddedStore {
            reader: Arc::new(Mutex::new(reader)),
            writer,
        })
    }

    /// Queues a write for the next batch and waits until that batch is committed.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_within(CALL_TIMEOUT, f).await
    }

    async fn write_within<T, F>(&self, timeout: Duration, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let deadline = Instant::now() + timeout;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let queued = tokio::time::timeout_at(
            deadline.into(),
            self.writer
                .send(writer::job(f, answer, deadline - COMMIT_MARGIN)),
        );
        queued
            .await
            .map_err(|_| StoreError::Unavailable("the write queue stayed full".into()))?
            .map_err(|_| StoreError::Unavailable("the writer thread is gone".into()))?;
        tokio::time::timeout_at(deadline.into(), answered)
            .await
            .map_err(|_| StoreError::Unavailable("the write did not finish in time".into()))?
            .map_err(|_| StoreError::Unavailable("the writer thread is gone".into()))?
    }

    /// Runs a read on the read connection, on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.reader);
        let read = tokio::task::spawn_blocking(move || {
            let guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&guard)
        });
        tokio::time::timeout(CALL_TIMEOUT, read)
            .await
            .map_err(|_| StoreError::Unavailable("the read did not finish in time".into()))?
            .map_err(StoreError::unavailable)?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    /// Ready means writable: the probe runs in the writer's transaction, so a file another
    /// process holds write-locked reports unavailable (reads alone would still pass).
    async fn ping(&self) -> Result<(), StoreError> {
        self.write_within(PING_TIMEOUT, sql::ping).await
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let user = user.clone();
        self.write(move |c| sql::create_user(c, &user)).await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let username = username.to_owned();
        self.read(move |c| sql::user_by_name(c, &username)).await
    }

    async fn index_look_alike(&self, user: &User) -> Result<bool, StoreError> {
        let user = user.clone();
        self.write(move |c| sql::index_look_alike(c, &user)).await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| sql::user_by_id(c, &id)).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.read(sql::list_users).await
    }

    async fn set_password(
        &self,
        user_id: &str,
        hash: &str,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        let (user_id, hash, note) = (user_id.to_owned(), hash.to_owned(), *note);
        self.write(move |c| sql::change_user(c, &user_id, "password_hash", &hash, &note))
            .await
    }

    async fn upgrade_password_hash(
        &self,
        user_id: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        let (user_id, old, new) = (user_id.to_owned(), old_hash.to_owned(), new_hash.to_owned());
        self.write(move |c| sql::upgrade_password_hash(c, &user_id, &old, &new))
            .await
    }

    async fn set_user_attributes(
        &self,
        user_id: &str,
        attributes: &super::UserAttributes,
    ) -> Result<bool, StoreError> {
        let (user_id, attributes) = (user_id.to_owned(), attributes.clone());
        self.write(move |c| sql::set_user_attributes(c, &user_id, &attributes))
            .await
    }

    async fn delete_user(
        &self,
        user_id: &str,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        let (user_id, note) = (user_id.to_owned(), *note);
        self.write(move |c| sql::delete_user(c, &user_id, &note))
            .await
    }

    async fn set_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        let (user_id, note) = (user_id.to_owned(), *note);
        self.write(move |c| sql::change_user(c, &user_id, "disabled", &disabled, &note))
            .await
    }

    async fn create_session(&self, session: &NewSession) -> Result<bool, StoreError> {
        let session = session.clone();
        self.write(move |c| sql::create_session(c, &session)).await
    }

    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        let rotation = rotation.clone();
        let sent = Instant::now();
        self.write(move |c| {
            // A write that waited (a busy file, a long batch) consumes its token later than the
            // caller's `now`: the grace window starts when the token was really consumed, so a
            // caller whose answer was lost still gets its successor when it presents the token
            // again. Expiry is still judged at the caller's `now` (as rotate.lua does).
            sql::rotate(c, &rotation, crate::clock::duration_ms(sent.elapsed()))
        })
        .await
    }

    async fn session(&self, id: Uuid, now: UnixMs) -> Result<Option<Session>, StoreError> {
        self.read(move |c| sql::session(c, id, now)).await
    }

    async fn live_refresh_token(
        &self,
        session_id: Uuid,
        token: TokenId,
        now: UnixMs,
    ) -> Result<Option<(Session, UnixMs)>, StoreError> {
        self.read(move |c| sql::live_refresh_token(c, session_id, token, now))
            .await
    }

    async fn sessions_of(&self, user_id: &str, now: UnixMs) -> Result<Vec<Session>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |c| sql::sessions_of(c, &user_id, now)).await
    }

    async fn revoke_by_token(
        &self,
        session_id: Uuid,
        token: TokenId,
        note: &LogNote,
    ) -> Result<bool, StoreError> {
        let note = *note;
        self.write(move |c| sql::revoke_by_token(c, session_id, token, &note))
            .await
    }

    async fn revoke_session(&self, id: Uuid, note: &LogNote) -> Result<bool, StoreError> {
        let note = *note;
        self.write(move |c| sql::revoke_session(c, id, &note)).await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        note: &LogNote,
    ) -> Result<usize, StoreError> {
        let (user_id, note) = (user_id.to_owned(), *note);
        self.write(move |c| sql::revoke_user_sessions(c, &user_id, &note))
            .await
    }

    async fn revoke_client_sessions(
        &self,
        client_id: &str,
        note: &LogNote,
    ) -> Result<usize, StoreError> {
        let (client_id, note) = (client_id.to_owned(), *note);
        self.write(move |c| sql::revoke_client_sessions(c, &client_id, &note))
            .await
    }

    async fn revocations_after(
        &self,
        after: Option<LogPosition>,
        now: UnixMs,
        limit: usize,
    ) -> Result<Vec<RevocationRecord>, StoreError> {
        self.read(move |c| sql::revocations_after(c, after, now, limit))
            .await
    }

    async fn sweep(&self, now: UnixMs) -> Result<(), StoreError> {
        self.write(move |c| sql::sweep(c, now)).await
    }

    async fn record_key_publication(
        &self,
        kid: &str,
        now: UnixMs,
        publish_until: UnixMs,
    ) -> Result<KeyPublication, StoreError> {
        let kid = kid.to_owned();
        self.write(move |c| sql::record_key_publication(c, &kid, now, publish_until))
            .await
    }

    async fn key_publications(&self) -> Result<Vec<KeyPublication>, StoreError> {
        self.read(sql::key_publications).await
    }

    async fn put_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |c| sql::put_meta(c, &key, &value)).await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.read(move |c| sql::get_meta(c, &key)).await
    }

    async fn put_record(
        &self,
        key: &str,
        value: &str,
        expires_at: UnixMs,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |c| sql::put_record(c, &key, &value, expires_at))
            .await
    }

    async fn record(&self, key: &str, now: UnixMs) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.read(move |c| sql::record(c, &key, now)).await
    }

    async fn swap_record(
        &self,
        key: &str,
        value: &str,
        now: UnixMs,
    ) -> Result<Option<String>, StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |c| sql::swap_record(c, &key, &value, now))
            .await
    }

    async fn delete_record(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |c| sql::delete_record(c, &key)).await
    }
}
