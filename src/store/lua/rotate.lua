-- The atomic check-and-rotate of one refresh token (docs/tokens.md, rotation and reuse).
-- Every key shares the user's hash tag, so this runs unchanged on Redis Cluster.
-- KEYS: 1 family hash, 2 the family's sealed successor (lives for the grace window only),
--       3 the family's tombstone once it is revoked for reuse (lives until its absolute end)
-- ARGV: 1 now (ms), 2 grace (ms), 3 idle ttl (ms), 4 presented token id, 5 successor token id,
--       6 sealed successor, 7 user agent, 8 ip, 9 session id, 10 deadline (ms, server clock),
--       11 history length kept, 12 the slot's key prefix (lk:{T}:), 13 the presenting client
--       ('' for any), 14 the channel the token came by (body, cookie, confidential),
--       15 when the caller sent it (ms, the caller's wall clock, comparable with the deadline),
--       16 the DPoP key thumbprint the request proved ('' for none),
--       17 the revocation-log note a reuse writes (LogNote::packed);
--       KEYS 4: the revocation log (absent on a Cluster: the caller appends it)
-- The user's record and session index (prefix..'u:'..uid, prefix..'s:'..uid) are found through
-- the family's uid; they share the family's hash slot by construction of the session id.
-- Replies: {'late'} | {'invalid', why} | {'rotated', uid, cid, scope, next_exp, held} |
--          {'replayed', uid, cid, scope, next_exp, held, sealed} | {'reused', uid, cause}
--          (held: the scopes the user holds now)

-- A caller that gave up (it answered 503) must find that nothing happened.
local t = redis.call('TIME')
local ran_at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ran_at > tonumber(ARGV[10]) then
  return {'late'}
end
-- A command that waited (a stalled or busy server) consumes its token later than the caller's
-- 'now': the grace window starts when the token was really consumed, so a caller whose answer
-- was lost on the way back still gets its successor when it presents the token again.
local lag = math.max(0, ran_at - tonumber(ARGV[15]))

-- Token ids are kept as their first 16 bytes: 128 bits of an HMAC-derived id are as unguessable
-- as all 256 for matching a presented token, and each session keeps two (32 bytes less). Ids
-- that earlier versions stored whole compare whole.
local ID_BYTES = 16
local function issued_as(stored, token)
  return stored and #stored >= ID_BYTES and stored == string.sub(token, 1, #stored)
end

local now = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local idle = tonumber(ARGV[3])
local presented = ARGV[4]

-- 'prev_next' (f[10]) and 'hist' (f[11]) are written by earlier versions only and removed at
-- the next rotation: the consumed token's successor is the live one, so its expiry is live_exp.
local f = redis.call('HMGET', KEYS[1], 'uid', 'cid', 'scope', 'exp', 'epoch', 'live', 'live_exp',
  'prev', 'prev_at', 'prev_next', 'hist', 'ch', 'h1', 'h2', 'h3', 'h4')
-- The history of consumed-token fingerprints (the first 6 bytes of each id), oldest first. It is
-- kept in fields of at most 60 bytes (h1..h4) so the family hash stays in Redis's compact
-- listpack encoding (values up to hash-max-listpack-value, 64 by default). 'hist' is the single
-- field of earlier versions, of 8-byte fingerprints: read as their first 6 bytes.
local history = ''
local old = f[11] or ''
for i = 1, #old, 8 do history = history .. string.sub(old, i, i + 5) end
history = history .. (f[13] or '') .. (f[14] or '') .. (f[15] or '') .. (f[16] or '')
if not f[1] then
  if redis.call('EXISTS', KEYS[3]) == 1 then return {'invalid', 'revoked_for_reuse'} end
  return {'invalid', 'unknown'}
end
local family_exp = tonumber(f[4])
if now >= family_exp then return {'invalid', 'expired_absolute'} end
-- Bound to its client and channel, and a DPoP-bound family ('<channel> <jkt>') to its key:
-- presented otherwise, refused before anything is consumed (store::binding_refusal in Rust).
local stored = f[12] or 'body'
local channel, key = string.match(stored, '^(%S+) (%S+)$')
if not channel then channel = stored end
if (ARGV[13] ~= '' and f[2] ~= ARGV[13]) or channel ~= ARGV[14] then
  return {'invalid', 'wrong_client'}
end
if key and key ~= ARGV[16] then return {'invalid', 'wrong_key'} end

local user_key = ARGV[12] .. 'u:' .. f[1]
local index_key = ARGV[12] .. 's:' .. f[1]
local function revoke()
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('ZREM', index_key, ARGV[9])
end
-- Reuse: the family goes, and a tombstone says why, so later presentations of its tokens (the
-- thief, or the victim, trying on) are still recognised.
local function revoke_for_reuse()
  revoke()
  append_revocation(KEYS[4], ARGV[17], f[1], {ARGV[9]}, '')
  if family_exp > now then
    redis.call('SET', KEYS[3], '1', 'PX', family_exp - now)
  end
end

-- The user's credentials changed, or the account was disabled or deleted, since this login.
local u = redis.call('HMGET', user_key, 'disabled', 'epoch', 'scopes')
local held = u[3] or ''
if not u[2] or u[1] == '1' or u[2] ~= f[5] then
  revoke()
  return {'invalid', 'user_changed'}
end

if issued_as(f[6], presented) then
  if now >= tonumber(f[7]) then return {'invalid', 'expired_idle'} end
  local next_exp = math.min(now + idle, family_exp)
  -- The consumed token joins the history, so presenting it again later is recognised as reuse.
  -- 48 bits of a random id: a stranger's token matches one of 32 by chance once in 2^43.
  local hist = history .. string.sub(presented, 1, 6)
  local keep = math.min(tonumber(ARGV[11]) * 6, 240)
  if #hist > keep then hist = string.sub(hist, #hist - keep + 1) end
  redis.call('HSET', KEYS[1], 'live', string.sub(ARGV[5], 1, ID_BYTES), 'live_exp', next_exp,
    'prev', string.sub(presented, 1, ID_BYTES),
    'prev_at', now + lag, 'last', ARGV[1], 'ua', ARGV[7], 'ip', ARGV[8],
    'h1', string.sub(hist, 1, 60), 'h2', string.sub(hist, 61, 120),
    'h3', string.sub(hist, 121, 180), 'h4', string.sub(hist, 181, 240))
  if f[10] or f[11] then redis.call('HDEL', KEYS[1], 'prev_next', 'hist') end
  if grace > 0 then
    redis.call('SET', KEYS[2], ARGV[6], 'PX', grace)
  else
    redis.call('DEL', KEYS[2])
  end
  return {'rotated', f[1], f[2], f[3], tostring(next_exp), held}
end

if issued_as(f[8], presented) then
  -- Within the grace window the same successor again, so racing tabs keep one chain; the seal
  -- is gone once the window has passed.
  if now < tonumber(f[9]) + grace then
    local sealed = redis.call('GET', KEYS[2])
    if sealed then
      return {'replayed', f[1], f[2], f[3], f[7], held, sealed}
    end
  end
  revoke_for_reuse()
  return {'reused', f[1], 'after_grace'}
end

-- An older consumed token: its successor has been consumed too, so this is a replay of a spent
-- token, not a race. Reuse.
local fp = string.sub(presented, 1, 6)
for i = 1, #history, 6 do
  if string.sub(history, i, i + 5) == fp then
    revoke_for_reuse()
    return {'reused', f[1], 'consumed_successor'}
  end
end
return {'invalid', 'unknown'}
