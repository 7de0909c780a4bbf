-- Claims a username and its look-alike key (crate::usernames::look_alike_key). The user's
-- record lives in the user's own hash slot (with its sessions), so it is written by the caller
-- right after; a claim whose record never appears is treated as absent by every reader.
-- KEYS: 1 username -> id, 2 the set of every user id, 3 look-alike key -> id
-- ARGV: 1 id
-- Returns 1 when claimed, 0 when the name is taken, 2 when a look-alike of it is.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[3], ARGV[1], 'NX') == false then return 2 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
