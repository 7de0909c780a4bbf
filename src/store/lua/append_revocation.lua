-- Prepended to every revoking script: appends a revocation to the log stream
-- (docs/revocation-feed.md) in the script's own atomic step. On a Redis Cluster the log lives
-- in another slot, so the caller passes no log key and appends it right after the script (with
-- append_log.lua, which is this function alone).
-- key: the log stream (or nil); note: 'at|keep|reason' (LogNote::packed);
-- sids: the ended session ids; cut: the per-user cutoff ('' for none).
local function append_revocation(key, note, uid, sids, cut)
  if not key then return end
  local at, keep, why = string.match(note, '^(%d+)|(%d+)|([%w_]+)$')
  if not at then error('malformed revocation note') end
  -- Stream ids follow this server's clock: entries older than the retention by that clock (and
  -- a minute of margin for skew) may go. Reads filter on 'keep' with the caller's clock anyway.
  local t = redis.call('TIME')
  local minid = math.max(0, tonumber(t[1]) * 1000 - (tonumber(keep) - tonumber(at)) - 60000)
  redis.call('XADD', key, 'MINID', '~', string.format('%d', minid), '*', 'at', at,
    'keep', keep, 'why', why, 'uid', uid, 'sids', table.concat(sids, ','), 'cut', cut)
  -- With no revocation for a whole retention, nothing in the log matters any more.
  redis.call('PEXPIRE', key, tonumber(keep) - tonumber(at) + 60000)
end
