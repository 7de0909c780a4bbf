-- Deletes a user's record and every session, in the user's slot. The username claim lives in
-- the {users} slot and is released by the caller afterwards (only if it still names this user).
-- KEYS: 1 the user's record, 2 the user's session index
-- ARGV: 1 the family key prefix (lk:{tag}:)
-- Returns the number of sessions ended, or -1 when the user does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local ended = 0
for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  ended = ended + redis.call('DEL', ARGV[1] .. 'f:' .. sid)
  redis.call('DEL', ARGV[1] .. 'x:' .. sid)
end
redis.call('DEL', KEYS[1], KEYS[2])
return ended
