-- Ends every session of a user at once, optionally changing its record in the same step
-- (password change, disable, enable): the epoch is bumped, so a login in flight that checked
-- the old credentials cannot create a session afterwards (see create_session.lua).
-- KEYS: 1 the user's record, 2 the user's session index, 3 the revocation log (absent on a
--       Cluster: the caller appends it)
-- ARGV: 1 the family key prefix (lk:{tag}:), 2 bump the epoch (0/1), 3 end the sessions (0/1),
--       4 the log note (LogNote::packed), 5 the user id, 6 the cutoff ('' for none),
--       then field/value pairs to set
-- Returns {the number of sessions ended, the ended session ids joined by ','}, or {-1, ''}
-- when the user does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
end
for i = 7, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[3] ~= '1' then return {0, ''} end
local ended, sids = 0, {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('DEL', ARGV[1] .. 'f:' .. sid) == 1 then
    ended = ended + 1
    sids[#sids + 1] = sid
  end
  redis.call('DEL', ARGV[1] .. 'x:' .. sid)
end
redis.call('DEL', KEYS[2])
append_revocation(KEYS[3], ARGV[4], ARGV[5], sids, ARGV[6])
return {ended, table.concat(sids, ',')}
