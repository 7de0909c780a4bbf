-- Authorization-code exchange: POST /oauth/token, grant_type=authorization_code, each code once.
--   wrk ... -s bench/wrk/code.lua URL -- CODES_FILE NTHREADS CLIENT_ID REDIRECT_URI VERIFIER
-- Thread i takes lines i, i+NTHREADS, ... of CODES_FILE (made by bench/codes_prime.py just
-- before the run, all with the one PKCE verifier). A thread out of codes sends a dead one,
-- counted as `starved`: mint more codes than the run can exchange.
dofile("bench/wrk/result.lua")
local threads, next_tid = {}, 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local codes, next_code, tail = {}, 1, 0
local form

function init(args)
  non2xx, starved = 0, 0
  local nthreads = tonumber(args[2])
  local i = 0
  for line in io.lines(args[1]) do
    if line ~= "" then
      if i % nthreads == tid then tail = tail + 1; codes[tail] = line end
      i = i + 1
    end
  end
  form = "&client_id=" .. args[3] .. "&redirect_uri=" .. args[4] .. "&code_verifier=" .. args[5]
end

function request()
  local code = codes[next_code]
  if code then codes[next_code] = nil; next_code = next_code + 1
  else starved = starved + 1; code = "lk_ac_starved" end
  return wrk.format("POST", "/oauth/token",
    { ["Content-Type"] = "application/x-www-form-urlencoded" },
    "grant_type=authorization_code&code=" .. code .. form)
end

function response(status, hdrs, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  write_result(summary, latency, threads, { "non2xx", "starved" })
end
