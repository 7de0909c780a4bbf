-- Shared by the bench scripts: one RESULT line of JSON that bench/report.py reads.
-- `counters` names per-thread counters summed across threads (see refresh.lua). `ok_rps` counts
-- only successful answers: the figure every target is judged by.
function write_result(summary, latency, threads, counters)
  local sums = {}
  for _, name in ipairs(counters or {}) do
    sums[name] = 0
    for _, t in ipairs(threads or {}) do sums[name] = sums[name] + (t:get(name) or 0) end
  end
  local e = summary.errors
  local non2xx = sums.non2xx or e.status
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"non2xx":%d,"socket_errors":%d,"timeouts":%d,"starved":%d,"ok_rps":%.1f}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency.max,
    non2xx, e.connect + e.read + e.write, e.timeout, sums.starved or 0,
    math.max(summary.requests - non2xx - e.read - e.write - e.timeout, 0) / (summary.duration / 1e6)))
end
