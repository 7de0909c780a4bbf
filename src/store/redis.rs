//! The Redis backend: one multiplexed connection manager, Lua scripts for every multi-key step.
//!
//! Key layout. A family's keys share the hash tag `{sid}` so its scripts touch one slot:
//! `lk:{sid}:f` (hash: the session), `lk:{sid}:t:<id>` (hash: one token), `lk:{sid}:x:<id>`
//! (the sealed successor, for the grace window only), `lk:{sid}:z` (zset: token ids by expiry).
//! Users share the hash tag `{users}` (user writes are rare; one slot keeps them atomic):
//! `lk:{users}:id:<uid>` (hash), `lk:{users}:name:<username>` (-> uid), `lk:{users}:all` (set of
//! uids). A user's sessions: `lk:s:<uid>` (set of session ids, cleaned lazily). Every key carries a TTL no later than
//! its family's end, so Redis itself forgets what has expired.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{
    Entitlement, KeyPublication, NewSession, RotateOutcome, Rotation, Session, Store, StoreError,
    User,
};
use crate::clock::UnixMs;
use crate::tokens::TokenId;

pub struct RedisStore {
    client: redis::Client,
    /// Connected on first use, so the issuer starts (and reports not-ready) while Redis is down.
    conn: OnceCell<ConnectionManager>,
    rotate: Script,
    revoke: Script,
    create_user: Script,
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::unavailable(e)
    }
}

fn family_prefix(sid: Uuid) -> String {
    format!("lk:{{{}}}:", sid.simple())
}

fn user_key(uid: &str) -> String {
    format!("lk:{{users}}:id:{uid}")
}

fn username_key(name: &str) -> String {
    format!("lk:{{users}}:name:{name}")
}

const USERS: &str = "lk:{users}:all";

fn user_sessions_key(uid: &str) -> String {
    format!("lk:s:{uid}")
}
const KEYS_FIRST_PUBLISHED: &str = "lk:keys:first";
const META: &str = "lk:meta";
const KEYS_PUBLISH_UNTIL: &str = "lk:keys:until";

impl RedisStore {
    pub fn new(url: &str) -> Result<RedisStore, StoreError> {
        Ok(RedisStore {
            client: redis::Client::open(url)?,
            conn: OnceCell::new(),
            rotate: Script::new(include_str!("lua/rotate.lua")),
            revoke: Script::new(include_str!("lua/revoke.lua")),
            create_user: Script::new(include_str!("lua/create_user.lua")),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                // Bounded waits: a dead Redis turns into a quick 503, never a hung request.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(2)))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                self.client.get_connection_manager_with_config(config).await
            })
            .await?;
        Ok(conn.clone())
    }

    async fn revoke_family(
        &self,
        conn: &mut ConnectionManager,
        sid: Uuid,
        must_hold: Option<TokenId>,
    ) -> Result<bool, StoreError> {
        let prefix = family_prefix(sid);
        let mut invocation = self.revoke.prepare_invoke();
        invocation
            .key(format!("{prefix}f"))
            .key(format!("{prefix}z"))
            .arg(&prefix);
        if let Some(token) = must_hold {
            invocation.key(format!("{prefix}t:{}", token.hex()));
        }
        let uid: Option<String> = invocation.invoke_async(conn).await?;
        match uid {
            Some(uid) => {
                let _: () = conn
                    .srem(user_sessions_key(&uid), sid.simple().to_string())
                    .await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn load_user(
        &self,
        conn: &mut ConnectionManager,
        uid: &str,
    ) -> Result<Option<User>, StoreError> {
        let h: HashMap<String, String> = conn.hgetall(user_key(uid)).await?;
        if h.is_empty() {
            return Ok(None);
        }
        Ok(Some(User {
            id: uid.to_owned(),
            username: field(&h, "name")?,
            password_hash: field(&h, "hash")?,
            disabled: field(&h, "disabled")? == "1",
            created_at: int_field(&h, "created")?,
        }))
    }
}

fn field(h: &HashMap<String, String>, name: &str) -> Result<String, StoreError> {
    h.get(name)
        .cloned()
        .ok_or_else(|| StoreError::Corrupt(format!("missing field {name}")))
}

fn int_field(h: &HashMap<String, String>, name: &str) -> Result<i64, StoreError> {
    field(h, name)?
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("field {name} is not a number")))
}

fn session_from(sid: Uuid, h: &HashMap<String, String>) -> Result<Session, StoreError> {
    Ok(Session {
        id: sid,
        user_id: field(h, "uid")?,
        client_id: field(h, "cid")?,
        scope: field(h, "scope")?,
        created_at: int_field(h, "created")?,
        last_used_at: int_field(h, "last")?,
        expires_at: int_field(h, "exp")?,
        user_agent: field(h, "ua")?,
        ip: field(h, "ip")?,
    })
}

fn text(parts: &[Vec<u8>], i: usize) -> Result<String, StoreError> {
    parts
        .get(i)
        .and_then(|b| String::from_utf8(b.clone()).ok())
        .ok_or_else(|| StoreError::Corrupt("unexpected script reply".into()))
}

fn entitlement_from(parts: &[Vec<u8>]) -> Result<Entitlement, StoreError> {
    Ok(Entitlement {
        user_id: text(parts, 1)?,
        client_id: text(parts, 2)?,
        scope: text(parts, 3)?,
        successor_expires_at: text(parts, 4)?
            .parse()
            .map_err(|_| StoreError::Corrupt("unexpected script reply".into()))?,
    })
}

/// Milliseconds left until `at`, at least 1 so a key is never written without a TTL.
fn ttl_ms(at: UnixMs, now: UnixMs) -> i64 {
    (at - now).max(1)
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let created: i64 = self
            .create_user
            .key(username_key(&user.username))
            .key(user_key(&user.id))
            .key(USERS)
            .arg(&user.id)
            .arg(&user.username)
            .arg(&user.password_hash)
            .arg(if user.disabled { "1" } else { "0" })
            .arg(user.created_at)
            .invoke_async(&mut conn)
            .await?;
        if created == 0 {
            return Err(StoreError::Conflict);
        }
        Ok(())
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

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: () = conn
            .hset_multiple(
                user_key(&user.id),
                &[
                    ("hash", user.password_hash.as_str()),
                    ("disabled", if user.disabled { "1" } else { "0" }),
                ],
            )
            .await?;
        Ok(())
    }

    async fn create_session(&self, s: &NewSession) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let prefix = family_prefix(s.id);
        let now = s.created_at;
        let token_hex = s.first_token.hex();
        let family_ttl = ttl_ms(s.expires_at, now);
        let token_ttl = ttl_ms(s.first_token_expires_at, now);
        let _: () = redis::pipe()
            .atomic()
            .hset_multiple(
                format!("{prefix}f"),
                &[
                    ("uid", s.user_id.as_str()),
                    ("cid", s.client_id.as_str()),
                    ("scope", s.scope.as_str()),
                    ("created", &now.to_string()),
                    ("last", &now.to_string()),
                    ("exp", &s.expires_at.to_string()),
                    ("ua", s.user_agent.as_str()),
                    ("ip", s.ip.as_str()),
                ],
            )
            .pexpire(format!("{prefix}f"), family_ttl)
            .hset_multiple(
                format!("{prefix}t:{token_hex}"),
                &[
                    ("state", "live"),
                    ("exp", &s.first_token_expires_at.to_string()),
                ],
            )
            .pexpire(format!("{prefix}t:{token_hex}"), token_ttl)
            .zadd(format!("{prefix}z"), &token_hex, s.first_token_expires_at)
            .pexpire(format!("{prefix}z"), family_ttl)
            .query_async(&mut conn)
            .await?;
        // Another slot on a cluster, so not in the transaction; readers clean stale entries.
        let _: () = redis::pipe()
            .sadd(user_sessions_key(&s.user_id), s.id.simple().to_string())
            .pexpire(user_sessions_key(&s.user_id), family_ttl)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let prefix = family_prefix(r.session_id);
        let presented = r.presented.hex();
        let successor = r.successor.hex();
        let reply: Vec<Vec<u8>> = self
            .rotate
            .key(format!("{prefix}f"))
            .key(format!("{prefix}t:{presented}"))
            .key(format!("{prefix}t:{successor}"))
            .key(format!("{prefix}x:{presented}"))
            .key(format!("{prefix}z"))
            .arg(r.now)
            .arg(r.grace_ms)
            .arg(r.idle_ttl_ms)
            .arg(&successor)
            .arg(r.sealed_successor.as_slice())
            .arg(&r.user_agent)
            .arg(&r.ip)
            .arg(&prefix)
            .invoke_async(&mut conn)
            .await?;
        match text(&reply, 0)?.as_str() {
            "rotated" => Ok(RotateOutcome::Rotated(entitlement_from(&reply)?)),
            "replayed" => Ok(RotateOutcome::Replayed {
                entitlement: entitlement_from(&reply)?,
                sealed_successor: reply.get(5).cloned().unwrap_or_default(),
            }),
            "reused" => {
                let user_id = text(&reply, 1)?;
                let _: () = conn
                    .srem(
                        user_sessions_key(&user_id),
                        r.session_id.simple().to_string(),
                    )
                    .await?;
                Ok(RotateOutcome::Reused { user_id })
            }
            _ => Ok(RotateOutcome::Invalid),
        }
    }

    async fn session(&self, id: Uuid, now: UnixMs) -> Result<Option<Session>, StoreError> {
        let mut conn = self.conn().await?;
        let h: HashMap<String, String> = conn.hgetall(format!("{}f", family_prefix(id))).await?;
        if h.is_empty() {
            return Ok(None);
        }
        let session = session_from(id, &h)?;
        Ok((now < session.expires_at).then_some(session))
    }

    async fn sessions_of(&self, user_id: &str, now: UnixMs) -> Result<Vec<Session>, StoreError> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = conn.smembers(user_sessions_key(user_id)).await?;
        let mut sessions = Vec::with_capacity(ids.len());
        for raw in ids {
            let Ok(sid) = Uuid::parse_str(&raw) else {
                continue;
            };
            let h: HashMap<String, String> =
                conn.hgetall(format!("{}f", family_prefix(sid))).await?;
            if h.is_empty() {
                let _: () = conn.srem(user_sessions_key(user_id), &raw).await?;
                continue;
            }
            let session = session_from(sid, &h)?;
            if now < session.expires_at && session.user_id == user_id {
                sessions.push(session);
            }
        }
        sessions.sort_by_key(|s| s.created_at);
        Ok(sessions)
    }

    async fn revoke_by_token(&self, session_id: Uuid, token: TokenId) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        self.revoke_family(&mut conn, session_id, Some(token)).await
    }

    async fn revoke_session(&self, id: Uuid) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        self.revoke_family(&mut conn, id, None).await
    }

    async fn revoke_user_sessions(&self, user_id: &str) -> Result<usize, StoreError> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = conn.smembers(user_sessions_key(user_id)).await?;
        let mut revoked = 0;
        for raw in ids {
            if let Ok(sid) = Uuid::parse_str(&raw)
                && self.revoke_family(&mut conn, sid, None).await?
            {
                revoked += 1;
            }
        }
        // No DEL of the index: a login racing this call must stay listed (and revocable).
        Ok(revoked)
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
}
