-- POST /oauth/token, grant_type=client_credentials, client_secret_basic.
--   wrk ... -s bench/wrk/client_credentials.lua URL -- BASE64(CLIENT_ID:SECRET)
dofile("bench/wrk/result.lua")
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
function init(args) headers["Authorization"] = "Basic " .. args[1] end
function request()
  return wrk.format("POST", "/oauth/token", headers, "grant_type=client_credentials")
end
function done(summary, latency, requests) write_result(summary, latency) end
