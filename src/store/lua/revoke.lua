-- Revokes one family: its record, every token and every sealed successor.
-- KEYS: 1 family hash, 2 the family's token index, 3 (optional) a token that must exist
-- ARGV: 1 the family's key prefix
-- Returns the family's user id, or false when there was nothing to revoke.
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 0 then return false end
local uid = redis.call('HGET', KEYS[1], 'uid')
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  redis.call('DEL', ARGV[1] .. 't:' .. id, ARGV[1] .. 'x:' .. id)
end
if KEYS[3] then redis.call('DEL', KEYS[3]) end
redis.call('DEL', KEYS[1], KEYS[2])
return uid
