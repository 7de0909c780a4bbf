-- Deletes a user's record and every session, in the user's slot. The username claim lives in
-- the {users} slot and is released by the caller afterwards (only if it still names this user).
-- KEYS: 1 the user's record, 2 the user's session index, 3 the revocation log (absent on a
--       Cluster: the caller appends it)
-- ARGV: 1 the family key prefix (lk:{tag}:), 2 the log note (LogNote::packed), 3 the user id,
--       4 the cutoff
-- Returns {the number of sessions ended, the ended session ids joined by ','}, or {-1, ''}
-- when the user does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
local ended, sids = 0, {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('DEL', ARGV[1] .. 'f:' .. sid) == 1 then
    ended = ended + 1
    sids[#sids + 1] = sid
  end
  redis.call('DEL', ARGV[1] .. 'x:' .. sid)
end
redis.call('DEL', KEYS[1], KEYS[2])
append_revocation(KEYS[3], ARGV[2], ARGV[3], sids, ARGV[4])
return {ended, table.concat(sids, ',')}
