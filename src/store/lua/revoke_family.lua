-- Revokes one family: its record and its sealed successor, and its entry in the user's index.
-- KEYS: 1 family hash, 2 the family's sealed successor
-- ARGV: 1 session id, 2 the user-index key prefix, 3 (optional) a token id the family must have
--       issued: live, the last consumed, or one in its history
-- Returns the family's user id, or false when there was nothing to revoke.
local f = redis.call('HMGET', KEYS[1], 'uid', 'live', 'prev', 'hist', 'h1', 'h2', 'h3', 'h4')
if not f[1] then return false end
if ARGV[3] then
  local t = ARGV[3]
  local issued = (t == f[2]) or (t == f[3])
  if not issued then
    -- The history: 'hist' of earlier versions, then its 64-byte parts (see rotate.lua).
    local fp = string.sub(t, 1, 8)
    local hist = (f[4] or '') .. (f[5] or '') .. (f[6] or '') .. (f[7] or '') .. (f[8] or '')
    for i = 1, #hist, 8 do
      if string.sub(hist, i, i + 7) == fp then issued = true end
    end
  end
  if not issued then return false end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', ARGV[2] .. f[1], ARGV[1])
return f[1]
