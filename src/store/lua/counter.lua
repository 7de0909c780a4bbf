-- A throttle counter (limits.rs): adds ARGV[1] (0 only reads); a new counter lives ARGV[2] ms.
-- Returns {count, ms until it resets}.
local by = tonumber(ARGV[1])
if by == 0 then
  local c = tonumber(redis.call('GET', KEYS[1]) or '0')
  return {c, redis.call('PTTL', KEYS[1])}
end
local c = redis.call('INCRBY', KEYS[1], by)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {c, ttl}
