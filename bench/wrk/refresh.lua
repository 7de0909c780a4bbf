-- Chained refresh: POST /auth/refresh, each 200's refresh_token presented next, exactly once.
--   wrk ... -s bench/wrk/refresh.lua URL -- TOKENS_FILE NTHREADS [PROOFS_FILE]
-- Thread i takes lines i, i+NTHREADS, ... of TOKENS_FILE (one refresh token per line) as a FIFO
-- pool; a request pops a token, its 200 pushes the successor back. A pool that runs dry sends
-- a dead token, counted as `starved`: wrk asks one more request of a thread than it has
-- connections at start, so give each thread a spare token or two beyond its connections.
-- With PROOFS_FILE (DPoP-bound sessions; proofs made by bench/dpop_prime.rs just before the run),
-- each request carries the next unused proof from the thread's share of its lines. Running out
-- of proofs sends none, which the issuer refuses (counted in non2xx): make more than requests.
dofile("bench/wrk/result.lua")
local threads, next_tid = {}, 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local pool, head, tail = {}, 1, 0
local proofs, next_proof = {}, 1
local function push(t) tail = tail + 1; pool[tail] = t end
local function pop()
  if head > tail then return nil end
  local t = pool[head]; pool[head] = nil; head = head + 1
  return t
end

-- This thread's lines of `path`: i, i+nthreads, ...
local function slice(path, nthreads, into)
  local i = 0
  for line in io.lines(path) do
    if line ~= "" then
      if i % nthreads == tid then into(line) end
      i = i + 1
    end
  end
end

function init(args)
  non2xx, starved = 0, 0
  local nthreads = tonumber(args[2] or "1")
  slice(args[1], nthreads, push)
  if args[3] then slice(args[3], nthreads, function(p) proofs[#proofs + 1] = p end) end
end

function request()
  local t = pop()
  if not t then starved = starved + 1; t = "lk_rt_starved" end
  local headers = { ["Content-Type"] = "application/json" }
  local proof = proofs[next_proof]
  if proof then headers["DPoP"] = proof; proofs[next_proof] = nil; next_proof = next_proof + 1 end
  return wrk.format("POST", "/auth/refresh", headers, '{"refresh_token":"' .. t .. '"}')
end

function response(status, hdrs, body)
  if status ~= 200 then non2xx = non2xx + 1; return end
  local t = body:match('"refresh_token"%s*:%s*"([^"]+)"')
  if t then push(t) else non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  write_result(summary, latency, threads, { "non2xx", "starved" })
end
