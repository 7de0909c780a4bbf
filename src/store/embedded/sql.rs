//! The embedded store's SQL: the schema, opening a connection, row mapping, and the statements
//! behind each store operation. Every function takes the connection it runs on: the read
//! connection, or the writer's current transaction.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::clock::UnixMs;
use crate::store::revocation_log::{join_sessions, split_sessions};
use crate::store::{
    Entitlement, Invalid, KeyPublication, NewSession, ReuseCause, RotateOutcome, Rotation, Session,
    StoreError, User,
};
use crate::store::{LogNote, LogPosition, RevocationReason, RevocationRecord};
use crate::tokens::TokenId;

pub(super) const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    epoch         INTEGER NOT NULL DEFAULT 0,
    scopes        TEXT NOT NULL DEFAULT '',
    email         TEXT,
    name          TEXT
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
    ip           TEXT NOT NULL,
    epoch        INTEGER NOT NULL DEFAULT 0,
    channel      TEXT NOT NULL DEFAULT 'body',
    login_user_agent TEXT NOT NULL DEFAULT '',
    login_ip     TEXT NOT NULL DEFAULT ''
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
    sealed_until         INTEGER,
    successor_id         BLOB
) STRICT;
-- By session and expiry: every rotation deletes its session's expired tokens, and a session
-- refreshed often holds many consumed ones; this keeps that delete to the rows it removes.
DROP INDEX IF EXISTS tokens_by_session;
CREATE INDEX IF NOT EXISTS tokens_by_session_expiry ON refresh_tokens (session_id, expires_at);
CREATE INDEX IF NOT EXISTS tokens_by_expiry ON refresh_tokens (expires_at);
CREATE TABLE IF NOT EXISTS key_publications (
    kid             TEXT PRIMARY KEY,
    first_published INTEGER NOT NULL,
    publish_until   INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS tokens_by_seal ON refresh_tokens (sealed_until)
    WHERE sealed_until IS NOT NULL;
-- Sessions revoked because reuse was detected, until they would have ended: a later
-- presentation of their tokens is still recognised.
CREATE TABLE IF NOT EXISTS revoked_for_reuse (
    session_id BLOB PRIMARY KEY,
    until      INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
-- The sign-in flow's short-lived records (Store::put_record).
CREATE TABLE IF NOT EXISTS records (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS records_by_expiry ON records (expires_at);
-- The revocation log (docs/revocation-feed.md): written in the revoking transaction, read in
-- order by the Shared Signals feed, dropped once no access token it concerns can be alive.
CREATE TABLE IF NOT EXISTS revocation_log (
    position   INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    keep_until INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    sessions   TEXT NOT NULL,
    cutoff     INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS revocation_log_by_keep ON revocation_log (keep_until);
";

/// Creates the database's directory (0700) and file (0600) when missing, before SQLite opens it:
/// the file holds password hashes and session IPs, and SQLite gives its WAL and shared-memory
/// files the database file's mode.
fn create_private(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(StoreError::unavailable)?;
    }
    // Only when missing: opening and closing the file while a connection of this process holds
    // it would drop that connection's POSIX locks (closing any descriptor of a file releases
    // all of the process's locks on it), and SQLite would then read and write without them.
    if path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        // Created meanwhile by another process (the CLI beside serve): fine.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::unavailable(e)),
    }
}

/// The store's files that other local users can read or write: an operator should `chmod` them.
/// (A directory latchkey did not create is the operator's choice and is not judged.)
pub fn permission_warnings(path: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let files: Vec<std::path::PathBuf> = ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut name = path.as_os_str().to_owned();
                name.push(suffix);
                std::path::PathBuf::from(name)
            })
            .collect();
        for file in files {
            if let Ok(meta) = std::fs::metadata(&file) {
                let mode = meta.permissions().mode() & 0o777;
                let private = 0o600;
                if mode & !private != 0 {
                    warnings.push(format!(
                        "{} is mode {mode:o}: other local users can read session data; \
                         chmod {private:o} it",
                        file.display()
                    ));
                }
            }
        }
    }
    warnings
}

/// Columns added since the first schema: added in place to files created before them.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("users", "epoch", "INTEGER NOT NULL DEFAULT 0"),
    ("sessions", "epoch", "INTEGER NOT NULL DEFAULT 0"),
    ("refresh_tokens", "successor_id", "BLOB"),
    ("sessions", "channel", "TEXT NOT NULL DEFAULT 'body'"),
    ("sessions", "login_user_agent", "TEXT NOT NULL DEFAULT ''"),
    ("sessions", "login_ip", "TEXT NOT NULL DEFAULT ''"),
    ("users", "scopes", "TEXT NOT NULL DEFAULT ''"),
    ("users", "email", "TEXT"),
    ("users", "name", "TEXT"),
    ("users", "email_verified", "INTEGER NOT NULL DEFAULT 0"),
    ("users", "preferred_username", "TEXT"),
    // `crate::usernames::look_alike_key`, unique: look-alike names cannot be two accounts.
    // NULL for users created before it was kept, until `index_look_alike` records it.
    ("users", "name_key", "TEXT"),
];

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    for (table, column, declaration) in ADDED_COLUMNS {
        let present: bool = conn.query_row(
            &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
            [column],
            |row| row.get(0),
        )?;
        if !present {
            match conn.execute(
                &format!("ALTER TABLE {table} ADD COLUMN {column} {declaration}"),
                [],
            ) {
                Ok(_) => {}
                // Another process (the CLI beside `serve`) added it first.
                Err(e) if e.to_string().contains("duplicate column") => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    conn.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS users_by_name_key ON users (name_key)",
        [],
    )?;
    // Users from before the key was kept get theirs; of two look-alikes the first keeps it and
    // the other stays without (`latchkey users check` lists them).
    let unkeyed: Vec<(String, String)> = conn
        .prepare("SELECT id, username FROM users WHERE name_key IS NULL")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, username) in unkeyed {
        conn.execute(
            "UPDATE users SET name_key = ?1 WHERE id = ?2
             AND NOT EXISTS (SELECT 1 FROM users WHERE name_key = ?1)",
            params![crate::usernames::look_alike_key(&username), id],
        )?;
    }
    Ok(())
}

pub(super) fn open_connection(
    path: &Path,
    durability: crate::config::Durability,
) -> Result<Connection, StoreError> {
    create_private(path)?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match durability {
        crate::config::Durability::Fsync => "FULL",
        crate::config::Durability::Process => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(SCHEMA)?;
    migrate(&conn)?;
    Ok(conn)
}

fn user_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        password_hash: row.get(2)?,
        disabled: row.get(3)?,
        created_at: row.get(4)?,
        epoch: row.get(5)?,
        scopes: row
            .get::<_, String>(6)?
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        email: row.get(7)?,
        name: row.get(8)?,
        email_verified: row.get(9)?,
        preferred_username: row.get(10)?,
    })
}

const USER_COLUMNS: &str = "id, username, password_hash, disabled, created_at, epoch, scopes, email, name, \
     email_verified, preferred_username";
const SESSION_COLUMNS: &str = "id, user_id, client_id, scope, created_at, last_used_at, \
     expires_at, user_agent, ip, login_user_agent, login_ip, channel";

fn session_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    let id: Vec<u8> = row.get(0)?;
    let id = Uuid::from_slice(&id).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })?;
    Ok(Session {
        id,
        user_id: row.get(1)?,
        client_id: row.get(2)?,
        scope: row.get(3)?,
        created_at: row.get(4)?,
        last_used_at: row.get(5)?,
        expires_at: row.get(6)?,
        user_agent: row.get(7)?,
        ip: row.get(8)?,
        login_user_agent: row.get(9)?,
        login_ip: row.get(10)?,
        dpop_jkt: super::super::bound_key(&row.get::<_, String>(11)?),
        channel: super::super::bound_channel(&row.get::<_, String>(11)?),
    })
}

/// `expires_at, used_at, successor_expires_at, sealed_successor, successor_id` of one token.
type TokenRow = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

/// The rotation's statements go through the connection's prepared-statement cache: the single
/// writer thread runs the same few thousands of times a second, and need not parse them each time.
fn cached_execute(
    tx: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(params)
}

fn cached_query_row<T>(
    tx: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    tx.prepare_cached(sql)?.query_row(params, f)
}

/// Run by every rotation: the session's consumed tokens whose own life is over.
const DELETE_EXPIRED_OF_SESSION: &str =
    "DELETE FROM refresh_tokens WHERE session_id = ?1 AND expires_at <= ?2";

/// The check-and-rotate, inside the writer's transaction. The same rules as the Redis script
/// (`store/lua/rotate.lua`), which the conformance suite holds both to.
/// `lag_ms`: how long the rotation waited for the writer; the token counts as consumed that
/// much after `r.now`, which starts its grace window.
pub(super) fn rotate(
    tx: &Connection,
    r: &Rotation,
    lag_ms: i64,
) -> Result<RotateOutcome, StoreError> {
    let sid = r.session_id.as_bytes().as_slice();
    let now = r.now;
    // Seals past their window go first, so none is ever handed out late.
    cached_execute(
        tx,
        "UPDATE refresh_tokens SET sealed_successor = NULL, sealed_until = NULL
         WHERE sealed_until IS NOT NULL AND sealed_until <= ?1",
        [now],
    )?;
    let family: Option<(String, String, String, i64, i64, String)> = cached_query_row(
        tx,
        "SELECT user_id, client_id, scope, expires_at, epoch, channel FROM sessions
             WHERE id = ?1",
        [sid],
        |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
            ))
        },
    )
    .optional()?;
    let Some((user_id, client_id, scope, family_expires, family_epoch, channel)) = family else {
        let tombstone: Option<i64> = cached_query_row(
            tx,
            "SELECT 1 FROM revoked_for_reuse WHERE session_id = ?1 AND until > ?2",
            params![sid, now],
            |row| row.get(0),
        )
        .optional()?;
        return Ok(RotateOutcome::Invalid(match tombstone {
            Some(_) => Invalid::RevokedForReuse,
            None => Invalid::Unknown,
        }));
    };
    if now >= family_expires {
        return Ok(RotateOutcome::Invalid(Invalid::ExpiredAbsolute));
    }
    // Bound to its client and channel: presented otherwise, refused before anything changes.
    if r.client_id.as_ref().is_some_and(|c| *c != client_id) {
        return Ok(RotateOutcome::Invalid(Invalid::WrongClient));
    }
    if let Some(why) = super::super::binding_refusal(&channel, r.channel, r.dpop_jkt.as_deref()) {
        return Ok(RotateOutcome::Invalid(why));
    }
    // The user's credentials changed, or the account was disabled or deleted, since this login.
    let user: Option<(bool, i64, String)> = cached_query_row(
        tx,
        "SELECT disabled, epoch, scopes FROM users WHERE id = ?1",
        [&user_id],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
    .optional()?;
    let held_scopes = match &user {
        Some((false, epoch, scopes)) if *epoch == family_epoch => scopes.clone(),
        _ => String::new(),
    };
    if user.is_none_or(|(disabled, epoch, _)| disabled || epoch != family_epoch) {
        cached_execute(tx, "DELETE FROM sessions WHERE id = ?1", [sid])?;
        return Ok(RotateOutcome::Invalid(Invalid::UserChanged));
    }
    let token: Option<TokenRow> = cached_query_row(
        tx,
        "SELECT expires_at, used_at, successor_expires_at, sealed_successor, successor_id
             FROM refresh_tokens WHERE id = ?1 AND session_id = ?2",
        params![r.presented.0.as_slice(), sid],
        |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        },
    )
    .optional()?;
    let Some((expires_at, used_at, successor_expires, sealed, successor_id)) = token else {
        return Ok(RotateOutcome::Invalid(Invalid::Unknown));
    };
    let entitlement = |successor_expires_at| Entitlement {
        user_id: user_id.clone(),
        client_id: client_id.clone(),
        scope: scope.clone(),
        successor_expires_at,
        held_scopes: held_scopes.clone(),
    };
    match used_at {
        None if now >= expires_at => Ok(RotateOutcome::Invalid(Invalid::ExpiredIdle)),
        None => {
            let next_expires = (now + r.idle_ttl_ms).min(family_expires);
            let (sealed, sealed_until) = if r.grace_ms > 0 {
                (
                    Some(r.sealed_successor.as_slice()),
                    Some(now + lag_ms + r.grace_ms),
                )
            } else {
                (None, None)
            };
            cached_execute(
                tx,
                "UPDATE refresh_tokens SET used_at = ?1, successor_expires_at = ?2,
                 sealed_successor = ?3, sealed_until = ?4, successor_id = ?5 WHERE id = ?6",
                params![
                    now + lag_ms,
                    next_expires,
                    sealed,
                    sealed_until,
                    r.successor.0.as_slice(),
                    r.presented.0.as_slice()
                ],
            )?;
            cached_execute(
                tx,
                "INSERT INTO refresh_tokens (id, session_id, expires_at) VALUES (?1, ?2, ?3)",
                params![r.successor.0.as_slice(), sid, next_expires],
            )?;
            cached_execute(
                tx,
                "UPDATE sessions SET last_used_at = ?1, user_agent = ?2, ip = ?3 WHERE id = ?4",
                params![now, r.user_agent, r.ip, sid],
            )?;
            cached_execute(tx, DELETE_EXPIRED_OF_SESSION, params![sid, now])?;
            Ok(RotateOutcome::Rotated(entitlement(next_expires)))
        }
        Some(used) => {
            // Within the grace window, the same successor again, while that successor is still
            // the live token: racing presentations keep one chain. A successor already consumed
            // means the chain moved on, and this is a replay of a spent token.
            let successor_live = match &successor_id {
                Some(id) => cached_query_row(
                    tx,
                    "SELECT used_at IS NULL FROM refresh_tokens WHERE id = ?1",
                    [id.as_slice()],
                    |row| row.get::<_, bool>(0),
                )
                .optional()?
                .unwrap_or(false),
                None => false,
            };
            if let (true, true, Some(sealed), Some(successor_expires)) = (
                now < used + r.grace_ms,
                successor_live,
                sealed,
                successor_expires,
            ) {
                return Ok(RotateOutcome::Replayed {
                    entitlement: entitlement(successor_expires),
                    sealed_successor: sealed,
                });
            }
            // Reuse: the whole family goes, its tokens with it (ON DELETE CASCADE).
            cached_execute(tx, "DELETE FROM sessions WHERE id = ?1", [sid])?;
            log_revocation(
                tx,
                &LogNote {
                    reason: RevocationReason::ReuseDetected,
                    at: now,
                    keep_until: r.log_keep_until,
                },
                &user_id,
                &[r.session_id],
            )?;
            cached_execute(
                tx,
                "INSERT OR REPLACE INTO revoked_for_reuse (session_id, until) VALUES (?1, ?2)",
                params![sid, family_expires],
            )?;
            let cause = if successor_live {
                ReuseCause::AfterGrace
            } else {
                ReuseCause::ConsumedSuccessor
            };
            Ok(RotateOutcome::Reused { user_id, cause })
        }
    }
}

pub(super) fn ping(c: &Connection) -> Result<(), StoreError> {
    Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)
}

pub(super) fn create_user(c: &Connection, user: &User) -> Result<(), StoreError> {
    let inserted = c.execute(
        "INSERT INTO users (id, username, password_hash, disabled, created_at, epoch, scopes,
         email, name, name_key, email_verified, preferred_username)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT DO NOTHING",
        params![
            user.id,
            user.username,
            user.password_hash,
            user.disabled,
            user.created_at,
            user.epoch,
            user.scopes.join(" "),
            user.email,
            user.name,
            crate::usernames::look_alike_key(&user.username),
            user.email_verified,
            user.preferred_username,
        ],
    )?;
    if inserted == 0 {
        let taken: bool = c.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1)",
            [&user.username],
            |row| row.get(0),
        )?;
        return Err(if taken {
            StoreError::Conflict
        } else {
            StoreError::LookAlike
        });
    }
    Ok(())
}

pub(super) fn index_look_alike(c: &Connection, user: &User) -> Result<bool, StoreError> {
    let key = crate::usernames::look_alike_key(&user.username);
    let holder: Option<String> = c
        .query_row("SELECT id FROM users WHERE name_key = ?1", [&key], |row| {
            row.get(0)
        })
        .optional()?;
    match holder {
        Some(id) => Ok(id == user.id),
        None => {
            c.execute(
                "UPDATE users SET name_key = ?1 WHERE id = ?2",
                params![key, user.id],
            )?;
            Ok(true)
        }
    }
}

pub(super) fn user_by_name(c: &Connection, username: &str) -> Result<Option<User>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
        [username],
        user_from,
    )
    .optional()?)
}

pub(super) fn user_by_id(c: &Connection, id: &str) -> Result<Option<User>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
        [id],
        user_from,
    )
    .optional()?)
}

pub(super) fn list_users(c: &Connection) -> Result<Vec<User>, StoreError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY username"
    ))?;
    let users = stmt.query_map([], user_from)?.collect::<Result<_, _>>()?;
    Ok(users)
}

/// Changes a user's record, bumps its epoch and ends every session, in the writer's
/// transaction (so atomically with respect to logins and rotations). `None`: no such user.
pub(super) fn change_user(
    c: &Connection,
    user_id: &str,
    set: &str,
    value: &dyn rusqlite::ToSql,
    note: &LogNote,
) -> Result<Option<usize>, StoreError> {
    let changed = c.execute(
        &format!("UPDATE users SET {set} = ?1, epoch = epoch + 1 WHERE id = ?2"),
        params![value, user_id],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    Ok(Some(revoke_user_sessions(c, user_id, note)?))
}

/// Appends a revocation to the log, in the caller's (the revocation's) transaction.
fn log_revocation(
    c: &Connection,
    note: &LogNote,
    user_id: &str,
    sessions: &[Uuid],
) -> Result<(), StoreError> {
    cached_execute(
        c,
        "INSERT INTO revocation_log (at, keep_until, reason, user_id, sessions, cutoff)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            note.at,
            note.keep_until,
            note.reason.as_str(),
            user_id,
            join_sessions(sessions),
            note.cutoff()
        ],
    )?;
    Ok(())
}

pub(super) fn revocations_after(
    c: &Connection,
    after: Option<LogPosition>,
    now: UnixMs,
    limit: usize,
) -> Result<Vec<RevocationRecord>, StoreError> {
    let after = i64::try_from(after.map_or(0, |p| p.1)).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = c.prepare_cached(
        "SELECT position, at, keep_until, reason, user_id, sessions, cutoff FROM revocation_log
         WHERE position > ?1 AND keep_until > ?2 ORDER BY position LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![after, now, limit], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, String>(5)?,
            row.get::<_, Option<i64>>(6)?,
        ))
    })?;
    let mut records = Vec::new();
    for row in rows {
        let (position, at, keep_until, reason, user_id, sessions, cutoff) = row?;
        // A reason this version does not know (written by a newer one) is skipped.
        let Some(reason) = RevocationReason::parse(&reason) else {
            continue;
        };
        records.push(RevocationRecord {
            position: LogPosition(0, u64::try_from(position).unwrap_or(0)),
            at,
            keep_until,
            reason,
            user_id,
            sessions: split_sessions(&sessions),
            cutoff,
        });
    }
    Ok(records)
}

pub(super) fn upgrade_password_hash(
    c: &Connection,
    user_id: &str,
    old_hash: &str,
    new_hash: &str,
) -> Result<bool, StoreError> {
    Ok(c.execute(
        "UPDATE users SET password_hash = ?1 WHERE id = ?2 AND password_hash = ?3",
        params![new_hash, user_id, old_hash],
    )? == 1)
}

pub(super) fn set_user_attributes(
    c: &Connection,
    user_id: &str,
    a: &crate::store::UserAttributes,
) -> Result<bool, StoreError> {
    Ok(c.execute(
        "UPDATE users SET scopes = ?1, email = ?2, name = ?3, email_verified = ?4,
         preferred_username = ?5 WHERE id = ?6",
        params![
            a.scopes.join(" "),
            a.email,
            a.name,
            a.email_verified,
            a.preferred_username,
            user_id
        ],
    )? == 1)
}

pub(super) fn delete_user(
    c: &Connection,
    user_id: &str,
    note: &LogNote,
) -> Result<Option<usize>, StoreError> {
    if c.execute("DELETE FROM users WHERE id = ?1", [user_id])? == 0 {
        return Ok(None);
    }
    Ok(Some(revoke_user_sessions(c, user_id, note)?))
}

pub(super) fn create_session(tx: &Connection, s: &NewSession) -> Result<bool, StoreError> {
    // Only while the user is enabled and at the epoch the login saw.
    let inserted = tx.execute(
        "INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at,
         expires_at, user_agent, ip, epoch, channel, login_user_agent, login_ip)
         SELECT ?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?7, ?8
         WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2 AND disabled = 0 AND epoch = ?9)",
        params![
            s.id.as_bytes().as_slice(),
            s.user_id,
            s.client_id,
            s.scope,
            s.created_at,
            s.expires_at,
            s.user_agent,
            s.ip,
            s.user_epoch,
            super::super::binding(s.channel, s.dpop_jkt.as_deref())
        ],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO refresh_tokens (id, session_id, expires_at) VALUES (?1, ?2, ?3)",
        params![
            s.first_token.0.as_slice(),
            s.id.as_bytes().as_slice(),
            s.first_token_expires_at
        ],
    )?;
    Ok(true)
}

pub(super) fn session(
    c: &Connection,
    id: Uuid,
    now: UnixMs,
) -> Result<Option<Session>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1 AND expires_at > ?2"),
        params![id.as_bytes().as_slice(), now],
        session_from,
    )
    .optional()?)
}

pub(super) fn live_refresh_token(
    c: &Connection,
    session_id: Uuid,
    token: TokenId,
    now: UnixMs,
) -> Result<Option<(Session, UnixMs)>, StoreError> {
    let expires_at: Option<i64> = c
        .query_row(
            "SELECT expires_at FROM refresh_tokens
             WHERE id = ?1 AND session_id = ?2 AND used_at IS NULL AND expires_at > ?3",
            params![token.0.as_slice(), session_id.as_bytes().as_slice(), now],
            |row| row.get(0),
        )
        .optional()?;
    let Some(expires_at) = expires_at else {
        return Ok(None);
    };
    Ok(session(c, session_id, now)?.map(|s| (s, expires_at)))
}

pub(super) fn sessions_of(
    c: &Connection,
    user_id: &str,
    now: UnixMs,
) -> Result<Vec<Session>, StoreError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 AND expires_at > ?2
         ORDER BY created_at DESC"
    ))?;
    let sessions = stmt
        .query_map(params![user_id, now], session_from)?
        .collect::<Result<_, _>>()?;
    Ok(sessions)
}

pub(super) fn revoke_by_token(
    c: &Connection,
    session_id: Uuid,
    token: TokenId,
    note: &LogNote,
) -> Result<bool, StoreError> {
    let user_id: Option<String> = c
        .query_row(
            "DELETE FROM sessions WHERE id = ?1 AND EXISTS
             (SELECT 1 FROM refresh_tokens WHERE id = ?2 AND session_id = ?1)
             RETURNING user_id",
            params![session_id.as_bytes().as_slice(), token.0.as_slice()],
            |row| row.get(0),
        )
        .optional()?;
    match user_id {
        Some(user_id) => {
            log_revocation(c, note, &user_id, &[session_id])?;
            Ok(true)
        }
        None => Ok(false),
    }
}

pub(super) fn revoke_session(c: &Connection, id: Uuid, note: &LogNote) -> Result<bool, StoreError> {
    let user_id: Option<String> = c
        .query_row(
            "DELETE FROM sessions WHERE id = ?1 RETURNING user_id",
            [id.as_bytes().as_slice()],
            |row| row.get(0),
        )
        .optional()?;
    match user_id {
        Some(user_id) => {
            log_revocation(c, note, &user_id, &[id])?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Ends every session of `client_id`, one log record each.
pub(super) fn revoke_client_sessions(
    c: &Connection,
    client_id: &str,
    note: &LogNote,
) -> Result<usize, StoreError> {
    let mut stmt =
        c.prepare_cached("DELETE FROM sessions WHERE client_id = ?1 RETURNING id, user_id")?;
    let ended = stmt
        .query_map([client_id], |row| {
            Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, user_id) in &ended {
        if let Ok(sid) = Uuid::from_slice(id) {
            log_revocation(c, note, user_id, &[sid])?;
        }
    }
    Ok(ended.len())
}

/// Ends every session of the user and logs a per-user record, even when none was live: its
/// cutoff still refuses tokens of a login that was in flight.
pub(super) fn revoke_user_sessions(
    c: &Connection,
    user_id: &str,
    note: &LogNote,
) -> Result<usize, StoreError> {
    let mut stmt = c.prepare_cached("DELETE FROM sessions WHERE user_id = ?1 RETURNING id")?;
    let ended = stmt
        .query_map([user_id], |row| row.get::<_, Vec<u8>>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter_map(|id| Uuid::from_slice(&id).ok())
        .collect::<Vec<_>>();
    log_revocation(c, note, user_id, &ended)?;
    Ok(ended.len())
}

pub(super) fn sweep(tx: &Connection, now: UnixMs) -> Result<(), StoreError> {
    tx.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
    tx.execute("DELETE FROM revoked_for_reuse WHERE until <= ?1", [now])?;
    tx.execute("DELETE FROM records WHERE expires_at <= ?1", [now])?;
    tx.execute("DELETE FROM revocation_log WHERE keep_until <= ?1", [now])?;
    tx.execute("DELETE FROM refresh_tokens WHERE expires_at <= ?1", [now])?;
    tx.execute(
        "UPDATE refresh_tokens SET sealed_successor = NULL, sealed_until = NULL
         WHERE sealed_until IS NOT NULL AND sealed_until <= ?1",
        [now],
    )?;
    Ok(())
}

pub(super) fn record_key_publication(
    c: &Connection,
    kid: &str,
    now: UnixMs,
    publish_until: UnixMs,
) -> Result<KeyPublication, StoreError> {
    let first_published = c.query_row(
        "INSERT INTO key_publications (kid, first_published, publish_until)
         VALUES (?1, ?2, ?3)
         ON CONFLICT (kid) DO UPDATE SET publish_until = excluded.publish_until
         RETURNING first_published",
        params![kid, now, publish_until],
        |row| row.get(0),
    )?;
    Ok(KeyPublication {
        kid: kid.to_owned(),
        first_published,
        publish_until,
    })
}

pub(super) fn key_publications(c: &Connection) -> Result<Vec<KeyPublication>, StoreError> {
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
}

pub(super) fn put_meta(c: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

pub(super) fn get_meta(c: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(
        c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .optional()?,
    )
}

pub(super) fn put_record(
    c: &Connection,
    key: &str,
    value: &str,
    expires_at: UnixMs,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO records (key, value, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
        params![key, value, expires_at],
    )?;
    Ok(())
}

pub(super) fn record(c: &Connection, key: &str, now: UnixMs) -> Result<Option<String>, StoreError> {
    Ok(c.query_row(
        "SELECT value FROM records WHERE key = ?1 AND expires_at > ?2",
        params![key, now],
        |row| row.get(0),
    )
    .optional()?)
}

/// One statement reads and replaces, inside the writer's transaction: no second swap can see
/// the value this one replaced.
pub(super) fn swap_record(
    c: &Connection,
    key: &str,
    value: &str,
    now: UnixMs,
) -> Result<Option<String>, StoreError> {
    let old = record(c, key, now)?;
    if old.is_some() {
        c.execute(
            "UPDATE records SET value = ?2 WHERE key = ?1",
            params![key, value],
        )?;
    }
    Ok(old)
}

pub(super) fn delete_record(c: &Connection, key: &str) -> Result<(), StoreError> {
    c.execute("DELETE FROM records WHERE key = ?1", [key])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session rotated thousands of times keeps that many consumed tokens until their idle
    /// expiry; the per-rotation cleanup must seek to the expired ones, not walk them all (it did,
    /// and the embedded store's refresh rate fell as sessions aged).
    #[test]
    fn the_rotation_cleanup_seeks_by_session_and_expiry() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {DELETE_EXPIRED_OF_SESSION}"))
            .unwrap()
            .query_map(params![b"sid".as_slice(), 0], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains(
                "USING COVERING INDEX tokens_by_session_expiry (session_id=? AND expires_at<?)"
            )),
            "{plan:?}"
        );
    }
}
