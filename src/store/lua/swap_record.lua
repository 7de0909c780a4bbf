-- Replaces a live sign-in record's value, keeping its expiry, and returns the old one.
-- KEYS[1] the record; ARGV[1] the new value, ARGV[2] the caller's now (ms).
-- A record is stored as "<expires_at ms>:<value>", so that expiry is the caller's clock's.
local stored = redis.call('GET', KEYS[1])
if not stored then
  return false
end
local sep = string.find(stored, ':', 1, true)
if not sep or tonumber(string.sub(stored, 1, sep - 1)) <= tonumber(ARGV[2]) then
  return false
end
redis.call('SET', KEYS[1], string.sub(stored, 1, sep) .. ARGV[1], 'KEEPTTL')
return string.sub(stored, sep + 1)
