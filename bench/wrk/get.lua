-- GET of the URL's path (JWKS, discovery, userinfo with -H Authorization).
dofile("bench/wrk/result.lua")
function done(summary, latency, requests) write_result(summary, latency) end
