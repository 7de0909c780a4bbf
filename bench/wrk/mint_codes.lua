-- Mints authorization codes: GET /oauth/authorize with a sign-on cookie (no page: a redirect
-- carrying a code), each code written to OUT_PREFIX.<thread>, one per line.
--   wrk ... -s bench/wrk/mint_codes.lua URL -- OUT_PREFIX COOKIE PATH_AND_QUERY
dofile("bench/wrk/result.lua")
local threads, next_tid = {}, 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local out, path, headers

function init(args)
  non2xx = 0
  out = assert(io.open(args[1] .. "." .. tid, "w"))
  headers = { ["Cookie"] = args[2] }
  path = args[3]
end

function request()
  return wrk.format("GET", path, headers)
end

function response(status, hdrs, body)
  local location = hdrs["location"] or hdrs["Location"]
  local code = status == 303 and location and location:match("[?&]code=([^&]+)")
  if code then
    out:write(code, "\n")
    out:flush()
  else
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  write_result(summary, latency, threads, { "non2xx" })
end
