-- Revokes one family: its record and its sealed successor, and its entry in the user's index.
-- KEYS: 1 family hash, 2 the family's sealed successor, 3 the revocation log (absent on a
--       Cluster: the caller appends it)
-- ARGV: 1 session id, 2 the user-index key prefix, 3 the log note (LogNote::packed),
--       4 (optional) a token id the family must have issued: live, the last consumed, or one in
--       its history
-- Returns the family's user id, or false when there was nothing to revoke.
local f = redis.call('HMGET', KEYS[1], 'uid', 'live', 'prev', 'hist', 'h1', 'h2', 'h3', 'h4')
if not f[1] then return false end
if ARGV[4] then
  local t = ARGV[4]
  -- live and prev: the first 16 bytes of their ids (whole, from earlier versions).
  local function issued_as(stored)
    return stored and #stored >= 16 and stored == string.sub(t, 1, #stored)
  end
  local issued = issued_as(f[2]) or issued_as(f[3])
  if not issued then
    -- The history (see rotate.lua): 8-byte fingerprints in 'hist' of earlier versions, 6-byte
    -- ones in its parts h1..h4.
    local old = f[4] or ''
    for i = 1, #old, 8 do
      if string.sub(old, i, i + 7) == string.sub(t, 1, 8) then issued = true end
    end
    local hist = (f[5] or '') .. (f[6] or '') .. (f[7] or '') .. (f[8] or '')
    for i = 1, #hist, 6 do
      if string.sub(hist, i, i + 5) == string.sub(t, 1, 6) then issued = true end
    end
  end
  if not issued then return false end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', ARGV[2] .. f[1], ARGV[1])
append_revocation(KEYS[3], ARGV[3], f[1], {ARGV[1]}, '')
return f[1]
