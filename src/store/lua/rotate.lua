-- The atomic check-and-rotate of one refresh token (docs/tokens.md, rotation and reuse).
-- Every key shares the family's hash tag, so this runs unchanged on Redis Cluster.
-- KEYS: 1 family hash, 2 presented token, 3 successor token, 4 presented token's sealed
--       successor, 5 the family's token index (zset of token ids by expiry)
-- ARGV: 1 now (ms), 2 grace (ms), 3 idle ttl (ms), 4 successor id (hex),
--       5 sealed successor, 6 user agent, 7 ip, 8 the family's key prefix
local now = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local idle = tonumber(ARGV[3])

local fam = redis.call('HMGET', KEYS[1], 'uid', 'cid', 'scope', 'exp')
if not fam[1] then return {'invalid'} end
local family_exp = tonumber(fam[4])
if now >= family_exp then return {'invalid'} end

local tok = redis.call('HMGET', KEYS[2], 'state', 'exp', 'used', 'next_exp')
if not tok[1] then return {'invalid'} end

if tok[1] == 'live' then
  if now >= tonumber(tok[2]) then return {'invalid'} end
  local next_exp = math.min(now + idle, family_exp)
  -- The consumed record keeps its own expiry: presenting it is reuse for as long as it
  -- could otherwise have been valid.
  redis.call('HSET', KEYS[2], 'state', 'used', 'used', ARGV[1], 'next_exp', tostring(next_exp))
  if grace > 0 then
    redis.call('SET', KEYS[4], ARGV[5], 'PX', grace)
  end
  redis.call('HSET', KEYS[3], 'state', 'live', 'exp', tostring(next_exp))
  redis.call('PEXPIRE', KEYS[3], next_exp - now)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[1])
  redis.call('ZADD', KEYS[5], next_exp, ARGV[4])
  redis.call('HSET', KEYS[1], 'last', ARGV[1], 'ua', ARGV[6], 'ip', ARGV[7])
  return {'rotated', fam[1], fam[2], fam[3], tostring(next_exp)}
end

if now < tonumber(tok[3]) + grace then
  local sealed = redis.call('GET', KEYS[4])
  if sealed then
    return {'replayed', fam[1], fam[2], fam[3], tok[4], sealed}
  end
end

-- Reuse after the grace window: revoke every token of the family at once.
for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  redis.call('DEL', ARGV[8] .. 't:' .. id, ARGV[8] .. 'x:' .. id)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4], KEYS[5])
return {'reused', fam[1]}
