//! The embedded backend: one SQLite file, so latchkey runs with no server at all.
//!
//! WAL mode lets the CLI (`users add`, …) write while `serve` runs on the same file;
//! `synchronous = FULL` makes a committed rotation survive a crash, so a refresh that answered
//! 200 is durable. Writes go through one writer thread that commits them in batches (group
//! commit): every write queued while the previous batch was being synced runs in one
//! `BEGIN IMMEDIATE` transaction, each in its own savepoint, and nobody is answered before that
//! transaction's fsync. Racing presentations are serialised inside it, and a kill at any moment
//! leaves each family either before or after its swap. Reads use a second connection beside
//! the writer. Expiry is checked on every read and a periodic sweep deletes the rest.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::{
    Grant, KeyPublication, NewSession, RotateOutcome, Rotation, Session, Store, StoreError, User,
};
use crate::clock::UnixMs;
use crate::tokens::TokenId;

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS sessions (
    id           BLOB PRIMARY KEY,
    user_id      TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    scope        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    user_agent   TEXT NOT NULL,
    ip           TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);
-- A consumed token stays (without its secret) until its own expiry, so presenting it again is
-- recognised as reuse; its sealed successor stays only until sealed_until.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    id                   BLOB PRIMARY KEY,
    session_id           BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    expires_at           INTEGER NOT NULL,
    used_at              INTEGER,
    successor_expires_at INTEGER,
    sealed_successor     BLOB,
    sealed_until         INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS tokens_by_session ON refresh_tokens (session_id);
CREATE INDEX IF NOT EXISTS tokens_by_expiry ON refresh_tokens (expires_at);
CREATE TABLE IF NOT EXISTS key_publications (
    kid             TEXT PRIMARY KEY,
    first_published INTEGER NOT NULL,
    publish_until   INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS tokens_by_seal ON refresh_tokens (sealed_until)
    WHERE sealed_until IS NOT NULL;
";

/// Writes waiting for the writer thread; past this, callers wait (backpressure).
const WRITE_QUEUE: usize = 4096;
/// Writes committed together at most; bounds one transaction's size and latency.
const MAX_BATCH: usize = 256;

/// Runs one write inside the batch's transaction (given a connection) or reports that the batch
/// could not begin (given none); returns whether it succeeded and how to answer its caller
/// once the batch's fate is known.
type WriteJob = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;
/// Answers a caller: `true` once the batch is durably committed.
type Finish = Box<dyn FnOnce(bool) + Send>;

pub struct EmbeddedStore {
    /// The read connection. A std `Mutex` is right: it is only held on the blocking pool,
    /// never across an `.await`.
    reader: Arc<Mutex<Connection>>,
    writer: tokio::sync::mpsc::Sender<WriteJob>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::unavailable(e)
    }
}

impl EmbeddedStore {
    pub async fn open(path: &str) -> Result<EmbeddedStore, StoreError> {
        let path = path.to_owned();
        let (writer_conn, reader) = tokio::task::spawn_blocking(move || {
            let path = Path::new(&path);
            Ok::<_, StoreError>((open_connection(path)?, open_connection(path)?))
        })
        .await
        .map_err(StoreError::unavailable)??;
        let (writer, jobs) = tokio::sync::mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("latchkey-sqlite-writer".into())
            .spawn(move || run_writer(writer_conn, jobs))
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
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let result = match conn {
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
        });
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread is gone".into()))?;
        answered
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread is gone".into()))?
    }

    /// Runs a read on the read connection, on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(StoreError::unavailable)?
    }
}

/// The writer thread: takes whatever writes are queued, runs them in one transaction (one
/// savepoint each, so a failing write does not undo its neighbours), commits once, then answers.
fn run_writer(mut conn: Connection, mut jobs: tokio::sync::mpsc::Receiver<WriteJob>) {
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
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "embedded store: commit failed");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded store: cannot begin a write transaction");
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

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(StoreError::unavailable)?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn user_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        password_hash: row.get(2)?,
        disabled: row.get(3)?,
        created_at: row.get(4)?,
    })
}

const USER_COLUMNS: &str = "id, username, password_hash, disabled, created_at";
const SESSION_COLUMNS: &str =
    "id, user_id, client_id, scope, created_at, last_used_at, expires_at, user_agent, ip";

fn session_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    let id: Vec<u8> = row.get(0)?;
    Ok(Session {
        id: Uuid::from_slice(&id).unwrap_or_default(),
        user_id: row.get(1)?,
        client_id: row.get(2)?,
        scope: row.get(3)?,
        created_at: row.get(4)?,
        last_used_at: row.get(5)?,
        expires_at: row.get(6)?,
        user_agent: row.get(7)?,
        ip: row.get(8)?,
    })
}

/// `expires_at, used_at, successor_expires_at, sealed_successor` of one refresh token.
type TokenRow = (i64, Option<i64>, Option<i64>, Option<Vec<u8>>);

/// The check-and-rotate, inside the writer's transaction.
fn rotate_in(tx: &Connection, r: &Rotation) -> Result<RotateOutcome, StoreError> {
    let sid = r.session_id.as_bytes().as_slice();
    let now = r.now;
    // Seals past their window go first, so none is ever handed out late.
    tx.execute(
        "UPDATE refresh_tokens SET sealed_successor = NULL, sealed_until = NULL
         WHERE sealed_until IS NOT NULL AND sealed_until <= ?1",
        [now],
    )?;
    let family: Option<(String, String, String, i64)> = tx
        .query_row(
            "SELECT user_id, client_id, scope, expires_at FROM sessions WHERE id = ?1",
            [sid],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()?;
    let Some((user_id, client_id, scope, family_expires)) = family else {
        return Ok(RotateOutcome::Invalid);
    };
    if now >= family_expires {
        return Ok(RotateOutcome::Invalid);
    }
    let token: Option<TokenRow> = tx
        .query_row(
            "SELECT expires_at, used_at, successor_expires_at, sealed_successor
             FROM refresh_tokens WHERE id = ?1 AND session_id = ?2",
            params![r.presented.0.as_slice(), sid],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()?;
    let Some((expires_at, used_at, successor_expires, sealed)) = token else {
        return Ok(RotateOutcome::Invalid);
    };
    let grant = |successor_expires_at| Grant {
        user_id: user_id.clone(),
        client_id: client_id.clone(),
        scope: scope.clone(),
        successor_expires_at,
    };
    match used_at {
        None if now >= expires_at => Ok(RotateOutcome::Invalid),
        None => {
            let next_expires = (now + r.idle_ttl_ms).min(family_expires);
            let (sealed, sealed_until) = if r.grace_ms > 0 {
                (Some(r.sealed_successor.as_slice()), Some(now + r.grace_ms))
            } else {
                (None, None)
            };
            tx.execute(
                "UPDATE refresh_tokens SET used_at = ?1, successor_expires_at = ?2,
                 sealed_successor = ?3, sealed_until = ?4 WHERE id = ?5",
                params![
                    now,
                    next_expires,
                    sealed,
                    sealed_until,
                    r.presented.0.as_slice()
                ],
            )?;
            tx.execute(
                "INSERT INTO refresh_tokens (id, session_id, expires_at) VALUES (?1, ?2, ?3)",
                params![r.successor.0.as_slice(), sid, next_expires],
            )?;
            tx.execute(
                "UPDATE sessions SET last_used_at = ?1, user_agent = ?2, ip = ?3 WHERE id = ?4",
                params![now, r.user_agent, r.ip, sid],
            )?;
            tx.execute(
                "DELETE FROM refresh_tokens WHERE session_id = ?1 AND expires_at <= ?2",
                params![sid, now],
            )?;
            Ok(RotateOutcome::Rotated(grant(next_expires)))
        }
        Some(used) => {
            if let (true, Some(sealed), Some(successor_expires)) =
                (now < used + r.grace_ms, sealed, successor_expires)
            {
                return Ok(RotateOutcome::Replayed {
                    grant: grant(successor_expires),
                    sealed_successor: sealed,
                });
            }
            // Reuse: the whole family goes, its tokens with it (ON DELETE CASCADE).
            tx.execute("DELETE FROM sessions WHERE id = ?1", [sid])?;
            Ok(RotateOutcome::Reused { user_id })
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let user = user.clone();
        self.write(move |c| {
            let inserted = c.execute(
                "INSERT INTO users (id, username, password_hash, disabled, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![
                    user.id,
                    user.username,
                    user.password_hash,
                    user.disabled,
                    user.created_at
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict);
            }
            Ok(())
        })
        .await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let username = username.to_owned();
        self.with(move |c| {
            Ok(c.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
                [username],
                user_from,
            )
            .optional()?)
        })
        .await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        let id = id.to_owned();
        self.with(move |c| {
            Ok(c.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                [id],
                user_from,
            )
            .optional()?)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {USER_COLUMNS} FROM users ORDER BY username"
            ))?;
            let users = stmt.query_map([], user_from)?.collect::<Result<_, _>>()?;
            Ok(users)
        })
        .await
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let user = user.clone();
        self.write(move |c| {
            c.execute(
                "UPDATE users SET password_hash = ?1, disabled = ?2 WHERE id = ?3",
                params![user.password_hash, user.disabled, user.id],
            )?;
            Ok(())
        })
        .await
    }

    async fn create_session(&self, s: &NewSession) -> Result<(), StoreError> {
        let s = s.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at,
                 expires_at, user_agent, ip) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8)",
                params![
                    s.id.as_bytes().as_slice(),
                    s.user_id,
                    s.client_id,
                    s.scope,
                    s.created_at,
                    s.expires_at,
                    s.user_agent,
                    s.ip
                ],
            )?;
            tx.execute(
                "INSERT INTO refresh_tokens (id, session_id, expires_at) VALUES (?1, ?2, ?3)",
                params![
                    s.first_token.0.as_slice(),
                    s.id.as_bytes().as_slice(),
                    s.first_token_expires_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        let rotation = rotation.clone();
        self.write(move |c| rotate_in(c, &rotation)).await
    }

    async fn session(&self, id: Uuid, now: UnixMs) -> Result<Option<Session>, StoreError> {
        self.with(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1 AND expires_at > ?2"
                ),
                params![id.as_bytes().as_slice(), now],
                session_from,
            )
            .optional()?)
        })
        .await
    }

    async fn sessions_of(&self, user_id: &str, now: UnixMs) -> Result<Vec<Session>, StoreError> {
        let user_id = user_id.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 AND expires_at > ?2
                 ORDER BY created_at"
            ))?;
            let sessions = stmt
                .query_map(params![user_id, now], session_from)?
                .collect::<Result<_, _>>()?;
            Ok(sessions)
        })
        .await
    }

    async fn revoke_by_token(&self, session_id: Uuid, token: TokenId) -> Result<bool, StoreError> {
        self.write(move |c| {
            let deleted = c.execute(
                "DELETE FROM sessions WHERE id = ?1 AND EXISTS
                 (SELECT 1 FROM refresh_tokens WHERE id = ?2 AND session_id = ?1)",
                params![session_id.as_bytes().as_slice(), token.0.as_slice()],
            )?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn revoke_session(&self, id: Uuid) -> Result<bool, StoreError> {
        self.write(move |c| {
            Ok(c.execute(
                "DELETE FROM sessions WHERE id = ?1",
                [id.as_bytes().as_slice()],
            )? > 0)
        })
        .await
    }

    async fn revoke_user_sessions(&self, user_id: &str) -> Result<usize, StoreError> {
        let user_id = user_id.to_owned();
        self.write(move |c| Ok(c.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])?))
            .await
    }

    async fn sweep(&self, now: UnixMs) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
            tx.execute("DELETE FROM refresh_tokens WHERE expires_at <= ?1", [now])?;
            tx.execute(
                "UPDATE refresh_tokens SET sealed_successor = NULL, sealed_until = NULL
                 WHERE sealed_until IS NOT NULL AND sealed_until <= ?1",
                [now],
            )?;
            Ok(())
        })
        .await
    }

    async fn record_key_publication(
        &self,
        kid: &str,
        now: UnixMs,
        publish_until: UnixMs,
    ) -> Result<KeyPublication, StoreError> {
        let kid = kid.to_owned();
        self.write(move |c| {
            let first_published = c.query_row(
                "INSERT INTO key_publications (kid, first_published, publish_until)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT (kid) DO UPDATE SET publish_until = excluded.publish_until
                 RETURNING first_published",
                params![kid, now, publish_until],
                |row| row.get(0),
            )?;
            Ok(KeyPublication {
                kid,
                first_published,
                publish_until,
            })
        })
        .await
    }

    async fn key_publications(&self) -> Result<Vec<KeyPublication>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT kid, first_published, publish_until FROM key_publications
                 ORDER BY first_published, kid",
            )?;
            let all = stmt
                .query_map([], |row| {
                    Ok(KeyPublication {
                        kid: row.get(0)?,
                        first_published: row.get(1)?,
                        publish_until: row.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(all)
        })
        .await
    }
}
