//! The Redis backend: one multiplexed connection manager, Lua scripts for every multi-key step.
//!
//! Key layout. Everything of one user shares one hash slot, tagged `{T}` where `T` is the user's
//! slot tag (the first 4 bytes of SHA-256 of the user id, in hex; a session id starts with the
//! same 4 bytes, so a refresh token names its slot): `lk:{T}:u:<uid>` (hash: the user, with its
//! credential `epoch`), `lk:{T}:s:<uid>` (zset: the user's session ids by expiry),
//! `lk:{T}:f:<sid>` (hash: one session, its live and last consumed token ids (first 16 bytes) and a
//! capped history of consumed-token fingerprints), `lk:{T}:x:<sid>` (the sealed successor, for
//! the grace window only). So a rotation checks the user's epoch in the same script that swaps
//! the token, and a password change revokes every session in one step, on Redis Cluster too.
//! Usernames live in the slot `{users}`: `lk:{users}:name:<username>` (-> uid) and
//! `lk:{users}:all` (set of uids). Every session key carries a TTL no later than its session's
//! end, so Redis itself forgets what has expired.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::revocation_log::{
    LogNote, LogPosition, RevocationReason, RevocationRecord, split_sessions,
};
use super::{
    Entitlement, Invalid, KeyPublication, NewSession, ReuseCause, RotateOutcome, Rotation, Session,
    SharedCounters, Store, StoreError, User, UserAttributes,
};
use crate::clock::{UnixMs, system_ms};
use crate::config::RedisOptions;
use crate::tokens::{TokenId, user_slot_tag};

/// How long one command may take before the caller answers 503.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A rotation must finish this long before the caller's timeout, so that an answer that arrives
/// is one the caller still waits for.
const DEADLINE_MARGIN_MS: i64 = 250;
/// Consumed-token fingerprints a session remembers for reuse detection. Presenting a token older
/// than that is simply invalid: its successors have long been used, so it gains nothing.
const HISTORY: i64 = 32;

/// Throttle counters on their own multiplexed connection (`limits.rs`): one count per login
/// attempt, shared by every instance.
pub struct RedisCounters {
    client: Target,
    conn: ConnCell,
    counter: Script,
    backoff: Script,
}

const COUNTERS: &str = "lk:lim:";

#[async_trait]
impl SharedCounters for RedisCounters {
    async fn add(&self, key: &str, by: u32, window_ms: i64) -> Result<(u32, i64), StoreError> {
        let key = format!("{COUNTERS}{key}");
        // Safe to run twice: a count of one attempt twice only throttles a little sooner.
        let (count, ttl): (i64, i64) = retried_once(&self.client, &self.conn, |mut conn| {
            let key = key.clone();
            async move {
                self.counter
                    .key(key)
                    .arg(by)
                    .arg(window_ms.max(1))
                    .invoke_async(&mut conn)
                    .await
            }
        })
        .await?;
        Ok((u32::try_from(count).unwrap_or(u32::MAX), ttl.max(0)))
    }

    async fn claim(&self, key: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        // One plain SET NX, not retried: had a first attempt landed with its reply lost, a retry
        // would find the key and refuse a proof that was never used (the client gets a 503 and
        // sends a new proof instead).
        let mut conn = connect(&self.client, &self.conn).await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{COUNTERS}{key}"))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let key = format!("{COUNTERS}{key}");
        let _: i64 = retried_once(&self.client, &self.conn, |mut conn| {
            let key = key.clone();
            async move { conn.del(key).await }
        })
        .await?;
        Ok(())
    }

    async fn backoff_failure(
        &self,
        key: &str,
        now: UnixMs,
        threshold: u32,
        window_ms: i64,
        max_lockout_ms: i64,
    ) -> Result<UnixMs, StoreError> {
        let key = format!("{COUNTERS}{key}");
        // Safe to run twice: a failure counted twice only locks a little sooner.
        retried_once(&self.client, &self.conn, |mut conn| {
            let key = key.clone();
            async move {
                self.backoff
                    .key(key)
                    .arg(now)
                    .arg(threshold)
                    .arg(window_ms.max(1))
                    .arg(max_lockout_ms.max(1))
                    .invoke_async(&mut conn)
                    .await
            }
        })
        .await
    }

    async fn locked_until(&self, key: &str) -> Result<UnixMs, StoreError> {
        let key = format!("{COUNTERS}{key}");
        let until: Option<i64> = retried_once(&self.client, &self.conn, |mut conn| {
            let key = key.clone();
            async move { conn.hget(key, "locked_until").await }
        })
        .await?;
        Ok(until.unwrap_or(0))
    }
}

/// Runs `command` on the connection of `cell`; when the connection turns out broken (Redis
/// restarted, failed over) or, behind Sentinels, the server a replica now, once more on a
/// connection made again, so no request fails once Redis is reachable. Only for commands that
/// may safely run twice.
async fn retried_once<T, F, Fut>(
    client: &Target,
    cell: &ConnCell,
    command: F,
) -> Result<T, StoreError>
where
    F: Fn(Conn) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    match command(connect(client, cell).await?).await {
        Err(e) if needs_new_connection(&e) => {
            forget_if_sentinel(client, cell);
            Ok(command(connect(client, cell).await?).await?)
        }
        other => Ok(other?),
    }
}

/// Behind Sentinels, drops `cell`'s connection so the next one asks who the master is; a single
/// server's or a cluster's connection mends itself.
fn forget_if_sentinel(client: &Target, cell: &ConnCell) {
    if matches!(client, Target::Sentinel(_)) {
        cell.forget();
    }
}

/// Where the store's Redis is: one server (or a TLS one), or a Redis Cluster.
enum Target {
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
    /// The master the Sentinels name, asked again whenever the connection breaks or the server
    /// turns out to be a replica now.
    Sentinel(Box<tokio::sync::Mutex<redis::sentinel::SentinelClient>>),
}

/// A connection to one Redis (a manager that reconnects by itself) or to a Redis Cluster
/// (routing each command by its keys' slot, following MOVED/ASK and failovers). Every multi-key
/// step keeps its keys in one slot (the user's hash tag), so the same commands and scripts run
/// on both.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Connections made on first use and kept, one per thread: each actix worker runs its own
/// single-threaded runtime, and a connection made there is driven there, so a command and its
/// reply never hop between threads (a profile of the refresh path found those wake-ups at about
/// a sixth of the issuer's CPU). All are forgotten (to be made again) when the Sentinel target's
/// master may have changed.
#[derive(Default)]
struct ConnCell {
    conns: std::sync::RwLock<HashMap<std::thread::ThreadId, Conn>>,
    making: tokio::sync::Mutex<()>,
}

impl ConnCell {
    fn current(&self) -> Option<Conn> {
        self.conns
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&std::thread::current().id())
            .cloned()
    }

    fn keep(&self, conn: &Conn) {
        self.conns
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(std::thread::current().id(), conn.clone());
    }

    fn forget(&self) {
        self.conns
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

/// The connection of `cell`, made on first use with bounded waits: a dead Redis turns into a
/// quick 503, never a hung request.
async fn connect(client: &Target, cell: &ConnCell) -> Result<Conn, StoreError> {
    if let Some(conn) = cell.current() {
        return Ok(conn);
    }
    let _making = cell.making.lock().await;
    if let Some(conn) = cell.current() {
        return Ok(conn);
    }
    let conn = match client {
        Target::Single(client) => Conn::Single(
            client
                .get_connection_manager_with_config(manager_config())
                .await?,
        ),
        Target::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
        Target::Sentinel(sentinel) => {
            // Ask the sentinels who the master is now, bounded like any connection.
            let master = tokio::time::timeout(Duration::from_secs(2), async {
                sentinel.lock().await.async_get_client().await
            })
            .await
            .map_err(|_| StoreError::Unavailable("the sentinels did not answer".into()))??;
            Conn::Single(
                master
                    .get_connection_manager_with_config(manager_config())
                    .await?,
            )
        }
    };
    cell.keep(&conn);
    Ok(conn)
}

/// `[USER@]H1:P1,H2:P2,…`: the user, if any, and each node as a `redis://` URL; `None` when no
/// node is named.
fn node_list(hosts: &str) -> Option<(Option<&str>, Vec<String>)> {
    let (user, hosts) = match hosts.rsplit_once('@') {
        Some((user, hosts)) => (Some(user), hosts),
        None => (None, hosts),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{h}"))
        .collect();
    (!nodes.is_empty()).then_some((user, nodes))
}

/// `redis+sentinel://[USER@]S1:P1,S2:P2/MASTER[/DB]`: Sentinels that know the master by name.
fn sentinel_client(url: &str, password: Option<String>) -> Result<Target, StoreError> {
    let bad = || {
        StoreError::Unavailable(
            "cannot parse the sentinel URL (redis+sentinel://S1:P1,S2:P2/MASTER[/DB])".into(),
        )
    };
    let rest = url.strip_prefix("redis+sentinel://").ok_or_else(bad)?;
    let mut parts = rest.trim_end_matches('/').split('/');
    let (user, sentinels) = parts.next().and_then(node_list).ok_or_else(bad)?;
    let master = parts.next().filter(|m| !m.is_empty()).ok_or_else(bad)?;
    let db: i64 = parts.next().map_or(Ok(0), str::parse).map_err(|_| bad())?;
    // The master and replicas take the credentials; the sentinels here need none.
    let mut node = redis::RedisConnectionInfo::default().set_db(db);
    if let Some(user) = user {
        node = node.set_username(user);
    }
    if let Some(password) = password {
        node = node.set_password(password);
    }
    let client = redis::sentinel::SentinelClient::build(
        sentinels,
        master,
        Some(
            redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(node),
        ),
        redis::sentinel::SentinelServerType::Master,
    )?;
    Ok(Target::Sentinel(Box::new(tokio::sync::Mutex::new(client))))
}

/// `redis+cluster://[USER@]H1:P1,H2:P2,…`: the seed nodes of a Redis Cluster (it has one
/// database; a `/DB` suffix is refused by the config check).
fn cluster_client(url: &str, password: Option<String>) -> Result<Target, StoreError> {
    let bad = || StoreError::Unavailable("cannot parse the cluster URL's nodes".into());
    let rest = url.strip_prefix("redis+cluster://").ok_or_else(bad)?;
    let (user, nodes) = node_list(rest.trim_end_matches('/')).ok_or_else(bad)?;
    let mut builder = redis::cluster::ClusterClient::builder(nodes)
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(RESPONSE_TIMEOUT);
    if let Some(user) = user {
        builder = builder.username(user);
    }
    if let Some(password) = password {
        builder = builder.password(password);
    }
    Ok(Target::Cluster(Box::new(builder.build()?)))
}

pub struct RedisStore {
    counters: Arc<RedisCounters>,
    client: Target,
    /// Connected on first use, so the issuer starts (and reports not-ready) while Redis is down.
    conn: ConnCell,
    rotate: Script,
    create_session: Script,
    revoke_family: Script,
    revoke_user: Script,
    list_sessions: Script,
    create_user: Script,
    upgrade_hash: Script,
    delete_user: Script,
    swap_record: Script,
    append_log: Script,
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::unavailable(e)
    }
}

/// A file the store settings name (a password, a certificate, a key): its path in the error,
/// never its content.
fn read_secret_file(path: &std::path::Path) -> Result<String, StoreError> {
    std::fs::read_to_string(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot read {}: {e}", path.display()).into()))
}

/// `lk:{T}:`, the prefix of every key in one user's slot.
fn slot(tag: &[u8; 4]) -> String {
    format!("lk:{{{}}}:", crate::encoding::hex(tag))
}

fn user_slot(uid: &str) -> String {
    slot(&user_slot_tag(uid))
}

fn session_slot(sid: Uuid) -> String {
    let b = sid.as_bytes();
    slot(&[b[0], b[1], b[2], b[3]])
}

fn sid_member(sid: Uuid) -> String {
    sid.simple().to_string()
}

fn username_key(name: &str) -> String {
    format!("lk:{{users}}:name:{name}")
}

/// Who holds a look-alike key (`crate::usernames::look_alike_key`), in the same slot.
fn look_alike_key(name: &str) -> String {
    format!(
        "lk:{{users}}:alike:{}",
        crate::usernames::look_alike_key(name)
    )
}

const USERS: &str = "lk:{users}:all";
// One hash tag: a publication updates both in one step, in one slot on Redis Cluster.
const KEYS_FIRST_PUBLISHED: &str = "lk:{keys}:first";
const KEYS_PUBLISH_UNTIL: &str = "lk:{keys}:until";
const META: &str = "lk:meta";
/// The revocation log, a stream in a slot of its own (`docs/revocation-feed.md`).
const REVOCATION_LOG: &str = "lk:{log}:revocations";

impl RedisStore {
    pub fn new(url: &str) -> Result<RedisStore, StoreError> {
        Self::with_options(url, &RedisOptions::default())
    }

    /// `redis://` or `rediss://`, with a password from the options (replacing one in the URL)
    /// and, for TLS, the CA and client certificate files they name.
    pub fn with_options(url: &str, options: &RedisOptions) -> Result<RedisStore, StoreError> {
        let password = match (&options.password, &options.password_file) {
            (Some(password), _) => Some(password.clone()),
            (None, Some(file)) => Some(read_secret_file(file)?.trim_end().to_owned()),
            (None, None) => None,
        };
        if url.starts_with("redis+cluster://") {
            return Ok(Self::on_pair(
                cluster_client(url, password.clone())?,
                cluster_client(url, password)?,
            ));
        }
        if url.starts_with("redis+sentinel://") {
            // Two targets, as with any URL: one for the store, one for the counters.
            return Ok(Self::on_pair(
                sentinel_client(url, password.clone())?,
                sentinel_client(url, password)?,
            ));
        }
        let mut info = redis::IntoConnectionInfo::into_connection_info(url)?;
        if let Some(password) = password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = if url.starts_with("rediss://") {
            // One process-wide provider: aws-lc-rs, as for everything else. A second call
            // finds it installed, which is fine.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let root_cert = options
                .tls_ca_file
                .as_deref()
                .map(read_secret_file)
                .transpose()?
                .map(String::into_bytes);
            let client_tls = match (&options.tls_cert_file, &options.tls_key_file) {
                (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                    client_cert: read_secret_file(cert)?.into_bytes(),
                    client_key: read_secret_file(key)?.into_bytes(),
                }),
                _ => None,
            };
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )?
        } else {
            redis::Client::open(info)?
        };
        Ok(Self::on_pair(
            Target::Single(Box::new(client.clone())),
            Target::Single(Box::new(client)),
        ))
    }

    fn on_pair(client: Target, counters: Target) -> RedisStore {
        RedisStore {
            counters: Arc::new(RedisCounters {
                client: counters,
                conn: ConnCell::default(),
                counter: Script::new(include_str!("lua/counter.lua")),
                backoff: Script::new(include_str!("lua/backoff.lua")),
            }),
            client,
            conn: ConnCell::default(),
            rotate: Script::new(concat!(
                include_str!("lua/append_revocation.lua"),
                include_str!("lua/rotate.lua")
            )),
            create_session: Script::new(include_str!("lua/create_session.lua")),
            revoke_family: Script::new(concat!(
                include_str!("lua/append_revocation.lua"),
                include_str!("lua/revoke_family.lua")
            )),
            revoke_user: Script::new(concat!(
                include_str!("lua/append_revocation.lua"),
                include_str!("lua/revoke_user.lua")
            )),
            list_sessions: Script::new(include_str!("lua/list_sessions.lua")),
            create_user: Script::new(include_str!("lua/create_user.lua")),
            upgrade_hash: Script::new(include_str!("lua/upgrade_hash.lua")),
            delete_user: Script::new(concat!(
                include_str!("lua/append_revocation.lua"),
                include_str!("lua/delete_user.lua")
            )),
            swap_record: Script::new(include_str!("lua/swap_record.lua")),
            append_log: Script::new(concat!(
                include_str!("lua/append_revocation.lua"),
                include_str!("lua/append_log.lua")
            )),
        }
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        connect(&self.client, &self.conn).await
    }

    /// Behind Sentinels, drops the connection so the next call asks who the master is.
    fn forget_connection(&self) {
        forget_if_sentinel(&self.client, &self.conn);
    }

    async fn load_user(&self, conn: &mut Conn, uid: &str) -> Result<Option<User>, StoreError> {
        let h: HashMap<String, String> = conn.hgetall(format!("{}u:{uid}", user_slot(uid))).await?;
        user_from(uid, &h)
    }
}

/// `HMGET` of a session's named fields (the token ids beside them are binary).
fn session_fields(id: Uuid) -> redis::Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(format!("{}f:{}", session_slot(id), sid_member(id)))
        .arg(&SESSION_FIELDS[..]);
    cmd
}

/// The session of [`session_fields`]'s answer, if it exists and is live at `now`.
fn live_session(
    id: Uuid,
    fields: Vec<Option<Vec<u8>>>,
    now: UnixMs,
) -> Result<Option<Session>, StoreError> {
    if fields.first().is_none_or(Option::is_none) {
        return Ok(None);
    }
    let mut parts = vec![sid_member(id).into_bytes()];
    parts.extend(fields.into_iter().map(Option::unwrap_or_default));
    let session = session_from(&parts)?;
    Ok((now < session.expires_at).then_some(session))
}

/// A user from its record's fields; `None` for no record.
fn user_from(uid: &str, h: &HashMap<String, String>) -> Result<Option<User>, StoreError> {
    if h.is_empty() {
        return Ok(None);
    }
    Ok(Some(User {
        id: uid.to_owned(),
        username: field(h, "name")?,
        password_hash: field(h, "hash")?,
        disabled: field(h, "disabled")? == "1",
        created_at: int_field(h, "created")?,
        epoch: int_field(h, "epoch")?,
        scopes: split_scopes(h.get("scopes").map_or("", String::as_str)),
        email: h.get("email").filter(|e| !e.is_empty()).cloned(),
        name: h.get("dname").filter(|n| !n.is_empty()).cloned(),
        email_verified: h.get("email_verified").is_some_and(|v| v == "1"),
        preferred_username: h.get("pname").filter(|n| !n.is_empty()).cloned(),
    }))
}

impl RedisStore {
    /// Ends every session of `uid`, bumping its epoch and setting `fields` in the same step when
    /// asked. `None` when there is no such user.
    async fn end_sessions(
        &self,
        uid: &str,
        bump_epoch: bool,
        fields: &[(&str, &str)],
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        self.change_user(uid, bump_epoch, fields, Some(note)).await
    }

    /// Sets `fields` of `uid` (bumping its epoch when asked) and, when a log note is given, ends
    /// every session and logs the revocation in the same step. `None` when there is no such user.
    async fn change_user(
        &self,
        uid: &str,
        bump_epoch: bool,
        fields: &[(&str, &str)],
        end: Option<&LogNote>,
    ) -> Result<Option<usize>, StoreError> {
        let mut conn = self.conn().await?;
        let prefix = user_slot(uid);
        let mut invocation = self.revoke_user.prepare_invoke();
        invocation
            .key(format!("{prefix}u:{uid}"))
            .key(format!("{prefix}s:{uid}"));
        if end.is_some()
            && let Some(log) = self.log_in_script()
        {
            invocation.key(log);
        }
        invocation
            .arg(&prefix)
            .arg(if bump_epoch { "1" } else { "0" })
            .arg(if end.is_some() { "1" } else { "0" })
            .arg(end.map(LogNote::packed).unwrap_or_default())
            .arg(uid)
            .arg(
                end.and_then(LogNote::cutoff)
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
            );
        for (name, value) in fields {
            invocation.arg(*name).arg(*value);
        }
        let (ended, sids): (i64, String) = invocation.invoke_async(&mut conn).await?;
        if ended >= 0
            && let Some(note) = end
        {
            self.append_after_script(&mut conn, note, uid, &sids)
                .await?;
        }
        Ok(usize::try_from(ended).ok())
    }

    /// Revokes one family (only if it issued `token`, when given) and logs it.
    async fn revoke_family(
        &self,
        id: Uuid,
        token: Option<TokenId>,
        note: &LogNote,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let prefix = session_slot(id);
        let sid = sid_member(id);
        let mut invocation = self.revoke_family.prepare_invoke();
        invocation
            .key(format!("{prefix}f:{sid}"))
            .key(format!("{prefix}x:{sid}"));
        if let Some(log) = self.log_in_script() {
            invocation.key(log);
        }
        invocation
            .arg(&sid)
            .arg(format!("{prefix}s:"))
            .arg(note.packed());
        if let Some(token) = token {
            invocation.arg(token.0.as_slice());
        }
        let uid: Option<String> = invocation.invoke_async(&mut conn).await?;
        if let Some(uid) = &uid {
            self.append_after_script(&mut conn, note, uid, &sid).await?;
        }
        Ok(uid.is_some())
    }

    /// The key of every session family, by SCAN on each master (a Cluster's too). Bounded:
    /// at most `MAX_SCAN_STEPS` steps per master.
    async fn families(&self, conn: &mut Conn) -> Result<Vec<String>, StoreError> {
        const MAX_SCAN_STEPS: usize = 100_000;
        let mut found = Vec::new();
        let masters = match conn {
            Conn::Cluster(cluster) => cluster_masters(cluster).await?,
            _ => vec![None],
        };
        for master in masters {
            let mut cursor = 0u64;
            for _ in 0..MAX_SCAN_STEPS {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg("lk:{*}:f:*")
                    .arg("COUNT")
                    .arg(1000);
                let (next, keys): (u64, Vec<String>) = match (&master, &mut *conn) {
                    (Some((host, port)), Conn::Cluster(cluster)) => {
                        let routing = redis::cluster_routing::RoutingInfo::SingleNode(
                            redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port: *port,
                            },
                        );
                        let value = cluster.route_command(scan, routing).await?;
                        redis::from_redis_value(value)
                            .map_err(|e| StoreError::Corrupt(format!("SCAN answer: {e}")))?
                    }
                    (_, conn) => scan.query_async(conn).await?,
                };
                found.extend(keys);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(found)
    }

    fn on_cluster(&self) -> bool {
        matches!(self.client, Target::Cluster(_))
    }

    /// The log key a revoking script appends to in its own step: none on a Cluster, where the
    /// log lives in another slot than the user's keys.
    fn log_in_script(&self) -> Option<&'static str> {
        (!self.on_cluster()).then_some(REVOCATION_LOG)
    }

    /// On a Cluster, appends right after the script the record it could not write (the log is
    /// in another slot), retried: the revocation is done, and resource servers only learn of it
    /// from the log. Elsewhere the script wrote it: nothing to do. `sids`: simple ids joined by
    /// commas.
    async fn append_after_script(
        &self,
        conn: &mut Conn,
        note: &LogNote,
        uid: &str,
        sids: &str,
    ) -> Result<(), StoreError> {
        if !self.on_cluster() {
            return Ok(());
        }
        let mut last = None;
        for attempt in 0..3u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            let appended: redis::RedisResult<i64> = self
                .append_log
                .key(REVOCATION_LOG)
                .arg(note.packed())
                .arg(uid)
                .arg(sids)
                .arg(note.cutoff().map(|c| c.to_string()).unwrap_or_default())
                .invoke_async(conn)
                .await;
            match appended {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        let e = last.map_or_else(|| StoreError::Unavailable("no attempt".into()), Into::into);
        tracing::error!(
            event = "revocation_log.append_failed",
            %uid,
            error = %crate::telemetry::error_chain(&e),
            "sessions were revoked but the revocation log could not record it: resource servers \
             following the feed keep accepting their access tokens until they expire"
        );
        Err(e)
    }
}

/// Every master of a cluster, as `(host, port)`, from `CLUSTER NODES`.
async fn cluster_masters(
    cluster: &mut redis::cluster_async::ClusterConnection,
) -> Result<Vec<Option<(String, u16)>>, StoreError> {
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(cluster)
        .await?;
    Ok(nodes
        .lines()
        .filter(|line| {
            let flags = line.split(' ').nth(2).unwrap_or("");
            flags.split(',').any(|f| f == "master") && !flags.contains("fail")
        })
        .filter_map(|line| {
            let address = line.split(' ').nth(1)?.split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some(Some((host.to_owned(), port.parse().ok()?)))
        })
        .collect())
}

/// A stream entry of the log as a record; `None` for one that cannot be read (skipped, so one
/// bad entry never blocks the feed).
fn revocation_from(id: &str, fields: &HashMap<String, String>) -> Option<RevocationRecord> {
    Some(RevocationRecord {
        position: id.parse().ok()?,
        at: fields.get("at")?.parse().ok()?,
        keep_until: fields.get("keep")?.parse().ok()?,
        reason: RevocationReason::parse(fields.get("why")?)?,
        user_id: fields.get("uid")?.clone(),
        sessions: split_sessions(fields.get("sids").map_or("", String::as_str)),
        cutoff: fields.get("cut").and_then(|c| c.parse().ok()),
    })
}

fn field(h: &HashMap<String, String>, name: &str) -> Result<String, StoreError> {
    h.get(name)
        .cloned()
        .ok_or_else(|| StoreError::Corrupt(format!("missing field {name}")))
}

fn int_field<T: std::str::FromStr>(
    h: &HashMap<String, String>,
    name: &str,
) -> Result<T, StoreError> {
    field(h, name)?
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("field {name} is not a number")))
}

fn text(parts: &[Vec<u8>], i: usize) -> Result<String, StoreError> {
    parts
        .get(i)
        .and_then(|b| String::from_utf8(b.clone()).ok())
        .ok_or_else(|| StoreError::Corrupt("unexpected script reply".into()))
}

/// Like [`text`], moving the bytes out of the reply instead of copying them.
fn take_text(parts: &mut [Vec<u8>], i: usize) -> Result<String, StoreError> {
    parts
        .get_mut(i)
        .map(std::mem::take)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| StoreError::Corrupt("unexpected script reply".into()))
}

/// A reply element as a word to match (`rotated`, `expired_idle`, ...); empty when missing.
fn word(parts: &[Vec<u8>], i: usize) -> &[u8] {
    parts.get(i).map_or(&[], Vec::as_slice)
}

fn number(parts: &[Vec<u8>], i: usize) -> Result<i64, StoreError> {
    parts
        .get(i)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt("unexpected script reply".into()))
}

fn entitlement_from(parts: &mut [Vec<u8>]) -> Result<Entitlement, StoreError> {
    Ok(Entitlement {
        user_id: take_text(parts, 1)?,
        client_id: take_text(parts, 2)?,
        scope: take_text(parts, 3)?,
        successor_expires_at: number(parts, 4)?,
        held_scopes: take_text(parts, 5)?,
    })
}

fn split_scopes(joined: &str) -> Vec<String> {
    joined
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The fields of a session record, in the order `session_from` reads them.
const SESSION_FIELDS: [&str; 11] = [
    "uid", "cid", "scope", "created", "last", "exp", "ua", "ip", "lua", "lip", "ch",
];

/// One session: the sid, then its [`SESSION_FIELDS`] (as `list_sessions.lua` returns them).
fn session_from(parts: &[Vec<u8>]) -> Result<Session, StoreError> {
    Ok(Session {
        id: Uuid::parse_str(&text(parts, 0)?)
            .map_err(|_| StoreError::Corrupt("a session id is not a UUID".into()))?,
        user_id: text(parts, 1)?,
        client_id: text(parts, 2)?,
        scope: text(parts, 3)?,
        created_at: number(parts, 4)?,
        last_used_at: number(parts, 5)?,
        expires_at: number(parts, 6)?,
        user_agent: text(parts, 7)?,
        ip: text(parts, 8)?,
        login_user_agent: text(parts, 9)?,
        login_ip: text(parts, 10)?,
        dpop_jkt: text(parts, 11).ok().as_deref().and_then(super::bound_key),
        channel: super::bound_channel(&text(parts, 11).unwrap_or_default()),
    })
}

#[async_trait]
impl Store for RedisStore {
    fn shared_counters(&self) -> Option<Arc<dyn SharedCounters>> {
        Some(self.counters.clone())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let claimed: i64 = self
            .create_user
            .key(username_key(&user.username))
            .key(USERS)
            .key(look_alike_key(&user.username))
            .arg(&user.id)
            .invoke_async(&mut conn)
            .await?;
        match claimed {
            0 => return Err(StoreError::Conflict),
            2 => return Err(StoreError::LookAlike),
            _ => {}
        }
        let written: Result<(), redis::RedisError> = conn
            .hset_multiple(
                format!("{}u:{}", user_slot(&user.id), user.id),
                &[
                    ("name", user.username.as_str()),
                    ("hash", user.password_hash.as_str()),
                    ("disabled", if user.disabled { "1" } else { "0" }),
                    ("created", &user.created_at.to_string()),
                    ("epoch", &user.epoch.to_string()),
                    ("scopes", &user.scopes.join(" ")),
                    ("email", user.email.as_deref().unwrap_or("")),
                    ("dname", user.name.as_deref().unwrap_or("")),
                    (
                        "email_verified",
                        if user.email_verified { "1" } else { "0" },
                    ),
                    ("pname", user.preferred_username.as_deref().unwrap_or("")),
                ],
            )
            .await;
        if let Err(e) = written {
            // Give the name back; a claim without a record reads as no user meanwhile.
            let _: Result<(), _> = redis::pipe()
                .del(username_key(&user.username))
                .del(look_alike_key(&user.username))
                .srem(USERS, &user.id)
                .query_async(&mut conn)
                .await;
            return Err(e.into());
        }
        Ok(())
    }

    async fn index_look_alike(&self, user: &User) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let key = look_alike_key(&user.username);
        let _: bool = conn.set_nx(&key, &user.id).await?;
        let holder: Option<String> = conn.get(&key).await?;
        Ok(holder.as_deref() == Some(user.id.as_str()))
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.conn().await?;
        let uid: Option<String> = conn.get(username_key(username)).await?;
        match uid {
            Some(uid) => self.load_user(&mut conn, &uid).await,
            None => Ok(None),
        }
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.conn().await?;
        self.load_user(&mut conn, id).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = conn.smembers(USERS).await?;
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(user) = self.load_user(&mut conn, &id).await? {
                users.push(user);
            }
        }
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn set_password(
        &self,
        user_id: &str,
        hash: &str,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        self.end_sessions(user_id, true, &[("hash", hash)], note)
            .await
    }

    async fn upgrade_password_hash(
        &self,
        user_id: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let replaced: i64 = self
            .upgrade_hash
            .key(format!("{}u:{user_id}", user_slot(user_id)))
            .arg(old_hash)
            .arg(new_hash)
            .invoke_async(&mut conn)
            .await?;
        Ok(replaced == 1)
    }

    async fn set_user_attributes(
        &self,
        user_id: &str,
        attributes: &UserAttributes,
    ) -> Result<bool, StoreError> {
        let values = [
            ("scopes", attributes.scopes.join(" ")),
            ("email", attributes.email.clone().unwrap_or_default()),
            ("dname", attributes.name.clone().unwrap_or_default()),
            (
                "email_verified",
                if attributes.email_verified { "1" } else { "0" }.to_owned(),
            ),
            (
                "pname",
                attributes.preferred_username.clone().unwrap_or_default(),
            ),
        ];
        let fields: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // No epoch bump and no session ends: attributes are not credentials.
        Ok(self
            .change_user(user_id, false, &fields, None)
            .await?
            .is_some())
    }

    async fn delete_user(
        &self,
        user_id: &str,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        let mut conn = self.conn().await?;
        let Some(user) = self.load_user(&mut conn, user_id).await? else {
            return Ok(None);
        };
        let prefix = user_slot(user_id);
        let mut invocation = self.delete_user.prepare_invoke();
        invocation
            .key(format!("{prefix}u:{user_id}"))
            .key(format!("{prefix}s:{user_id}"));
        if let Some(log) = self.log_in_script() {
            invocation.key(log);
        }
        let (ended, sids): (i64, String) = invocation
            .arg(&prefix)
            .arg(note.packed())
            .arg(user_id)
            .arg(note.cutoff().map(|c| c.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await?;
        if ended >= 0 {
            self.append_after_script(&mut conn, note, user_id, &sids)
                .await?;
        }
        // The name is released only if it still names this user (never another's claim).
        for key in [username_key(&user.username), look_alike_key(&user.username)] {
            let claimed: Option<String> = conn.get(&key).await?;
            if claimed.as_deref() == Some(user_id) {
                let _: () = conn.del(&key).await?;
            }
        }
        let _: () = conn.srem(USERS, user_id).await?;
        Ok(usize::try_from(ended).ok())
    }

    async fn set_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        let value = if disabled { "1" } else { "0" };
        self.end_sessions(user_id, true, &[("disabled", value)], note)
            .await
    }

    async fn create_session(&self, s: &NewSession) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let prefix = user_slot(&s.user_id);
        let sid = sid_member(s.id);
        let created: i64 = self
            .create_session
            .key(format!("{prefix}f:{sid}"))
            .key(format!("{prefix}u:{}", s.user_id))
            .key(format!("{prefix}s:{}", s.user_id))
            .arg(&s.user_id)
            .arg(&s.client_id)
            .arg(&s.scope)
            .arg(s.created_at)
            .arg(s.expires_at)
            .arg(&s.user_agent)
            .arg(&s.ip)
            .arg(s.first_token.0.as_slice())
            .arg(s.first_token_expires_at)
            .arg(s.user_epoch)
            .arg(&sid)
            .arg(super::binding(s.channel, s.dpop_jkt.as_deref()))
            .invoke_async(&mut conn)
            .await?;
        Ok(created == 1)
    }

    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let prefix = session_slot(r.session_id);
        let sid = sid_member(r.session_id);
        let sent = system_ms();
        let deadline = sent + crate::clock::duration_ms(RESPONSE_TIMEOUT) - DEADLINE_MARGIN_MS;
        let reuse_note = LogNote {
            reason: RevocationReason::ReuseDetected,
            at: r.now,
            keep_until: r.log_keep_until,
        };
        let mut invocation = self.rotate.prepare_invoke();
        invocation
            .key(format!("{prefix}f:{sid}"))
            .key(format!("{prefix}x:{sid}"))
            .key(format!("{prefix}r:{sid}"));
        if let Some(log) = self.log_in_script() {
            invocation.key(log);
        }
        let mut reply: Vec<Vec<u8>> = invocation
            .arg(r.now)
            .arg(r.grace_ms)
            .arg(r.idle_ttl_ms)
            .arg(r.presented.0.as_slice())
            .arg(r.successor.0.as_slice())
            .arg(r.sealed_successor.as_slice())
            .arg(&r.user_agent)
            .arg(&r.ip)
            .arg(&sid)
            .arg(deadline)
            .arg(HISTORY)
            .arg(&prefix)
            .arg(r.client_id.as_deref().unwrap_or(""))
            .arg(r.channel.as_str())
            .arg(sent)
            .arg(r.dpop_jkt.as_deref().unwrap_or(""))
            .arg(reuse_note.packed())
            .invoke_async(&mut conn)
            .await?;
        if word(&reply, 0) == b"reused" {
            let uid = text(&reply, 1)?;
            self.append_after_script(&mut conn, &reuse_note, &uid, &sid)
                .await?;
        }
        match word(&reply, 0) {
            b"rotated" => Ok(RotateOutcome::Rotated(entitlement_from(&mut reply)?)),
            b"replayed" => Ok(RotateOutcome::Replayed {
                entitlement: entitlement_from(&mut reply)?,
                sealed_successor: reply.get_mut(6).map(std::mem::take).unwrap_or_default(),
            }),
            b"reused" => Ok(RotateOutcome::Reused {
                cause: match word(&reply, 2) {
                    b"after_grace" => ReuseCause::AfterGrace,
                    _ => ReuseCause::ConsumedSuccessor,
                },
                user_id: take_text(&mut reply, 1)?,
            }),
            b"late" => Err(StoreError::Unavailable(
                "the rotation reached Redis after its caller's deadline; nothing was changed"
                    .into(),
            )),
            b"invalid" => Ok(RotateOutcome::Invalid(match word(&reply, 1) {
                b"expired_idle" => Invalid::ExpiredIdle,
                b"expired_absolute" => Invalid::ExpiredAbsolute,
                b"user_changed" => Invalid::UserChanged,
                b"wrong_client" => Invalid::WrongClient,
                b"wrong_key" => Invalid::WrongKey,
                b"revoked_for_reuse" => Invalid::RevokedForReuse,
                _ => Invalid::Unknown,
            })),
            _ => Err(StoreError::Corrupt("unexpected script reply".into())),
        }
    }

    async fn session(&self, id: Uuid, now: UnixMs) -> Result<Option<Session>, StoreError> {
        let mut conn = self.conn().await?;
        let fields: Vec<Option<Vec<u8>>> = session_fields(id).query_async(&mut conn).await?;
        live_session(id, fields, now)
    }

    /// Both in one pipeline: the user's record and the session share the user's hash slot.
    async fn user_and_session(
        &self,
        user_id: &str,
        session_id: Uuid,
        now: UnixMs,
    ) -> Result<(Option<User>, Option<Session>), StoreError> {
        if session_slot(session_id) != user_slot(user_id) {
            // Not the user's session (it could not be found under this user anyway).
            return Ok((self.user_by_id(user_id).await?, None));
        }
        let mut conn = self.conn().await?;
        let (user, fields): (HashMap<String, String>, Vec<Option<Vec<u8>>>) = redis::pipe()
            .hgetall(format!("{}u:{user_id}", user_slot(user_id)))
            .add_command(session_fields(session_id))
            .query_async(&mut conn)
            .await?;
        Ok((
            user_from(user_id, &user)?,
            live_session(session_id, fields, now)?,
        ))
    }

    async fn live_refresh_token(
        &self,
        session_id: Uuid,
        token: TokenId,
        now: UnixMs,
    ) -> Result<Option<(Session, UnixMs)>, StoreError> {
        let mut conn = self.conn().await?;
        let (live, live_exp): (Option<Vec<u8>>, Option<i64>) = redis::cmd("HMGET")
            .arg(format!(
                "{}f:{}",
                session_slot(session_id),
                sid_member(session_id)
            ))
            .arg("live")
            .arg("live_exp")
            .query_async(&mut conn)
            .await?;
        // `live` is the id's first 16 bytes (whole, from earlier versions): see rotate.lua.
        let issued = live.is_some_and(|l| l.len() >= 16 && token.0.starts_with(&l));
        let Some(expires_at) = live_exp.filter(|e| now < *e && issued) else {
            return Ok(None);
        };
        Ok(self
            .session(session_id, now)
            .await?
            .map(|session| (session, expires_at)))
    }

    async fn sessions_of(&self, user_id: &str, now: UnixMs) -> Result<Vec<Session>, StoreError> {
        let mut conn = self.conn().await?;
        let prefix = user_slot(user_id);
        let flat: Vec<Vec<u8>> = self
            .list_sessions
            .key(format!("{prefix}s:{user_id}"))
            .arg(now)
            .arg(&prefix)
            .invoke_async(&mut conn)
            .await?;
        let mut sessions = flat
            .chunks(SESSION_FIELDS.len() + 1)
            .map(session_from)
            .collect::<Result<Vec<_>, _>>()?;
        sessions.retain(|s| now < s.expires_at && s.user_id == user_id);
        sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(sessions)
    }

    async fn revoke_by_token(
        &self,
        session_id: Uuid,
        token: TokenId,
        note: &LogNote,
    ) -> Result<bool, StoreError> {
        self.revoke_family(session_id, Some(token), note).await
    }

    async fn revoke_session(&self, id: Uuid, note: &LogNote) -> Result<bool, StoreError> {
        self.revoke_family(id, None, note).await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        note: &LogNote,
    ) -> Result<usize, StoreError> {
        Ok(self
            .end_sessions(user_id, false, &[], note)
            .await?
            .unwrap_or(0))
    }

    async fn revoke_client_sessions(
        &self,
        client_id: &str,
        note: &LogNote,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn().await?;
        let mut ended = 0;
        for family in self.families(&mut conn).await? {
            let Some(sid) = family
                .rsplit(':')
                .next()
                .and_then(|s| Uuid::try_parse(s).ok())
            else {
                continue;
            };
            let cid: Option<String> = conn.hget(&family, "cid").await?;
            if cid.as_deref() == Some(client_id) && self.revoke_family(sid, None, note).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    async fn revocations_after(
        &self,
        after: Option<LogPosition>,
        now: UnixMs,
        limit: usize,
    ) -> Result<Vec<RevocationRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let mut from = after;
        // Entries past their `keep` are skipped; trimming is approximate, so a few may lead.
        for _ in 0..8 {
            let start = from.map_or_else(|| "-".to_owned(), |p| format!("({p}"));
            let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
                .arg(REVOCATION_LOG)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut conn)
                .await?;
            let Some((last, _)) = entries.last() else {
                return Ok(Vec::new());
            };
            from = Some(last.parse().map_err(|()| {
                StoreError::Corrupt("a revocation log id is not a stream id".into())
            })?);
            let full = entries.len() >= limit;
            let live: Vec<RevocationRecord> = entries
                .iter()
                .filter_map(|(id, pairs)| {
                    let fields: HashMap<String, String> = pairs
                        .chunks_exact(2)
                        .map(|kv| (kv[0].clone(), kv[1].clone()))
                        .collect();
                    revocation_from(id, &fields)
                })
                .filter(|r| r.keep_until > now)
                .collect();
            if !live.is_empty() || !full {
                return Ok(live);
            }
        }
        Ok(Vec::new())
    }

    async fn record_key_publication(
        &self,
        kid: &str,
        now: UnixMs,
        publish_until: UnixMs,
    ) -> Result<KeyPublication, StoreError> {
        let mut conn = self.conn().await?;
        let (_, _, first): (bool, (), i64) = redis::pipe()
            .atomic()
            .hset_nx(KEYS_FIRST_PUBLISHED, kid, now)
            .hset(KEYS_PUBLISH_UNTIL, kid, publish_until)
            .hget(KEYS_FIRST_PUBLISHED, kid)
            .query_async(&mut conn)
            .await?;
        Ok(KeyPublication {
            kid: kid.to_owned(),
            first_published: first,
            publish_until,
        })
    }

    async fn key_publications(&self) -> Result<Vec<KeyPublication>, StoreError> {
        let mut conn = self.conn().await?;
        let first: HashMap<String, i64> = conn.hgetall(KEYS_FIRST_PUBLISHED).await?;
        let until: HashMap<String, i64> = conn.hgetall(KEYS_PUBLISH_UNTIL).await?;
        let mut all: Vec<KeyPublication> = first
            .into_iter()
            .map(|(kid, first_published)| KeyPublication {
                publish_until: until.get(&kid).copied().unwrap_or(first_published),
                kid,
                first_published,
            })
            .collect();
        all.sort_by(|a, b| {
            a.first_published
                .cmp(&b.first_published)
                .then(a.kid.cmp(&b.kid))
        });
        Ok(all)
    }

    async fn put_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: () = conn.hset(META, key, value).await?;
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn().await?;
        Ok(conn.hget(META, key).await?)
    }

    async fn put_record(
        &self,
        key: &str,
        value: &str,
        expires_at: UnixMs,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        // Redis forgets it by its own clock; readers judge expiry by theirs (the prefix).
        let _: () = redis::cmd("SET")
            .arg(record_key(key))
            .arg(format!("{expires_at}:{value}"))
            .arg("PX")
            .arg((expires_at - system_ms()).max(1))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn record(&self, key: &str, now: UnixMs) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn().await?;
        let stored: Option<String> = conn.get(record_key(key)).await?;
        Ok(stored.and_then(|s| {
            let (expires_at, value) = s.split_once(':')?;
            (expires_at.parse::<UnixMs>().ok()? > now).then(|| value.to_owned())
        }))
    }

    async fn swap_record(
        &self,
        key: &str,
        value: &str,
        now: UnixMs,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn().await?;
        Ok(self
            .swap_record
            .key(record_key(key))
            .arg(value)
            .arg(now)
            .invoke_async(&mut conn)
            .await?)
    }

    async fn delete_record(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = conn.del(record_key(key)).await?;
        Ok(())
    }
}

/// A sign-in record's key: untagged, so records spread over a cluster's slots.
fn record_key(key: &str) -> String {
    format!("lk:r:{key}")
}

/// Whether `e` is a connection that broke (Redis restarted, failed over, or the connection was
/// dropped) rather than an answer.
fn connection_lost(e: &StoreError) -> bool {
    let StoreError::Unavailable(source) = e else {
        return false;
    };
    source
        .downcast_ref::<redis::RedisError>()
        .is_some_and(needs_new_connection)
}

/// A dropped or refused connection, or a server that is a replica now (after a Sentinel
/// failover) — not a slow answer: a command that timed out may still run (it is skipped past
/// its deadline), and waiting again on a stalled server helps nobody.
fn needs_new_connection(e: &redis::RedisError) -> bool {
    let broken = (e.is_connection_dropped() || e.is_io_error() || e.is_connection_refusal())
        && !e.is_timeout();
    broken || e.code() == Some("READONLY")
}

/// The Redis store, retrying once — on the connection the manager re-establishes — a call that
/// met a broken connection, where running it twice is safe, so no request fails once Redis is
/// reachable again after a restart or failover. Safe: every read; rotation within a grace window
/// (running the script again for the same presented token replays the successor it sealed);
/// creating a session (the same family, written again with the same values); revocations whose
/// answer only feeds the metrics; recording key publications and operational records. Not
/// retried: user changes (a second password change would bump the epoch again; a second create
/// would be a conflict) and ending one session, whose answer decides a 404.
pub struct Reconnecting(pub RedisStore);

impl Reconnecting {
    /// Runs `call`; after a broken connection (or, behind Sentinels, a master that is a replica
    /// now) forgets the connection so the next one asks again, and runs `call` once more.
    async fn once_more<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        match self.once(call()).await {
            Err(e) if connection_lost(&e) => self.once(call()).await,
            other => other,
        }
    }

    /// Runs `call` once, forgetting a connection it found broken.
    async fn once<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = call.await;
        if let Err(e) = &result
            && connection_lost(e)
        {
            self.0.forget_connection();
        }
        result
    }
}

#[async_trait]
impl Store for Reconnecting {
    async fn ping(&self) -> Result<(), StoreError> {
        self.once_more(|| self.0.ping()).await
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.once(self.0.create_user(user)).await
    }

    async fn index_look_alike(&self, user: &User) -> Result<bool, StoreError> {
        self.once_more(|| self.0.index_look_alike(user)).await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.once_more(|| self.0.user_by_name(username)).await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.once_more(|| self.0.user_by_id(id)).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.once_more(|| self.0.list_users()).await
    }

    async fn set_password(
        &self,
        user_id: &str,
        hash: &str,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        self.once(self.0.set_password(user_id, hash, note)).await
    }

    async fn upgrade_password_hash(
        &self,
        user_id: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        self.once(self.0.upgrade_password_hash(user_id, old_hash, new_hash))
            .await
    }

    async fn set_user_attributes(
        &self,
        user_id: &str,
        attributes: &UserAttributes,
    ) -> Result<bool, StoreError> {
        self.once(self.0.set_user_attributes(user_id, attributes))
            .await
    }

    async fn delete_user(
        &self,
        user_id: &str,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        self.once(self.0.delete_user(user_id, note)).await
    }

    async fn set_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        self.once(self.0.set_disabled(user_id, disabled, note))
            .await
    }

    async fn create_session(&self, session: &NewSession) -> Result<bool, StoreError> {
        self.once_more(|| self.0.create_session(session)).await
    }

    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        if rotation.grace_ms > 0 {
            self.once_more(|| self.0.rotate(rotation)).await
        } else {
            // With no grace window a second run after a lost answer would be reuse.
            self.once(self.0.rotate(rotation)).await
        }
    }

    async fn session(&self, id: Uuid, now: UnixMs) -> Result<Option<Session>, StoreError> {
        self.once_more(|| self.0.session(id, now)).await
    }

    async fn user_and_session(
        &self,
        user_id: &str,
        session_id: Uuid,
        now: UnixMs,
    ) -> Result<(Option<User>, Option<Session>), StoreError> {
        self.once_more(|| self.0.user_and_session(user_id, session_id, now))
            .await
    }

    async fn live_refresh_token(
        &self,
        session_id: Uuid,
        token: TokenId,
        now: UnixMs,
    ) -> Result<Option<(Session, UnixMs)>, StoreError> {
        self.once_more(|| self.0.live_refresh_token(session_id, token, now))
            .await
    }

    async fn sessions_of(&self, user_id: &str, now: UnixMs) -> Result<Vec<Session>, StoreError> {
        self.once_more(|| self.0.sessions_of(user_id, now)).await
    }

    async fn revoke_by_token(
        &self,
        session_id: Uuid,
        token: TokenId,
        note: &LogNote,
    ) -> Result<bool, StoreError> {
        self.once_more(|| self.0.revoke_by_token(session_id, token, note))
            .await
    }

    async fn revoke_session(&self, id: Uuid, note: &LogNote) -> Result<bool, StoreError> {
        self.once(self.0.revoke_session(id, note)).await
    }

    // Not retried: a second run would log a second per-user record (harmless, but counted).
    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        note: &LogNote,
    ) -> Result<usize, StoreError> {
        self.once(self.0.revoke_user_sessions(user_id, note)).await
    }

    // Not retried: a scan that failed halfway is simply run again by the next reload.
    async fn revoke_client_sessions(
        &self,
        client_id: &str,
        note: &LogNote,
    ) -> Result<usize, StoreError> {
        self.once(self.0.revoke_client_sessions(client_id, note))
            .await
    }

    async fn revocations_after(
        &self,
        after: Option<LogPosition>,
        now: UnixMs,
        limit: usize,
    ) -> Result<Vec<RevocationRecord>, StoreError> {
        self.once_more(|| self.0.revocations_after(after, now, limit))
            .await
    }

    async fn record_key_publication(
        &self,
        kid: &str,
        now: UnixMs,
        publish_until: UnixMs,
    ) -> Result<KeyPublication, StoreError> {
        self.once_more(|| self.0.record_key_publication(kid, now, publish_until))
            .await
    }

    async fn key_publications(&self) -> Result<Vec<KeyPublication>, StoreError> {
        self.once_more(|| self.0.key_publications()).await
    }

    async fn put_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.once_more(|| self.0.put_meta(key, value)).await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.once_more(|| self.0.get_meta(key)).await
    }

    async fn sweep(&self, now: UnixMs) -> Result<(), StoreError> {
        self.once(self.0.sweep(now)).await
    }

    async fn put_record(
        &self,
        key: &str,
        value: &str,
        expires_at: UnixMs,
    ) -> Result<(), StoreError> {
        self.once_more(|| self.0.put_record(key, value, expires_at))
            .await
    }

    async fn record(&self, key: &str, now: UnixMs) -> Result<Option<String>, StoreError> {
        self.once_more(|| self.0.record(key, now)).await
    }

    async fn swap_record(
        &self,
        key: &str,
        value: &str,
        now: UnixMs,
    ) -> Result<Option<String>, StoreError> {
        // Not repeated: a swap that landed with its reply lost would look like a second use.
        self.once(self.0.swap_record(key, value, now)).await
    }

    async fn delete_record(&self, key: &str) -> Result<(), StoreError> {
        self.once_more(|| self.0.delete_record(key)).await
    }

    fn shared_counters(&self) -> Option<Arc<dyn SharedCounters>> {
        self.0.shared_counters()
    }
}
