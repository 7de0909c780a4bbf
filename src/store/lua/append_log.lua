-- On a Redis Cluster: appends the revocation a revoking script could not (the log is in
-- another slot), right after it.
-- KEYS: 1 the revocation log; ARGV: 1 the note, 2 the user id, 3 the session ids joined by ',',
--       4 the cutoff ('' for none)
local sids = {}
for sid in string.gmatch(ARGV[3], '[^,]+') do sids[#sids + 1] = sid end
append_revocation(KEYS[1], ARGV[1], ARGV[2], sids, ARGV[4])
return 1
