-- Claims a username. The user's record lives in the user's own hash slot (with its sessions),
-- so it is written by the caller right after; a claim whose record never appears is treated as
-- absent by every reader.
-- KEYS: 1 username -> id, 2 the set of every user id
-- ARGV: 1 id
if redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
