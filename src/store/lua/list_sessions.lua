-- A user's live sessions in one round trip, newest first.
-- KEYS: 1 the user's session index
-- ARGV: 1 now (ms), 2 the family key prefix (lk:{tag}:)
-- Returns a flat list: sid, then the family's fields (uid cid scope created last exp ua ip lua
-- lip ch), per session.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {}
for _, sid in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[2] .. 'f:' .. sid, 'uid', 'cid', 'scope', 'created', 'last',
    'exp', 'ua', 'ip', 'lua', 'lip', 'ch')
  if f[1] then
    table.insert(out, sid)
    for _, v in ipairs(f) do table.insert(out, v) end
  else
    redis.call('ZREM', KEYS[1], sid)
  end
end
return out
