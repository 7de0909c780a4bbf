-- A failure in a username's back-off record (limits.rs): from ARGV[2] failures on, each locks
-- for ARGV[3] ms doubling per failure, up to ARGV[4] ms. The record is forgotten ARGV[4] ms
-- after its last failure or the end of its lock. ARGV[1]: now (ms). Returns locked_until.
local now = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local max_lock = tonumber(ARGV[4])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local locked = tonumber(redis.call('HGET', KEYS[1], 'locked_until') or '0')
if failures >= threshold then
  local doublings = math.min(failures - threshold, 30)
  local lock_ms = math.min(window * (2 ^ doublings), max_lock)
  locked = math.max(locked, now + lock_ms)
  redis.call('HSET', KEYS[1], 'locked_until', string.format('%d', locked))
end
redis.call('PEXPIRE', KEYS[1], math.max(locked - now, 0) + max_lock)
return locked
