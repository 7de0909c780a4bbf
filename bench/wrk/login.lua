-- POST /auth/login in a loop (the login storm).   wrk ... -- USER PASSWORD
dofile("bench/wrk/result.lua")
local headers = { ["Content-Type"] = "application/json" }
local body
function init(args)
  body = '{"username":"' .. args[1] .. '","password":"' .. args[2] .. '"}'
end
function request() return wrk.format("POST", "/auth/login", headers, body) end
function done(summary, latency, requests) write_result(summary, latency) end
