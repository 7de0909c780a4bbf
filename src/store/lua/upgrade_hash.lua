-- Replaces a user's password hash by the same password hashed at a new cost, only if the stored
-- hash is still the one the caller verified (a password change in between wins). The epoch
-- stays: the credentials did not change, so no session ends.
-- KEYS: 1 the user's record
-- ARGV: 1 the hash the caller verified, 2 the new hash
if redis.call('HGET', KEYS[1], 'hash') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'hash', ARGV[2])
return 1
