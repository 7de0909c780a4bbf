-- Creates a login session (a refresh family) if, at this instant, the user is still enabled and
-- its credentials are those the login checked: a login racing `users disable` or a password
-- change either lands before it (and is revoked by it) or is refused here.
-- KEYS: 1 family hash, 2 the user's record, 3 the user's session index
-- ARGV: 1 user id, 2 client id, 3 scope, 4 now (ms), 5 family expiry (ms), 6 user agent, 7 ip,
--       8 first token id (kept as its first 16 bytes, as rotate.lua keeps them), 9 first token expiry (ms), 10 the user epoch the login saw, 11 session id,
--       12 the channel its refresh tokens travel by, then the DPoP key it is bound to, if any
local u = redis.call('HMGET', KEYS[2], 'disabled', 'epoch')
if not u[2] or u[1] == '1' or u[2] ~= ARGV[10] then return 0 end
local now = tonumber(ARGV[4])
local exp = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'uid', ARGV[1], 'cid', ARGV[2], 'scope', ARGV[3], 'created', ARGV[4],
  'last', ARGV[4], 'exp', ARGV[5], 'ua', ARGV[6], 'ip', ARGV[7], 'lua', ARGV[6], 'lip', ARGV[7], 'epoch', ARGV[10],
  'live', string.sub(ARGV[8], 1, 16), 'live_exp', ARGV[9], 'ch', ARGV[12])
redis.call('PEXPIRE', KEYS[1], math.max(exp - now, 1))
-- The index forgets expired sessions as new ones arrive, and lives as long as its newest one.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZADD', KEYS[3], exp, ARGV[11])
if redis.call('PTTL', KEYS[3]) < exp - now then
  redis.call('PEXPIRE', KEYS[3], math.max(exp - now, 1))
end
return 1
